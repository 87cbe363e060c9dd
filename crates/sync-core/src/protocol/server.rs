//! Server → client messages: direct replies (PROTOCOL.md §2, §4) and pushes (§5).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorBody, ErrorCode};
use crate::model::{ChangeEvent, Document, Timestamp};
use crate::patch::Patch;
use crate::transform::Conflict;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every message the server sends, tagged by `type` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Authentication succeeded.
    AuthSuccess(AuthSuccess),
    /// Authentication failed; the connection closes with 4001.
    AuthError(AuthError),
    /// Reply to `create_document`.
    DocumentCreatedResponse(CreatedResponse),
    /// Reply to `update_document`.
    DocumentUpdatedResponse(UpdatedResponse),
    /// Reply to `delete_document`.
    DocumentDeletedResponse(DeletedResponse),
    /// A page of the change log (reply to `get_changes_since`, or the resume push).
    Changes(Changes),
    /// Reply to `ack_changes`.
    ChangesAcknowledged(ChangesAcknowledged),
    /// One document's current (or historical) state.
    SyncDocument(SyncDocument),
    /// End of a `request_sync` / `request_full_sync` answer.
    SyncComplete(SyncComplete),
    /// Reply to `get_history`.
    History(History),
    /// Reply to `subscribe`.
    Subscribed(TopicReply),
    /// Reply to `unsubscribe`.
    Unsubscribed(TopicReply),
    /// Reply to `publish`.
    Published(Published),
    /// Reply to `ping`.
    Pong,
    /// Push: another session created a document.
    DocumentCreated(DocumentCreated),
    /// Push: another session patched a document.
    DocumentUpdated(DocumentUpdated),
    /// Push: another session deleted a document.
    DocumentDeleted(DocumentDeleted),
    /// Push: a concurrent edit was resolved against a change of this user.
    ConflictDetected(ConflictDetected),
    /// Push: topic data.
    Data(TopicData),
    /// An error that is not the reply of a change (bad message, rate limit, …).
    Error(ErrorMessage),
}

impl ServerMessage {
    /// The `type` string of the message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::AuthSuccess(_) => "auth_success",
            ServerMessage::AuthError(_) => "auth_error",
            ServerMessage::DocumentCreatedResponse(_) => "document_created_response",
            ServerMessage::DocumentUpdatedResponse(_) => "document_updated_response",
            ServerMessage::DocumentDeletedResponse(_) => "document_deleted_response",
            ServerMessage::Changes(_) => "changes",
            ServerMessage::ChangesAcknowledged(_) => "changes_acknowledged",
            ServerMessage::SyncDocument(_) => "sync_document",
            ServerMessage::SyncComplete(_) => "sync_complete",
            ServerMessage::History(_) => "history",
            ServerMessage::Subscribed(_) => "subscribed",
            ServerMessage::Unsubscribed(_) => "unsubscribed",
            ServerMessage::Published(_) => "published",
            ServerMessage::Pong => "pong",
            ServerMessage::DocumentCreated(_) => "document_created",
            ServerMessage::DocumentUpdated(_) => "document_updated",
            ServerMessage::DocumentDeleted(_) => "document_deleted",
            ServerMessage::ConflictDetected(_) => "conflict_detected",
            ServerMessage::Data(_) => "data",
            ServerMessage::Error(_) => "error",
        }
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorMessage { code, message: message.into() })
    }
}

/// `auth_success`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthSuccess {
    /// This connection's id.
    pub session_id: String,
    /// The replica id (the one sent, or a generated one).
    pub client_id: String,
    /// The authenticated user.
    pub user_id: String,
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The newest committed sequence; live pushes start after it unless the client resumed.
    pub latest_sequence: u64,
}

/// `auth_error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthError {
    /// `invalid credentials`, `expired` or `malformed` (never more specific).
    pub reason: String,
}

/// `document_created_response`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedResponse {
    /// The document id (generated when the request had none).
    pub document_id: String,
    /// Whether the document was created (and is durable).
    pub success: bool,
    /// Why not, when `success` is false.
    pub error: Option<ErrorBody>,
    /// 1 on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_revision: Option<u64>,
    /// The change's sequence on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The stored document, with the server's timestamps and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Document>,
}

/// `document_updated_response`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdatedResponse {
    /// The document id.
    pub document_id: String,
    /// Whether the patch was applied (and is durable).
    pub success: bool,
    /// Why not, when `success` is false.
    pub error: Option<ErrorBody>,
    /// The new revision on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_revision: Option<u64>,
    /// The change's sequence on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The patch as applied, when the server transformed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_patch: Option<Patch>,
    /// Concurrent-edit conflicts found while rebasing (possibly empty).
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    /// Content hash after the change, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

/// `document_deleted_response`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeletedResponse {
    /// The document id.
    pub document_id: String,
    /// Whether the document was deleted (and the tombstone is durable).
    pub success: bool,
    /// Why not, when `success` is false.
    pub error: Option<ErrorBody>,
    /// The tombstone's revision on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_revision: Option<u64>,
    /// The change's sequence on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// `changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    /// Events in increasing sequence.
    pub events: Vec<ChangeEvent>,
    /// The position this page reached: every readable change at or below it has been
    /// returned by this page or earlier ones.
    pub latest_sequence: u64,
    /// Whether more changes follow.
    pub has_more: bool,
}

/// `changes_acknowledged`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangesAcknowledged {
    /// The acknowledged position.
    pub sequence: u64,
}

/// `sync_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncDocument {
    /// The document.
    pub document: Document,
}

/// `sync_complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncComplete {
    /// How many `sync_document` messages preceded it.
    pub synced_count: u64,
    /// The newest sequence the sent states include, so a client can set its cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_sequence: Option<u64>,
}

/// `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The document.
    pub document_id: String,
    /// Its change events, newest first.
    pub events: Vec<ChangeEvent>,
}

/// `subscribed` / `unsubscribed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicReply {
    /// The topic name.
    pub topic: String,
}

/// `published`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The topic name.
    pub topic: String,
    /// How many sessions received it.
    pub delivered: u64,
}

/// `document_created` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentCreated {
    /// The new document.
    pub document: Document,
    /// The change's sequence.
    pub sequence: u64,
    /// The `client_change_id` the change was made with, so the author's other sessions
    /// (or its own reconnected session) recognise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// `document_updated` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentUpdated {
    /// The applied patch.
    pub patch: PushedPatch,
    /// The change's sequence.
    pub sequence: u64,
    /// The `client_change_id` the change was made with, so the author's other sessions
    /// (or its own reconnected session) recognise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// The `patch` object of a `document_updated` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushedPatch {
    /// The document.
    pub document_id: String,
    /// The patch as applied; it applies to revision `sync_revision - 1`.
    pub patch: Patch,
    /// The revision after the patch.
    pub sync_revision: u64,
    /// The content hash after the patch.
    pub content_hash: String,
}

/// `document_deleted` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentDeleted {
    /// The document.
    pub document_id: String,
    /// The tombstone's revision.
    pub sync_revision: u64,
    /// The change's sequence.
    pub sequence: u64,
    /// The `client_change_id` the change was made with, so the author's other sessions
    /// (or its own reconnected session) recognise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// How a concurrent edit was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionStrategy {
    /// The earlier committed change was kept; the later one's conflicting ops dropped.
    ServerWins,
    /// The client's change was kept.
    ClientWins,
    /// The later arrival overwrote the earlier change.
    LastWriterWins,
    /// Both changes were kept (disjoint parts merged).
    Merged,
}

/// `conflict_detected` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictDetected {
    /// The document.
    pub document_id: String,
    /// How it was resolved.
    pub resolution_strategy: ResolutionStrategy,
    /// The conflicting paths.
    pub conflicts: Vec<Conflict>,
    /// The document after resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_document: Option<Document>,
}

/// `data` push (topics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicData {
    /// The topic.
    pub topic: String,
    /// What was published.
    pub data: Value,
    /// Who published it.
    pub user_id: String,
    /// When.
    pub timestamp: Timestamp,
}

/// `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}
