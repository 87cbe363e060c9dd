//! One handler per client message that is not a change (PROTOCOL.md §4), like mini-redis
//! `cmd/`; changes go to the write path straight from the session, through
//! `WriteOp::try_from`. `authenticate` is here too: it is what creates the
//! [`Authenticated`] state every other handler works with.
//!
//! Reads wait for the session's earlier writes to be answered (so they see them) and
//! answer directly, in order with everything else the session sends.

mod access;
mod ack_changes;
pub(crate) mod authenticate;
mod get_changes_since;
mod get_document;
mod get_history;
mod request_full_sync;
mod request_sync;
mod topics;

use std::sync::Arc;

use sync_core::protocol::{Changes, ClientMessage, RequestId, ServerMessage};
use sync_core::{Document, ErrorCode};
use sync_store::{ChangePage, ReadScope};

use crate::authenticated::Authenticated;
use crate::connection::{Connection, Ending};
use crate::monitor::activity;
use crate::state::AppState;

pub(crate) use access::act_on_change;

/// What a handler works with: the server's shared state, the authenticated session, and
/// the connection its answers go out on.
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) session: &'a mut Authenticated,
    pub(crate) conn: &'a mut Connection,
}

/// Handles one message of an authenticated session that is not a change.
pub(crate) async fn dispatch(
    mut ctx: Ctx<'_>,
    message: ClientMessage,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    let ctx = &mut ctx;
    match message {
        ClientMessage::Authenticate(_) => {
            ctx.send_error(ErrorCode::InvalidMessage, "this connection is already authenticated", request_id);
            Ok(())
        }
        ClientMessage::GetChangesSince(m) => get_changes_since::handle(ctx, m, request_id).await,
        ClientMessage::AckChanges(m) => ack_changes::handle(ctx, m, request_id).await,
        ClientMessage::RequestSync(m) => request_sync::handle(ctx, m, request_id).await,
        ClientMessage::RequestFullSync(m) => request_full_sync::handle(ctx, m, request_id).await,
        ClientMessage::GetDocument(m) => get_document::handle(ctx, m, request_id).await,
        ClientMessage::GetHistory(m) => get_history::handle(ctx, m, request_id).await,
        ClientMessage::Subscribe(m) => topics::subscribe(ctx, m, request_id),
        ClientMessage::Unsubscribe(m) => topics::unsubscribe(ctx, m, request_id),
        ClientMessage::Publish(m) => topics::publish(ctx, m, request_id),
        ClientMessage::Connect(m) => topics::connect(ctx, m, request_id),
        ClientMessage::Ping => {
            ctx.send(&ServerMessage::Pong, request_id);
            Ok(())
        }
        // Changes never get here: the session hands them to the write path.
        ClientMessage::CreateDocument(_) | ClientMessage::UpdateDocument(_) | ClientMessage::DeleteDocument(_) => {
            ctx.send_error(ErrorCode::ServerError, "a change reached a read handler", request_id);
            Ok(())
        }
    }
}

impl Ctx<'_> {
    /// Queues a reply.
    fn send(&mut self, message: &ServerMessage, request_id: Option<RequestId>) {
        self.conn.send(message, request_id);
    }

    /// Queues an `error` reply.
    fn send_error(&mut self, code: ErrorCode, message: impl Into<String>, request_id: Option<RequestId>) {
        let message = message.into();
        activity!("ERROR", session = self.conn.id, "session {}: {code}: {message}", self.conn.id);
        self.conn.send(&ServerMessage::error(code, message), request_id);
    }

    /// Answers a storage failure with the `server_error` the client sees.
    fn storage_failed(&mut self, error: sync_store::StoreError, request_id: Option<RequestId>) {
        tracing::error!(session = self.conn.id, error = %error, "storage read failed");
        self.send_error(ErrorCode::ServerError, "storage is unavailable; retry later", request_id);
    }

    /// What this session may read.
    fn scope(&self) -> ReadScope {
        ReadScope { view: Arc::clone(&self.session.view) }
    }

    /// Whether this session may read `doc`.
    fn may_read(&self, doc: &Document) -> bool {
        self.session.view.may_read(&doc.user_id, &doc.collection, &doc.id)
    }

    /// Waits until the session's earlier writes are answered, so a read sees them, and
    /// acts on a change of the access rules met meanwhile, so the read goes by them.
    async fn settle(&mut self) -> Result<(), Ending> {
        self.session.settle(self.state, self.conn).await?;
        access::act_on_change(self, 0).await
    }

    /// Writes what is queued, then takes in what the session's queue already holds (held
    /// back while an answer streams): between the pages of a long answer.
    async fn flush_page(&mut self) -> Result<(), Ending> {
        self.conn.flush().await?;
        self.session.drain_into(self.conn)
    }

    /// Queues a `changes` message, cut short (with `has_more`) when it would exceed the
    /// page byte budget, so no client meets a message larger than it accepts; one event
    /// is always sent. Returns the position reached and whether more follow.
    fn send_changes(&mut self, page: ChangePage, request_id: Option<RequestId>) -> (u64, bool) {
        let budget = self.state.config.limits.max_page_bytes.max(1);
        let (mut events, mut reached, mut has_more) = (page.events, page.reached, page.has_more);
        loop {
            let message = ServerMessage::Changes(Changes { events, latest_sequence: reached, has_more });
            let frame = crate::wire::encode(&message, request_id.clone());
            let ServerMessage::Changes(Changes { events: back, .. }) = message else { unreachable!("built above") };
            events = back;
            if frame.len() <= budget || events.len() <= 1 {
                self.conn.send_frame(frame);
                return (reached, has_more);
            }
            // Keep the first half: everything up to the last kept event was sent.
            events.truncate(events.len() / 2);
            reached = events.last().map_or(reached, |e| e.sequence);
            has_more = true;
        }
    }
}
