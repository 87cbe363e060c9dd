//! `request_sync`: the current state of named documents.

use std::collections::HashMap;

use sync_core::ErrorCode;
use sync_core::protocol::{RequestId, RequestSync, ServerMessage, SyncComplete, SyncDocument};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

/// Most documents one request may name.
const MAX_IDS: usize = 1000;

/// Documents read from the store at a time.
const LOAD_CHUNK: usize = 50;

/// One `sync_document` per readable document, an `error` per other id, then `sync_complete`.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: RequestSync,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    if message.document_ids.len() > MAX_IDS {
        ctx.send_error(
            ErrorCode::PayloadTooLarge,
            format!("request_sync names {} documents; the limit is {MAX_IDS}", message.document_ids.len()),
            request_id,
        );
        return Ok(());
    }
    ctx.settle().await?;
    let latest = ctx.state.hub.delivered();
    let mut synced = 0;
    // In chunks, each written out before the next is read: a thousand large documents
    // never sit in memory at once.
    for ids in message.document_ids.chunks(LOAD_CHUNK) {
        let docs = match ctx.state.store.load_documents(ids.to_vec()).await {
            Ok(docs) => docs,
            Err(e) => {
                ctx.storage_failed(e, request_id);
                return Ok(());
            }
        };
        let mut by_id: HashMap<String, sync_core::Document> =
            docs.into_iter().filter(|d| ctx.may_read(d)).map(|d| (d.id.clone(), d)).collect();
        for id in ids {
            match by_id.remove(id) {
                Some(document) => {
                    synced += 1;
                    ctx.send(&ServerMessage::SyncDocument(SyncDocument { document }), request_id.clone());
                }
                None => ctx.send_error(ErrorCode::DocumentNotFound, format!("no document {id:?}"), request_id.clone()),
            }
            if ctx.conn.must_flush() {
                ctx.conn.flush().await?;
            }
        }
    }
    ctx.send(
        &ServerMessage::SyncComplete(SyncComplete { synced_count: synced, latest_sequence: Some(latest) }),
        request_id,
    );
    Ok(())
}
