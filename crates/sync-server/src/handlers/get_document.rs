//! `get_document`: one document, now or as it was at a revision (rebuilt from the
//! current state with the stored reverse patches).

use sync_core::ErrorCode;
use sync_core::protocol::{GetDocument, RequestId, ServerMessage, SyncDocument};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

/// Answers with `sync_document`.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: GetDocument,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    ctx.settle().await?;
    let docs = match ctx.state.store.load_documents(vec![message.document_id.clone()]).await {
        Ok(docs) => docs,
        Err(e) => {
            ctx.storage_failed(e, request_id);
            return Ok(());
        }
    };
    let Some(doc) = docs.into_iter().find(|d| ctx.may_read(d)) else {
        ctx.send_error(ErrorCode::DocumentNotFound, format!("no document {:?}", message.document_id), request_id);
        return Ok(());
    };
    let document = match message.at_revision {
        None => doc,
        Some(r) if r == doc.sync_revision => doc,
        Some(r) if r == 0 || r > doc.sync_revision => {
            let text = format!("document {:?} has no revision {r} (latest is {})", doc.id, doc.sync_revision);
            ctx.send_error(ErrorCode::DocumentNotFound, text, request_id);
            return Ok(());
        }
        // Revision r's own event gives the time it was made; the later ones are undone.
        Some(r) => match ctx.state.store.document_changes(doc.id.clone(), r - 1, Some(doc.sync_revision)).await {
            Ok(events) => match crate::rewind::rewind(doc, r, &events) {
                Ok(document) => document,
                Err(message) => {
                    tracing::error!(%message, "rebuilding a past revision failed");
                    ctx.send_error(ErrorCode::ServerError, "the document's history is unreadable", request_id);
                    return Ok(());
                }
            },
            Err(e) => {
                ctx.storage_failed(e, request_id);
                return Ok(());
            }
        },
    };
    ctx.send(&ServerMessage::SyncDocument(SyncDocument { document }), request_id);
    Ok(())
}
