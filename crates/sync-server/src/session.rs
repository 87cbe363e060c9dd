//! One WebSocket connection: authentication, the resume catch-up, reading messages and
//! dispatching them, and writing replies and pushes in order.
//!
//! Guarantees:
//! - nothing but `authenticate` is processed before authentication; anything else gets
//!   `auth_error` and the connection closes (4001), as does 10 s of silence;
//! - every recoverable error is answered and the connection stays open;
//! - a resumed session receives every readable change after its `last_sequence` exactly
//!   once, in order: first as `changes` pages, then live pushes, with pushes that arrive
//!   during the catch-up held back and deduplicated by sequence (also pushes delivered
//!   after the catch-up for changes it already returned); without `last_sequence`, live
//!   pushes start after the `latest_sequence` of `auth_success`;
//! - messages of one session are processed in order: a read that follows writes waits
//!   until those writes are answered;
//! - at shutdown, changes already handed to the write path are answered before the
//!   1001 close, so none is committed without being acknowledged.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sync_core::ErrorCode;
use sync_core::protocol::{
    AuthError, AuthSuccess, Changes, ClientEnvelope, ClientMessage, Credentials, PROTOCOL_VERSION, RequestId,
    ServerMessage, decode_client_frame,
};
use sync_store::{ReadScope, Store};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{Frame, HttpWebSocket, OpCode};

use crate::app::AppState;
use crate::auth::{AuthFailure, Principal};
use crate::handlers;
use crate::hub::{Outbound, Registration, SessionLink};
use crate::queue;
use crate::writer::{WriteOp, WriteRequest, encode, refused_for};

/// Why a session ended, and the close frame it gets.
#[derive(Debug)]
pub enum Ending {
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
    /// A frame over the hard limit (1009) — yawc closes those itself.
    Internal(String),
}

/// The authenticated identity of a session.
#[derive(Clone, Debug)]
pub struct Authed {
    /// The user.
    pub user_id: String,
    /// The replica.
    pub client_id: String,
    /// Whether admin routes are open to it.
    pub is_admin: bool,
}

/// Credentials that came with the upgrade request (`Authorization: Bearer` or `?token=`).
#[derive(Debug)]
pub struct PreAuth {
    /// Who.
    pub principal: Principal,
    /// `?client_id=`, if given.
    pub client_id: Option<String>,
    /// `?last_sequence=`, if given.
    pub last_sequence: Option<u64>,
}

/// A connection's state.
pub struct Session {
    /// Session id (also in `auth_success`).
    pub id: u64,
    /// Shared server state.
    pub state: Arc<AppState>,
    ws: HttpWebSocket,
    peer: String,
    /// Who, once authenticated.
    pub authed: Option<Authed>,
    out: Vec<Bytes>,
    rx: Option<queue::Receiver<Outbound>>,
    link: Option<SessionLink>,
    _registration: Option<Registration>,
    pending_writes: usize,
    last_seen: Instant,
    kill: CancellationToken,
    /// Pushes held back while a long answer streams (catch-up, full sync).
    held: Option<VecDeque<Outbound>>,
    /// The newest sequence this session already has: the `latest_sequence` it was told at
    /// authentication, or how far its catch-up reached. A push at or below it is a
    /// duplicate — its change was committed (and so read by the catch-up) before the
    /// write path got to deliver it — and is dropped.
    pushed_through: u64,
}

/// Most pushes held back during one catch-up or full sync before the session gives up.
const MAX_HELD: usize = 200_000;

impl Session {
    /// A session for an upgraded connection; [`Session::serve`] runs it.
    pub fn new(ws: HttpWebSocket, state: Arc<AppState>, peer: String) -> Self {
        let id = state.session_id();
        state.monitor.connected(id, &peer);
        Session {
            id,
            state,
            ws,
            peer,
            authed: None,
            out: Vec::new(),
            rx: None,
            link: None,
            _registration: None,
            pending_writes: 0,
            last_seen: Instant::now(),
            kill: CancellationToken::new(),
            held: None,
            pushed_through: 0,
        }
    }

    /// Serves the connection until it ends. `pre_auth` is the outcome of credentials
    /// carried by the upgrade request, if it had any.
    ///
    /// Everything awaited here but the idle wait of [`Session::run`] is boxed: a task's
    /// future is as large as its largest state, and every idle connection holds one, so
    /// the futures of message handling, catch-up and closing are allocated only while
    /// they run. It is an `async` block, not an `async fn`, because an `async fn` keeps
    /// a copy of its arguments beside the body's, which would hold the session twice.
    #[expect(clippy::manual_async_fn, reason = "an `async fn` would hold the session twice, as said above")]
    pub fn serve(mut self, pre_auth: Option<Result<PreAuth, AuthFailure>>) -> impl Future<Output = ()> + Send {
        async move {
            let started = match pre_auth {
                Some(pre_auth) => Box::pin(self.start_pre_authenticated(pre_auth)).await,
                None => Ok(()),
            };
            let ending = match started {
                Ok(()) => self.run().await,
                Err(ending) => ending,
            };
            Box::pin(self.finish(ending)).await;
        }
    }

    /// Authenticates with the credentials of the upgrade request.
    async fn start_pre_authenticated(&mut self, pre_auth: Result<PreAuth, AuthFailure>) -> Result<(), Ending> {
        let pre = match pre_auth {
            Ok(pre) => pre,
            Err(failure) => {
                self.refuse_auth(failure).await?;
                return Err(Ending::Unauthenticated("authentication failed"));
            }
        };
        let authed = Authed {
            user_id: pre.principal.user_id,
            client_id: pre.client_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            is_admin: pre.principal.is_admin,
        };
        self.on_authenticated(authed, pre.last_sequence, "upgrade bearer", None).await?;
        // The client sends nothing first here: `auth_success` must go out now, not
        // after the client's first frame.
        self.flush().await
    }

    /// Reads frames and queued pushes until the session ends.
    async fn run(&mut self) -> Ending {
        let limits = &self.state.config.limits;
        // Boxed and dropped at authentication: a timer held inline would stay in the
        // future of every idle session.
        let mut auth_timer =
            self.authed.is_none().then(|| Box::pin(tokio::time::sleep(Duration::from_secs(limits.auth_timeout_secs))));
        let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
        let mut ping = tokio::time::interval(Duration::from_secs(limits.ping_interval_secs.max(1)));
        ping.tick().await;
        loop {
            if self.authed.is_some() {
                auth_timer = None;
            }
            let event = tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => return Ending::ShuttingDown,
                () = self.kill.cancelled() => return Ending::TooSlow,
                () = expire(&mut auth_timer) => return Ending::Unauthenticated("authentication timeout"),
                outbound = recv(&mut self.rx) => Event::Outbound(outbound),
                frame = self.ws.next() => Event::Frame(frame),
                _ = ping.tick() => Event::Ping,
            };
            let result = match event {
                Event::Frame(None) => {
                    // When a read fails (a frame over the hard limit, a protocol error),
                    // yawc queues its close frame (1009, 1002, …) and only sends it on the
                    // next poll: without this the client sees no close code at all.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.next()).await;
                    return Ending::Gone;
                }
                Event::Frame(Some(frame)) => {
                    self.last_seen = Instant::now();
                    // Boxed: handling a message (catch-up, reads, writes) needs a large
                    // future, for the length of one message only.
                    Box::pin(self.on_frame(frame)).await
                }
                Event::Outbound(Some(outbound)) => {
                    self.on_outbound(outbound);
                    self.drain_ready();
                    Ok(())
                }
                Event::Outbound(None) => Ok(()),
                Event::Ping => {
                    if self.last_seen.elapsed() > idle_timeout {
                        return Ending::Idle;
                    }
                    match self.ws.send(Frame::ping(Bytes::new())).await {
                        Ok(()) => Ok(()),
                        Err(_) => return Ending::Gone,
                    }
                }
            };
            if let Err(ending) = result {
                return ending;
            }
            if let Err(ending) = self.flush().await {
                return ending;
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<(), Ending> {
        match frame.opcode() {
            OpCode::Text => {
                let payload = frame.into_payload();
                if payload.len() > self.state.config.limits.max_frame_bytes {
                    let message = format!(
                        "frame is {} bytes; the limit is {}",
                        payload.len(),
                        self.state.config.limits.max_frame_bytes
                    );
                    return self.reject_frame(ErrorCode::PayloadTooLarge, message).await;
                }
                match std::str::from_utf8(&payload) {
                    Ok(text) => self.on_text(text).await,
                    Err(_) => {
                        self.reject_frame(ErrorCode::InvalidMessage, "text frame is not valid UTF-8".into()).await
                    }
                }
            }
            OpCode::Binary => {
                self.reject_frame(ErrorCode::InvalidMessage, "binary frames are not supported; send JSON text".into())
                    .await
            }
            OpCode::Close => Err(Ending::Gone),
            // Pings are answered by yawc; pongs only prove the client is alive.
            _ => Ok(()),
        }
    }

    /// Answers a frame that could not be decoded at all.
    async fn reject_frame(&mut self, code: ErrorCode, message: String) -> Result<(), Ending> {
        if self.authed.is_none() {
            return self.refuse_auth(AuthFailure::Malformed).await;
        }
        self.state.monitor.error(self.id, &message);
        self.send(ServerMessage::error(code, message), None);
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ending> {
        let messages = match decode_client_frame(text, &self.state.decode_limits) {
            Ok(messages) => messages,
            Err(err) => return self.reject_frame(err.code, err.message).await,
        };
        for message in messages {
            match message {
                Ok(envelope) => self.on_message(envelope).await?,
                Err(err) => {
                    if self.authed.is_none() {
                        return self.refuse_auth(AuthFailure::Malformed).await;
                    }
                    self.state.monitor.error(self.id, &err.to_string());
                    // A malformed change still gets a `*_response`-shaped error when its
                    // type is known, so clients can match it like any other answer.
                    self.send(ServerMessage::error(err.code, err.message), err.request_id);
                }
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, envelope: ClientEnvelope) -> Result<(), Ending> {
        let ClientEnvelope { message, request_id } = envelope;
        self.state.monitor.message_in(self.id, message.type_name(), &describe(&message));
        let Some(authed) = self.authed.clone() else {
            let ClientMessage::Authenticate(auth) = message else {
                self.send(ServerMessage::AuthError(AuthError { reason: "authentication required".into() }), request_id);
                return Err(Ending::Unauthenticated("message before authentication"));
            };
            let method = match &auth.credentials {
                Credentials::Hmac { .. } => "api key",
                Credentials::Bearer { .. } => "bearer token",
                Credentials::Jwt { .. } => "jwt",
            };
            return match self.state.auth.authenticate(&auth.credentials).await {
                Ok(principal) => {
                    let authed = Authed {
                        user_id: principal.user_id,
                        client_id: auth.client_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                        is_admin: principal.is_admin,
                    };
                    self.on_authenticated(authed, auth.last_sequence, method, request_id).await
                }
                Err(failure) => {
                    self.out
                        .push(encode(&ServerMessage::AuthError(AuthError { reason: failure.to_string() }), request_id));
                    self.refuse_auth(failure).await
                }
            };
        };
        if !matches!(message, ClientMessage::Ping) && !self.state.limiter.allow(&authed.user_id) {
            let body = sync_core::ErrorBody::new(ErrorCode::RateLimitExceeded, "too many messages; slow down");
            let reply = match message {
                ClientMessage::CreateDocument(c) => refused_for(&WriteOp::Create(c), body),
                ClientMessage::UpdateDocument(u) => refused_for(&WriteOp::Update(u.patch), body),
                ClientMessage::DeleteDocument(d) => refused_for(&WriteOp::Delete(d), body),
                _ => ServerMessage::error(body.code, body.message),
            };
            self.send(reply, request_id);
            return Ok(());
        }
        handlers::dispatch(self, message, request_id).await
    }

    /// Sends `auth_error` (if not queued yet) and ends the session.
    async fn refuse_auth(&mut self, failure: AuthFailure) -> Result<(), Ending> {
        self.state.monitor.auth_failed(self.id, &failure.to_string());
        if self.out.is_empty() {
            self.out.push(encode(&ServerMessage::AuthError(AuthError { reason: failure.to_string() }), None));
        }
        Err(Ending::Unauthenticated("authentication failed"))
    }

    /// Registers with the hub, answers `auth_success`, and catches up from `last_sequence`.
    async fn on_authenticated(
        &mut self,
        authed: Authed,
        last_sequence: Option<u64>,
        method: &str,
        request_id: Option<RequestId>,
    ) -> Result<(), Ending> {
        let (tx, rx) = queue::channel(self.state.config.limits.session_queue.max(16));
        let link = SessionLink { id: self.id, tx, kill: self.kill.clone() };
        let registration = self.state.hub.register(&authed.user_id, &authed.client_id, link.clone());
        // Read after registering: every change after this position reaches this session.
        let delivered = self.state.hub.delivered();
        self.rx = Some(rx);
        self.link = Some(link);
        self._registration = Some(registration);
        self.state.monitor.authenticated(self.id, &authed.user_id, &authed.client_id, method);
        self.send(
            ServerMessage::AuthSuccess(AuthSuccess {
                session_id: self.id.to_string(),
                client_id: authed.client_id.clone(),
                user_id: authed.user_id.clone(),
                protocol_version: PROTOCOL_VERSION,
                latest_sequence: delivered,
            }),
            request_id,
        );
        self.authed = Some(authed);
        match last_sequence {
            Some(after) => self.catch_up(after).await?,
            None => self.pushed_through = delivered,
        }
        Ok(())
    }

    /// Pushes every readable change after `after` as `changes` pages, then lets the
    /// held live pushes through (those not already sent).
    async fn catch_up(&mut self, mut after: u64) -> Result<(), Ending> {
        self.hold();
        let page_size = self.state.config.limits.max_page.clamp(1, 5000);
        loop {
            let page = self
                .state
                .store
                .changes_since(self.scope(), after, page_size, None)
                .await
                .map_err(|e| Ending::Internal(format!("catch-up read failed: {e}")))?;
            let (reached, has_more) = self.send_changes(page, None);
            after = after.max(reached);
            self.flush().await?;
            self.drain_ready();
            if !has_more {
                break;
            }
        }
        self.release(after);
        Ok(())
    }

    /// Starts holding pushes back (they queue in order until [`Session::release`]).
    pub fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(VecDeque::new());
        }
    }

    /// Lets held pushes through, dropping those at or below `sent` (already sent).
    pub fn release(&mut self, sent: u64) {
        self.pushed_through = self.pushed_through.max(sent);
        if let Some(held) = self.held.take() {
            for outbound in held {
                if outbound.completes_write || outbound.sequence.is_none_or(|s| s > sent) {
                    self.on_outbound(outbound);
                }
            }
        }
    }

    fn on_outbound(&mut self, outbound: Outbound) {
        if !outbound.completes_write && outbound.sequence.is_some_and(|s| s <= self.pushed_through) {
            return;
        }
        if let Some(held) = self.held.as_mut() {
            if held.len() >= MAX_HELD {
                self.kill.cancel();
                return;
            }
            held.push_back(outbound);
            return;
        }
        if outbound.completes_write {
            self.pending_writes = self.pending_writes.saturating_sub(1);
        }
        self.out.push(outbound.frame);
    }

    /// Moves whatever is already queued for this session into the output.
    pub fn drain_ready(&mut self) {
        for _ in 0..256 {
            let Some(rx) = self.rx.as_mut() else { return };
            match rx.try_recv() {
                Some(outbound) => self.on_outbound(outbound),
                None => return,
            }
        }
    }

    /// Writes the queued output to the socket.
    pub async fn flush(&mut self) -> Result<(), Ending> {
        if self.out.is_empty() {
            return Ok(());
        }
        for frame in self.out.drain(..) {
            if self.ws.feed(Frame::text(frame)).await.is_err() {
                return Err(Ending::Gone);
            }
        }
        self.ws.flush().await.map_err(|_| Ending::Gone)
    }

    /// Queues a `changes` message, cut short (with `has_more`) when it would exceed the
    /// page byte budget, so no client meets a message larger than it accepts; one event
    /// is always sent. Returns the position reached and whether more follow.
    pub fn send_changes(&mut self, page: sync_store::ChangePage, request_id: Option<RequestId>) -> (u64, bool) {
        let budget = self.state.config.limits.max_page_bytes.max(1);
        let (mut events, mut reached, mut has_more) = (page.events, page.reached, page.has_more);
        loop {
            let message = ServerMessage::Changes(Changes { events, latest_sequence: reached, has_more });
            let frame = encode(&message, request_id.clone());
            let ServerMessage::Changes(Changes { events: back, .. }) = message else { unreachable!("built above") };
            events = back;
            if frame.len() <= budget || events.len() <= 1 {
                self.out.push(frame);
                return (reached, has_more);
            }
            // Keep the first half: everything up to the last kept event was sent.
            events.truncate(events.len() / 2);
            reached = events.last().map_or(reached, |e| e.sequence);
            has_more = true;
        }
    }

    /// Queues a message for the client.
    pub fn send(&mut self, message: ServerMessage, request_id: Option<RequestId>) {
        if let ServerMessage::Error(e) = &message {
            self.state.monitor.error(self.id, &format!("{}: {}", e.code, e.message));
        }
        self.out.push(encode(&message, request_id));
    }

    /// Queues an `error` message.
    pub fn send_error(&mut self, code: ErrorCode, message: impl Into<String>, request_id: Option<RequestId>) {
        self.send(ServerMessage::error(code, message), request_id);
    }

    /// The authenticated identity (handlers run only after authentication).
    pub fn user(&self) -> &Authed {
        // Handlers are dispatched only for authenticated sessions.
        self.authed.as_ref().expect("handlers run after authentication")
    }

    /// What this session may read.
    pub fn scope(&self) -> ReadScope {
        ReadScope { user_id: self.user().user_id.clone() }
    }

    /// Hands a change to the write path; its answer arrives through the session queue.
    pub async fn submit(&mut self, op: WriteOp, request_id: Option<RequestId>) -> Result<(), Ending> {
        let (Some(link), Some(authed)) = (self.link.clone(), self.authed.clone()) else {
            return Err(Ending::Internal("write before authentication".into()));
        };
        let request =
            WriteRequest { op, user_id: authed.user_id, client_id: authed.client_id, reply_to: link, request_id };
        self.pending_writes += 1;
        if self.state.writes.send(request).await.is_err() {
            return Err(Ending::ShuttingDown);
        }
        Ok(())
    }

    /// Waits until this session's earlier writes are answered, so a read sees them.
    pub async fn read_barrier(&mut self) -> Result<(), Ending> {
        while self.pending_writes > 0 {
            let outbound = tokio::select! {
                biased;
                () = self.state.shutdown.cancelled() => return Err(Ending::ShuttingDown),
                () = self.kill.cancelled() => return Err(Ending::TooSlow),
                outbound = recv(&mut self.rx) => outbound,
            };
            match outbound {
                Some(outbound) => self.on_outbound(outbound),
                None => return Err(Ending::Gone),
            }
        }
        Ok(())
    }

    /// Waits (bounded) for the answers to this session's changes already handed to the
    /// write path. The write path keeps committing while sessions close, so without this
    /// a change sent just before shutdown could be committed and never acknowledged.
    async fn settle_writes(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.pending_writes > 0 {
            match tokio::time::timeout_at(deadline, recv(&mut self.rx)).await {
                Ok(Some(outbound)) => self.on_outbound(outbound),
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn finish(&mut self, ending: Ending) {
        let (code, reason): (u16, &str) = match &ending {
            Ending::Gone => (0, ""),
            Ending::ShuttingDown => (1001, "server shutting down"),
            Ending::Unauthenticated(why) => (4001, why),
            Ending::TooSlow => (1013, "too slow to keep up; reconnect and resume"),
            Ending::Idle => (1001, "idle timeout"),
            Ending::Internal(why) => {
                tracing::error!(session = self.id, peer = %self.peer, "{why}");
                (1011, "internal error")
            }
        };
        if matches!(ending, Ending::ShuttingDown) {
            self.settle_writes().await;
        }
        if code != 0 {
            let _ = self.flush().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = self.ws.send(Frame::close(CloseCode::from(code), reason)).await;
                let _ = self.ws.close().await;
            })
            .await;
        }
        self.state.monitor.disconnected(self.id, &format!("{ending:?}"));
    }
}

enum Event {
    Frame(Option<Frame>),
    Outbound(Option<Outbound>),
    Ping,
}

/// Waits for `timer`, or forever without one.
async fn expire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

/// Receives from the session queue, or waits forever before authentication.
async fn recv(rx: &mut Option<queue::Receiver<Outbound>>) -> Option<Outbound> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn describe(message: &ClientMessage) -> String {
    match message {
        ClientMessage::CreateDocument(c) => c.document.id.clone().unwrap_or_default(),
        ClientMessage::UpdateDocument(u) => {
            format!("{} base r{}", u.patch.document_id, u.patch.base_revision.map_or("-".into(), |r| r.to_string()))
        }
        ClientMessage::DeleteDocument(d) => d.document_id.clone(),
        ClientMessage::GetChangesSince(g) => format!("after #{}", g.last_sequence),
        ClientMessage::GetDocument(g) => g.document_id.clone(),
        _ => String::new(),
    }
}
