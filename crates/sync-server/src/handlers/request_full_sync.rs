//! `request_full_sync`: every readable document, tombstones included, streamed in pages
//! while live pushes are held back, then `sync_complete`.

use sync_core::protocol::{RequestFullSync, RequestId, ServerMessage, SyncComplete, SyncDocument};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

const PAGE: usize = 500;

/// Streams the documents.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: RequestFullSync,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    ctx.settle().await?;
    ctx.conn.hold();
    // Every change up to here is reflected in what is about to be read.
    let latest = ctx.state.hub.delivered();
    let mut after: Option<String> = None;
    let mut synced = 0u64;
    loop {
        let page = ctx.state.store.list_documents(ctx.scope(), message.collections.clone(), after.clone(), PAGE).await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                ctx.storage_failed(e, request_id);
                ctx.conn.release(0);
                return Ok(());
            }
        };
        let full = page.len() == PAGE;
        after = page.last().map(|d| d.id.clone());
        for document in page {
            synced += 1;
            ctx.send(&ServerMessage::SyncDocument(SyncDocument { document }), request_id.clone());
            if ctx.conn.must_flush() {
                ctx.conn.flush().await?;
            }
        }
        ctx.flush_page().await?;
        if !full {
            break;
        }
    }
    ctx.send(
        &ServerMessage::SyncComplete(SyncComplete { synced_count: synced, latest_sequence: Some(latest) }),
        request_id,
    );
    // Held pushes may repeat changes already in the states sent; clients drop those by revision.
    ctx.conn.release(0);
    Ok(())
}
