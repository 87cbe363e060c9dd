//! `request_full_sync`: every readable document, tombstones included, streamed in pages
//! while live pushes are held back, then `sync_complete`.

use sync_core::protocol::{RequestFullSync, RequestId, ServerMessage, SyncComplete, SyncDocument};
use sync_store::Store;

use crate::session::{Ending, Session};

const PAGE: usize = 500;

/// Streams the documents.
pub(super) async fn handle(
    session: &mut Session,
    message: RequestFullSync,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.read_barrier().await?;
    session.hold();
    // Every change up to here is reflected in what is about to be read.
    let latest = session.state.hub.delivered();
    let mut after: Option<String> = None;
    let mut synced = 0u64;
    loop {
        let page =
            session.state.store.list_documents(session.scope(), message.collections.clone(), after.clone(), PAGE).await;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                super::storage_failed(session, e, request_id);
                session.release(0);
                return Ok(());
            }
        };
        let full = page.len() == PAGE;
        after = page.last().map(|d| d.id.clone());
        for document in page {
            synced += 1;
            session.send(ServerMessage::SyncDocument(SyncDocument { document }), request_id.clone());
        }
        session.flush().await?;
        session.drain_ready();
        if !full {
            break;
        }
    }
    session.send(
        ServerMessage::SyncComplete(SyncComplete { synced_count: synced, latest_sequence: Some(latest) }),
        request_id,
    );
    // Held pushes may repeat changes already in the states sent; clients drop those by revision.
    session.release(0);
    Ok(())
}
