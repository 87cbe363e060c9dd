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
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Params, Row, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sync_core::{ChangeEvent, Document, Timestamp};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::rows::{self, ColumnError, Columns};
use crate::{ApiCredential, ChangePage, NewChange, ReadScope, Store, StoreError, StoreResult, StoreStats, TokenRecord};

/// The schema, one step per entry; entry `i` moves the database to `user_version = i + 1`.
/// Steps are appended, never edited: a database that ran a step must never see it change.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_initial.sql")];

/// Read-only connections kept open. Reads are short; four keep both cores busy while one
/// waits on the disk.
const READERS: usize = 4;
/// Write commands that may wait for the writer. Callers beyond this wait asynchronously
/// for a slot, so a burst of writes never blocks a runtime thread or grows memory.
const WRITE_QUEUE: usize = 256;
/// At most this many commands share one transaction, so the first of them is not kept
/// waiting behind an unbounded group.
const GROUP_MAX_COMMANDS: usize = 64;
/// A group stops taking commands once it holds this many changes.
const GROUP_MAX_CHANGES: usize = 4096;
/// How long a statement waits for a lock before failing (a checkpoint, another process).
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// WAL pages (4 KiB) after which a commit checkpoints the WAL into the database file.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;
/// Bytes the WAL file is trimmed to once it has been checkpointed and restarts.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// Prepared statements kept per connection; more than the distinct statements we run.
const STATEMENT_CACHE: usize = 32;
/// Page size of databases this store creates.
const PAGE_SIZE: i64 = 2048;

/// A JSON encoding buffer larger than this is released after use rather than kept.
const MAX_RETAINED_BUFFER: usize = 1 << 20;

/// The columns of a document, in the order [`document_from_row`] reads them.
macro_rules! document_columns {
    () => {
        "id, user_id, collection, title, content, sync_revision, vector_clock, content_hash, \
         created_at, updated_at, deleted_at"
    };
}

/// The columns of a change event, in the order [`event_from_row`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, event_id, document_id, collection, user_id, client_id, event_type, forward_patch, \
         reverse_patch, sync_revision, created_at, client_change_id, content_hash"
    };
}

const INSERT_DOCUMENT: &str = concat!(
    "INSERT INTO documents (",
    document_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING"
);

/// Sets only the columns a change can move: an UPDATE that names an indexed column
/// rewrites that index entry even when the value is the same (`documents_user_id` here).
/// Binds the same twelve values as the insert; `?2`, `?3` and `?9` are not used.
const UPDATE_DOCUMENT: &str = "UPDATE documents SET title = ?4, content = ?5, sync_revision = ?6, \
     vector_clock = ?7, content_hash = ?8, updated_at = ?10, deleted_at = ?11 \
     WHERE id = ?1 AND sync_revision = ?12";

const INSERT_EVENT: &str = concat!(
    "INSERT INTO change_events (",
    event_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
);

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
    /// Opens (creating if missing) the database file at `path`, applies the migrations it
    /// lacks, and starts the writer thread.
    ///
    /// Fails with [`StoreError::Open`], naming the path and the cause, when the file cannot
    /// be opened for writing, is not a SQLite database, or has a schema newer than this
    /// build knows.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let open_error = |cause: String| StoreError::Open(format!("{}: {cause}", path.display()));

        let mut conn = open_writer(path).map_err(open_error)?;
        let applied = migrate(&mut conn).map_err(open_error)?;
        if applied > 0 {
            tracing::info!(path = %path.display(), applied, version = MIGRATIONS.len(), "migrated the database");
        }
        let latest = latest_sequence(&conn).map_err(|e| open_error(e.to_string()))?;

        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(open_reader(path).map_err(open_error)?);
        }
        let readers = Arc::new(ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(idle),
            slots: Arc::new(Semaphore::new(READERS)),
        });

        let (commands, queue) = mpsc::sync_channel(WRITE_QUEUE);
        let writer = Writer { conn, next_sequence: latest + 1, json: [Vec::new(), Vec::new()] };
        let writer = std::thread::Builder::new()
            .name("sync-store-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| open_error(format!("cannot start the writer thread: {e}")))?;

        Ok(SqliteStore {
            path: path.to_owned(),
            commands: Some(commands),
            write_slots: Arc::new(Semaphore::new(WRITE_QUEUE)),
            writer: Some(writer),
            readers,
        })
    }

    /// Opens the database named by a URL: `sqlite://PATH`, `sqlite:PATH` (query parameters
    /// such as `?mode=rwc` are ignored; the file is always created when missing) or a plain
    /// path.
    pub fn open_url(url: &str) -> StoreResult<SqliteStore> {
        SqliteStore::open(&path_from_url(url)?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write command and waits for its answer, which comes after commit.
    ///
    /// If the caller stops waiting, the command still runs: it is already queued.
    async fn write<T>(&self, request: Request, responder: impl FnOnce(Reply<T>) -> Responder) -> StoreResult<T> {
        let stopped = || StoreError::Database("the writer thread has stopped".to_owned());
        let commands = self.commands.as_ref().ok_or_else(stopped)?;
        let permit = Arc::clone(&self.write_slots).acquire_owned().await.map_err(|_| stopped())?;
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope { request, responder: responder(reply), _slot: permit };
        commands.try_send(envelope).map_err(|e| match e {
            mpsc::TrySendError::Disconnected(_) => stopped(),
            // Unreachable while every queued command holds a slot permit; failing is
            // better than blocking a runtime thread if that ever breaks.
            mpsc::TrySendError::Full(_) => StoreError::Database("the write queue is full".to_owned()),
        })?;
        answer.await.map_err(|_| StoreError::Database("the writer thread stopped before answering".to_owned()))?
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
            .map_err(|_| StoreError::Database("the reader pool is closed".to_owned()))?;
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
        .map_err(|e| StoreError::Database(format!("a read task failed: {e}")))?
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
        let collections = collections.as_deref().map(json_list).transpose()?;
        // Ids are never empty, so "after the empty string" means from the start.
        let after_id = after_id.unwrap_or_default();
        let limit = sql_limit(limit);
        self.read(move |conn| {
            let sql = concat!(
                "SELECT ",
                document_columns!(),
                " FROM documents WHERE user_id = ?1 AND id > ?2",
                " AND (?3 IS NULL OR collection IN (SELECT value FROM json_each(?3)))",
                " ORDER BY id LIMIT ?4"
            );
            query_documents(conn, sql, params![scope.user_id, after_id, collections, limit])
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
        let collections = collections.as_deref().map(json_list).transpose()?;
        let after_sql = sql_int(after, "sequence")?;
        let limit_sql = sql_limit(limit);
        self.read(move |conn| {
            // One snapshot for the page and for `reached`/`has_more`: a commit between the
            // statements would otherwise let `reached` skip a change the page never saw.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db("begin a read"))?;
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM change_events WHERE user_id = ?1 AND sequence > ?2",
                " AND (?3 IS NULL OR collection IN (SELECT value FROM json_each(?3)))",
                " ORDER BY sequence LIMIT ?4"
            );
            let events = query_events(&tx, sql, params![scope.user_id, after_sql, collections, limit_sql])?;
            let full = events.len() >= limit;
            let (reached, has_more) = if full {
                // More may remain: the page reached its last event, and one more probe
                // tells whether anything visible follows.
                let reached = events.last().map_or(after, |e| e.sequence);
                let reached_sql = sql_int(reached, "sequence")?;
                let probe = "SELECT EXISTS (SELECT 1 FROM change_events WHERE user_id = ?1 AND sequence > ?2 \
                     AND (?3 IS NULL OR collection IN (SELECT value FROM json_each(?3))))";
                let has_more = tx
                    .prepare_cached(probe)
                    .and_then(|mut s| {
                        s.query_row(params![scope.user_id, reached_sql, collections], |r| r.get::<_, bool>(0))
                    })
                    .map_err(db("probing for more changes"))?;
                (reached, has_more)
            } else {
                // Everything visible after `after` in this snapshot is in the page, so the
                // page reached the snapshot's newest sequence.
                (latest_sequence(&tx)?.max(after), false)
            };
            Ok(ChangePage { events, reached, has_more })
        })
        .await
    }

    async fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let from = sql_int(from_revision, "revision")?;
        let to = to_revision.map_or(Ok(i64::MAX), |to| sql_int(to, "revision"))?;
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
        let before = before_revision.map_or(Ok(i64::MAX), |b| sql_int(b, "revision"))?;
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
// Opening and migrating

/// Opens the write connection and sets it up; the error is the cause, without the path.
fn open_writer(path: &Path) -> Result<Connection, String> {
    // No URI flag: the path is taken literally, even one that starts with `file:`.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    // SQLite silently falls back to read-only when the file is not writable; a store
    // that cannot write must say so now, not at the first change.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| e.to_string())? {
        return Err("the file is read-only".to_owned());
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    // The first statement that reads the file: a file that is not a database fails here.
    // 2 KiB pages (SQLite's default is 4 KiB), for a database created now; an existing
    // one keeps its size. Each commit writes every page it dirtied to the WAL, and a batch
    // of changes to many documents dirties one leaf per document in the per-user and
    // per-document indexes: smaller pages halve those bytes. Measured: about +20%
    // acknowledged updates/s with 100 writers (docs/BENCHMARKS.md).
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(|e| e.to_string())?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| format!("cannot switch to WAL mode: {e}"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("cannot switch to WAL mode (the journal mode stays {mode:?})"));
    }
    set_common_pragmas(&conn).map_err(|e| e.to_string())?;
    // A larger page cache for the writer, which walks the indexes of every insert.
    conn.pragma_update(None, "cache_size", -16_384).map_err(|e| e.to_string())?;
    // Checkpoint every ~40 MB of WAL instead of SQLite's 4 MB: index pages that many
    // commits touch are copied back once instead of ten times. Checkpoints had been a
    // fifth of the writer's time with 1 KB documents. The size limit trims the file
    // after a burst.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES).map_err(|e| e.to_string())?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Opens one read-only connection; the error is the cause, without the path.
fn open_reader(path: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| format!("cannot open a reader: {e}"))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| e.to_string())?;
    set_common_pragmas(&conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The settings every connection carries (they are per connection, not stored in the file).
fn set_common_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Applies the migrations the database lacks, each in its own transaction together with
/// its `user_version` bump; returns how many ran.
fn migrate(conn: &mut Connection) -> Result<usize, String> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(version).ok().filter(|&v| v <= known).ok_or_else(|| {
        format!("the schema version is {version}, newer than this build knows ({known}); use a newer release")
    })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let step = index + 1;
        apply_migration(conn, sql, step).map_err(|e| format!("migration {step} failed: {e}"))?;
    }
    Ok(known - current)
}

/// Runs one migration and records its number, atomically.
fn apply_migration(conn: &mut Connection, sql: &str, step: usize) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", i64::try_from(step).unwrap_or(i64::MAX))?;
    tx.commit()
}

/// Turns a database URL into a file path; see [`SqliteStore::open_url`].
fn path_from_url(url: &str) -> StoreResult<PathBuf> {
    let path = if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        rest.split_once('?').map_or(rest, |(path, _query)| path)
    } else if url.contains("://") {
        return Err(StoreError::Open(format!("{url}: not a SQLite URL (use sqlite://PATH, sqlite:PATH or a path)")));
    } else {
        url
    };
    if path.is_empty() {
        return Err(StoreError::Open(format!("{url}: the URL names no file")));
    }
    Ok(PathBuf::from(path))
}

// ---------------------------------------------------------------------------------------
// The read pool

/// Read-only connections, handed out one per blocking task.
struct ReadPool {
    /// Where to open a replacement connection.
    path: PathBuf,
    /// Connections not in use.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use at once.
    slots: Arc<Semaphore>,
}

impl ReadPool {
    fn checkout(&self) -> StoreResult<Connection> {
        // A poisoned lock only means a panic elsewhere; the Vec itself is always intact.
        let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match conn {
            Some(conn) => Ok(conn),
            // A connection is lost when a read task panics; open a replacement.
            None => open_reader(&self.path).map_err(StoreError::Database),
        }
    }

    fn checkin(&self, conn: Connection) {
        // A connection left inside a transaction would pin an old snapshot: drop it.
        if conn.is_autocommit() {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The writer thread

/// A queued write and where its answer goes.
struct Envelope {
    request: Request,
    responder: Responder,
    /// Held while queued; released when the writer takes the command.
    _slot: OwnedSemaphorePermit,
}

/// A write the writer thread performs.
enum Request {
    Append(Vec<NewChange>),
    EnsureUser { user_id: String, email: Option<String> },
    CreateApiCredential(ApiCredential),
    CreateToken(TokenRecord),
    AckCursor { user_id: String, client_id: String, sequence: i64 },
}

impl Request {
    /// How much the request weighs against [`GROUP_MAX_CHANGES`].
    fn weight(&self) -> usize {
        match self {
            Request::Append(batch) => batch.len(),
            _ => 1,
        }
    }
}

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Where a command's answer goes: every command answers either sequences or nothing.
enum Responder {
    Sequences(Reply<Vec<u64>>),
    Unit(Reply<()>),
}

impl Responder {
    fn send(self, result: StoreResult<Vec<u64>>) {
        // A send fails only when the caller stopped waiting; the write stands regardless.
        match self {
            Responder::Sequences(reply) => {
                let _ = reply.send(result);
            }
            Responder::Unit(reply) => {
                let _ = reply.send(result.map(drop));
            }
        }
    }
}

/// Why a group transaction did not commit.
enum GroupFailure {
    /// The command at this index was refused (conflict, duplicate, bad value, …); the
    /// transaction was rolled back, and the other commands may run again without it.
    Refused(usize, StoreError),
    /// The transaction could not begin or commit; no command of the group is written.
    Broken(String),
}

/// The writer thread's state: the only write connection and the sequence counter.
struct Writer {
    conn: Connection,
    /// The sequence the next committed change gets. Advanced only by commands that
    /// succeed, and reset when a group fails to commit, so sequences stay gap-free.
    next_sequence: u64,
    /// Reused JSON encoding buffers: content and vector clock, then the two patches.
    json: [Vec<u8>; 2],
}

impl Writer {
    /// Runs until every sender is gone and the queue is empty.
    fn run(mut self, queue: mpsc::Receiver<Envelope>) {
        let mut group = Vec::with_capacity(GROUP_MAX_COMMANDS);
        while let Ok(first) = queue.recv() {
            let mut weight = first.request.weight();
            group.push(first);
            // Everything already waiting shares the transaction, and so the fsync.
            while group.len() < GROUP_MAX_COMMANDS && weight < GROUP_MAX_CHANGES {
                match queue.try_recv() {
                    Ok(next) => {
                        weight += next.request.weight();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
        tracing::debug!("the SQLite writer stopped");
    }

    /// Runs the commands of `group` in one transaction and answers each after the commit.
    ///
    /// Refusals are rare (the write path decides against current state), so the group
    /// runs without savepoints: a savepoint makes SQLite copy every page it touches into a
    /// statement journal, which cost about a sixth of the write time. When a command is
    /// refused, the transaction is rolled back, that command gets its error, and the rest
    /// run again without it. The commands before it see the same state again, so its
    /// refusal still stands; each retry removes one command, so this ends.
    fn commit_group(&mut self, group: &mut Vec<Envelope>) {
        // The queue slots are free from here: the commands have left the channel.
        let mut pending: Vec<(Request, Responder)> = group.drain(..).map(|e| (e.request, e.responder)).collect();
        while !pending.is_empty() {
            match self.try_group(&pending) {
                Ok(results) => {
                    for ((_, responder), result) in pending.into_iter().zip(results) {
                        responder.send(Ok(result));
                    }
                    return;
                }
                Err(GroupFailure::Refused(index, error)) => {
                    let (_, responder) = pending.remove(index);
                    responder.send(Err(error));
                }
                Err(GroupFailure::Broken(message)) => {
                    tracing::warn!(error = %message, "a write transaction failed");
                    for (_, responder) in pending {
                        responder.send(Err(StoreError::Database(message.clone())));
                    }
                    return;
                }
            }
        }
    }

    /// One attempt at a group: every command, then the commit. On failure nothing is
    /// written and the sequence counter is back where it was.
    fn try_group(&mut self, pending: &[(Request, Responder)]) -> Result<Vec<Vec<u64>>, GroupFailure> {
        let start = self.next_sequence;
        self.exec("BEGIN IMMEDIATE").map_err(|e| GroupFailure::Broken(format!("cannot begin a write: {e}")))?;
        let mut results = Vec::with_capacity(pending.len());
        for (index, (request, _)) in pending.iter().enumerate() {
            let result = match request {
                Request::Append(batch) => self.append(batch),
                other => self.apply_small(other).map(|()| Vec::new()),
            };
            match result {
                Ok(sequences) => results.push(sequences),
                Err(error) => {
                    self.abandon(start);
                    return Err(GroupFailure::Refused(index, error));
                }
            }
        }
        if let Err(e) = self.exec("COMMIT") {
            self.abandon(start);
            return Err(GroupFailure::Broken(format!("commit failed: {e}")));
        }
        Ok(results)
    }

    /// Rolls the open transaction back and resets the sequence counter to `start`.
    fn abandon(&mut self, start: u64) {
        // SQLite has already rolled back after some errors (disk full, I/O).
        if !self.conn.is_autocommit()
            && let Err(e) = self.exec("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback after a failed write failed");
        }
        self.next_sequence = start;
    }

    /// Writes one batch of decided changes. Advances `next_sequence` only on success.
    fn append(&mut self, batch: &[NewChange]) -> StoreResult<Vec<u64>> {
        let Writer { conn, next_sequence, json } = self;
        let [first, second] = json;
        let mut insert_document = conn.prepare_cached(INSERT_DOCUMENT).map_err(db("preparing a document insert"))?;
        let mut update_document = conn.prepare_cached(UPDATE_DOCUMENT).map_err(db("preparing a document update"))?;
        let mut insert_event = conn.prepare_cached(INSERT_EVENT).map_err(db("preparing an event insert"))?;

        let mut sequence = *next_sequence;
        let mut sequences = Vec::with_capacity(batch.len());
        let mut conflicts: Vec<String> = Vec::new();
        for change in batch {
            let document = &change.document;
            let revision = sql_int(document.sync_revision, "revision")?;
            let content = encode(first, &document.content)?;
            let clock = encode(second, &document.vector_clock)?;
            let deleted_at = document.deleted_at.map(Timestamp::unix_millis);
            let expected = sql_int(change.expected_revision, "revision")?;
            let (created_at, updated_at) = (document.created_at.unix_millis(), document.updated_at.unix_millis());
            // One parameter array for both statements: the insert binds the first eleven.
            let values: [&dyn rusqlite::ToSql; 12] = [
                &document.id,
                &document.user_id,
                &document.collection,
                &document.title,
                &content,
                &revision,
                &clock,
                &document.content_hash,
                &created_at,
                &updated_at,
                &deleted_at,
                &expected,
            ];
            if change.expected_revision == 0 {
                let inserted = insert_document.execute(&values[..11]).map_err(db("inserting a document"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(document.id.clone()));
                }
            } else {
                let updated = update_document.execute(&values[..]).map_err(db("updating a document"))?;
                if updated == 0 {
                    // Keep checking the rest: the write path reloads every moved document at once.
                    if !conflicts.contains(&document.id) {
                        conflicts.push(document.id.clone());
                    }
                    continue;
                }
            }
            if !conflicts.is_empty() {
                // The batch will be refused; its events need not be written.
                continue;
            }

            let event = &change.event;
            let forward = event.forward_patch.as_ref().map(|p| encode(first, p)).transpose()?;
            let reverse = event.reverse_patch.as_ref().map(|p| encode(second, p)).transpose()?;
            let event_revision = sql_int(event.sync_revision, "revision")?;
            let inserted = insert_event.execute(params![
                sql_int(sequence, "sequence")?,
                event.event_id,
                event.document_id,
                event.collection,
                event.user_id,
                event.client_id,
                event.event_type.as_str(),
                forward,
                reverse,
                event_revision,
                event.created_at.unix_millis(),
                event.client_change_id,
                event.content_hash,
            ]);
            if let Err(e) = inserted {
                return Err(event_insert_error(e, event));
            }
            sequences.push(sequence);
            sequence += 1;
        }
        release_large(first);
        release_large(second);
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict(conflicts));
        }
        *next_sequence = sequence;
        Ok(sequences)
    }

    /// The writes other than change batches: one statement each.
    fn apply_small(&mut self, request: &Request) -> StoreResult<()> {
        match request {
            Request::Append(_) => Ok(()),
            Request::EnsureUser { user_id, email } => {
                let sql = "INSERT OR IGNORE INTO users (id, email, created_at) VALUES (?1, ?2, ?3)";
                self.conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![user_id, email, Timestamp::now().unix_millis()]))
                    .map_err(db("creating a user"))?;
                Ok(())
            }
            Request::CreateApiCredential(c) => {
                let sql = "INSERT INTO api_credentials (api_key, name, is_admin, created_at, revoked_at) \
                           VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (api_key) DO NOTHING";
                let inserted = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![c.api_key, c.name, c.is_admin, c.created_at, c.revoked_at]))
                    .map_err(db("creating an API credential"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(c.api_key.clone()));
                }
                Ok(())
            }
            Request::CreateToken(t) => {
                let sql = "INSERT INTO tokens (id, user_id, hash, is_admin, created_at, expires_at) \
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING";
                let inserted = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| {
                        s.execute(params![t.id, t.user_id, t.hash, t.is_admin, t.created_at, t.expires_at])
                    })
                    .map_err(db("creating a token"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(t.id.clone()));
                }
                Ok(())
            }
            Request::AckCursor { user_id, client_id, sequence } => {
                // The WHERE keeps a late or repeated acknowledgement from moving the cursor back.
                let sql = "INSERT INTO client_cursors (user_id, client_id, sequence, updated_at) VALUES (?1, ?2, ?3, ?4) \
                           ON CONFLICT (user_id, client_id) DO UPDATE \
                           SET sequence = excluded.sequence, updated_at = excluded.updated_at \
                           WHERE excluded.sequence >= client_cursors.sequence";
                self.conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![user_id, client_id, sequence, Timestamp::now().unix_millis()]))
                    .map_err(db("acknowledging a cursor"))?;
                Ok(())
            }
        }
    }

    /// Runs a statement without parameters or rows (transaction control).
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }
}

/// Names the unique constraint a change event broke.
fn event_insert_error(error: rusqlite::Error, event: &ChangeEvent) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &error
        && failure.code == ErrorCode::ConstraintViolation
    {
        // SQLite names the columns of the violated index: "UNIQUE constraint failed:
        // change_events.user_id, change_events.client_change_id".
        if message.contains("client_change_id") {
            let id = event.client_change_id.clone().unwrap_or_default();
            return StoreError::Duplicate(id);
        }
        if message.contains("event_id") {
            return StoreError::Duplicate(event.event_id.clone());
        }
        if message.contains("sync_revision") {
            // Another change already produced this revision of the document.
            return StoreError::Conflict(vec![event.document_id.clone()]);
        }
    }
    StoreError::Database(format!("inserting a change event: {error}"))
}

// ---------------------------------------------------------------------------------------
// Rows and values

/// Runs a document query.
fn query_documents(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<Vec<Document>> {
    let mut statement = conn.prepare_cached(sql).map_err(db("preparing a document query"))?;
    let mut rows = statement.query(params).map_err(db("querying documents"))?;
    let mut documents = Vec::new();
    while let Some(row) = rows.next().map_err(db("reading documents"))? {
        documents.push(document_from_row(row)?);
    }
    Ok(documents)
}

/// Runs a change event query.
fn query_events(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<Vec<ChangeEvent>> {
    let mut statement = conn.prepare_cached(sql).map_err(db("preparing an event query"))?;
    let mut rows = statement.query(params).map_err(db("querying change events"))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(db("reading change events"))? {
        events.push(event_from_row(row)?);
    }
    Ok(events)
}

fn document_from_row(row: &Row<'_>) -> StoreResult<Document> {
    rows::document(row)
}

fn event_from_row(row: &Row<'_>) -> StoreResult<ChangeEvent> {
    rows::event(row, 0)
}

impl Columns for Row<'_> {
    fn text(&self, index: usize) -> Result<String, ColumnError> {
        Ok(self.get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ColumnError> {
        Ok(self.get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, ColumnError> {
        Ok(self.get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, ColumnError> {
        Ok(self.get(index)?)
    }

    /// Parsed straight from SQLite's buffer.
    fn json<T: DeserializeOwned>(&self, index: usize) -> Result<T, ColumnError> {
        Ok(serde_json::from_str(self.get_ref(index)?.as_str()?)?)
    }

    fn optional_json<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, ColumnError> {
        match self.get_ref(index)? {
            ValueRef::Null => Ok(None),
            value => Ok(Some(serde_json::from_str(value.as_str()?)?)),
        }
    }
}

/// Maps a rusqlite error to [`StoreError::Database`] with what was being done.
fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database(format!("{context}: {e}"))
}

/// The newest committed sequence (0 when the log is empty).
fn latest_sequence(conn: &Connection) -> StoreResult<u64> {
    // MAX of the rowid is answered from the end of the table's b-tree.
    let latest: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(sequence), 0) FROM change_events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db("reading the latest sequence"))?;
    u64::try_from(latest).map_err(|_| StoreError::Corrupt(format!("negative sequence {latest}")))
}

/// A `u64` as SQLite's signed 64-bit integer.
fn sql_int(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{what} {value} is beyond the stored range")))
}

/// A page size as a SQL LIMIT (larger than any table can hold becomes "no limit").
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A list of strings as one JSON array parameter, unpacked in SQL by `json_each`.
fn json_list(items: &[String]) -> StoreResult<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Database(format!("encoding a list parameter: {e}")))
}

/// Serialises `value` into `buffer` (reused across rows) and returns it as text.
fn encode<'b, T: Serialize + ?Sized>(buffer: &'b mut Vec<u8>, value: &T) -> StoreResult<&'b str> {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, value).map_err(|e| StoreError::Database(format!("encoding JSON: {e}")))?;
    std::str::from_utf8(buffer).map_err(|e| StoreError::Database(format!("encoding JSON: {e}")))
}

/// Drops a buffer that grew for one unusually large value, so it is not kept forever.
fn release_large(buffer: &mut Vec<u8>) {
    if buffer.capacity() > MAX_RETAINED_BUFFER {
        *buffer = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files() {
        for (url, path) in [
            ("sqlite://sync.db", "sync.db"),
            ("sqlite:///var/lib/sync/sync.db", "/var/lib/sync/sync.db"),
            ("sqlite:./data/sync.db", "./data/sync.db"),
            ("sqlite:sync.db?mode=rwc", "sync.db"),
            ("sqlite://sync.db?mode=rwc&cache=shared", "sync.db"),
            ("/tmp/plain.db", "/tmp/plain.db"),
            ("relative.db", "relative.db"),
        ] {
            assert_eq!(path_from_url(url).ok(), Some(PathBuf::from(path)), "{url}");
        }
    }

    #[test]
    fn urls_that_name_no_sqlite_file_are_refused() {
        for url in ["postgres://user@host/db", "sqlite://", "sqlite:?mode=rwc", ""] {
            assert!(matches!(path_from_url(url), Err(StoreError::Open(_))), "{url}");
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("m.db")).expect("open");
        assert_eq!(migrate(&mut conn), Ok(MIGRATIONS.len()));
        assert_eq!(migrate(&mut conn), Ok(0), "a second run applies nothing");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn list_queries_use_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("p.db")).expect("open");
        migrate(&mut conn).expect("migrate");
        let plan = |sql: &str| -> String {
            let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("prepare");
            let rows = s.query_map([], |r| r.get::<_, String>(3)).expect("query");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let find = concat!(
            "SELECT sequence FROM change_events WHERE user_id = 'u'",
            " AND client_change_id IN (SELECT value FROM json_each('[\"a\"]'))"
        );
        assert!(plan(find).contains("change_events_client_change"), "{}", plan(find));
        let load = "SELECT id FROM documents WHERE id IN (SELECT value FROM json_each('[\"a\"]'))";
        assert!(plan(load).contains("sqlite_autoindex_documents_1 (id=?)"), "{}", plan(load));
    }
}
