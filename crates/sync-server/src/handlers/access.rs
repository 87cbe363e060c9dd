//! A change of the access rules reaching a session: the documents it may now read are
//! sent as `document_shared` (their current state), the ones it may no longer read are
//! named in `access_revoked`, and then the pushes held back since the change go out.
//!
//! The hub put a marker in the session's queue where the rules changed; from the marker
//! on the connection holds pushes back. Every change after the marker is decided by the
//! new rules: those of newly readable documents wait, held, behind the states sent here
//! (a held push the state already includes is dropped by the client by revision), and no
//! push of a revoked document follows the marker. So a reader misses nothing and sees
//! nothing it may no longer read, without reconnecting.

use sync_core::protocol::{AccessRevoked, DocumentShared, ServerMessage};
use sync_store::{ReadScope, Store};

use super::Ctx;
use crate::connection::Ending;
use crate::monitor::activity;

/// Documents read at a time, and most ids an `access_revoked` names.
const PAGE: usize = 500;

/// Acts on a change of what the session may read, if one is waiting, then lets the held
/// pushes through except those at or below `sent` (already sent, by a catch-up).
pub(crate) async fn act_on_change(ctx: &mut Ctx<'_>, sent: u64) -> Result<(), Ending> {
    let Some(change) = ctx.session.take_access_change() else { return Ok(()) };
    let (old, new) = (change.old, change.new);
    let (mut shared, mut revoked) = (0u64, 0u64);
    // A session that syncs some collections hears only of those.
    let collections = ctx.session.identity.collections.as_deref().map(<[String]>::to_vec);
    // Newly readable: readable by the new view, not by the old one.
    let mut after: Option<String> = None;
    loop {
        let scope = ReadScope { view: new.clone() };
        let page = ctx.state.store.list_documents(scope, collections.clone(), after.clone(), PAGE).await;
        let page = page.map_err(|e| Ending::Internal(format!("reading newly shared documents failed: {e}")))?;
        let full = page.len() == PAGE;
        after = page.last().map(|d| d.id.clone());
        for document in page.into_iter().filter(|d| !old.may_read(&d.user_id, &d.collection, &d.id)) {
            shared += 1;
            ctx.send(&ServerMessage::DocumentShared(DocumentShared { document }), None);
            if ctx.conn.must_flush() {
                ctx.conn.flush().await?;
            }
        }
        ctx.conn.flush().await?;
        if !full {
            break;
        }
    }
    // No longer readable: readable by the old view, not by the new one.
    let mut after: Option<String> = None;
    loop {
        let scope = ReadScope { view: old.clone() };
        let page = ctx.state.store.list_documents(scope, collections.clone(), after.clone(), PAGE).await;
        let page = page.map_err(|e| Ending::Internal(format!("reading revoked documents failed: {e}")))?;
        let full = page.len() == PAGE;
        after = page.last().map(|d| d.id.clone());
        let document_ids: Vec<String> =
            page.into_iter().filter(|d| !new.may_read(&d.user_id, &d.collection, &d.id)).map(|d| d.id).collect();
        if !document_ids.is_empty() {
            revoked += document_ids.len() as u64;
            ctx.send(&ServerMessage::AccessRevoked(AccessRevoked { document_ids }), None);
            ctx.conn.flush().await?;
        }
        if !full {
            break;
        }
    }
    activity!(
        "ACL",
        session = ctx.conn.id,
        "session {}: access changed: {shared} documents shared, {revoked} revoked",
        ctx.conn.id
    );
    ctx.conn.release(sent);
    Ok(())
}
