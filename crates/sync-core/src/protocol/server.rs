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
    Subscribed(Subscribed),
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
    /// Push: an application event recorded on a document (`POST /events` with an action
    /// other than create/update/delete): the revision moves, the content does not.
    DocumentEvent(DocumentEvent),
    /// Push: the rules changed and this session may now read the document; its current
    /// state (later changes follow as usual).
    DocumentShared(DocumentShared),
    /// Push: the rules changed and this session may no longer read these documents; the
    /// client drops its copies (and its pending changes to them).
    AccessRevoked(AccessRevoked),
    /// Push: topic data.
    Data(TopicData),
    /// Reply to `connect`.
    Connected(Connected),
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
            ServerMessage::Connected(_) => "connected",
            ServerMessage::Pong => "pong",
            ServerMessage::DocumentCreated(_) => "document_created",
            ServerMessage::DocumentUpdated(_) => "document_updated",
            ServerMessage::DocumentDeleted(_) => "document_deleted",
            ServerMessage::ConflictDetected(_) => "conflict_detected",
            ServerMessage::DocumentEvent(_) => "document_event",
            ServerMessage::DocumentShared(_) => "document_shared",
            ServerMessage::AccessRevoked(_) => "access_revoked",
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

/// The reply to a change — `document_created_response`, `document_updated_response` or
/// `document_deleted_response`: committed (and durable), with what that kind of change
/// reports, or refused with why.
///
/// On the wire the outcome is flat, as PROTOCOL.md §4 describes it: `success`, `error`
/// (`null` when committed), and on success `sync_revision`, `sequence` and the kind's own
/// fields. [`Created`], [`Updated`] and [`Deleted`] are those fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeResponse<T> {
    /// The document id (the generated one for a create that named none; empty for a
    /// refused create that named none).
    pub document_id: String,
    /// Committed, or refused and why.
    pub outcome: Result<T, ErrorBody>,
}

/// `document_created_response`.
pub type CreatedResponse = ChangeResponse<Created>;
/// `document_updated_response`.
pub type UpdatedResponse = ChangeResponse<Updated>;
/// `document_deleted_response`.
pub type DeletedResponse = ChangeResponse<Deleted>;

impl<T> ChangeResponse<T> {
    /// A refusal of a change to `document_id`.
    pub fn refused(document_id: impl Into<String>, error: ErrorBody) -> Self {
        Self { document_id: document_id.into(), outcome: Err(error) }
    }
}

/// A committed create.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// Always 1.
    pub sync_revision: u64,
    /// The change's sequence.
    pub sequence: u64,
    /// The stored document, with the server's timestamps and hash.
    pub document: Document,
}

/// A committed update.
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    /// The new revision.
    pub sync_revision: u64,
    /// The change's sequence.
    pub sequence: u64,
    /// The patch as applied, when the server transformed it.
    pub applied_patch: Option<Patch>,
    /// Concurrent-edit conflicts found while rebasing (possibly empty).
    pub conflicts: Vec<Conflict>,
    /// Content hash after the change.
    pub content_hash: Option<String>,
}

/// A committed delete.
#[derive(Clone, Debug, PartialEq)]
pub struct Deleted {
    /// The tombstone's revision.
    pub sync_revision: u64,
    /// The change's sequence.
    pub sequence: u64,
}

/// The flat wire shape of the three change responses: every field any of them has, each
/// kind filling its own. Serialized from borrowed fields (no copy of the document or
/// patch), deserialized into owned ones and checked by the kind.
mod wire {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{ChangeResponse, Created, Deleted, Updated};
    use crate::error::ErrorBody;
    use crate::model::Document;
    use crate::patch::Patch;
    use crate::transform::Conflict;

    #[derive(Default, Serialize)]
    pub(super) struct Out<'a> {
        document_id: &'a str,
        success: bool,
        error: Option<&'a ErrorBody>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sync_revision: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sequence: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        document: Option<&'a Document>,
        #[serde(skip_serializing_if = "Option::is_none")]
        applied_patch: Option<&'a Patch>,
        /// An update's answer always has it, empty when refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        conflicts: Option<&'a [Conflict]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content_hash: Option<&'a str>,
    }

    #[derive(Deserialize)]
    pub(super) struct In {
        document_id: String,
        success: bool,
        #[serde(default)]
        error: Option<ErrorBody>,
        #[serde(default)]
        sync_revision: Option<u64>,
        #[serde(default)]
        sequence: Option<u64>,
        #[serde(default)]
        document: Option<Document>,
        #[serde(default)]
        applied_patch: Option<Patch>,
        #[serde(default)]
        conflicts: Vec<Conflict>,
        #[serde(default)]
        content_hash: Option<String>,
    }

    /// What one kind of change response carries besides the shared fields.
    pub(super) trait Kind: Sized {
        /// Whether a refusal still carries an empty `conflicts`.
        const REFUSED_CONFLICTS: bool = false;
        /// Fills the kind's own fields of a committed answer.
        fn write<'a>(&'a self, out: &mut Out<'a>);
        /// The committed answer from its wire fields, or the field that is missing.
        fn read(wire: In) -> Result<Self, &'static str>;
    }

    impl Kind for Created {
        fn write<'a>(&'a self, out: &mut Out<'a>) {
            (out.sync_revision, out.sequence, out.document) =
                (Some(self.sync_revision), Some(self.sequence), Some(&self.document));
        }
        fn read(wire: In) -> Result<Self, &'static str> {
            Ok(Created {
                sync_revision: wire.sync_revision.ok_or("sync_revision")?,
                sequence: wire.sequence.ok_or("sequence")?,
                document: wire.document.ok_or("document")?,
            })
        }
    }

    impl Kind for Updated {
        const REFUSED_CONFLICTS: bool = true;
        fn write<'a>(&'a self, out: &mut Out<'a>) {
            (out.sync_revision, out.sequence) = (Some(self.sync_revision), Some(self.sequence));
            out.applied_patch = self.applied_patch.as_ref();
            out.conflicts = Some(&self.conflicts);
            out.content_hash = self.content_hash.as_deref();
        }
        fn read(wire: In) -> Result<Self, &'static str> {
            Ok(Updated {
                sync_revision: wire.sync_revision.ok_or("sync_revision")?,
                sequence: wire.sequence.ok_or("sequence")?,
                applied_patch: wire.applied_patch,
                conflicts: wire.conflicts,
                content_hash: wire.content_hash,
            })
        }
    }

    impl Kind for Deleted {
        fn write<'a>(&'a self, out: &mut Out<'a>) {
            (out.sync_revision, out.sequence) = (Some(self.sync_revision), Some(self.sequence));
        }
        fn read(wire: In) -> Result<Self, &'static str> {
            Ok(Deleted {
                sync_revision: wire.sync_revision.ok_or("sync_revision")?,
                sequence: wire.sequence.ok_or("sequence")?,
            })
        }
    }

    impl<T: Kind> Serialize for ChangeResponse<T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut out = Out { document_id: &self.document_id, ..Out::default() };
            match &self.outcome {
                Ok(committed) => {
                    out.success = true;
                    committed.write(&mut out);
                }
                Err(error) => {
                    out.error = Some(error);
                    out.conflicts = T::REFUSED_CONFLICTS.then_some(&[]);
                }
            }
            out.serialize(serializer)
        }
    }

    impl<'de, T: Kind> Deserialize<'de> for ChangeResponse<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let mut wire = In::deserialize(deserializer)?;
            let document_id = std::mem::take(&mut wire.document_id);
            let outcome = match (wire.success, wire.error.take()) {
                (true, _) => Ok(T::read(wire)
                    .map_err(|field| D::Error::custom(format!("a committed change response needs `{field}`")))?),
                (false, Some(error)) => Err(error),
                (false, None) => return Err(D::Error::custom("a refused change response needs `error`")),
            };
            Ok(ChangeResponse { document_id, outcome })
        }
    }
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

/// `document_event` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentEvent {
    /// The document the event is about.
    pub document_id: String,
    /// The application's action name.
    pub action: String,
    /// What the application sent with it.
    pub payload: Value,
    /// Who recorded it.
    pub user_id: String,
    /// The document's revision after it (its content unchanged).
    pub sync_revision: u64,
    /// The event's sequence.
    pub sequence: u64,
    /// The idempotency key it was recorded with (the event's `uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// `document_shared` push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentShared {
    /// The document as it is now.
    pub document: Document,
}

/// `access_revoked` push (at most 500 ids a message; a long list comes in several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessRevoked {
    /// The documents no longer readable.
    pub document_ids: Vec<String>,
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

/// `subscribed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The topic name or pattern, as subscribed.
    pub topic: String,
    /// For a topic with history: the offset of its latest message (0 before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// For a topic with history: the epoch its offsets belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// When `since_offset` was asked: whether everything after it is delivered (the
    /// `data` messages follow this reply), or the gap is no longer held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// `unsubscribed`: the reply to `unsubscribe`, or a push when the server ended the
/// subscription itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicReply {
    /// The topic name or pattern.
    pub topic: String,
    /// On a push only: why the server ended the subscription (`forbidden`: the access
    /// rules changed and no longer let this user subscribe to it). Absent on a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `published`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The topic name.
    pub topic: String,
    /// How many sessions it was queued for.
    pub delivered: u64,
    /// For a topic with history: the message's offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// `connected`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    /// The session.
    pub session_id: String,
    /// The authenticated user.
    pub user_id: String,
    /// The replica id of the session.
    pub client_id: String,
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
    /// The topic it was published on.
    pub topic: String,
    /// What was published.
    pub data: Value,
    /// The publishing user; null when the server published it (REST).
    pub from: Option<String>,
    /// The same as `from` (the original brief's name).
    pub user_id: Option<String>,
    /// When the server received it.
    pub timestamp: Timestamp,
    /// For a topic with history: its offset (increasing by one per message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// For a topic with history: the epoch of the offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}
