//! `sync-store`: the [`Store`] trait every storage backend implements, the records it
//! keeps, the SQLite and PostgreSQL backends, and the conformance suite every backend
//! must pass.
//!
//! Module map:
//! - this file: the trait and its record types;
//! - `error`: [`StoreError`], which keeps the error underneath as its source ([`Cause`]);
//! - `url`: [`DatabaseUrl`], the one place that says which backend a database URL names
//!   (the server and the client use it too; it needs no backend feature);
//! - `sqlite/` (feature `sqlite`): the embedded default (rusqlite, WAL, one writer thread,
//!   `synchronous=FULL`): `mod.rs` the store and its `Store` methods, `open.rs` opening,
//!   pragmas and migrations, `pool.rs` the read connections, `queries.rs` document and
//!   event queries and their rows (the reads of a scope among them), `writer.rs` the writer thread and group commit;
//! - `postgres/` (feature `postgres`): PostgreSQL through sqlx (JSONB, one committer task
//!   per process that writes queued appends as one statement, sequences from a counter
//!   row locked until commit, so several server processes can share one database):
//!   `mod.rs` the store and its `Store` methods, `open.rs` connecting, the version check
//!   and migrations, `committer.rs` group commit, `plan.rs` a group as the arrays of one
//!   statement, `scoped.rs` the reads of a scope, `decode.rs` rows;
//! - `rows`: decoding documents and events, shared by both backends;
//! - `scope`: what a [`ReadScope`] selects, shared by both backends: one index scan
//!   ("arm") for the reader's own rows and one per share, merged in key order by the
//!   database, then filtered with [`ReadView::may_read`]; and the bound on the work of
//!   one `changes_since` call;
//! - `conformance` (feature `testing`): one behavioural suite, generic over [`Store`], run
//!   on every backend by `tests/it/`.
//!
//! Both backends are default features; without them the crate is the trait, its records
//! and [`DatabaseUrl`], and needs no database driver.
//!
//! Architecture invariant: storage never merges. The write path decides every change
//! with `sync-core` and hands the store a batch of decided changes; the store writes the
//! batch atomically, assigns gap-free sequence numbers in commit order, and refuses the
//! batch if a document moved underneath it (another server process wrote it), so the
//! write path can reload and decide again.

#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod params;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod scope;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod url;

use std::future::Future;
use std::sync::Arc;

use sync_core::acl::{Acl, ReadView};
use sync_core::{ChangeEvent, Document};

pub use error::{Cause, StoreError, StoreResult};
pub use url::{DatabaseUrl, UrlError, redact_url};

/// A change the write path decided, ready to be stored. The store assigns its sequence.
#[derive(Clone, Debug)]
pub struct NewChange {
    /// The event to append (its `sequence` is ignored and assigned by the store).
    pub event: ChangeEvent,
    /// The document's state after the change (a tombstone for deletes). An update or a
    /// delete writes only what a change can move (title, content, revision, vector clock,
    /// hash, `updated_at`, `deleted_at`); the owner, the collection and `created_at` are
    /// the ones the create stored. Shared: the write path keeps the same state in its cache.
    pub document: Arc<Document>,
    /// The revision the stored document must have before this change: 0 for a create
    /// (the id must be new), otherwise `document.sync_revision - 1`.
    pub expected_revision: u64,
}

/// Who is reading: the rows a query may return. A document, and every change of it, is
/// visible when [`ReadView::may_read`] accepts its owner, collection and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadScope {
    /// The reader and the rules their reads go through.
    pub view: Arc<ReadView>,
}

impl ReadScope {
    /// A reader of their own documents only.
    pub fn owner_only(user_id: &str) -> ReadScope {
        ReadScope { view: Arc::new(ReadView::owner_only(user_id)) }
    }

    /// The reading user.
    pub fn user_id(&self) -> &str {
        self.view.user()
    }
}

/// A page of the change log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangePage {
    /// Events in increasing sequence.
    pub events: Vec<ChangeEvent>,
    /// Every visible change at or below this sequence is in this page or an earlier one.
    pub reached: u64,
    /// Whether visible changes remain after `reached`.
    pub has_more: bool,
}

/// An API credential pair. The secret is never stored: it is derived from the server's
/// secret key and the API key (see `auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCredential {
    /// `rpa_…`.
    pub api_key: String,
    /// A human name.
    pub name: String,
    /// Admin credentials may use the admin HTTP routes.
    pub is_admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Set when revoked.
    pub revoked_at: Option<i64>,
}

/// A bearer token: only its Argon2id hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public part of the token, used to find the record.
    pub id: String,
    /// The user the token authenticates.
    pub user_id: String,
    /// Argon2id PHC string of the secret part.
    pub hash: String,
    /// Whether the token grants admin HTTP routes.
    pub is_admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `None` never expires.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("hash", &"<redacted>")
            .field("is_admin", &self.is_admin)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Most lists of access rules the history keeps (the newest always among them).
pub const ACL_HISTORY_VERSIONS: usize = 100;
/// Most bytes (of their JSON) the lists in the history may hold together; the newest
/// list is kept whatever its size (a list of 10,000 long rules is about 3 MB).
pub const ACL_HISTORY_BYTES: usize = 16 << 20;

/// What the access rules may have been for a session resuming from a sequence
/// ([`Store::acl_since`]).
///
/// A list stored when the log's newest sequence was N may or may not have reached a
/// session whose cursor is N, and a session that stayed connected while no change it
/// may read was made kept its cursor while later lists reached it: so the session went
/// by the list in force before the first one stored at or after its cursor, or by any
/// list stored since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclSince {
    /// No list was stored at or after the sequence: the rules in force now are those the
    /// session went by.
    Unchanged,
    /// Lists were stored at or after the sequence: the list in force before them, then
    /// each of them, oldest first (a list equal to the one before it left out).
    Changed(Vec<Acl>),
    /// Lists were stored at or after the sequence, and the history no longer reaches the
    /// one in force before them (deleted as too old, or from before the history began):
    /// those kept, oldest first (a list equal to the one before it left out).
    BeyondHistory(Vec<Acl>),
}

/// Counts for `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live (not deleted) documents.
    pub documents: u64,
    /// The newest sequence (= the number of changes ever committed).
    pub total_changes: u64,
}

/// A storage backend. Every method is safe to call concurrently; `append_batch` calls
/// are serialised by the backend.
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers (for `/ready`).
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// The newest committed sequence (0 when empty).
    fn latest_sequence(&self) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Loads documents by id (tombstones included; missing ids are left out).
    fn load_documents(&self, ids: Vec<String>) -> impl Future<Output = StoreResult<Vec<Document>>> + Send;

    /// Documents visible to `scope`, tombstones included, ordered by id, after `after_id`,
    /// at most `limit`, optionally only in some collections. A page shorter than `limit`
    /// is the last one.
    fn list_documents(
        &self,
        scope: ReadScope,
        collections: Option<Vec<String>>,
        after_id: Option<String>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<Document>>> + Send;

    /// Appends decided changes atomically, in order, and returns the sequence assigned to
    /// each. Durable (committed and synced to disk) when it returns `Ok`.
    fn append_batch(&self, batch: Vec<NewChange>) -> impl Future<Output = StoreResult<Vec<u64>>> + Send;

    /// Visible changes with a sequence above `after`, at most `limit` (a change is visible
    /// when its document is: the document's owner, collection and id decide, not the
    /// change's author).
    ///
    /// One call does bounded work: when many candidate rows are not visible to the reader
    /// (rules that deny part of what a broader rule allows), it may answer fewer than
    /// `limit` changes with `has_more = true` and `reached` at the last row it read; the
    /// reader asks again from `reached`.
    fn changes_since(
        &self,
        scope: ReadScope,
        after: u64,
        limit: usize,
        collections: Option<Vec<String>>,
    ) -> impl Future<Output = StoreResult<ChangePage>> + Send;

    /// A document's changes with `from < sync_revision <= to` (to = newest when `None`),
    /// in revision order.
    fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> impl Future<Output = StoreResult<Vec<ChangeEvent>>> + Send;

    /// A document's changes newest first, below `before_revision` when given, at most `limit`.
    fn history(
        &self,
        document_id: String,
        before_revision: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Vec<ChangeEvent>>> + Send;

    /// The committed changes of `user_id` carrying these `client_change_id`s.
    fn find_client_changes(
        &self,
        user_id: String,
        client_change_ids: Vec<String>,
    ) -> impl Future<Output = StoreResult<Vec<ChangeEvent>>> + Send;

    /// Records how far a client has acknowledged the log.
    fn ack_cursor(
        &self,
        user_id: String,
        client_id: String,
        sequence: u64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Creates the user record if it does not exist.
    fn ensure_user(&self, user_id: String, email: Option<String>) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores a new API credential.
    fn create_api_credential(&self, credential: ApiCredential) -> impl Future<Output = StoreResult<()>> + Send;

    /// Looks an API credential up by key.
    fn get_api_credential(&self, api_key: String) -> impl Future<Output = StoreResult<Option<ApiCredential>>> + Send;

    /// How many API credentials exist (revoked included).
    fn count_api_credentials(&self) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Stores a new bearer token record.
    fn create_token(&self, token: TokenRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// Looks a bearer token record up by its public id.
    fn get_token(&self, id: String) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;

    /// The access rules, in order (none when never set).
    fn get_acl(&self) -> impl Future<Output = StoreResult<Acl>> + Send;

    /// Replaces the access rules, atomically: a reader sees the old list or the new one.
    /// In the same transaction, records the new list in the history with the newest
    /// committed sequence, and deletes the oldest lists beyond [`ACL_HISTORY_VERSIONS`]
    /// and [`ACL_HISTORY_BYTES`] (never the newest).
    fn set_acl(&self, acl: Acl) -> impl Future<Output = StoreResult<()>> + Send;

    /// The rules a reader whose cursor is `sequence` may have gone by, when lists were
    /// stored at or after it (see [`AclSince`]). Reads at most the whole history, which
    /// [`ACL_HISTORY_VERSIONS`] and [`ACL_HISTORY_BYTES`] bound.
    fn acl_since(&self, sequence: u64) -> impl Future<Output = StoreResult<AclSince>> + Send;

    /// Counts for `/stats`.
    fn stats(&self) -> impl Future<Output = StoreResult<StoreStats>> + Send;
}
