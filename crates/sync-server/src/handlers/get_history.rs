//! `get_history`: a document's change events, newest first, for paging backwards.

use sync_core::ErrorCode;
use sync_core::protocol::{GetHistory, History, RequestId, ServerMessage};
use sync_store::Store;

use crate::session::{Ending, Session};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Answers with `history`.
pub(super) async fn handle(
    session: &mut Session,
    message: GetHistory,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.read_barrier().await?;
    let user = session.user().user_id.clone();
    let owned = match session.state.store.load_documents(vec![message.document_id.clone()]).await {
        Ok(docs) => docs.iter().any(|d| d.user_id == user),
        Err(e) => {
            super::storage_failed(session, e, request_id);
            return Ok(());
        }
    };
    if !owned {
        session.send_error(ErrorCode::DocumentNotFound, format!("no document {:?}", message.document_id), request_id);
        return Ok(());
    }
    let limit = message.limit.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, MAX_LIMIT);
    match session.state.store.history(message.document_id.clone(), message.before_revision, limit).await {
        Ok(events) => {
            session.send(ServerMessage::History(History { document_id: message.document_id, events }), request_id)
        }
        Err(e) => super::storage_failed(session, e, request_id),
    }
    Ok(())
}
