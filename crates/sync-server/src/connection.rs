//! One WebSocket connection's socket and its ordered output: every reply and push is
//! queued here in the order the session produced it and written out by [`Connection::flush`].
//!
//! Guarantees:
//! - frames leave in the order they were queued;
//! - while an answer streams in pages (catch-up, full sync), pushes are held back and
//!   follow it; a push at or below the position the session already has is dropped, so
//!   every change reaches the client once;
//! - a session that would hold more than [`MAX_HELD`] pushes is too slow and ends.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sync_core::protocol::{RequestId, ServerMessage};
use yawc::close::CloseCode;
use yawc::{Frame, HttpWebSocket};

use crate::hub::Outbound;
use crate::wire::encode;

/// Most pushes held back during one catch-up or full sync before the session gives up.
const MAX_HELD: usize = 200_000;

/// Output queued beyond this many bytes is written out before the session goes on
/// (see [`Connection::must_flush`]): what a batch of reads asks for is sent as it is
/// built, not held until the whole batch is answered.
const FLUSH_AT_BYTES: usize = 256 << 10;

/// Why a session ended, and the close frame it gets.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The client closed or the socket failed: nothing to send.
    Gone,
    /// The server is shutting down (1001).
    ShuttingDown,
    /// Authentication failed or never came (4001).
    Unauthenticated(&'static str),
    /// The session fell too far behind its pushes (1013): it resumes from its cursor.
    TooSlow,
    /// No frame from the client for too long (1001).
    Idle,
    /// Not yet authenticated, and the oldest of more unauthenticated connections than
    /// the server keeps (1013): the client may retry at once.
    Crowded,
    /// A failure of the server's own (1011); the reason is logged, not sent.
    Internal(String),
}

impl Ending {
    /// The close code and reason sent; code 0 sends no close frame.
    fn close_frame(&self) -> (u16, &'static str) {
        match self {
            Ending::Gone => (0, ""),
            Ending::ShuttingDown => (1001, "server shutting down"),
            Ending::Unauthenticated(why) => (4001, why),
            Ending::TooSlow => (1013, "too slow to keep up; reconnect and resume"),
            Ending::Idle => (1001, "idle timeout"),
            Ending::Crowded => (1013, "too many connections waiting to authenticate; retry"),
            Ending::Internal(_) => (1011, "internal error"),
        }
    }
}

/// The socket and the ordered output of one connection.
pub(crate) struct Connection {
    /// The session id (also in `auth_success`).
    pub(crate) id: u64,
    pub(crate) peer: String,
    ws: HttpWebSocket,
    /// Frames queued for the socket, in order.
    out: Vec<Bytes>,
    /// Their size in bytes.
    out_bytes: usize,
    /// How long a write may wait for the client to read.
    write_timeout: Duration,
    /// When the client last sent a frame (the idle timeout counts from it).
    last_seen: Instant,
    /// Pushes held back while a long answer streams (catch-up, full sync).
    held: Option<VecDeque<Outbound>>,
    /// The newest sequence this session already has: the `latest_sequence` it was told at
    /// authentication, or how far its catch-up reached. A push at or below it is a
    /// duplicate — its change was committed (and so read by the catch-up) before the
    /// write path got to deliver it — and is dropped.
    pushed_through: u64,
}

impl Connection {
    pub(crate) fn new(ws: HttpWebSocket, id: u64, peer: String, write_timeout: Duration) -> Self {
        Self {
            id,
            peer,
            ws,
            out: Vec::new(),
            out_bytes: 0,
            write_timeout,
            last_seen: Instant::now(),
            held: None,
            pushed_through: 0,
        }
    }

    /// The next frame from the client; `None` once the socket is closed or failed.
    pub(crate) async fn next_frame(&mut self) -> Option<Frame> {
        let frame = self.ws.next().await;
        if frame.is_some() {
            self.last_seen = Instant::now();
        }
        frame
    }

    /// Lets yawc send the close frame it queued when a read failed (a frame over the
    /// hard limit, a protocol error): it goes out only on the next poll, and without
    /// this the client would see no close code at all.
    pub(crate) async fn drain_failed_read(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.next()).await;
    }

    /// How long the client has been silent.
    pub(crate) fn silent_for(&self) -> Duration {
        self.last_seen.elapsed()
    }

    /// Sends a WebSocket ping now.
    pub(crate) async fn ping(&mut self) -> Result<(), Ending> {
        match within(self.write_timeout, self.ws.send(Frame::ping(Bytes::new()))).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(Ending::Gone),
            None => Err(Ending::TooSlow),
        }
    }

    /// Queues a message for the client.
    pub(crate) fn send(&mut self, message: &ServerMessage, request_id: Option<RequestId>) {
        self.send_frame(encode(message, request_id));
    }

    /// Queues an encoded frame.
    pub(crate) fn send_frame(&mut self, frame: Bytes) {
        self.out_bytes += frame.len();
        self.out.push(frame);
    }

    /// Whether so much output is queued that it should be written out before the
    /// session does more: memory then stays bounded by what one answer needs, whatever
    /// a batch asks for.
    pub(crate) fn must_flush(&self) -> bool {
        self.out_bytes > FLUSH_AT_BYTES
    }

    /// Whether nothing is queued for the client.
    pub(crate) fn nothing_queued(&self) -> bool {
        self.out.is_empty()
    }

    /// Sets the position the session's live pushes start after.
    pub(crate) fn pushed_through(&mut self, sequence: u64) {
        self.pushed_through = self.pushed_through.max(sequence);
    }

    /// Queues an item of the session's queue: a duplicate push is dropped, and while a
    /// long answer streams, pushes wait behind it.
    pub(crate) fn deliver(&mut self, outbound: Outbound) -> Result<(), Ending> {
        if outbound.access.is_some() {
            // What the session may read changed here: what follows waits until the
            // session has sent the documents it may now read (then `release`).
            self.hold();
            return Ok(());
        }
        if !outbound.completes_write && outbound.sequence.is_some_and(|s| s <= self.pushed_through) {
            return Ok(());
        }
        match self.held.as_mut() {
            Some(held) if held.len() >= MAX_HELD => Err(Ending::TooSlow),
            Some(held) => {
                held.push_back(outbound);
                Ok(())
            }
            None => {
                self.send_frame(outbound.frame);
                Ok(())
            }
        }
    }

    /// Starts holding pushes back (they queue in order until [`Connection::release`]).
    pub(crate) fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(VecDeque::new());
        }
    }

    /// Lets held pushes through, dropping those at or below `sent` (already sent).
    pub(crate) fn release(&mut self, sent: u64) {
        self.pushed_through(sent);
        if let Some(held) = self.held.take() {
            for outbound in held {
                if outbound.completes_write || outbound.sequence.is_none_or(|s| s > sent) {
                    // Not holding any more, and nothing held repeats what was sent: queued
                    // as is (the dedup above already passed it once).
                    self.send_frame(outbound.frame);
                }
            }
        }
    }

    /// Writes the queued output to the socket. A client that reads nothing for the
    /// write timeout is too slow: the session ends (and resumes later from its cursor)
    /// rather than wait on it forever.
    pub(crate) async fn flush(&mut self) -> Result<(), Ending> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write_timeout = self.write_timeout;
        within(write_timeout, self.write_out()).await.unwrap_or(Err(Ending::TooSlow))
    }

    async fn write_out(&mut self) -> Result<(), Ending> {
        self.out_bytes = 0;
        for frame in self.out.drain(..) {
            if self.ws.feed(Frame::text(frame)).await.is_err() {
                return Err(Ending::Gone);
            }
        }
        self.ws.flush().await.map_err(|_| Ending::Gone)
    }

    /// Writes what is queued and closes the connection with the ending's close code.
    pub(crate) async fn close(&mut self, ending: &Ending) {
        let (code, reason) = ending.close_frame();
        if code == 0 {
            return;
        }
        // A client too slow to read gets two seconds, not the write timeout, to take
        // what is queued and the close frame.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.write_out().await;
            let _ = self.ws.send(Frame::close(CloseCode::from(code), reason)).await;
            let _ = self.ws.close().await;
        })
        .await;
    }
}

/// Runs `work` for at most `limit`; `None` when it took longer. Most socket writes finish
/// at once, so `work` is polled once first and the timer is armed only for one that has
/// to wait, in a box: a timer held inline would take its room in every connection's
/// future, idle or not.
async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    let mut work = std::pin::pin!(work);
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        return Some(done);
    }
    Box::pin(tokio::time::timeout(limit, work)).await.ok()
}
