//! Client → server messages (PROTOCOL.md §2 and §4).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::patch::{Patch, deserialize_patch};

/// Every message a client may send, tagged by `type` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Must be the first message (unless the upgrade request carried a JWT).
    Authenticate(Authenticate),
    /// Create a document.
    CreateDocument(CreateDocument),
    /// Patch a document.
    UpdateDocument(UpdateDocument),
    /// Delete a document (leaves a tombstone).
    DeleteDocument(DeleteDocument),
    /// Make a document's content what it was at an earlier revision (a new change).
    RevertDocument(RevertDocument),
    /// Query the change log after a sequence.
    GetChangesSince(GetChangesSince),
    /// Record the client's position in the log.
    AckChanges(AckChanges),
    /// Send the current state of some documents.
    RequestSync(RequestSync),
    /// Send every readable document, tombstones included.
    RequestFullSync(RequestFullSync),
    /// Send one document, optionally as it was at a revision.
    GetDocument(GetDocument),
    /// Send the change events of one document, newest first.
    GetHistory(GetHistory),
    /// Subscribe to a topic or a pattern of topics.
    Subscribe(Subscribe),
    /// Unsubscribe from a topic.
    Unsubscribe(TopicRequest),
    /// Publish data on a topic (alias `sync`).
    Publish(Publish),
    /// The topic server's JavaScript client's greeting, once authenticated.
    Connect(Connect),
    /// Application-level ping; answered with `pong`.
    Ping,
}

impl ClientMessage {
    /// The `type` string of the message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Authenticate(_) => "authenticate",
            ClientMessage::CreateDocument(_) => "create_document",
            ClientMessage::UpdateDocument(_) => "update_document",
            ClientMessage::DeleteDocument(_) => "delete_document",
            ClientMessage::RevertDocument(_) => "revert_document",
            ClientMessage::GetChangesSince(_) => "get_changes_since",
            ClientMessage::AckChanges(_) => "ack_changes",
            ClientMessage::RequestSync(_) => "request_sync",
            ClientMessage::RequestFullSync(_) => "request_full_sync",
            ClientMessage::GetDocument(_) => "get_document",
            ClientMessage::GetHistory(_) => "get_history",
            ClientMessage::Subscribe(_) => "subscribe",
            ClientMessage::Unsubscribe(_) => "unsubscribe",
            ClientMessage::Publish(_) => "publish",
            ClientMessage::Connect(_) => "connect",
            ClientMessage::Ping => "ping",
        }
    }
}

/// `authenticate`: one message type, three methods chosen by the fields present.
#[derive(Clone, PartialEq, Serialize)]
pub struct Authenticate {
    /// The credentials (their fields sit at the top level of the message).
    #[serde(flatten)]
    pub credentials: Credentials,
    /// The replica id (a UUID); the server generates one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Resume point: the server pushes every readable change after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sequence: Option<u64>,
    /// Partial sync: only these collections are caught up and pushed on this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("credentials", &self.credentials)
            .field("client_id", &self.client_id)
            .field("last_sequence", &self.last_sequence)
            .field("collections", &self.collections)
            .finish()
    }
}

/// The three ways to authenticate. `Debug` never prints secrets.
#[derive(Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Credentials {
    /// JWT: `token`.
    Jwt {
        /// The JWT (HS256, RS256, ES256 or EdDSA; `exp` required; `sub` is the user id).
        token: String,
    },
    /// HMAC API credentials.
    Hmac {
        /// The user's email; the user id is derived from it.
        email: String,
        /// The API key (`rpa_…`).
        api_key: String,
        /// Hex HMAC-SHA256 of `"{timestamp}.{email}.{api_key}."` under the secret.
        signature: String,
        /// Unix seconds; must be within the replay window.
        timestamp: i64,
    },
    /// A bearer token from `sync-server create-token`.
    Bearer {
        /// The user the token was issued for.
        user_id: String,
        /// The token.
        auth_token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Jwt { .. } => f.debug_struct("Jwt").field("token", &"<redacted>").finish(),
            Credentials::Hmac { email, api_key, timestamp, .. } => f
                .debug_struct("Hmac")
                .field("email", email)
                .field("api_key", &mask(api_key))
                .field("signature", &"<redacted>")
                .field("timestamp", timestamp)
                .finish(),
            Credentials::Bearer { user_id, .. } => {
                f.debug_struct("Bearer").field("user_id", user_id).field("auth_token", &"<redacted>").finish()
            }
        }
    }
}

/// Shows the first characters of a key only (`rpa_1a2b…`), for logs.
pub fn mask(secret: &str) -> String {
    let shown: String = secret.chars().take(8).collect();
    format!("{shown}…")
}

/// `create_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateDocument {
    /// The document to create.
    pub document: NewDocument,
    /// Idempotency key (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// The document part of `create_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDocument {
    /// Client-chosen id; the server generates a UUIDv4 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Collection; `"default"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Seed-era top-level title, copied into `content.title` when missing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The content (`{}` when absent).
    #[serde(default = "empty_object")]
    pub content: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl NewDocument {
    /// The content to store: `content`, with a top-level `title` copied into
    /// `content.title` when `content` is an object without one.
    pub fn normalized_content(&self) -> Value {
        let mut content = self.content.clone();
        if let (Some(title), Value::Object(map)) = (&self.title, &mut content) {
            map.entry("title").or_insert_with(|| Value::String(title.clone()));
        }
        content
    }
}

/// `update_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateDocument {
    /// The patch and its context.
    pub patch: DocumentPatch,
}

/// The `patch` object of `update_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentPatch {
    /// The document to patch.
    pub document_id: String,
    /// RFC 6902 operations.
    #[serde(deserialize_with = "deserialize_patch")]
    pub patch: Patch,
    /// The revision the patch was made against; the server rebases from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_revision: Option<u64>,
    /// Without `base_revision`: the hash of the content the patch was made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Idempotency key (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// `delete_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeleteDocument {
    /// The document to delete.
    pub document_id: String,
    /// The revision the delete was decided against (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_revision: Option<u64>,
    /// Idempotency key (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// `revert_document`: a new change whose content equals the document's content at
/// `to_revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevertDocument {
    /// The document.
    pub document_id: String,
    /// The revision whose content to restore (1 ..= the current revision).
    pub to_revision: u64,
    /// Idempotency key (a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
}

/// `get_changes_since`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetChangesSince {
    /// Return changes with a sequence above this.
    #[serde(default)]
    pub last_sequence: u64,
    /// Page size (default 500, at most 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only these collections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

/// `ack_changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckChanges {
    /// Everything up to and including this sequence has been stored by the client.
    pub up_to_sequence: u64,
}

/// `request_sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSync {
    /// The documents to send.
    pub document_ids: Vec<String>,
}

/// `request_full_sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFullSync {
    /// Only these collections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
}

/// `get_document`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetDocument {
    /// The document.
    pub document_id: String,
    /// Return the state at this revision instead of the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_revision: Option<u64>,
}

/// `get_history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetHistory {
    /// The document.
    pub document_id: String,
    /// At most this many events (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only events below this revision (for paging backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_revision: Option<u64>,
}

/// `subscribe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// A topic name, or a pattern with `*` (one token) and `>` (the rest) wildcards.
    pub topic: String,
    /// Recovery: deliver first what was published on the topic after this offset (a topic
    /// with history only; not with a wildcard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_offset: Option<u64>,
    /// The history's epoch the offset belongs to (from `subscribed` or `data`); a
    /// different epoch means the offsets were reset and nothing can be recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `unsubscribe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicRequest {
    /// The topic name or pattern, as subscribed.
    pub topic: String,
}

/// `publish` (alias `sync`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// The topic name (no wildcards).
    pub topic: String,
    /// Any JSON.
    #[serde(default)]
    pub data: Value,
    /// Also deliver it to the publishing session when it is subscribed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
}

/// `connect`: the older JavaScript client's greeting after authentication.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connect {
    /// Whatever the client says about itself.
    #[serde(default)]
    pub data: Value,
}
