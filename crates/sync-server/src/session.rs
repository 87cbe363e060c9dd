//! One WebSocket connection's life: waiting for authentication, then reading messages
//! and queued answers and pushes until the connection ends, then closing it.
//!
//! Guarantees:
//! - nothing but `authenticate` is processed before authentication; anything else gets
//!   `auth_error` and the connection closes (4001), as does 10 s of silence; a
//!   connection still unauthenticated when newer ones push it out of
//!   `limits.max_unauthenticated` closes with 1013;
//! - every recoverable error is answered and the connection stays open;
//! - messages of one session are processed in order: a read that follows writes waits
//!   until those writes are answered;
//! - at shutdown, changes already handed to the write path are answered before the
//!   1001 close, so none is committed without being acknowledged.
//!
//! The connection ([`Connection`]) exists from the start; the authenticated state
//! ([`Authenticated`]) only from authentication on, created by `handlers::authenticate`.
//! Changes go to the write path through one conversion (`WriteOp::try_from`), which the
//! rate limit's refusals reuse; every other message goes to its handler.

use std::sync::Arc;
use std::time::Duration;

use sync_core::protocol::{
    AuthError, ClientEnvelope, ClientMessage, DecodeError, RequestId, ServerMessage, decode_client_frame,
    top_level_request_id,
};
use sync_core::{ErrorBody, ErrorCode};
use tracing::Instrument as _;
use yawc::{Frame, HttpWebSocket, OpCode};

use crate::accept::Unauthenticated;
use crate::auth::AuthFailure;
use crate::authenticated::{Authenticated, PreAuth};
use crate::connection::{Connection, Ending};
use crate::handlers::{self, Ctx, authenticate};
use crate::hub::Outbound;
use crate::monitor::activity;
use crate::state::AppState;
use crate::writer::WriteOp;

/// Serves an upgraded connection until it ends. `pre_auth` is the outcome of credentials
/// carried by the upgrade request, if it had any.
///
/// Everything awaited here but the idle wait of [`run`] is boxed: a task's future is as
/// large as its largest state, and every idle connection holds one, so the futures of
/// authentication, message handling, catch-up and closing are allocated only while they
/// run. It is an `async` block, not an `async fn`, because an `async fn` keeps a copy of
/// its arguments beside the body's, which would hold the connection twice.
pub(crate) fn serve(
    ws: HttpWebSocket,
    state: Arc<AppState>,
    peer: String,
    pre_auth: Option<Box<Result<PreAuth, AuthFailure>>>,
    unauthenticated: Unauthenticated,
) -> impl Future<Output = ()> + Send {
    let id = state.session_id();
    // The session's span: the logs of everything it does carry its id (and, once known,
    // its user).
    let span = tracing::debug_span!("session", id, user = tracing::field::Empty);
    activity!("CONNECT", session = id, "session {id} from {peer}");
    // Built here and moved in whole: the socket moved in as its own upvar and then into
    // a connection inside the future would take its room twice.
    let mut conn = Connection::new(ws, id, peer, Duration::from_secs(state.config.limits.write_timeout_secs.max(1)));
    async move {
        let mut session = match Box::pin(start(&state, &mut conn, pre_auth, unauthenticated)).await {
            Ok(session) => session,
            Err((mut session, ending)) => return Box::pin(finish(&mut conn, session.as_mut(), ending)).await,
        };
        let ending = run(&state, &mut conn, &mut session).await;
        Box::pin(finish(&mut conn, Some(&mut session), ending)).await;
    }
    .instrument(span)
}

/// Authenticates — with the upgrade request's credentials when it had any, else with the
/// first message — then handles the messages that followed `authenticate` in its frame
/// and writes out what the session has to say so far. A failure after authentication
/// comes back with the authenticated state, so closing can settle its writes.
///
/// Until authentication the connection holds its place among the unauthenticated ones
/// (`unauthenticated`); once authenticated it gives the place up.
async fn start(
    state: &AppState,
    conn: &mut Connection,
    pre_auth: Option<Box<Result<PreAuth, AuthFailure>>>,
    unauthenticated: Unauthenticated,
) -> Result<Authenticated, (Option<Authenticated>, Ending)> {
    let (mut session, rest) = match pre_auth {
        Some(pre_auth) => (authenticate::upgrade(state, conn, *pre_auth).await.map_err(|e| (None, e))?, Vec::new()),
        None => await_authentication(state, conn, &unauthenticated).await.map_err(|e| (None, e))?,
    };
    drop(unauthenticated);
    let handled = match on_messages(state, conn, &mut session, rest).await {
        Ok(()) => conn.flush().await,
        Err(ending) => Err(ending),
    };
    match handled {
        Ok(()) => Ok(session),
        Err(ending) => Err((Some(session), ending)),
    }
}

/// What one frame from the client holds.
enum Read {
    /// The messages of a text frame (one, or a batch), each decoded or not.
    Messages(Vec<Result<ClientEnvelope, DecodeError>>),
    /// A frame that could not be decoded at all, with its `request_id` when that could
    /// still be read.
    Refused(ErrorCode, String, Option<RequestId>),
    /// The client closed.
    Close,
    /// A ping or pong (yawc answers pings itself).
    Control,
}

fn read(state: &AppState, frame: Frame) -> Read {
    match frame.opcode() {
        OpCode::Text => {
            let payload = frame.into_payload();
            let limit = state.config.limits.max_frame_bytes;
            if payload.len() > limit {
                let message = format!("frame is {} bytes; the limit is {limit}", payload.len());
                // The refusal answers the request when its id can be read: one pass
                // over the text, no parse.
                let request_id = std::str::from_utf8(&payload).ok().and_then(top_level_request_id);
                return Read::Refused(ErrorCode::PayloadTooLarge, message, request_id);
            }
            let Ok(text) = std::str::from_utf8(&payload) else {
                return Read::Refused(ErrorCode::InvalidMessage, "text frame is not valid UTF-8".into(), None);
            };
            match decode_client_frame(text, &state.decode_limits) {
                Ok(messages) => Read::Messages(messages),
                Err(err) => Read::Refused(err.code, err.message, err.request_id),
            }
        }
        OpCode::Binary => {
            Read::Refused(ErrorCode::InvalidMessage, "binary frames are not supported; send JSON text".into(), None)
        }
        OpCode::Close => Read::Close,
        _ => Read::Control,
    }
}

/// Reads frames until `authenticate` succeeds; returns the authenticated state and the
/// messages that followed `authenticate` in its frame.
async fn await_authentication(
    state: &AppState,
    conn: &mut Connection,
    unauthenticated: &Unauthenticated,
) -> Result<(Authenticated, Vec<Result<ClientEnvelope, DecodeError>>), Ending> {
    let timeout = tokio::time::sleep(Duration::from_secs(state.config.limits.auth_timeout_secs));
    tokio::pin!(timeout);
    loop {
        let frame = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return Err(Ending::ShuttingDown),
            () = &mut timeout => return Err(Ending::Unauthenticated("authentication timeout")),
            () = unauthenticated.evicted() => return Err(Ending::Crowded),
            frame = conn.next_frame() => frame,
        };
        let Some(frame) = frame else {
            conn.drain_failed_read().await;
            return Err(Ending::Gone);
        };
        let mut messages = match read(state, frame) {
            Read::Messages(messages) => messages.into_iter(),
            Read::Refused(..) => return Err(authenticate::refuse(conn, AuthFailure::Malformed)),
            Read::Close => return Err(Ending::Gone),
            Read::Control => continue,
        };
        // An empty batch: nothing to answer yet.
        let Some(first) = messages.next() else { continue };
        let Ok(ClientEnvelope { message, request_id }) = first else {
            return Err(authenticate::refuse(conn, AuthFailure::Malformed));
        };
        log_message(conn, &message);
        let ClientMessage::Authenticate(message) = message else {
            let reply = AuthError { reason: "authentication required".into() };
            conn.send(&ServerMessage::AuthError(reply), request_id);
            return Err(Ending::Unauthenticated("message before authentication"));
        };
        let session = authenticate::handle(state, conn, message, request_id).await?;
        return Ok((session, messages.collect()));
    }
}

/// Reads frames and queued answers and pushes until the session ends.
async fn run(state: &AppState, conn: &mut Connection, session: &mut Authenticated) -> Ending {
    let limits = &state.config.limits;
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
    let mut ping = tokio::time::interval(Duration::from_secs(limits.ping_interval_secs.max(1)));
    ping.tick().await;
    let kill = session.kill_switch();
    loop {
        let event = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return Ending::ShuttingDown,
            () = kill.cancelled() => return Ending::TooSlow,
            outbound = session.recv() => Event::Outbound(outbound),
            frame = conn.next_frame() => Event::Frame(frame),
            _ = ping.tick() => Event::Ping,
        };
        let result = match event {
            Event::Frame(None) => {
                conn.drain_failed_read().await;
                return Ending::Gone;
            }
            // Boxed: handling a message (catch-up, reads, writes) needs a large future,
            // for the length of one message only.
            Event::Frame(Some(frame)) => Box::pin(on_frame(state, conn, session, frame)).await,
            Event::Outbound(Some(outbound)) => conn.deliver(outbound).and_then(|()| session.drain_into(conn)),
            Event::Outbound(None) => Ok(()),
            Event::Ping if conn.silent_for() > idle_timeout => return Ending::Idle,
            Event::Ping => conn.ping().await,
        };
        if let Err(ending) = result {
            return ending;
        }
        if session.has_access_change() {
            // Boxed like a message: it reads and sends pages of documents.
            let mut ctx = Ctx { state, session: &mut *session, conn: &mut *conn };
            if let Err(ending) = Box::pin(handlers::act_on_change(&mut ctx, 0)).await {
                return ending;
            }
        }
        if let Err(ending) = conn.flush().await {
            return ending;
        }
    }
}

enum Event {
    Frame(Option<Frame>),
    Outbound(Option<Outbound>),
    Ping,
}

async fn on_frame(
    state: &AppState,
    conn: &mut Connection,
    session: &mut Authenticated,
    frame: Frame,
) -> Result<(), Ending> {
    match read(state, frame) {
        Read::Messages(messages) => on_messages(state, conn, session, messages).await,
        Read::Refused(code, message, request_id) => {
            activity!("ERROR", session = conn.id, "session {}: {message}", conn.id);
            conn.send(&ServerMessage::error(code, message), request_id);
            Ok(())
        }
        Read::Close => Err(Ending::Gone),
        Read::Control => Ok(()),
    }
}

async fn on_messages(
    state: &AppState,
    conn: &mut Connection,
    session: &mut Authenticated,
    messages: Vec<Result<ClientEnvelope, DecodeError>>,
) -> Result<(), Ending> {
    for message in messages {
        match message {
            Ok(envelope) => on_message(state, conn, session, envelope).await?,
            Err(err) => {
                activity!("ERROR", session = conn.id, "session {}: {err}", conn.id);
                conn.send(&ServerMessage::error(err.code, err.message), err.request_id);
            }
        }
        // A change of the rules met while answering holds everything after it back
        // (answers included): act on it between messages, so a long batch never piles
        // its answers up behind it.
        if session.has_access_change() {
            Box::pin(handlers::act_on_change(&mut Ctx { state, session: &mut *session, conn: &mut *conn }, 0)).await?;
        }
        // The answers of a batch go out as they are made, not all at its end.
        if conn.must_flush() {
            conn.flush().await?;
        }
    }
    Ok(())
}

async fn on_message(
    state: &AppState,
    conn: &mut Connection,
    session: &mut Authenticated,
    envelope: ClientEnvelope,
) -> Result<(), Ending> {
    let ClientEnvelope { message, request_id } = envelope;
    log_message(conn, &message);
    let limited = !matches!(message, ClientMessage::Ping) && !state.limiter.allow(&session.identity.user_id);
    let too_many = || ErrorBody::new(ErrorCode::RateLimitExceeded, "too many messages; slow down");
    match WriteOp::try_from(message) {
        Ok(op) if limited => conn.send(&op.refused(too_many()), request_id),
        Ok(op) => {
            session.make_room(state, conn).await?;
            session.submit(state, op, request_id).await?;
        }
        Err(_) if limited => {
            let body = too_many();
            activity!("ERROR", session = conn.id, "session {}: {}: {}", conn.id, body.code, body.message);
            conn.send(&ServerMessage::error(body.code, body.message), request_id);
        }
        Err(message) => handlers::dispatch(Ctx { state, session, conn }, message, request_id).await?,
    }
    Ok(())
}

/// Closes the connection the way `ending` says.
async fn finish(conn: &mut Connection, session: Option<&mut Authenticated>, ending: Ending) {
    if let Ending::Internal(why) = &ending {
        tracing::error!(session = conn.id, peer = %conn.peer, "{why}");
    }
    if let (Ending::ShuttingDown, Some(session)) = (&ending, session) {
        session.settle_at_shutdown(conn).await;
    }
    conn.close(&ending).await;
    activity!("CLOSE", session = conn.id, "session {}: {ending:?}", conn.id);
}

/// Logs an incoming message by its type and document, never its credentials.
fn log_message(conn: &Connection, message: &ClientMessage) {
    activity!("IN", session = conn.id, "session {} {} {}", conn.id, message.type_name(), describe(message));
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
        // Topics by name, never their data.
        ClientMessage::Subscribe(s) => match s.since_offset {
            Some(offset) => format!("{} since offset {offset}", s.topic),
            None => s.topic.clone(),
        },
        ClientMessage::Unsubscribe(u) => u.topic.clone(),
        ClientMessage::Publish(p) => format!("{}{}", p.topic, if p.echo { " (echo)" } else { "" }),
        _ => String::new(),
    }
}
