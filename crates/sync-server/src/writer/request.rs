//! What a session hands to the write path: the change (one type for the three change
//! messages, converted from the client message in one place), who makes it, and where
//! its answer goes.

use sync_core::ErrorBody;
use sync_core::protocol::{
    ChangeResponse, ClientMessage, CreateDocument, DeleteDocument, DocumentPatch, RequestId, ServerMessage,
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
}

impl TryFrom<ClientMessage> for WriteOp {
    /// Any message that is not a change, handed back.
    type Error = ClientMessage;

    fn try_from(message: ClientMessage) -> Result<Self, ClientMessage> {
        match message {
            ClientMessage::CreateDocument(c) => Ok(WriteOp::Create(c)),
            ClientMessage::UpdateDocument(u) => Ok(WriteOp::Update(u.patch)),
            ClientMessage::DeleteDocument(d) => Ok(WriteOp::Delete(d)),
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
        }
    }

    /// The client's id of the change, which makes a resend idempotent.
    pub(crate) fn client_change_id(&self) -> Option<&str> {
        match self {
            WriteOp::Create(c) => c.client_change_id.as_deref(),
            WriteOp::Update(u) => u.client_change_id.as_deref(),
            WriteOp::Delete(d) => d.client_change_id.as_deref(),
        }
    }

    /// The `*_response` refusing this change with `error`.
    pub(crate) fn refused(&self, error: ErrorBody) -> ServerMessage {
        let document_id = self.document_id().unwrap_or_default();
        match self {
            WriteOp::Create(_) => ServerMessage::DocumentCreatedResponse(ChangeResponse::refused(document_id, error)),
            WriteOp::Update(_) => ServerMessage::DocumentUpdatedResponse(ChangeResponse::refused(document_id, error)),
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
}
