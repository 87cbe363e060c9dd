//! A change of the access rules reaching a session: the documents it may now read are
//! sent as `document_shared` (their current state), the ones it may no longer read are
//! named in `access_revoked`, and then the pushes held back since the change go out.
//! The same difference, of the rules in force at a resuming session's cursor and those in
//! force now, is sent before its catch-up (`authenticate`).
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
    send_difference(ctx, &[change.old], &change.new).await?;
    ctx.conn.release(sent);
    Ok(())
}

/// Sends what changed from reading by one of `olds` (which one the session went by is
/// not known when it resumes: any of them, see `sync_store::AclSince`) to reading by
/// `new`: `document_shared` with the state of each document `new` reads and some view of
/// `olds` does not, then `access_revoked` naming each document some view of `olds` read
/// and `new` does not. The caller holds pushes back meanwhile (a change of rules met
/// live, or a session resuming after the rules changed).
pub(crate) async fn send_difference(
    ctx: &mut Ctx<'_>,
    olds: &[Arc<ReadView>],
    new: &Arc<ReadView>,
) -> Result<(), Ending> {
    let (mut shared, mut revoked) = (0u64, 0u64);
    // A session that syncs some collections hears only of those.
    let collections = ctx.session.identity.collections.as_deref().map(<[String]>::to_vec);
    let failed = |e: sync_store::StoreError| Ending::Internal(format!("reading the documents the rules changed: {e}"));
    // Newly readable: readable by the new view, not by one of the old ones.
    let unread: Vec<Arc<ReadView>> = olds.iter().filter(|old| *old != new).cloned().collect();
    if !unread.is_empty() {
        let not_by_all = move |d: &Document| unread.iter().any(|old| !reads(old, d));
        let mut granted = Difference::new(new, collections.clone(), not_by_all);
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
    }
    // No longer readable: readable by one of the old views, not by the new one. Each old
    // view lists only what no earlier one did, so no document is named twice.
    for (index, old) in olds.iter().enumerate() {
        if old == new || olds[..index].contains(old) {
            continue;
        }
        let (new, earlier) = (Arc::clone(new), olds[..index].to_vec());
        let gone_now = move |d: &Document| !reads(&new, d) && !earlier.iter().any(|view| reads(view, d));
        let mut gone = Difference::new(old, collections.clone(), gone_now);
        while let Some(documents) = gone.next(ctx.state).await.map_err(failed)? {
            if !documents.is_empty() {
                revoked += documents.len() as u64;
                let document_ids = documents.into_iter().map(|d| d.id).collect();
                ctx.send(&ServerMessage::AccessRevoked(AccessRevoked { document_ids }), None);
                ctx.conn.flush().await?;
            }
        }
    }
    activity!(
        "ACL",
        session = ctx.conn.id,
        "session {}: access changed: {shared} documents shared, {revoked} revoked",
        ctx.conn.id
    );
    Ok(())
}

fn reads(view: &ReadView, d: &Document) -> bool {
    view.may_read(&d.user_id, &d.collection, &d.id)
}

/// The documents one view reads that a filter keeps, a page at a time in id order.
struct Difference<F> {
    reads: Arc<ReadView>,
    keep: F,
    collections: Option<Vec<String>>,
    after: Option<String>,
    done: bool,
}

impl<F: Fn(&Document) -> bool> Difference<F> {
    fn new(reads: &Arc<ReadView>, collections: Option<Vec<String>>, keep: F) -> Self {
        Self { reads: Arc::clone(reads), keep, collections, after: None, done: false }
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
        Ok(Some(page.into_iter().filter(|d| (self.keep)(d)).collect()))
    }
}
