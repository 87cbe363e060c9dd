//! What the server sends on a live connection: pushes of other replicas' changes (and
//! of ours, coming back on a new connection), the answers to our changes, conflicts, a
//! document's whole state after a gap, errors. Each is applied in its own local
//! transaction; a push also moves the cursor, and an answer lets the document's next
//! change go.

use std::sync::Arc;

use serde_json::Value;
use sync_core::ChangeKind;
use sync_core::protocol::{Created, Deleted, RequestId, ServerEnvelope, ServerMessage, Updated};
use sync_core::replica::{RemoteChange, Replica};

use super::Session;
use super::apply::apply_remote;
use crate::error::Result;
use crate::events::{EventType, SyncEvent};
use crate::local::{self, DocRow};

impl Session {
    pub(super) fn on_message(&mut self, envelope: ServerEnvelope) -> Result<()> {
        let request_id = match &envelope.request_id {
            Some(RequestId::Str(s)) => Some(s.clone()),
            _ => None,
        };
        match envelope.message {
            ServerMessage::DocumentCreated(m) => {
                let content = m.document.content.clone();
                self.apply_push(
                    &m.document.id,
                    &m.document.collection,
                    m.document.sync_revision,
                    RemoteChange::Create(content),
                    m.client_change_id.as_deref(),
                    m.sequence,
                )
            }
            ServerMessage::DocumentUpdated(m) => self.apply_push(
                &m.patch.document_id,
                "",
                m.patch.sync_revision,
                RemoteChange::Update(m.patch.patch),
                m.client_change_id.as_deref(),
                m.sequence,
            ),
            ServerMessage::DocumentDeleted(m) => self.apply_push(
                &m.document_id,
                "",
                m.sync_revision,
                RemoteChange::Delete,
                m.client_change_id.as_deref(),
                m.sequence,
            ),
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
                if self.resyncing.remove(&s.document.id) {
                    self.reset(s.document)
                } else {
                    Ok(())
                }
            }
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
    fn apply_push(
        &mut self,
        id: &str,
        collection: &str,
        revision: u64,
        change: RemoteChange,
        change_id: Option<&str>,
        sequence: u64,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        if sequence <= shared.cursor() {
            return Ok(());
        }
        let applied = shared.transaction_moving_cursor(|tx| {
            let applied =
                apply_remote(&mut local::Rows::new(tx)?, &shared, id, collection, revision, change, change_id)?;
            Ok((applied, Some(sequence)))
        })?;
        if let Some(applied) = applied {
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

    /// Replaces a document's confirmed state after a gap.
    fn reset(&mut self, document: sync_core::Document) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let applied = shared.transaction(|tx| {
            let mut row = local::load(tx, &document.id, &|c| shared.policy(c))?.unwrap_or_else(|| DocRow {
                id: document.id.clone(),
                collection: document.collection.clone(),
                replica: Replica::default(),
                conflict: false,
            });
            let outcome = row.replica.reset(document.content.clone(), document.sync_revision, document.is_deleted());
            local::save(tx, &row)?;
            Ok((row, outcome))
        })?;
        self.report(&applied.0, &applied.1, ChangeKind::Update, false);
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
