//! `get_history`: a document's change events, newest first, for paging backwards.

use sync_core::ErrorCode;
use sync_core::protocol::{GetHistory, History, RequestId, ServerMessage};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Answers with `history`.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: GetHistory,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    ctx.settle().await?;
    let readable = match ctx.state.store.load_documents(vec![message.document_id.clone()]).await {
        Ok(docs) => docs.iter().any(|d| ctx.may_read(d)),
        Err(e) => {
            ctx.storage_failed(e, request_id);
            return Ok(());
        }
    };
    if !readable {
        ctx.send_error(ErrorCode::DocumentNotFound, format!("no document {:?}", message.document_id), request_id);
        return Ok(());
    }
    let limit = message.limit.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, MAX_LIMIT);
    match ctx.state.store.history(message.document_id.clone(), message.before_revision, limit).await {
        Ok(events) => {
            ctx.send(&ServerMessage::History(History { document_id: message.document_id, events }), request_id)
        }
        Err(e) => ctx.storage_failed(e, request_id),
    }
    Ok(())
}
