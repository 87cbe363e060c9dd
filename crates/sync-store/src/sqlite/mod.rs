//! The embedded SQLite backend: one file, no other service needed.
//!
//! Guarantees:
//! - Durable on `Ok`: the file is in WAL mode with `synchronous=FULL`, and a write is
//!   answered only after its transaction committed.
//! - One writer: a single thread owns the only write connection. Every write is a command
//!   on a bounded queue; the thread takes every command already queued (up to a limit) and
//!   runs them in one transaction, so one fsync serves many callers (group commit). A
//!   refused command writes nothing and does not fail the others.
//! - Gap-free sequences: the writer keeps the next sequence in memory and advances it only
//!   for changes that commit, so commit order equals sequence order and no reader ever sees
//!   a gap that fills later.
//! - Reads never block the writer: a small pool of read-only connections is used from
//!   `spawn_blocking`, and a read that needs two statements to agree runs them in one
//!   read transaction (a WAL snapshot).
//! - The schema is created and upgraded at open by embedded migrations, versioned with
//!   `PRAGMA user_version`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sync_core::acl::Acl;
use sync_core::{ChangeEvent, Document};
use tokio::sync::{Semaphore, oneshot};

use self::pool::ReadPool;
use self::queries::{Filter, ScopedRead, latest_sequence, query_documents, query_events, read_changes, read_documents};
use self::writer::{Envelope, Reply, Request, Responder};
use crate::params::{sql_bound, sql_int, sql_limit};
use crate::rows::{acl_since_from, decode_acl};
use crate::scope;
use crate::{
    AclSince, ApiCredential, ChangePage, NewChange, ReadScope, Store, StoreError, StoreResult, StoreStats, TokenRecord,
};

/// The columns of a document, in the order [`queries::document_from_row`] reads them.
macro_rules! document_columns {
    () => {
        "id, user_id, collection, title, content, sync_revision, vector_clock, content_hash, \
         created_at, updated_at, deleted_at"
    };
}

/// The columns of a change event, in the order [`queries::event_from_row`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, event_id, document_id, collection, user_id, client_id, event_type, forward_patch, \
         reverse_patch, sync_revision, created_at, client_change_id, content_hash"
    };
}

/// The lists of rules from the one before the first stored at or after a sequence (the
/// newest alone when there is none), in version order.
const ACL_SINCE: &str = "SELECT sequence, rules FROM acl_versions WHERE version >= COALESCE(\
     (SELECT MIN(version) FROM acl_versions WHERE sequence >= ?1), \
     (SELECT MAX(version) FROM acl_versions) + 1) - 1 \
     ORDER BY version";

// The column lists come first: the modules below use them.
mod open;
mod pool;
mod queries;
mod writer;

/// The SQLite [`Store`]: a file in WAL mode, one writer thread, a pool of readers.
///
/// Dropping the store closes the write queue; the writer thread finishes every command
/// already queued, then closes the file. `drop` waits for that, which takes at most the
/// time of the queued commands.
pub struct SqliteStore {
    /// The database file, as given to [`SqliteStore::open`].
    path: PathBuf,
    /// The write queue; `None` only while dropping, so the writer sees the queue close.
    commands: Option<mpsc::SyncSender<Envelope>>,
    /// One permit per queue slot. A caller takes a permit before queueing and the writer
    /// releases it on dequeue, so queueing never finds the channel full and never blocks.
    write_slots: Arc<Semaphore>,
    /// The writer thread, joined on drop.
    writer: Option<JoinHandle<()>>,
    /// Read-only connections.
    readers: Arc<ReadPool>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write command and waits for its answer, which comes after commit.
    ///
    /// If the caller stops waiting, the command still runs: it is already queued.
    async fn write<T>(&self, request: Request, responder: impl FnOnce(Reply<T>) -> Responder) -> StoreResult<T> {
        let stopped = || StoreError::database_message("the writer thread has stopped");
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        let permit = Arc::clone(&self.write_slots).acquire_owned().await.map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope { request, responder: responder(reply), _slot: permit };
        commands.try_send(envelope).map_err(|e| match e {
            mpsc::TrySendError::Disconnected(_) => stopped(),
            // Unreachable while every queued command holds a slot permit; failing is
            // better than blocking a runtime thread if that ever breaks.
            mpsc::TrySendError::Full(_) => StoreError::database_message("the write queue is full"),
        })?;
        answer.await.map_err(|_| StoreError::database_message("the writer thread stopped before answering"))?
    }

    /// Runs `read` on a pooled read-only connection, off the async runtime.
    async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        let slot = Arc::clone(&pool.slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::database_message("the reader pool is closed"))?;
        tokio::task::spawn_blocking(move || {
            // The slot moves here so that connections in use never exceed the pool size,
            // even when the caller stops waiting.
            let _slot = slot;
            let mut conn = pool.checkout()?;
            let result = read(&mut conn);
            pool.checkin(conn);
            result
        })
        .await
        .map_err(|e| StoreError::database("a read task failed", e))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and stop.
        self.commands = None;
        // Readers close first so that the writer's connection is the last one: closing it
        // checkpoints the WAL into the main file and removes it.
        self.readers.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the SQLite writer thread panicked");
        }
    }
}

impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.prepare_cached("SELECT 1").and_then(|mut s| s.query_row([], |_| Ok(()))).map_err(db("ping"))
        })
        .await
    }

    async fn latest_sequence(&self) -> StoreResult<u64> {
        self.read(|conn| latest_sequence(conn)).await
    }

    async fn load_documents(&self, ids: Vec<String>) -> StoreResult<Vec<Document>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_list(&ids)?;
        self.read(move |conn| {
            // The id list travels as one JSON parameter: one statement shape for any
            // number of ids, and no limit on bound parameters.
            let sql = concat!(
                "SELECT ",
                document_columns!(),
                " FROM documents WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
            );
            query_documents(conn, sql, params![ids])
        })
        .await
    }

    async fn list_documents(
        &self,
        scope: ReadScope,
        collections: Option<Vec<String>>,
        after_id: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<Document>> {
        let collections_json = collections.as_deref().map(json_list).transpose()?;
        let read = ScopedRead::documents(&scope::select(&scope.view, collections.as_deref()), collections.is_some());
        self.read(move |conn| {
            let filter = Filter {
                view: &scope.view,
                collections: collections.as_deref(),
                collections_json: collections_json.as_deref(),
            };
            // One snapshot for every chunk of the page.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db("begin a read"))?;
            // Ids are never empty, so "after the empty string" means from the start.
            read_documents(&tx, &read, &filter, after_id.unwrap_or_default(), limit)
        })
        .await
    }

    async fn append_batch(&self, batch: Vec<NewChange>) -> StoreResult<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Request::Append(batch), Responder::Sequences).await
    }

    async fn changes_since(
        &self,
        scope: ReadScope,
        after: u64,
        limit: usize,
        collections: Option<Vec<String>>,
    ) -> StoreResult<ChangePage> {
        let collections_json = collections.as_deref().map(json_list).transpose()?;
        let read = ScopedRead::change_keys(&scope::select(&scope.view, collections.as_deref()), collections.is_some());
        self.read(move |conn| {
            let filter = Filter {
                view: &scope.view,
                collections: collections.as_deref(),
                collections_json: collections_json.as_deref(),
            };
            // One snapshot for the page and for `reached`/`has_more`: a commit between the
            // statements would otherwise let `reached` skip a change the page never saw.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db("begin a read"))?;
            read_changes(&tx, &read, &filter, after, limit)
        })
        .await
    }

    async fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let from = sql_bound(from_revision);
        let to = to_revision.map_or(i64::MAX, sql_bound);
        self.read(move |conn| {
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM change_events WHERE document_id = ?1 AND sync_revision > ?2 AND sync_revision <= ?3",
                " ORDER BY sync_revision"
            );
            query_events(conn, sql, params![document_id, from, to])
        })
        .await
    }

    async fn history(
        &self,
        document_id: String,
        before_revision: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let before = before_revision.map_or(i64::MAX, sql_bound);
        let limit = sql_limit(limit);
        self.read(move |conn| {
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM change_events WHERE document_id = ?1 AND sync_revision < ?2",
                " ORDER BY sync_revision DESC LIMIT ?3"
            );
            query_events(conn, sql, params![document_id, before, limit])
        })
        .await
    }

    async fn find_client_changes(
        &self,
        user_id: String,
        client_change_ids: Vec<String>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        if client_change_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_list(&client_change_ids)?;
        self.read(move |conn| {
            // One statement whatever the number of ids: the list is one JSON parameter.
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM change_events WHERE user_id = ?1",
                " AND client_change_id IN (SELECT value FROM json_each(?2)) ORDER BY sequence"
            );
            query_events(conn, sql, params![user_id, ids])
        })
        .await
    }

    async fn ack_cursor(&self, user_id: String, client_id: String, sequence: u64) -> StoreResult<()> {
        let sequence = sql_int(sequence, "sequence")?;
        self.write(Request::AckCursor { user_id, client_id, sequence }, Responder::Unit).await
    }

    async fn ensure_user(&self, user_id: String, email: Option<String>) -> StoreResult<()> {
        self.write(Request::EnsureUser { user_id, email }, Responder::Unit).await
    }

    async fn create_api_credential(&self, credential: ApiCredential) -> StoreResult<()> {
        self.write(Request::CreateApiCredential(credential), Responder::Unit).await
    }

    async fn get_api_credential(&self, api_key: String) -> StoreResult<Option<ApiCredential>> {
        self.read(move |conn| {
            let sql = "SELECT api_key, name, is_admin, created_at, revoked_at FROM api_credentials WHERE api_key = ?1";
            conn.prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row([&api_key], |r| {
                        Ok(ApiCredential {
                            api_key: r.get(0)?,
                            name: r.get(1)?,
                            is_admin: r.get(2)?,
                            created_at: r.get(3)?,
                            revoked_at: r.get(4)?,
                        })
                    })
                    .optional()
                })
                .map_err(db("reading an API credential"))
        })
        .await
    }

    async fn count_api_credentials(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM api_credentials")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(db("counting API credentials"))?;
            Ok(count.unsigned_abs())
        })
        .await
    }

    async fn get_acl(&self) -> StoreResult<Acl> {
        let rows = self
            .read(|conn| {
                let sql = "SELECT user_pattern, item, action, allow FROM acl_rules ORDER BY position";
                conn.prepare_cached(sql)
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db("reading the access rules"))
            })
            .await?;
        decode_acl(rows)
    }

    async fn set_acl(&self, acl: Acl) -> StoreResult<()> {
        self.write(Request::SetAcl(acl), Responder::Unit).await
    }

    async fn acl_since(&self, sequence: u64) -> StoreResult<AclSince> {
        let sequence = sql_bound(sequence);
        let rows = self
            .read(move |conn| {
                conn.prepare_cached(ACL_SINCE)
                    .and_then(|mut s| {
                        s.query_map([sequence], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(db("reading the access rules' history"))
            })
            .await?;
        acl_since_from(rows, sequence)
    }

    async fn create_token(&self, token: TokenRecord) -> StoreResult<()> {
        self.write(Request::CreateToken(token), Responder::Unit).await
    }

    async fn get_token(&self, id: String) -> StoreResult<Option<TokenRecord>> {
        self.read(move |conn| {
            let sql = "SELECT id, user_id, hash, is_admin, created_at, expires_at FROM tokens WHERE id = ?1";
            conn.prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row([&id], |r| {
                        Ok(TokenRecord {
                            id: r.get(0)?,
                            user_id: r.get(1)?,
                            hash: r.get(2)?,
                            is_admin: r.get(3)?,
                            created_at: r.get(4)?,
                            expires_at: r.get(5)?,
                        })
                    })
                    .optional()
                })
                .map_err(db("reading a token"))
        })
        .await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.read(|conn| {
            let tx = conn.transaction().map_err(db("begin a read"))?;
            let documents: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM documents WHERE deleted_at IS NULL")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(db("counting documents"))?;
            let total_changes = latest_sequence(&tx)?;
            Ok(StoreStats { documents: documents.unsigned_abs(), total_changes })
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Values

/// Maps a rusqlite error to [`StoreError::Database`] with what was being done.
fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::database(context, e)
}

/// A list of strings as one JSON array parameter, unpacked in SQL by `json_each`.
fn json_list(items: &[String]) -> StoreResult<String> {
    serde_json::to_string(items).map_err(|e| StoreError::database("encoding a list parameter", e))
}
