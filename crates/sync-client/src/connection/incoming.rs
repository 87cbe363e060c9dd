//! What the server sends on a live connection: pushes of other replicas' changes (and
//! of ours, coming back on a new connection), the answers to our changes, conflicts, a
//! document's whole state after a gap, documents shared with this user and those no
//! longer readable, errors. Each is applied in its own local transaction; a push also
//! moves the cursor, and an answer lets the document's next change go.
//!
//! Guarantees: a shared document's state replaces the confirmed state only when it is
//! newer, and local changes pending on it are rebased like after a gap; a revoked
//! document's row goes in one transaction with every pending change of it, so none is
//! sent again.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use sync_core::ChangeKind;
use sync_core::protocol::{
    Created, Deleted, DocumentCreated, DocumentUpdated, PushedPatch, RequestId, ServerEnvelope, ServerMessage, Updated,
};
use sync_core::replica::{Outcome, RemoteChange, Replica};

use super::apply::{Application, Origin, apply_remote};
use super::{Reconcile, Session};
use crate::error::Result;
use crate::events::{EventType, SyncEvent};
use crate::local::{self, DocRow};

impl Session {
    pub(super) fn on_message(&mut self, envelope: ServerEnvelope) -> Result<()> {
        let Some(envelope) = self.on_topic_message(envelope) else { return Ok(()) };
        let request_id = match &envelope.request_id {
            Some(RequestId::Str(s)) => Some(s.clone()),
            _ => None,
        };
        match envelope.message {
            ServerMessage::DocumentCreated(DocumentCreated { document, sequence, client_change_id }) => {
                let sync_core::Document { id, collection, user_id, content, sync_revision, .. } = document;
                let origin = Origin {
                    id: &id,
                    collection: &collection,
                    owner: Some(&user_id),
                    revision: sync_revision,
                    change_id: client_change_id.as_deref(),
                };
                self.apply_push(&origin, RemoteChange::Create(content), sequence)
            }
            ServerMessage::DocumentUpdated(DocumentUpdated {
                patch: PushedPatch { document_id, patch, sync_revision, .. },
                sequence,
                client_change_id,
            }) => {
                let origin = Origin::of_change(&document_id, sync_revision, client_change_id.as_deref());
                self.apply_push(&origin, RemoteChange::Update(patch), sequence)
            }
            ServerMessage::DocumentDeleted(m) => {
                let origin = Origin::of_change(&m.document_id, m.sync_revision, m.client_change_id.as_deref());
                self.apply_push(&origin, RemoteChange::Delete, m.sequence)
            }
            // An application event moves the revision, not the content: an empty update
            // keeps this replica's revision in step, and the application hears of it.
            ServerMessage::DocumentEvent(m) => {
                let origin = Origin::of_change(&m.document_id, m.sync_revision, m.client_change_id.as_deref());
                let application = Application {
                    action: m.action,
                    payload: m.payload,
                    author: Some(m.user_id),
                    revision: m.sync_revision,
                };
                self.apply_push_with(&origin, RemoteChange::Update(Vec::new()), m.sequence, Some(application))
            }
            ServerMessage::DocumentShared(m) => self.on_shared(m.document),
            ServerMessage::AccessRevoked(m) => self.on_revoked(&m.document_ids),
            ServerMessage::DocumentCreatedResponse(r) => self.on_answer(&r.document_id, request_id, answer(r.outcome)),
            ServerMessage::DocumentUpdatedResponse(r) => self.on_answer(&r.document_id, request_id, answer(r.outcome)),
            ServerMessage::DocumentDeletedResponse(r) => self.on_answer(&r.document_id, request_id, answer(r.outcome)),
            ServerMessage::ConflictDetected(c) => {
                let mut event = SyncEvent::new(EventType::ConflictDetected);
                event.document_id = Some(c.document_id.clone());
                event.title = c.server_document.as_ref().and_then(|d| d.title.clone());
                event.content = serde_json::to_string(&c.conflicts).ok();
                event.numeric_data = c.conflicts.len() as u64;
                // Pushed to the other sessions: another replica's change won here.
                event.boolean_data = false;
                self.mark_conflict(&c.document_id)?;
                self.shared.emit(event);
                Ok(())
            }
            ServerMessage::SyncDocument(s) => {
                if let Reconcile::Listing(id, listed) = &mut self.reconcile
                    && request_id.as_ref() == Some(id)
                {
                    listed.insert(s.document.id);
                    Ok(())
                } else if self.resyncing.remove(&s.document.id) {
                    self.reset(s.document)
                } else {
                    Ok(())
                }
            }
            ServerMessage::SyncComplete(_) => match std::mem::replace(&mut self.reconcile, Reconcile::No) {
                Reconcile::Listing(id, listed) if request_id.as_ref() == Some(&id) => self.reconciled(&listed),
                other => {
                    self.reconcile = other;
                    Ok(())
                }
            },
            ServerMessage::Error(e) => {
                let mut event = SyncEvent::new(EventType::SyncError);
                event.error = Some(format!("{}: {}", e.code, e.message));
                self.shared.emit(event);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Applies one live push.
    fn apply_push(&mut self, origin: &Origin<'_>, change: RemoteChange, sequence: u64) -> Result<()> {
        self.apply_push_with(origin, change, sequence, None)
    }

    /// Applies one live push, which is an application event when `application` says.
    fn apply_push_with(
        &mut self,
        origin: &Origin<'_>,
        change: RemoteChange,
        sequence: u64,
        application: Option<Application>,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        if sequence <= shared.cursor() {
            return Ok(());
        }
        let id = origin.id;
        let applied = shared.transaction_moving_cursor(|tx| {
            let applied = apply_remote(&mut local::Rows::new(tx)?, &shared, origin, change)?;
            Ok((applied, Some(sequence)))
        })?;
        if let Some(applied) = applied {
            let applied = applied.with_application(application);
            let resync_needed = applied.resync_needed();
            self.report_applied(applied);
            if resync_needed {
                self.refetch(id);
            }
        }
        self.count_for_ack();
        // Our own change coming back on a new connection counts as its answer: the next
        // change of that document can go.
        self.queue_document(id, false)?;
        Ok(())
    }

    /// Handles the answer to one of our changes.
    fn on_answer(
        &mut self,
        id: &str,
        request_id: Option<String>,
        answer: std::result::Result<Answer, sync_core::ErrorBody>,
    ) -> Result<()> {
        let Some(change_id) = request_id else { return Ok(()) };
        let shared = Arc::clone(&self.shared);
        let result = shared.transaction_moving_cursor(|tx| {
            let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? else { return Ok((None, None)) };
            let outcome = match &answer {
                Ok(answer) => {
                    let mut outcome =
                        row.replica.on_ack(&change_id, answer.revision, answer.applied.clone(), answer.content.clone());
                    outcome.conflicts.extend(answer.conflicts.iter().cloned());
                    outcome
                }
                Err(error) => row.replica.on_reject(&change_id, error.code, &error.message),
            };
            row.conflict = !outcome.conflicts.is_empty();
            local::save(tx, &row)?;
            // Answers come in sequence order with the pushes, so the cursor moves too.
            let sequence = answer.as_ref().ok().map(|a| a.sequence);
            let cursor = sequence.filter(|&sequence| sequence > shared.cursor());
            Ok((Some((row, outcome)), cursor))
        })?;
        if let Some((row, outcome)) = result {
            if outcome.resync_needed {
                self.refetch(id);
            }
            self.report(&row, &outcome, ChangeKind::Update, true);
        }
        self.shared.notify_changed();
        self.queue_document(id, false)
    }

    fn mark_conflict(&mut self, id: &str) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        shared.transaction(|tx| {
            if let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? {
                row.conflict = true;
                local::save(tx, &row)?;
            }
            Ok(())
        })
    }

    /// Replaces a document's confirmed state after a gap (or for an update pushed before
    /// the document was held).
    fn reset(&mut self, document: sync_core::Document) -> Result<()> {
        if !self.shared.syncs(&document.collection) {
            return Ok(());
        }
        let (row, outcome, was_live) = self.store_state(document, true)?;
        let is_live = row.replica.view().is_some();
        let kind = match (was_live, is_live) {
            (false, true) => Some(ChangeKind::Create),
            (true, true) => Some(ChangeKind::Update),
            (true, false) => Some(ChangeKind::Delete),
            (false, false) => None,
        };
        match kind {
            Some(kind) => self.report(&row, &outcome, kind, false),
            None => self.report_outcome(&row, &outcome),
        }
        Ok(())
    }

    /// A document the rules now let this user read, as it is now. Stored as the
    /// confirmed state when newer than the one held (or when none is held); local
    /// changes pending on it are rebased like after a gap. A push the state already
    /// includes may follow it, and is dropped by revision.
    fn on_shared(&mut self, document: sync_core::Document) -> Result<()> {
        if !self.shared.syncs(&document.collection) {
            return Ok(());
        }
        let (row, outcome, was_live) = self.store_state(document, false)?;
        match row.replica.view() {
            Some(view) => {
                let mut event = SyncEvent::new(EventType::DocumentShared);
                event.document_id = Some(row.id.clone());
                event.title = sync_core::model::title_of(&view);
                event.content = Some(view.to_string());
                event.boolean_data = true;
                self.shared.emit(event);
                self.report_outcome(&row, &outcome);
            }
            // Deleted since this replica last saw it.
            None if was_live => self.report(&row, &outcome, ChangeKind::Delete, false),
            // A tombstone: nothing the application can show.
            None => self.report_outcome(&row, &outcome),
        }
        Ok(())
    }

    /// Stores a document's whole state from the server, in one local transaction: as
    /// the confirmed state when `always`, else only when newer than the one held. The
    /// owner is recorded either way. Returns the row, what rebasing its pending changes
    /// did, and whether the application saw the document before.
    fn store_state(&mut self, document: sync_core::Document, always: bool) -> Result<(DocRow, Outcome, bool)> {
        let shared = Arc::clone(&self.shared);
        let sync_core::Document { id, collection, user_id, content, sync_revision, deleted_at, .. } = document;
        shared.transaction(|tx| {
            let existing = local::load(tx, &id, &|c| shared.policy(c))?;
            let was_live = existing.as_ref().is_some_and(|row| row.replica.view().is_some());
            let mut row = existing.unwrap_or_else(|| DocRow {
                replica: Replica { policy: shared.policy(&collection), ..Replica::default() },
                id,
                collection,
                conflict: false,
                owner: None,
            });
            row.owner = Some(user_id);
            let newer = row.replica.confirmed.is_none() || sync_revision > row.replica.revision();
            let outcome = if always || newer {
                row.replica.reset(content, sync_revision, deleted_at.is_some())
            } else {
                Outcome::default()
            };
            local::save(tx, &row)?;
            Ok((row, outcome, was_live))
        })
    }

    /// The end of the full sync that reconciles the documents of others: those held here
    /// and not listed may no longer be read, and go as a revoked one does.
    fn reconciled(&mut self, listed: &HashSet<String>) -> Result<()> {
        let Some(user_id) = self.shared.user_id() else { return Ok(()) };
        let held = self.shared.transaction(|tx| local::ids_of_others(tx, &user_id))?;
        let gone: Vec<String> = held.into_iter().filter(|id| !listed.contains(id)).collect();
        if gone.is_empty() { Ok(()) } else { self.on_revoked(&gone) }
    }

    /// Documents this user may no longer read: each local copy goes, with every change
    /// pending on it (an in-flight one is refused by the server, and its answer then
    /// finds nothing to retry), in one local transaction; then one event per document the
    /// application knew.
    fn on_revoked(&mut self, ids: &[String]) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let removed = shared.transaction(|tx| {
            let mut removed = Vec::new();
            for id in ids {
                removed.extend(local::remove(tx, id, &|c| shared.policy(c))?);
            }
            Ok(removed)
        })?;
        for id in ids {
            self.resyncing.remove(id);
        }
        for row in &removed {
            let pending = row.replica.pending.len() as u64;
            if row.replica.view().is_none() && pending == 0 {
                // A tombstone: the application never saw it.
                continue;
            }
            let mut event = SyncEvent::new(EventType::AccessRevoked);
            event.document_id = Some(row.id.clone());
            event.title = row.title();
            event.numeric_data = pending;
            event.boolean_data = true;
            self.shared.emit(event);
        }
        if removed.iter().any(|row| !row.replica.pending.is_empty()) {
            self.shared.notify_changed();
        }
        Ok(())
    }
}

/// What the server said of one of our committed changes, whatever its kind: the
/// revision and sequence it got, the patch as applied when the server transformed it,
/// the content it stored (creates), and the conflicts it met (updates).
struct Answer {
    revision: u64,
    sequence: u64,
    applied: Option<sync_core::Patch>,
    content: Option<Value>,
    conflicts: Vec<sync_core::Conflict>,
}

impl From<Created> for Answer {
    fn from(c: Created) -> Self {
        let Created { sync_revision, sequence, document } = c;
        Self {
            revision: sync_revision,
            sequence,
            applied: None,
            content: Some(document.content),
            conflicts: Vec::new(),
        }
    }
}

impl From<Updated> for Answer {
    fn from(u: Updated) -> Self {
        let Updated { sync_revision, sequence, applied_patch, conflicts, .. } = u;
        Self { revision: sync_revision, sequence, applied: applied_patch, content: None, conflicts }
    }
}

impl From<Deleted> for Answer {
    fn from(d: Deleted) -> Self {
        Self { revision: d.sync_revision, sequence: d.sequence, applied: None, content: None, conflicts: Vec::new() }
    }
}

/// The outcome of a change response, as one [`Answer`] or the server's reason.
fn answer<T: Into<Answer>>(
    outcome: std::result::Result<T, sync_core::ErrorBody>,
) -> std::result::Result<Answer, sync_core::ErrorBody> {
    outcome.map(Into::into)
}
