//! The storage backend chosen by `DATABASE_URL`, as one type the server can hold.
//!
//! Enum dispatch keeps the server free of generics over the store while every backend
//! still implements the one `Store` trait its conformance suite checks.

use std::sync::Arc;

use sync_core::acl::Acl;
use sync_core::{ChangeEvent, Document};
use sync_store::postgres::{PgOptions, PgStore};
use sync_store::sqlite::SqliteStore;
use sync_store::{
    AclSince, ApiCredential, ChangePage, DatabaseUrl, NewChange, ReadScope, Store, StoreResult, StoreStats, TokenRecord,
};

use crate::config::DatabaseSection;

/// A shared handle to the configured store.
#[derive(Clone)]
pub(crate) enum AnyStore {
    /// Embedded SQLite (the default).
    Sqlite(Arc<SqliteStore>),
    /// PostgreSQL, possibly shared with other server processes.
    Postgres(Arc<PgStore>),
}

impl AnyStore {
    /// Opens the store the database URL names (see [`DatabaseUrl`]): `postgres://…` or
    /// `postgresql://…` for PostgreSQL (checking the server version and applying
    /// migrations), an SQLite file for `sqlite://path`, `sqlite:path` or a plain path.
    pub(crate) async fn open(database: &DatabaseSection) -> anyhow::Result<Self> {
        match DatabaseUrl::parse(&database.url)? {
            DatabaseUrl::Postgres(url) => {
                let store = PgStore::open(&url, PgOptions { pool_size: database.pool_size }).await?;
                Ok(AnyStore::Postgres(Arc::new(store)))
            }
            DatabaseUrl::Sqlite(path) => Ok(AnyStore::Sqlite(Arc::new(SqliteStore::open(&path)?))),
        }
    }

    /// Whether other server processes may write to the same database (PostgreSQL): the
    /// write path then never decides a change on state that is not committed yet.
    pub(crate) fn shared_with_other_processes(&self) -> bool {
        matches!(self, AnyStore::Postgres(_))
    }

    /// PostgreSQL's connections (in use, idle), for metrics; `None` on SQLite.
    pub(crate) fn pool_use(&self) -> Option<(u32, u32)> {
        match self {
            AnyStore::Sqlite(_) => None,
            AnyStore::Postgres(store) => Some(store.pool_use()),
        }
    }

    /// A short name of the backend for logs and `/health`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }
}

macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(s) => s.$method($($arg),*).await,
            AnyStore::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store for AnyStore {
    async fn ping(&self) -> StoreResult<()> {
        delegate!(self.ping())
    }
    async fn latest_sequence(&self) -> StoreResult<u64> {
        delegate!(self.latest_sequence())
    }
    async fn load_documents(&self, ids: Vec<String>) -> StoreResult<Vec<Document>> {
        delegate!(self.load_documents(ids))
    }
    async fn list_documents(
        &self,
        scope: ReadScope,
        collections: Option<Vec<String>>,
        after_id: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<Document>> {
        delegate!(self.list_documents(scope, collections, after_id, limit))
    }
    async fn append_batch(&self, batch: Vec<NewChange>) -> StoreResult<Vec<u64>> {
        delegate!(self.append_batch(batch))
    }
    async fn changes_since(
        &self,
        scope: ReadScope,
        after: u64,
        limit: usize,
        collections: Option<Vec<String>>,
    ) -> StoreResult<ChangePage> {
        delegate!(self.changes_since(scope, after, limit, collections))
    }
    async fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        delegate!(self.document_changes(document_id, from_revision, to_revision))
    }
    async fn history(
        &self,
        document_id: String,
        before_revision: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<ChangeEvent>> {
        delegate!(self.history(document_id, before_revision, limit))
    }
    async fn find_client_changes(
        &self,
        user_id: String,
        client_change_ids: Vec<String>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        delegate!(self.find_client_changes(user_id, client_change_ids))
    }
    async fn ack_cursor(&self, user_id: String, client_id: String, sequence: u64) -> StoreResult<()> {
        delegate!(self.ack_cursor(user_id, client_id, sequence))
    }
    async fn ensure_user(&self, user_id: String, email: Option<String>) -> StoreResult<()> {
        delegate!(self.ensure_user(user_id, email))
    }
    async fn create_api_credential(&self, credential: ApiCredential) -> StoreResult<()> {
        delegate!(self.create_api_credential(credential))
    }
    async fn get_api_credential(&self, api_key: String) -> StoreResult<Option<ApiCredential>> {
        delegate!(self.get_api_credential(api_key))
    }
    async fn count_api_credentials(&self) -> StoreResult<u64> {
        delegate!(self.count_api_credentials())
    }
    async fn create_token(&self, token: TokenRecord) -> StoreResult<()> {
        delegate!(self.create_token(token))
    }
    async fn get_token(&self, id: String) -> StoreResult<Option<TokenRecord>> {
        delegate!(self.get_token(id))
    }
    async fn get_acl(&self) -> StoreResult<Acl> {
        delegate!(self.get_acl())
    }
    async fn set_acl(&self, acl: Acl) -> StoreResult<()> {
        delegate!(self.set_acl(acl))
    }
    async fn acl_since(&self, sequence: u64) -> StoreResult<AclSince> {
        delegate!(self.acl_since(sequence))
    }
    async fn stats(&self) -> StoreResult<StoreStats> {
        delegate!(self.stats())
    }
}
