//! The data model of PROTOCOL.md §3 and §5: documents, change events, ids, timestamps.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::canonical::content_hash;
use crate::vclock::VectorClock;

/// The collection a document goes to when none is named.
pub const DEFAULT_COLLECTION: &str = "default";
/// Longest document id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest collection name accepted.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Longest client (replica) id accepted.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Why an id or a collection name is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Document id outside `[A-Za-z0-9._:-]{1,128}`.
    #[error("invalid document id {0:?}: use 1-128 characters of A-Z a-z 0-9 . _ : -")]
    DocumentId(String),
    /// Collection name outside `[a-z0-9_-]{1,64}`.
    #[error("invalid collection {0:?}: use 1-64 characters of a-z 0-9 _ -")]
    Collection(String),
    /// Collection names starting with `_` belong to the server.
    #[error("collection {0:?} is reserved (names starting with `_` belong to the server)")]
    ReservedCollection(String),
    /// Client id outside `[!-~]{1,128}`.
    #[error(
        "invalid client id {0:?}: use 1-128 printable ASCII characters (`!` to `~`: no spaces, no control characters)"
    )]
    ClientId(String),
}

/// Checks a client-chosen document id.
pub fn validate_document_id(id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok { Ok(()) } else { Err(ValidationError::DocumentId(truncate(id))) }
}

/// Checks a client (replica) id: 1 to 128 printable ASCII characters, `!` (U+0021) to `~`
/// (U+007E). A UUID, a hex device id, `host:port`, `user@device` or `web-3f2a` pass.
///
/// The id is copied into the vector clock of every document the replica writes, into
/// every change event and into logs, so it is bounded, and it holds nothing a store
/// cannot keep (PostgreSQL refuses U+0000), nothing that rewrites a terminal or a log
/// line (control characters), and no look-alikes or invisible characters (spaces,
/// non-ASCII) that would make two replicas hard to tell apart in a vector clock.
pub fn validate_client_id(id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty() && id.len() <= MAX_CLIENT_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(ValidationError::ClientId(truncate(id))) }
}

/// Checks a collection name, including the reserved `_` prefix.
pub fn validate_collection(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(ValidationError::Collection(truncate(name)));
    }
    if name.starts_with('_') {
        return Err(ValidationError::ReservedCollection(name.to_owned()));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ID_LEN + 8).collect()
}

/// A new random document id (UUIDv4, lowercase hyphenated).
pub fn new_document_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `title` mirror: `content.title` when it is a string.
pub fn title_of(content: &Value) -> Option<String> {
    content.get("title").and_then(Value::as_str).map(str::to_owned)
}

/// A point in time with millisecond precision, written as RFC 3339 in UTC
/// (`2026-11-22T03:24:00.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current time from the system clock.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    /// Parses an RFC 3339 timestamp (any offset, any sub-second precision).
    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?;
        Ok(Self((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        match t.format(&format) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A stored document as the server holds it and sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Client-chosen or server-generated id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The collection the document belongs to.
    pub collection: String,
    /// Read-only mirror of `content.title`.
    pub title: Option<String>,
    /// The JSON content.
    pub content: Value,
    /// 1 after create, +1 for every applied change.
    pub sync_revision: u64,
    /// Per-client count of changes included (informational).
    #[serde(default)]
    pub vector_clock: VectorClock,
    /// Lowercase hex SHA-256 of the canonical JSON of `content`.
    pub content_hash: String,
    /// When the document was created.
    pub created_at: Timestamp,
    /// When the last change was applied.
    pub updated_at: Timestamp,
    /// Set when the document is deleted (a tombstone).
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
}

impl Document {
    /// Whether the document is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// Recomputes the derived fields (`title`, `content_hash`) after `content` changed.
    pub fn refresh_derived(&mut self) {
        self.title = title_of(&self.content);
        self.content_hash = content_hash(&self.content);
    }
}

/// The kind of a change event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A document was created.
    Create,
    /// A document was patched.
    Update,
    /// A document was deleted.
    Delete,
    /// An application-defined event (from the REST event feed).
    Custom(String),
}

impl ChangeKind {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
            ChangeKind::Custom(s) => s,
        }
    }

    /// Parses a wire name; anything not built in is custom.
    pub fn parse(s: &str) -> Self {
        match s {
            "create" => ChangeKind::Create,
            "update" => ChangeKind::Update,
            "delete" => ChangeKind::Delete,
            other => ChangeKind::Custom(other.to_owned()),
        }
    }
}

impl Serialize for ChangeKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChangeKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(ChangeKind::parse(&String::deserialize(deserializer)?))
    }
}

/// One entry of the change log (PROTOCOL.md §5), as sent in `changes` and `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Server-wide, gap-free commit order.
    pub sequence: u64,
    /// Unique id of the event.
    pub event_id: String,
    /// The document changed.
    pub document_id: String,
    /// Its collection.
    pub collection: String,
    /// The change's author: the document's owner, or a user the access rules let change it.
    pub user_id: String,
    /// The replica that made the change.
    pub client_id: String,
    /// What happened.
    pub event_type: ChangeKind,
    /// Create: the full content. Update: the applied RFC 6902 patch. Delete: null.
    pub forward_patch: Option<Value>,
    /// Create: null. Update: the patch that restores the pre-state. Delete: the content
    /// before deletion.
    pub reverse_patch: Option<Value>,
    /// The document revision this change produced.
    pub sync_revision: u64,
    /// When the change was committed.
    pub created_at: Timestamp,
    /// The `client_change_id` the change was sent with, so the sender recognises its own
    /// change when it arrives through catch-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_change_id: Option<String>,
    /// Content hash after the change (absent for deletes), so a replica can verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids() {
        for ok in ["a", "6f1c2d4e-0000-4000-8000-000000000000", "user:42.note_1", &"x".repeat(128)] {
            assert!(validate_document_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129), "a\u{0}"] {
            assert!(validate_document_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids() {
        for ok in [
            "6f1c2d4e-0000-4000-8000-000000000000",
            "6F1C2D4E00004000800000000000000",
            "a",
            "android:9774d56d682e549c",
            "marie@laptop.local",
            "web-3f2a_tab#2",
            "!~\"\\{}",
            &"x".repeat(128),
        ] {
            assert_eq!(validate_client_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            " lead",
            "tab\t",
            "nul\u{0}",
            "new\nline",
            "esc\u{1b}[2J",
            "del\u{7f}",
            "é",
            "\u{200b}",
            &"x".repeat(129),
        ] {
            assert!(validate_client_id(bad).is_err(), "{bad:?}");
        }
        // The error shows the id, cut short and escaped.
        let err = validate_client_id(&format!("{}\u{0}", "x".repeat(200_000))).unwrap_err().to_string();
        assert!(err.len() < 300 && err.starts_with("invalid client id \"xxx"), "{err}");
        assert!(validate_client_id("nul\u{0}").unwrap_err().to_string().contains("\\0"));
    }

    #[test]
    fn collections() {
        for ok in ["default", "tasks", "a-b_c9", &"x".repeat(64)] {
            assert!(validate_collection(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Tasks", "a.b", &"x".repeat(65)] {
            assert_eq!(validate_collection(bad), Err(ValidationError::Collection(bad.to_owned())));
        }
        assert_eq!(validate_collection("_system"), Err(ValidationError::ReservedCollection("_system".into())));
    }

    #[test]
    fn timestamps_are_rfc3339_millis() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let s = t.to_string();
        assert_eq!(s, "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp::parse(&s).unwrap(), t);
        assert_eq!(Timestamp::parse("2026-11-18T12:06:40.123+01:00").unwrap(), t);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{s}\""));
    }

    #[test]
    fn title_mirror() {
        assert_eq!(title_of(&serde_json::json!({"title": "Buy milk"})).as_deref(), Some("Buy milk"));
        assert_eq!(title_of(&serde_json::json!({"title": 3})), None);
        assert_eq!(title_of(&serde_json::json!([1])), None);
    }
}
