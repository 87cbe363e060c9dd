//! A document as it was at an earlier revision, rebuilt from its current state with the
//! stored reverse patches of the revisions after it (`get_document{at_revision}` and
//! `revert_document`).

use sync_core::canonical::content_hash;
use sync_core::patch::{apply, parse_patch};
use sync_core::{ChangeKind, Document};

/// The document as it was at `revision`, given its events from `revision` on (ascending).
pub(crate) fn rewind(mut doc: Document, revision: u64, events: &[sync_core::ChangeEvent]) -> Result<Document, String> {
    for event in events.iter().rev().filter(|e| e.sync_revision > revision) {
        match event.event_type {
            ChangeKind::Update => {
                let reverse =
                    parse_patch(event.reverse_patch.clone().unwrap_or_default()).map_err(|e| e.to_string())?;
                apply(&mut doc.content, &reverse).map_err(|e| e.to_string())?;
            }
            // Tombstones keep their content: undoing the delete only revives the document.
            ChangeKind::Delete => doc.deleted_at = None,
            _ => {}
        }
        let count = doc.vector_clock.0.entry(event.client_id.clone()).or_insert(0);
        *count = count.saturating_sub(1);
        if *count == 0 {
            doc.vector_clock.0.remove(&event.client_id);
        }
    }
    let at = events.iter().find(|e| e.sync_revision == revision).ok_or("the revision's event is missing")?;
    doc.updated_at = at.created_at;
    doc.sync_revision = revision;
    doc.content_hash = content_hash(&doc.content);
    doc.title = sync_core::model::title_of(&doc.content);
    Ok(doc)
}
