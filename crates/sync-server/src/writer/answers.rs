//! The write path's answers: what a decided change keeps for them ([`Summary`]), the
//! `*_response` its session gets once it is committed (or the original result, for a
//! repeated `client_change_id`), and the pushes every other reader gets.
//!
//! Every answer is built from the one outcome type of sync-core
//! (`ChangeResponse { outcome: Result<…, ErrorBody> }`), so a committed answer always has
//! its revision and sequence and a refused one always has its reason.

use std::sync::Arc;

use bytes::Bytes;
use sync_core::patch::parse_patch;
use sync_core::protocol::{
    ChangeResponse, ConflictDetected, Created, Deleted, DocumentCreated, DocumentDeleted, DocumentEvent,
    DocumentUpdated, PushedPatch, ResolutionStrategy, ServerMessage, Updated,
};
use sync_core::transform::{Conflict, Policy};
use sync_core::{ChangeEvent, ChangeKind, Document, Patch};

use super::decide::Decided;
use super::request::WriteOp;
use crate::wire::encode;

/// What the answers to a committed change need, kept while the change itself goes to
/// the store.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) document_id: String,
    /// The owner of the document.
    pub(crate) user_id: String,
    /// Its collection (with the id and the owner, what the access rules match).
    pub(crate) collection: String,
    /// The revision the change made.
    pub(crate) revision: u64,
    client_change_id: Option<String>,
    pub(crate) made: Made,
}

/// What kind of change was made, with what its answer and push carry.
#[derive(Debug)]
pub(crate) enum Made {
    /// A create: the answer and the push carry the whole document.
    Create(Document),
    /// An update.
    Update {
        /// The patch as applied (shared with the cache's history; copied once, into the push).
        forward: Arc<Patch>,
        /// The applied patch when the server transformed the one sent (the answer carries it).
        transformed: Option<Patch>,
        content_hash: String,
        /// Concurrent edits this update overwrote or dropped, when there were any.
        conflicts: Option<Box<Conflicts>>,
    },
    /// A delete.
    Delete,
    /// An application event: a new revision, the content unchanged.
    Event {
        action: String,
        payload: serde_json::Value,
        /// Who recorded it.
        author: String,
        content_hash: String,
    },
}

/// Conflicts met while rebasing an update, and what other sessions are told of them.
#[derive(Debug)]
pub(crate) struct Conflicts {
    pub(crate) list: Vec<Conflict>,
    /// The collection's policy, which resolved them.
    pub(crate) policy: Policy,
    /// The document after the update, sent with `conflict_detected`.
    document: Document,
}

impl Summary {
    pub(crate) fn of(decided: &Decided) -> Self {
        let doc = &decided.change.document;
        let made = match (&decided.update, &decided.change.event.event_type) {
            (_, ChangeKind::Custom(action)) => Made::Event {
                action: action.clone(),
                payload: decided.change.event.forward_patch.clone().unwrap_or_default(),
                author: decided.change.event.user_id.clone(),
                content_hash: doc.content_hash.clone(),
            },
            // Only an update has a patch and its inverse.
            (Some(update), _) => Made::Update {
                forward: Arc::clone(&update.forward),
                transformed: decided.transformed.clone(),
                content_hash: doc.content_hash.clone(),
                conflicts: (!decided.conflicts.is_empty()).then(|| {
                    Box::new(Conflicts {
                        list: decided.conflicts.clone(),
                        policy: decided.policy,
                        document: Document::clone(doc),
                    })
                }),
            },
            (None, ChangeKind::Delete) => Made::Delete,
            (None, _) => Made::Create(Document::clone(doc)),
        };
        Self {
            document_id: doc.id.clone(),
            user_id: doc.user_id.clone(),
            collection: doc.collection.clone(),
            revision: doc.sync_revision,
            client_change_id: decided.change.event.client_change_id.clone(),
            made,
        }
    }

    /// `create`, `update` or `delete`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.made {
            Made::Create(_) => "create",
            Made::Update { .. } => "update",
            Made::Delete => "delete",
            Made::Event { .. } => "event",
        }
    }

    /// The `*_response` of the committed change.
    pub(crate) fn response(&self, sequence: u64) -> ServerMessage {
        let document_id = self.document_id.clone();
        let sync_revision = self.revision;
        match &self.made {
            Made::Create(document) => ServerMessage::DocumentCreatedResponse(ChangeResponse {
                document_id,
                outcome: Ok(Created { sync_revision, sequence, document: document.clone() }),
            }),
            Made::Update { transformed, content_hash, conflicts, .. } => {
                ServerMessage::DocumentUpdatedResponse(ChangeResponse {
                    document_id,
                    outcome: Ok(Updated {
                        sync_revision,
                        sequence,
                        applied_patch: transformed.clone(),
                        conflicts: conflicts.as_ref().map(|c| c.list.clone()).unwrap_or_default(),
                        content_hash: Some(content_hash.clone()),
                    }),
                })
            }
            Made::Delete => ServerMessage::DocumentDeletedResponse(ChangeResponse {
                document_id,
                outcome: Ok(Deleted { sync_revision, sequence }),
            }),
            Made::Event { content_hash, .. } => ServerMessage::DocumentUpdatedResponse(ChangeResponse {
                document_id,
                outcome: Ok(Updated {
                    sync_revision,
                    sequence,
                    applied_patch: None,
                    conflicts: Vec::new(),
                    content_hash: Some(content_hash.clone()),
                }),
            }),
        }
    }

    /// The push every other session that may read the document gets.
    pub(crate) fn push(&self, sequence: u64) -> ServerMessage {
        let client_change_id = self.client_change_id.clone();
        let document_id = self.document_id.clone();
        match &self.made {
            Made::Create(document) => ServerMessage::DocumentCreated(DocumentCreated {
                document: document.clone(),
                sequence,
                client_change_id,
            }),
            Made::Update { forward, content_hash, .. } => ServerMessage::DocumentUpdated(DocumentUpdated {
                patch: PushedPatch {
                    document_id,
                    patch: Patch::clone(forward),
                    sync_revision: self.revision,
                    content_hash: content_hash.clone(),
                },
                sequence,
                client_change_id,
            }),
            Made::Delete => ServerMessage::DocumentDeleted(DocumentDeleted {
                document_id,
                sync_revision: self.revision,
                sequence,
                client_change_id,
            }),
            Made::Event { action, payload, author, .. } => ServerMessage::DocumentEvent(DocumentEvent {
                document_id,
                action: action.clone(),
                payload: payload.clone(),
                user_id: author.clone(),
                sync_revision: self.revision,
                sequence,
                client_change_id,
            }),
        }
    }

    /// The conflicts this change met, if any.
    pub(crate) fn conflicts(&self) -> Option<&Conflicts> {
        match &self.made {
            Made::Update { conflicts: Some(conflicts), .. } => Some(conflicts),
            _ => None,
        }
    }

    /// The `conflict_detected` other sessions get when this change overwrote concurrent
    /// edits (or had its own dropped).
    pub(crate) fn conflict_push(&self) -> Option<Bytes> {
        let conflicts = self.conflicts()?;
        let resolution_strategy = match conflicts.policy {
            Policy::LastWriterWins => ResolutionStrategy::LastWriterWins,
            Policy::ServerWins => ResolutionStrategy::ServerWins,
        };
        let message = ServerMessage::ConflictDetected(ConflictDetected {
            document_id: self.document_id.clone(),
            resolution_strategy,
            conflicts: conflicts.list.clone(),
            server_document: Some(conflicts.document.clone()),
        });
        Some(encode(&message, None))
    }
}

/// The answer to a change whose `client_change_id` was already committed: the original
/// result, rebuilt from its stored event.
pub(crate) fn repeated(op: &WriteOp, event: &ChangeEvent) -> ServerMessage {
    let document_id = event.document_id.clone();
    let (sync_revision, sequence) = (event.sync_revision, event.sequence);
    match op {
        WriteOp::Create(_) => {
            let mut document = Document {
                id: document_id.clone(),
                user_id: event.user_id.clone(),
                collection: event.collection.clone(),
                title: None,
                content: event.forward_patch.clone().unwrap_or_default(),
                sync_revision,
                vector_clock: Default::default(),
                content_hash: String::new(),
                created_at: event.created_at,
                updated_at: event.created_at,
                deleted_at: None,
            };
            document.refresh_derived();
            document.vector_clock.increment(&event.client_id);
            ServerMessage::DocumentCreatedResponse(ChangeResponse {
                document_id,
                outcome: Ok(Created { sync_revision, sequence, document }),
            })
        }
        // An application event's `forward_patch` is its payload, not a patch.
        WriteOp::Update(_) | WriteOp::Revert(_) | WriteOp::Merge(_) | WriteOp::Event(_) => {
            ServerMessage::DocumentUpdatedResponse(ChangeResponse {
                document_id,
                outcome: Ok(Updated {
                    sync_revision,
                    sequence,
                    applied_patch: (event.event_type == ChangeKind::Update)
                        .then(|| event.forward_patch.clone().and_then(|v| parse_patch(v).ok()))
                        .flatten(),
                    conflicts: Vec::new(),
                    content_hash: event.content_hash.clone(),
                }),
            })
        }
        WriteOp::Delete(_) => ServerMessage::DocumentDeletedResponse(ChangeResponse {
            document_id,
            outcome: Ok(Deleted { sync_revision, sequence }),
        }),
    }
}
