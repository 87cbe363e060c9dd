//! The background connection: connect, authenticate, catch up from the stored cursor,
//! push the outbox, apply what the server sends; on failure, reconnect with capped
//! exponential backoff and jitter.
//!
//! Guarantees:
//! - remote changes are applied in sequence order, each exactly once (the catch-up pages
//!   and the live pushes that arrive meanwhile are merged by sequence), and the cursor is
//!   stored in the same local transaction as the change it covers;
//! - at most one change per document is in flight, sent with a `client_change_id` and
//!   `request_id` equal to it; documents are pipelined, and after a reconnect the
//!   in-flight change is sent again under the same id, so the server applies it once;
//! - a refused change is rolled back locally and reported, never retried forever.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use sync_core::patch::parse_patch;
use sync_core::protocol::{
    Authenticate, Changes, ClientEnvelope, ClientMessage, CreateDocument, Credentials, DeleteDocument, DocumentPatch,
    GetChangesSince, GetDocument, NewDocument, RequestId, ServerEnvelope, ServerMessage, UpdateDocument,
    decode_server_frame,
};
use sync_core::replica::{Outcome, Outgoing, PendingChange, RemoteChange, Replica};
use sync_core::{ChangeEvent, ChangeKind, ErrorCode};
use tokio::net::TcpStream;
use yawc::{Frame, MaybeTlsStream, OpCode, Options, WebSocket};

use crate::config::Auth;
use crate::error::{Result, SyncError};
use crate::events::{EventType, SyncEvent};
use crate::local::{self, DocRow};
use crate::shared::Shared;

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Why a connected session ended.
enum Ended {
    /// The engine is stopping (or the outbox was pushed during shutdown).
    Stopped,
    /// The connection failed; reconnect.
    Lost(String),
}

/// Runs until the engine stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let config = shared.config();
    let mut backoff = config.backoff_initial;
    let mut attempt: u64 = 0;
    let grace_deadline = || tokio::time::Instant::now() + config.shutdown_grace;
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        if shared.is_stopped() {
            break;
        }
        if shared.is_flushing() {
            let deadline = *flush_deadline.get_or_insert_with(grace_deadline);
            if tokio::time::Instant::now() >= deadline || shared.pending_count().unwrap_or(0) == 0 {
                break;
            }
        }
        attempt += 1;
        let mut event = SyncEvent::new(EventType::ConnectionAttempted);
        event.numeric_data = attempt;
        shared.emit(event);
        let connecting = connect(&shared);
        let result = match flush_deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, connecting)
                .await
                .unwrap_or_else(|_| Err(SyncError::Timeout("shutdown grace period ended while connecting".into()))),
            None => tokio::select! {
                r = connecting => r,
                () = shared.stopped() => break,
            },
        };
        match result {
            Ok(socket) => {
                attempt = 0;
                backoff = config.backoff_initial;
                shared.connection_up();
                shared.emit(SyncEvent::new(EventType::ConnectionSucceeded));
                let ended = Session::new(Arc::clone(&shared), socket).run().await;
                shared.connection_down();
                match ended {
                    Ended::Stopped => break,
                    Ended::Lost(why) => {
                        let mut event = SyncEvent::new(EventType::ConnectionLost);
                        event.error = Some(why);
                        shared.emit(event);
                    }
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, attempt, "connection attempt failed");
                if matches!(err, SyncError::Server { .. }) {
                    let mut event = SyncEvent::new(EventType::SyncError);
                    event.error = Some(err.to_string());
                    shared.emit(event);
                }
            }
        }
        if shared.is_flushing() {
            // Shutting down: retry at once within the grace period, no backoff.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Capped exponential backoff with jitter (50–100% of the delay); `sync_now` or
        // shutdown cut it short.
        let delay = backoff.mul_f64(0.5 + 0.5 * jitter());
        backoff = (backoff * 2).min(config.backoff_max);
        if shared.take_sync_now() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.woken(), if true => {
                // This wake-up already cuts the delay short, whether `sync_now` asked for it or not.
                shared.take_sync_now();
            }
            () = shared.stopped() => break,
            () = shared.flushing(), if flush_deadline.is_none() => {}
        }
    }
    shared.connection_down();
}

fn jitter() -> f64 {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    f64::from(byte[0]) / 255.0
}

/// Connects and authenticates.
async fn connect(shared: &Shared) -> Result<Socket> {
    let config = shared.config();
    let url = config.server_url.parse().map_err(|e| SyncError::Config(format!("invalid server URL: {e}")))?;
    // Server messages can be large (a 1 MiB document, a page of changes up to the server's
    // page budget, 4 MiB by default): accept up to 64 MiB rather than yawc's 1 MiB.
    let options = Options::default().with_low_latency_compression().with_no_delay().with_limits(64 << 20, 64 << 20);
    let mut socket = tokio::time::timeout(Duration::from_secs(10), WebSocket::connect(url).with_options(options))
        .await
        .map_err(|_| SyncError::Connection("connecting timed out".into()))?
        .map_err(|e| SyncError::Connection(format!("cannot connect to {}: {e}", config.server_url)))?;
    let credentials = match &config.auth {
        Auth::ApiKey { key, secret } => {
            let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
            let signature = sync_core::auth::sign(secret, timestamp, &config.user, key, b"");
            Credentials::Hmac { email: config.user.clone(), api_key: key.clone(), signature, timestamp }
        }
        Auth::Token(token) => Credentials::Bearer { user_id: config.user.clone(), auth_token: token.clone() },
        Auth::Jwt(token) => Credentials::Jwt { token: token.clone() },
    };
    let message = ClientMessage::Authenticate(Authenticate {
        credentials,
        client_id: Some(shared.client_id().to_owned()),
        last_sequence: None,
    });
    send(&mut socket, &[ClientEnvelope::new(message)]).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), next_messages(&mut socket))
        .await
        .map_err(|_| SyncError::Connection("no answer to authenticate".into()))??;
    match reply.into_iter().next().map(|e| e.message) {
        Some(ServerMessage::AuthSuccess(_)) => Ok(socket),
        Some(ServerMessage::AuthError(e)) => Err(SyncError::Server {
            code: ErrorCode::InvalidAuth,
            message: format!("authentication failed: {}", e.reason),
        }),
        other => Err(SyncError::Connection(format!("unexpected answer to authenticate: {other:?}"))),
    }
}

async fn send(socket: &mut Socket, messages: &[ClientEnvelope]) -> Result<()> {
    for message in messages {
        socket
            .feed(Frame::text(message.to_json()))
            .await
            .map_err(|e| SyncError::Connection(format!("sending failed: {e}")))?;
    }
    socket.flush().await.map_err(|e| SyncError::Connection(format!("sending failed: {e}")))
}

/// The messages of the next text frame.
async fn next_messages(socket: &mut Socket) -> Result<Vec<ServerEnvelope>> {
    let frame = next_text_frame(socket).await?;
    decode_text(frame_text(&frame)?)
}

/// The next text frame (other data frames are skipped; a close frame is an error).
async fn next_text_frame(socket: &mut Socket) -> Result<Frame> {
    loop {
        let frame =
            socket.next().await.ok_or_else(|| SyncError::Connection("the server closed the connection".into()))?;
        match frame.opcode() {
            OpCode::Text => return Ok(frame),
            OpCode::Close => {
                let reason = frame.close_reason().ok().flatten().unwrap_or_default().to_owned();
                let code = frame.close_code().map(u16::from).unwrap_or(1005);
                return Err(SyncError::Connection(format!("the server closed the connection ({code} {reason})")));
            }
            _ => continue,
        }
    }
}

/// A text frame's payload as text. Checked once here so that JSON parsing can skip
/// checking every string again.
fn frame_text(frame: &Frame) -> Result<&str> {
    std::str::from_utf8(frame.payload()).map_err(|_| SyncError::Serialization("server sent invalid UTF-8".into()))
}

/// The messages of a text frame.
fn decode_text(text: &str) -> Result<Vec<ServerEnvelope>> {
    decode_server_frame(text).map_err(|e| SyncError::Serialization(format!("server message: {e}")))
}

/// A page of the change log, with the parts of each event that catch-up uses.
struct Page {
    events: Vec<PageEvent>,
    latest_sequence: u64,
    has_more: bool,
}

/// The parts of a change event (PROTOCOL.md §5) that a replica applies. The others
/// (`reverse_patch`, which for a delete is the whole old content, `created_at`, …) are
/// skipped while parsing instead of being built and dropped.
#[derive(Deserialize)]
struct PageEvent {
    sequence: u64,
    document_id: String,
    #[serde(default)]
    collection: String,
    event_type: ChangeKind,
    #[serde(default)]
    forward_patch: Option<Value>,
    sync_revision: u64,
    #[serde(default)]
    client_change_id: Option<String>,
}

impl From<ChangeEvent> for PageEvent {
    fn from(e: ChangeEvent) -> Self {
        Self {
            sequence: e.sequence,
            document_id: e.document_id,
            collection: e.collection,
            event_type: e.event_type,
            forward_patch: e.forward_patch,
            sync_revision: e.sync_revision,
            client_change_id: e.client_change_id,
        }
    }
}

impl From<Changes> for Page {
    fn from(c: Changes) -> Self {
        Self {
            events: c.events.into_iter().map(PageEvent::from).collect(),
            latest_sequence: c.latest_sequence,
            has_more: c.has_more,
        }
    }
}

/// A frame holding exactly one message, read as a `changes` page. Every field is
/// optional so that any single message parses; `Page::decode` checks the shape.
#[derive(Deserialize)]
struct PageFrame {
    #[serde(rename = "type")]
    kind: String,
    request_id: Option<RequestId>,
    events: Option<Vec<PageEvent>>,
    latest_sequence: Option<u64>,
    has_more: Option<bool>,
}

impl Page {
    /// Reads a frame that is the `changes` answer to `request_id` in one pass, straight
    /// into the events (the general decoder builds a JSON tree of the whole frame first,
    /// then the messages from it: three copies of every page). `None` for anything else
    /// (another message, a batch, an unexpected shape), which the general decoder then
    /// handles, errors included.
    fn decode(text: &str, request_id: &RequestId) -> Option<Page> {
        let frame: PageFrame = serde_json::from_str(text).ok()?;
        if frame.kind != "changes" || frame.request_id.as_ref() != Some(request_id) {
            return None;
        }
        Some(Page { events: frame.events?, latest_sequence: frame.latest_sequence?, has_more: frame.has_more? })
    }
}

/// One connected session.
struct Session {
    shared: Arc<Shared>,
    socket: Socket,
    outbox: Vec<ClientEnvelope>,
    /// Documents whose state was asked for again after a gap.
    resyncing: HashSet<String>,
    requests: u64,
    since_ack: u64,
}

impl Session {
    fn new(shared: Arc<Shared>, socket: Socket) -> Self {
        Self { shared, socket, outbox: Vec::new(), resyncing: HashSet::new(), requests: 0, since_ack: 0 }
    }

    async fn run(mut self) -> Ended {
        self.shared.emit(SyncEvent::new(EventType::SyncStarted));
        let synced = match self.catch_up().await {
            Ok(n) => n,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        self.shared.caught_up();
        let mut event = SyncEvent::new(EventType::SyncCompleted);
        event.numeric_data = synced;
        self.shared.emit(event);
        self.ack_cursor();
        if let Err(e) = self.queue_outbox(true) {
            return Ended::Lost(e.to_string());
        }
        let mut ping = tokio::time::interval(Duration::from_secs(20));
        ping.tick().await;
        loop {
            if let Err(e) = self.flush().await {
                return Ended::Lost(e.to_string());
            }
            if self.shared.is_flushing() && self.shared.pending_count().unwrap_or(0) == 0 {
                let _ = self.socket.send(Frame::close(yawc::close::CloseCode::Normal, "client shutting down")).await;
                return Ended::Stopped;
            }
            tokio::select! {
                frame = next_messages(&mut self.socket) => match frame {
                    Ok(messages) => {
                        for message in messages {
                            if let Err(e) = self.on_message(message) {
                                tracing::warn!(error = %e, "applying a server message failed");
                                let mut event = SyncEvent::new(EventType::SyncError);
                                event.error = Some(e.to_string());
                                self.shared.emit(event);
                            }
                        }
                    }
                    Err(e) => return Ended::Lost(e.to_string()),
                },
                () = self.shared.woken() => {
                    // Connected, `sync_now` has nothing to cut short.
                    self.shared.take_sync_now();
                    if let Err(e) = self.queue_outbox(false) {
                        return Ended::Lost(e.to_string());
                    }
                }
                _ = ping.tick() => self.outbox.push(ClientEnvelope::new(ClientMessage::Ping)),
                () = self.shared.stopped() => return Ended::Stopped,
                () = self.shared.flushing(), if !self.shared.is_flushing() => {}
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let messages = std::mem::take(&mut self.outbox);
        send(&mut self.socket, &messages).await
    }

    fn request_id(&mut self, prefix: &str) -> String {
        self.requests += 1;
        format!("{prefix}-{}", self.requests)
    }

    /// Pages through `get_changes_since` from the cursor; live pushes that arrive meanwhile
    /// are held and applied after, those already covered skipped. Returns how many
    /// documents changed.
    ///
    /// The next page is asked for as soon as a page has arrived, before it is stored, so
    /// the server reads and encodes one page while this replica stores the previous one.
    /// At most one request is ahead, so at most two pages are in memory; the cursor still
    /// moves only with the page it covers.
    async fn catch_up(&mut self) -> Result<u64> {
        let mut held: Vec<ServerEnvelope> = Vec::new();
        let mut documents: HashSet<String> = HashSet::new();
        let mut request_id = self.request_page(self.shared.cursor()).await?;
        loop {
            let page = self.receive_page(&request_id, &mut held).await?;
            let next = if page.has_more {
                let after = page.latest_sequence.max(self.shared.cursor());
                Some(self.request_page(after).await?)
            } else {
                None
            };
            for event in &page.events {
                documents.insert(event.document_id.clone());
            }
            self.apply_events(page.events, page.latest_sequence)?;
            match next {
                Some(id) => request_id = id,
                None => break,
            }
        }
        for envelope in held {
            self.on_message(envelope)?;
        }
        Ok(documents.len() as u64)
    }

    /// Sends `get_changes_since` for the changes after `after`; returns its request id.
    async fn request_page(&mut self, after: u64) -> Result<RequestId> {
        let request_id = RequestId::Str(self.request_id("catch-up"));
        let message = ClientMessage::GetChangesSince(GetChangesSince {
            last_sequence: after,
            limit: Some(self.shared.config().catch_up_page),
            collections: None,
        });
        send(&mut self.socket, &[ClientEnvelope::with_id(message, request_id.clone())]).await?;
        Ok(request_id)
    }

    /// Waits for the `changes` answering `request_id`; other messages are held.
    async fn receive_page(&mut self, request_id: &RequestId, held: &mut Vec<ServerEnvelope>) -> Result<Page> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), next_text_frame(&mut self.socket))
                .await
                .map_err(|_| SyncError::Connection("no answer to get_changes_since".into()))??;
            let text = frame_text(&frame)?;
            if let Some(page) = Page::decode(text, request_id) {
                return Ok(page);
            }
            let mut page = None;
            for envelope in decode_text(text)? {
                match envelope.message {
                    ServerMessage::Changes(changes) if envelope.request_id.as_ref() == Some(request_id) => {
                        page = Some(Page::from(changes));
                    }
                    ServerMessage::Error(e) if envelope.request_id.as_ref() == Some(request_id) => {
                        return Err(SyncError::Server { code: e.code, message: e.message });
                    }
                    _ => held.push(envelope),
                }
            }
            if let Some(page) = page {
                return Ok(page);
            }
        }
    }

    /// Applies a page of change events and moves the cursor, in one local transaction.
    fn apply_events(&mut self, events: Vec<PageEvent>, reached: u64) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut emitted = Vec::with_capacity(events.len());
        let mut refetch = Vec::new();
        let cursor = shared.cursor();
        shared.transaction_moving_cursor(|tx| {
            let mut rows = local::Rows::new(tx)?;
            for event in events.into_iter().filter(|e| e.sequence > cursor) {
                let PageEvent {
                    document_id,
                    collection,
                    event_type,
                    forward_patch,
                    sync_revision,
                    client_change_id,
                    ..
                } = event;
                let change = match remote_change(event_type, forward_patch) {
                    Ok(change) => change,
                    Err(e) => {
                        tracing::warn!(error = %e, document = %document_id, "unreadable change; refetching");
                        refetch.push(document_id);
                        continue;
                    }
                };
                if let Some(applied) = apply_remote(
                    &mut rows,
                    &shared,
                    &document_id,
                    &collection,
                    sync_revision,
                    change,
                    client_change_id.as_deref(),
                )? {
                    if applied.outcome.resync_needed {
                        refetch.push(document_id);
                    }
                    emitted.push(applied);
                }
            }
            Ok(((), Some(reached.max(cursor))))
        })?;
        for applied in emitted {
            self.report_applied(applied);
        }
        for id in refetch {
            self.refetch(&id);
        }
        Ok(())
    }

    fn refetch(&mut self, id: &str) {
        if self.resyncing.insert(id.to_owned()) {
            let request_id = self.request_id("resync");
            let message = ClientMessage::GetDocument(GetDocument { document_id: id.to_owned(), at_revision: None });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id)));
        }
    }

    /// Emits the events of a change `apply_remote` applied.
    fn report_applied(&self, applied: Applied) {
        let Applied { row, outcome, kind, own, saved_view } = applied;
        self.report_with(&row, &outcome, kind, own, saved_view);
    }

    /// Emits the events of an applied change.
    fn report(&self, row: &DocRow, outcome: &Outcome, kind: ChangeKind, own: bool) {
        self.report_with(row, outcome, kind, own, None);
    }

    /// Emits the events of an applied change; `saved_view` is the view's JSON when the
    /// row was just saved (else it is built from the row).
    fn report_with(&self, row: &DocRow, outcome: &Outcome, kind: ChangeKind, own: bool, saved_view: Option<String>) {
        if !outcome.duplicate && !own {
            let event_type = match kind {
                ChangeKind::Create => EventType::DocumentCreated,
                ChangeKind::Delete => EventType::DocumentDeleted,
                _ => EventType::DocumentUpdated,
            };
            if event_type == EventType::DocumentDeleted {
                let mut event = SyncEvent::new(event_type);
                event.document_id = Some(row.id.clone());
                event.boolean_data = true;
                self.shared.emit(event);
            } else {
                let content = saved_view.or_else(|| row.replica.view().as_ref().map(Value::to_string));
                self.shared.emit_document_with(event_type, row, true, content);
            }
        }
        if !outcome.conflicts.is_empty() {
            let mut event = SyncEvent::new(EventType::ConflictDetected);
            event.document_id = Some(row.id.clone());
            event.title = row.replica.view().as_ref().and_then(sync_core::model::title_of);
            event.content = serde_json::to_string(&outcome.conflicts).ok();
            event.numeric_data = outcome.conflicts.len() as u64;
            event.boolean_data =
                outcome.conflicts.iter().all(|c| c.resolution == sync_core::transform::ConflictResolution::Applied);
            self.shared.emit(event);
        }
        for rejected in &outcome.rejected {
            let mut event = SyncEvent::new(EventType::SyncError);
            event.document_id = Some(row.id.clone());
            event.error = Some(format!("change refused ({}): {}", rejected.code, rejected.message));
            self.shared.emit(event);
        }
        if !outcome.rejected.is_empty() {
            // The view rolled back: tell the application what it shows now.
            self.shared.emit_document(EventType::DocumentUpdated, row, false);
        }
    }

    fn on_message(&mut self, envelope: ServerEnvelope) -> Result<()> {
        let request_id = match &envelope.request_id {
            Some(RequestId::Str(s)) => Some(s.clone()),
            _ => None,
        };
        match envelope.message {
            ServerMessage::DocumentCreated(m) => {
                let content = m.document.content.clone();
                self.apply_push(
                    &m.document.id,
                    &m.document.collection,
                    m.document.sync_revision,
                    RemoteChange::Create(content),
                    m.client_change_id.as_deref(),
                    m.sequence,
                )
            }
            ServerMessage::DocumentUpdated(m) => self.apply_push(
                &m.patch.document_id,
                "",
                m.patch.sync_revision,
                RemoteChange::Update(m.patch.patch),
                m.client_change_id.as_deref(),
                m.sequence,
            ),
            ServerMessage::DocumentDeleted(m) => self.apply_push(
                &m.document_id,
                "",
                m.sync_revision,
                RemoteChange::Delete,
                m.client_change_id.as_deref(),
                m.sequence,
            ),
            ServerMessage::DocumentCreatedResponse(r) => {
                let answer = r.success.then(|| (r.sync_revision.unwrap_or(1), None, r.document.map(|d| d.content)));
                self.on_answer(&r.document_id, request_id, answer, r.error, r.sequence, Vec::new())
            }
            ServerMessage::DocumentUpdatedResponse(r) => {
                let answer = r.success.then(|| (r.sync_revision.unwrap_or(0), r.applied_patch, None));
                self.on_answer(&r.document_id, request_id, answer, r.error, r.sequence, r.conflicts)
            }
            ServerMessage::DocumentDeletedResponse(r) => {
                let answer = r.success.then(|| (r.sync_revision.unwrap_or(0), None, None));
                self.on_answer(&r.document_id, request_id, answer, r.error, r.sequence, Vec::new())
            }
            ServerMessage::ConflictDetected(c) => {
                let mut event = SyncEvent::new(EventType::ConflictDetected);
                event.document_id = Some(c.document_id.clone());
                event.title = c.server_document.as_ref().and_then(|d| d.title.clone());
                event.content = serde_json::to_string(&c.conflicts).ok();
                event.numeric_data = c.conflicts.len() as u64;
                // Pushed to the other sessions: another replica's change won here.
                event.boolean_data = false;
                self.mark_conflict(&c.document_id)?;
                self.shared.emit(event);
                Ok(())
            }
            ServerMessage::SyncDocument(s) => {
                if self.resyncing.remove(&s.document.id) {
                    self.reset(s.document)
                } else {
                    Ok(())
                }
            }
            ServerMessage::Error(e) => {
                let mut event = SyncEvent::new(EventType::SyncError);
                event.error = Some(format!("{}: {}", e.code, e.message));
                self.shared.emit(event);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Applies one live push.
    fn apply_push(
        &mut self,
        id: &str,
        collection: &str,
        revision: u64,
        change: RemoteChange,
        change_id: Option<&str>,
        sequence: u64,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        if sequence <= shared.cursor() {
            return Ok(());
        }
        let applied = shared.transaction_moving_cursor(|tx| {
            let applied =
                apply_remote(&mut local::Rows::new(tx)?, &shared, id, collection, revision, change, change_id)?;
            Ok((applied, Some(sequence)))
        })?;
        if let Some(applied) = applied {
            let resync_needed = applied.outcome.resync_needed;
            self.report_applied(applied);
            if resync_needed {
                self.refetch(id);
            }
        }
        self.count_for_ack();
        // Our own change coming back on a new connection counts as its answer: the next
        // change of that document can go.
        self.queue_document(id, false)?;
        Ok(())
    }

    /// Handles the answer to one of our changes.
    fn on_answer(
        &mut self,
        id: &str,
        request_id: Option<String>,
        answer: Option<(u64, Option<sync_core::Patch>, Option<Value>)>,
        error: Option<sync_core::ErrorBody>,
        sequence: Option<u64>,
        conflicts: Vec<sync_core::Conflict>,
    ) -> Result<()> {
        let Some(change_id) = request_id else { return Ok(()) };
        let shared = Arc::clone(&self.shared);
        let result = shared.transaction_moving_cursor(|tx| {
            let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? else { return Ok((None, None)) };
            let mut outcome = match (&answer, &error) {
                (Some((revision, applied, content)), _) => {
                    row.replica.on_ack(&change_id, *revision, applied.clone(), content.clone())
                }
                (None, Some(error)) => row.replica.on_reject(&change_id, error.code, &error.message),
                (None, None) => row.replica.on_reject(&change_id, ErrorCode::ServerError, "refused without a reason"),
            };
            outcome.conflicts.extend(conflicts.iter().cloned());
            row.conflict = !outcome.conflicts.is_empty();
            local::save(tx, &row)?;
            // Answers come in sequence order with the pushes, so the cursor moves too.
            let cursor = sequence.filter(|&sequence| sequence > shared.cursor());
            Ok((Some((row, outcome)), cursor))
        })?;
        if let Some((row, outcome)) = result {
            if outcome.resync_needed {
                self.refetch(id);
            }
            self.report(&row, &outcome, ChangeKind::Update, true);
        }
        self.shared.notify_changed();
        self.queue_document(id, false)
    }

    fn mark_conflict(&mut self, id: &str) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        shared.transaction(|tx| {
            if let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? {
                row.conflict = true;
                local::save(tx, &row)?;
            }
            Ok(())
        })
    }

    /// Replaces a document's confirmed state after a gap.
    fn reset(&mut self, document: sync_core::Document) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let applied = shared.transaction(|tx| {
            let mut row = local::load(tx, &document.id, &|c| shared.policy(c))?.unwrap_or_else(|| DocRow {
                id: document.id.clone(),
                collection: document.collection.clone(),
                replica: Replica::default(),
                conflict: false,
            });
            let outcome = row.replica.reset(document.content.clone(), document.sync_revision, document.is_deleted());
            local::save(tx, &row)?;
            Ok((row, outcome))
        })?;
        self.report(&applied.0, &applied.1, ChangeKind::Update, false);
        Ok(())
    }

    /// Queues the next change of every document with pending changes. After a reconnect
    /// (`resend`), in-flight changes are sent again under their ids.
    fn queue_outbox(&mut self, resend: bool) -> Result<()> {
        let ids = self.shared.pending_ids()?;
        for id in ids {
            self.queue_document(&id, resend)?;
        }
        Ok(())
    }

    /// Queues the next change of one document, if it has one and none is in flight.
    fn queue_document(&mut self, id: &str, resend: bool) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let outgoing = shared.transaction(|tx| {
            let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? else { return Ok(None) };
            let outgoing = match (resend, row.replica.in_flight().is_some()) {
                (true, true) => row.replica.resend(),
                (_, false) => row.replica.next_to_send(),
                (false, true) => None,
            };
            if outgoing.is_some() {
                local::save(tx, &row)?;
            }
            Ok(outgoing.map(|o| (o, row.collection.clone())))
        })?;
        if let Some((outgoing, collection)) = outgoing {
            self.outbox.push(envelope(id, &collection, outgoing));
        }
        Ok(())
    }

    fn count_for_ack(&mut self) {
        self.since_ack += 1;
        if self.since_ack >= 100 {
            self.ack_cursor();
        }
    }

    /// Tells the server how far this replica has stored the log.
    fn ack_cursor(&mut self) {
        self.since_ack = 0;
        let up_to_sequence = self.shared.cursor();
        if up_to_sequence > 0 {
            let message = ClientMessage::AckChanges(sync_core::protocol::AckChanges { up_to_sequence });
            self.outbox.push(ClientEnvelope::new(message));
        }
    }
}

/// The protocol message of an outgoing change; its `request_id` is its change id.
fn envelope(id: &str, collection: &str, outgoing: Outgoing) -> ClientEnvelope {
    let change_id = outgoing.change_id.clone();
    let message = match outgoing.change {
        PendingChange::Create { content } => ClientMessage::CreateDocument(CreateDocument {
            document: NewDocument {
                id: Some(id.to_owned()),
                collection: Some(collection.to_owned()),
                title: None,
                content,
            },
            client_change_id: Some(change_id.clone()),
        }),
        PendingChange::Update { patch, base_revision } => ClientMessage::UpdateDocument(UpdateDocument {
            patch: DocumentPatch {
                document_id: id.to_owned(),
                patch,
                base_revision,
                content_hash: None,
                client_change_id: Some(change_id.clone()),
            },
        }),
        PendingChange::Delete { base_revision } => ClientMessage::DeleteDocument(DeleteDocument {
            document_id: id.to_owned(),
            base_revision,
            client_change_id: Some(change_id.clone()),
        }),
    };
    ClientEnvelope::with_id(message, RequestId::Str(change_id))
}

/// The change an event describes.
fn remote_change(kind: ChangeKind, forward_patch: Option<Value>) -> Result<RemoteChange> {
    Ok(match kind {
        ChangeKind::Create => RemoteChange::Create(forward_patch.unwrap_or(Value::Null)),
        ChangeKind::Delete => RemoteChange::Delete,
        _ => RemoteChange::Update(
            parse_patch(forward_patch.unwrap_or(Value::Array(Vec::new())))
                .map_err(|e| SyncError::Serialization(format!("stored patch: {e}")))?,
        ),
    })
}

/// A remote change applied to its local row.
struct Applied {
    row: DocRow,
    outcome: Outcome,
    kind: ChangeKind,
    /// This replica's own change coming back.
    own: bool,
    /// The view's JSON as saved, when the row was saved (for the event).
    saved_view: Option<String>,
}

/// Applies a committed remote change to the local row, inside the transaction `rows`
/// works in.
fn apply_remote(
    rows: &mut local::Rows<'_>,
    shared: &Shared,
    id: &str,
    collection: &str,
    revision: u64,
    mut change: RemoteChange,
    change_id: Option<&str>,
) -> Result<Option<Applied>> {
    let kind = match &change {
        RemoteChange::Create(_) => ChangeKind::Create,
        RemoteChange::Update(_) => ChangeKind::Update,
        RemoteChange::Delete => ChangeKind::Delete,
    };
    let stored_collection = || if collection.is_empty() { "default".into() } else { collection.to_owned() };
    if revision == 1
        && let RemoteChange::Create(content) = change
    {
        // Most creates a catch-up brings are of documents never seen here, which become
        // the server's content at revision 1: stored with one insert-if-absent instead of
        // a load and a save.
        let mut row = DocRow {
            id: id.to_owned(),
            collection: stored_collection(),
            replica: Replica::from_server(content, 1, false, shared.policy(collection)),
            conflict: false,
        };
        if let Some(saved_view) = rows.insert_new(&row)? {
            return Ok(Some(Applied { row, outcome: Outcome::default(), kind, own: false, saved_view }));
        }
        // The row exists (our own create coming back, or a duplicate): apply it there.
        change = RemoteChange::Create(row.replica.confirmed.take().map_or(Value::Null, |c| c.content));
    }
    let existing = rows.load(id, &|c| shared.policy(c))?;
    let mut row = match existing {
        Some(row) => row,
        None => match &change {
            RemoteChange::Create(_) => DocRow {
                id: id.to_owned(),
                collection: stored_collection(),
                replica: Replica { policy: shared.policy(collection), ..Replica::default() },
                conflict: false,
            },
            // An update or delete of a document never seen here: fetch it whole.
            _ => {
                let row = DocRow {
                    id: id.to_owned(),
                    collection: stored_collection(),
                    replica: Replica::default(),
                    conflict: false,
                };
                let outcome = Outcome { resync_needed: true, ..Outcome::default() };
                return Ok(Some(Applied { row, outcome, kind, own: false, saved_view: None }));
            }
        },
    };
    let own = change_id.is_some_and(|c| row.replica.in_flight().is_some_and(|p| p.change_id == c));
    let outcome = row.replica.on_remote(revision, change, change_id);
    if !outcome.conflicts.is_empty() {
        row.conflict = true;
    } else if !own && !outcome.duplicate && row.replica.pending.is_empty() {
        row.conflict = false;
    }
    let saved_view = if !outcome.duplicate && !outcome.resync_needed { rows.save(&row)? } else { None };
    Ok(Some(Applied { row, outcome, kind, own, saved_view }))
}
