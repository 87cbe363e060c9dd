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

use std::sync::Arc;

use sync_core::Document;
use sync_core::acl::ReadView;
use sync_core::protocol::{AccessRevoked, DocumentShared, ServerMessage};
use sync_store::{ReadScope, Store};

use super::Ctx;
use crate::connection::Ending;
use crate::monitor::activity;
use crate::state::AppState;

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
    let mut granted = Difference::new(&new, &old, collections.clone());
    let failed = |e: sync_store::StoreError| Ending::Internal(format!("reading the documents the rules changed: {e}"));
    while let Some(documents) = granted.next(ctx.state).await.map_err(failed)? {
        for document in documents {
            shared += 1;
            ctx.send(&ServerMessage::DocumentShared(DocumentShared { document }), None);
            if ctx.conn.must_flush() {
                ctx.conn.flush().await?;
            }
        }
        ctx.conn.flush().await?;
    }
    // No longer readable: readable by the old view, not by the new one.
    let mut gone = Difference::new(&old, &new, collections);
    while let Some(documents) = gone.next(ctx.state).await.map_err(failed)? {
        if !documents.is_empty() {
            revoked += documents.len() as u64;
            let document_ids = documents.into_iter().map(|d| d.id).collect();
            ctx.send(&ServerMessage::AccessRevoked(AccessRevoked { document_ids }), None);
            ctx.conn.flush().await?;
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

/// The documents one view reads and another does not, a page at a time in id order.
struct Difference {
    reads: Arc<ReadView>,
    not: Arc<ReadView>,
    collections: Option<Vec<String>>,
    after: Option<String>,
    done: bool,
}

impl Difference {
    fn new(reads: &Arc<ReadView>, not: &Arc<ReadView>, collections: Option<Vec<String>>) -> Self {
        Self { reads: Arc::clone(reads), not: Arc::clone(not), collections, after: None, done: false }
    }

    /// The next page's documents (possibly none of them), or `None` at the end.
    async fn next(&mut self, state: &AppState) -> Result<Option<Vec<Document>>, sync_store::StoreError> {
        if self.done {
            return Ok(None);
        }
        let scope = ReadScope { view: Arc::clone(&self.reads) };
        let page = state.store.list_documents(scope, self.collections.clone(), self.after.clone(), PAGE).await?;
        self.done = page.len() < PAGE;
        self.after = page.last().map(|d| d.id.clone());
        Ok(Some(page.into_iter().filter(|d| !self.not.may_read(&d.user_id, &d.collection, &d.id)).collect()))
    }
}
