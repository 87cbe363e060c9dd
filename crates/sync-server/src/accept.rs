//! The accept loop: every TCP connection is served by hyper's HTTP/1 server (with
//! upgrades, for the WebSocket) and counted as *unauthenticated* until its WebSocket
//! session authenticates.
//!
//! Guarantees:
//! - a connection that does not send a complete request head within
//!   `limits.header_read_timeout_secs` — counted from its start, or from the end of its
//!   previous request on a kept-alive connection — is closed: a socket that sends part of
//!   a request, or nothing, holds nothing for long (a WebSocket that does not authenticate
//!   has `limits.auth_timeout_secs`, in the session);
//! - at most `limits.max_unauthenticated` connections are open that are not authenticated
//!   sessions; a new connection beyond that closes the *oldest* of them, so that a flood
//!   of idle sockets cannot run the process out of file descriptors nor lock out a fresh
//!   client or health check (the newest connections are the ones kept);
//! - when the process is out of file descriptors anyway, the oldest unauthenticated
//!   connection is closed to make room, rather than leaving `accept` failing;
//! - at shutdown the loop stops accepting, idle HTTP connections close at once and busy
//!   ones after their request (each within the header read timeout at worst);
//! - with TLS configured, every connection is a TLS one (`tls.rs`), and its handshake
//!   counts against the header read timeout too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::tls::Tls;

/// Largest request head (request line and headers) read. hyper's default is 400 KiB per
/// connection, which the unauthenticated connections alone could multiply into hundreds
/// of MiB; a larger head is answered 431. The longest legitimate head is an upgrade
/// carrying a JWT, a few KiB.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// How long connections still serving a request may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` and serves each with `router` until `shutdown` is
/// cancelled; returns once the connections it serves have ended (upgraded WebSocket
/// sessions live on in their own tasks).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) {
    let waiting = Arc::new(Waiting::new(limits.max_unauthenticated));
    let head_timeout = Duration::from_secs(limits.header_read_timeout_secs.max(1));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                on_accept_error(&e, &waiting).await;
                continue;
            }
        };
        let place = waiting.admit();
        let connection =
            Connection { http: http.clone(), peer, router: router.clone(), place, shutdown: shutdown.clone() };
        match &tls {
            None => connections.spawn(connection.serve(tcp)),
            Some(tls) => connections.spawn(connection.serve_tls(tcp, Arc::clone(tls), head_timeout)),
        };
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await.is_err() {
        tracing::warn!("some HTTP connections did not finish within {SHUTDOWN_GRACE:?}");
    }
}

/// One accepted connection, before it is served.
struct Connection {
    http: http1::Builder,
    peer: SocketAddr,
    router: Router,
    place: Unauthenticated,
    shutdown: CancellationToken,
}

impl Connection {
    /// Serves a plain TCP connection.
    async fn serve(self, tcp: TcpStream) {
        set_nodelay(&tcp);
        self.serve_io(tcp).await;
    }

    /// Runs the TLS handshake (within `head_timeout`), then serves the connection.
    async fn serve_tls(self, tcp: TcpStream, tls: Arc<Tls>, head_timeout: Duration) {
        set_nodelay(&tcp);
        let handshake = tokio::time::timeout(head_timeout, tls.accept(tcp));
        let stream = tokio::select! {
            done = handshake => done,
            () = self.place.evicted() => return,
            () = self.shutdown.cancelled() => return,
        };
        match stream {
            Ok(Ok(Some(stream))) => self.serve_io(stream).await,
            Ok(Ok(None)) => tracing::debug!(peer = %self.peer, "plain HTTP on the TLS port: refused"),
            Ok(Err(e)) => tracing::debug!(error = %e, peer = %self.peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Serves one connection until it ends, is upgraded, or is evicted as the oldest
    /// unauthenticated one.
    async fn serve_io<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { http, peer, router, place, shutdown } = self;
        // Every request carries the peer's address (for `ConnectInfo`) and the
        // connection's place, which an upgraded session holds until it authenticates.
        let request_place = place.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(request_place.clone());
            tower_service::Service::call(&mut router.clone(), request)
        });
        let connection = http.serve_connection(TokioIo::new(io), service).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            // Dropping the connection closes its socket.
            () = place.evicted() => {
                tracing::debug!(%peer, "closed the oldest unauthenticated connection to make room");
                return;
            }
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
        }
    }
}

/// Answers and pushes are small frames written as they come: with Nagle's algorithm a
/// frame written while an earlier one is unacknowledged waits for the peer's delayed ACK
/// (40 ms on Linux), which a session receiving pushes between its answers hits.
fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// What to do when `accept` fails. A connection that failed before it was accepted
/// concerns no one else; anything else is the process's own limit (most often out of
/// file descriptors): the oldest unauthenticated connection is closed to make room, and
/// the loop pauses briefly rather than spin.
async fn on_accept_error(error: &std::io::Error, waiting: &Waiting) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    let evicted = waiting.evict_oldest();
    tracing::warn!(error = %error, evicted, "cannot accept a connection");
    let pause = if evicted { Duration::from_millis(10) } else { Duration::from_secs(1) };
    tokio::time::sleep(pause).await;
}

/// The connections that are not yet authenticated sessions, oldest first, each with the
/// token that closes it.
struct Waiting {
    max: usize,
    open: Mutex<BTreeMap<u64, CancellationToken>>,
    next: AtomicU64,
}

impl Waiting {
    fn new(max: usize) -> Self {
        Self { max: max.max(1), open: Mutex::new(BTreeMap::new()), next: AtomicU64::new(0) }
    }

    /// A place for a new connection; at the cap, the oldest connection is closed first.
    fn admit(self: &Arc<Self>) -> Unauthenticated {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        while open.len() >= self.max {
            if let Some((_, oldest)) = open.pop_first() {
                oldest.cancel();
            }
        }
        open.insert(id, close.clone());
        drop(open);
        Unauthenticated(Arc::new(Place { waiting: Arc::clone(self), id, close }))
    }

    /// Closes the oldest unauthenticated connection; `false` when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.open.lock().unwrap_or_else(PoisonError::into_inner).pop_first();
        oldest.map(|(_, close)| close.cancel()).is_some()
    }

    fn leave(&self, id: u64) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }
}

/// A connection's place among the unauthenticated ones, shared by its HTTP connection
/// and, once upgraded, by its session until the session authenticates (or ends). The
/// place is freed when the last holder drops it.
#[derive(Clone)]
pub(crate) struct Unauthenticated(Arc<Place>);

impl Unauthenticated {
    /// Completes once the connection has been chosen to close, to make room for a newer one.
    pub(crate) async fn evicted(&self) {
        self.0.close.cancelled().await;
    }
}

struct Place {
    waiting: Arc<Waiting>,
    id: u64,
    close: CancellationToken,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.waiting.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_beyond_the_cap_closes_the_oldest() {
        let waiting = Arc::new(Waiting::new(2));
        let first = waiting.admit();
        let second = waiting.admit();
        let third = waiting.admit();
        assert!(first.0.close.is_cancelled());
        assert!(!second.0.close.is_cancelled() && !third.0.close.is_cancelled());
        // A connection that authenticates (drops its place) makes room without closing
        // anyone.
        drop(second);
        let fourth = waiting.admit();
        assert!(!third.0.close.is_cancelled() && !fourth.0.close.is_cancelled());
        assert!(waiting.evict_oldest());
        assert!(third.0.close.is_cancelled());
        drop((first, third, fourth));
        assert!(!waiting.evict_oldest(), "every place was freed");
    }
}
