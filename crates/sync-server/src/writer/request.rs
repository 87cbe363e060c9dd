//! What a session hands to the write path: the change (one type for the three change
//! messages, converted from the client message in one place), who makes it, and where
//! its answer goes.

use serde_json::Value;
use sync_core::ErrorBody;
use sync_core::protocol::{
    ChangeResponse, ClientMessage, CreateDocument, DeleteDocument, DocumentPatch, RequestId, RevertDocument,
    ServerMessage,
};

use crate::hub::SessionLink;

/// A change to commit.
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// `create_document`.
    Create(CreateDocument),
    /// `update_document`.
    Update(DocumentPatch),
    /// `delete_document`.
    Delete(DeleteDocument),
    /// `revert_document`: decided as an update to the content of an earlier revision.
    Revert(RevertDocument),
    /// An RFC 7396 merge of the document's content (`POST /events` `update`), decided
    /// against its current state.
    Merge(Merge),
    /// An application event on a document (`POST /events` with another action): a new
    /// revision with the same content.
    Event(AppEvent),
}

/// An RFC 7396 merge of a document's content.
#[derive(Debug)]
pub(crate) struct Merge {
    pub(crate) document_id: String,
    /// The merge patch (an object).
    pub(crate) merge: Value,
    pub(crate) client_change_id: Option<String>,
}

/// An application event on a document.
#[derive(Debug)]
pub(crate) struct AppEvent {
    pub(crate) document_id: String,
    /// Not `create`, `update` or `delete`.
    pub(crate) action: String,
    pub(crate) payload: Value,
    pub(crate) client_change_id: Option<String>,
}

impl TryFrom<ClientMessage> for WriteOp {
    /// Any message that is not a change, handed back.
    type Error = ClientMessage;

    fn try_from(message: ClientMessage) -> Result<Self, ClientMessage> {
        match message {
            ClientMessage::CreateDocument(c) => Ok(WriteOp::Create(c)),
            ClientMessage::UpdateDocument(u) => Ok(WriteOp::Update(u.patch)),
            ClientMessage::DeleteDocument(d) => Ok(WriteOp::Delete(d)),
            ClientMessage::RevertDocument(r) => Ok(WriteOp::Revert(r)),
            other => Err(other),
        }
    }
}

impl WriteOp {
    /// The document the change names (a create may name none).
    pub(crate) fn document_id(&self) -> Option<&str> {
        match self {
            WriteOp::Create(c) => c.document.id.as_deref(),
            WriteOp::Update(u) => Some(&u.document_id),
            WriteOp::Delete(d) => Some(&d.document_id),
            WriteOp::Revert(r) => Some(&r.document_id),
            WriteOp::Merge(m) => Some(&m.document_id),
            WriteOp::Event(e) => Some(&e.document_id),
        }
    }

    /// The client's id of the change, which makes a resend idempotent.
    pub(crate) fn client_change_id(&self) -> Option<&str> {
        match self {
            WriteOp::Create(c) => c.client_change_id.as_deref(),
            WriteOp::Update(u) => u.client_change_id.as_deref(),
            WriteOp::Delete(d) => d.client_change_id.as_deref(),
            WriteOp::Revert(r) => r.client_change_id.as_deref(),
            WriteOp::Merge(m) => m.client_change_id.as_deref(),
            WriteOp::Event(e) => e.client_change_id.as_deref(),
        }
    }

    /// The `*_response` refusing this change with `error`.
    pub(crate) fn refused(&self, error: ErrorBody) -> ServerMessage {
        let document_id = self.document_id().unwrap_or_default();
        match self {
            WriteOp::Create(_) => ServerMessage::DocumentCreatedResponse(ChangeResponse::refused(document_id, error)),
            // A revert, a merge and an event make a new revision like an update, and are
            // answered so.
            WriteOp::Update(_) | WriteOp::Revert(_) | WriteOp::Merge(_) | WriteOp::Event(_) => {
                ServerMessage::DocumentUpdatedResponse(ChangeResponse::refused(document_id, error))
            }
            WriteOp::Delete(_) => ServerMessage::DocumentDeletedResponse(ChangeResponse::refused(document_id, error)),
        }
    }
}

/// A change request from a session.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) op: WriteOp,
    pub(crate) user_id: String,
    pub(crate) client_id: String,
    /// Where the answer goes.
    pub(crate) reply_to: SessionLink,
    /// Echoed in the answer.
    pub(crate) request_id: Option<RequestId>,
    /// When it was handed to the write path (for the write-to-push latency).
    pub(crate) queued: std::time::Instant,
}
