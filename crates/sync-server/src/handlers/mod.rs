//! One handler per client message type (PROTOCOL.md §4), like mini-redis `cmd/`.
//!
//! Writes go to the write path and are answered through the session queue; reads wait
//! for the session's earlier writes (so they see them) and answer directly.

mod ack_changes;
mod create_document;
mod delete_document;
mod get_changes_since;
mod get_document;
mod get_history;
mod ping;
mod request_full_sync;
mod request_sync;
mod topics;
mod update_document;

use sync_core::ErrorCode;
use sync_core::protocol::{ClientMessage, RequestId};

use crate::session::{Ending, Session};

/// Handles one message of an authenticated session.
pub async fn dispatch(
    session: &mut Session,
    message: ClientMessage,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    match message {
        ClientMessage::Authenticate(_) => {
            session.send_error(ErrorCode::InvalidMessage, "this connection is already authenticated", request_id);
            Ok(())
        }
        ClientMessage::CreateDocument(m) => create_document::handle(session, m, request_id).await,
        ClientMessage::UpdateDocument(m) => update_document::handle(session, m, request_id).await,
        ClientMessage::DeleteDocument(m) => delete_document::handle(session, m, request_id).await,
        ClientMessage::GetChangesSince(m) => get_changes_since::handle(session, m, request_id).await,
        ClientMessage::AckChanges(m) => ack_changes::handle(session, m, request_id).await,
        ClientMessage::RequestSync(m) => request_sync::handle(session, m, request_id).await,
        ClientMessage::RequestFullSync(m) => request_full_sync::handle(session, m, request_id).await,
        ClientMessage::GetDocument(m) => get_document::handle(session, m, request_id).await,
        ClientMessage::GetHistory(m) => get_history::handle(session, m, request_id).await,
        ClientMessage::Subscribe(_) => topics::not_available(session, "subscribe", request_id),
        ClientMessage::Unsubscribe(_) => topics::not_available(session, "unsubscribe", request_id),
        ClientMessage::Publish(_) => topics::not_available(session, "publish", request_id),
        ClientMessage::Ping => ping::handle(session, request_id),
    }
}

/// Maps a storage failure to the `server_error` the client sees.
fn storage_failed(session: &mut Session, error: sync_store::StoreError, request_id: Option<RequestId>) {
    tracing::error!(session = session.id, error = %error, "storage read failed");
    session.send_error(ErrorCode::ServerError, "storage is unavailable; retry later", request_id);
}
