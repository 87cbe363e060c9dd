//! The client's local SQLite database: the documents as the application sees them, the
//! replica state behind each (confirmed server state and pending changes) and its owner,
//! the sync cursor, the client id and the user id the server knows this replica as.
//!
//! Guarantees: every local write is one transaction (view and pending changes together),
//! so a crash never leaves a view without its outbox entry or the reverse. The database
//! runs in WAL mode with `synchronous=NORMAL`: a committed write survives the process
//! being killed; only an operating-system crash or power loss can take the last commits
//! (an fsync per local write would cost milliseconds each).

use std::path::PathBuf;

use rusqlite::{CachedStatement, Connection, OptionalExtension, Statement, Transaction, params};
use serde_json::Value;
use sync_core::replica::Replica;
use sync_core::transform::Policy;
use sync_store::DatabaseUrl;

use crate::error::{Result, SyncError};

/// Sync status of a document, for UIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocStatus {
    /// Equal to the server's state.
    Synced,
    /// Local changes wait for the server.
    Pending,
    /// The last sync met a conflict on it.
    Conflict,
}

/// A document as the application sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The id.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// The content (local changes included).
    pub content: Value,
    /// `content.title`, when a string.
    pub title: Option<String>,
    /// The server revision this view is based on (0 before the server has it).
    pub revision: u64,
    /// Sync status.
    pub status: DocStatus,
    /// Local changes not yet acknowledged.
    pub pending: u64,
    /// The owner's user id (the server's `user_id`): another user's for a document shared
    /// with this one by the server's access rules. `None` until the server has said (a
    /// document created here before the first connection).
    pub owner: Option<String>,
}

/// A stored document row with its replica.
#[derive(Clone, Debug)]
pub struct DocRow {
    /// The id.
    pub id: String,
    /// The collection.
    pub collection: String,
    /// Confirmed state and pending changes.
    pub replica: Replica,
    /// The last sync met a conflict.
    pub conflict: bool,
    /// The owner's user id, when known.
    pub owner: Option<String>,
}

impl DocRow {
    /// The view's title (`content.title` when a string), without copying the content
    /// when nothing is pending.
    pub fn title(&self) -> Option<String> {
        if self.replica.pending.is_empty() {
            self.replica.confirmed.as_ref().filter(|c| !c.deleted).and_then(|c| sync_core::model::title_of(&c.content))
        } else {
            self.replica.view().as_ref().and_then(sync_core::model::title_of)
        }
    }

    /// The application's view of it, `None` when deleted.
    pub fn document(&self) -> Option<Document> {
        let content = self.replica.view()?;
        let pending = self.replica.pending.len() as u64;
        Some(Document {
            id: self.id.clone(),
            collection: self.collection.clone(),
            title: sync_core::model::title_of(&content),
            content,
            revision: self.replica.revision(),
            status: if self.conflict {
                DocStatus::Conflict
            } else if pending > 0 {
                DocStatus::Pending
            } else {
                DocStatus::Synced
            },
            pending,
            owner: self.owner.clone(),
        })
    }
}

/// The local database.
pub struct LocalStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY NOT NULL,
    collection TEXT NOT NULL,
    revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    view TEXT,            -- the content the application sees (JSON), NULL when deleted
    replica TEXT,         -- the replica (JSON) while changes are pending; NULL when in sync
    pending INTEGER NOT NULL,
    conflict INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS documents_collection ON documents(collection, id);
CREATE INDEX IF NOT EXISTS documents_pending ON documents(pending) WHERE pending > 0;
";

/// Migrations after [`SCHEMA`], in order, each run once (`meta.schema_version` counts
/// those applied). Added, never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the owner's user id (documents may be other users' since sharing); NULL for
    // rows stored before it, which were all this user's own and are filled in at the
    // next connection.
    "ALTER TABLE documents ADD COLUMN owner TEXT;",
];

/// Turns `sqlite:path?mode=rwc`, `sqlite://path` or a plain path into a path (see
/// `sync_store::DatabaseUrl`); a PostgreSQL URL names no local file and is refused.
pub fn database_path(url: &str) -> Result<PathBuf> {
    match DatabaseUrl::parse(url) {
        Ok(DatabaseUrl::Sqlite(path)) => Ok(path),
        Ok(DatabaseUrl::Postgres(_)) => {
            Err(SyncError::InvalidInput("a PostgreSQL URL names no local database file".to_owned()))
        }
        Err(e) => Err(SyncError::InvalidInput(e.to_string())),
    }
}

impl LocalStore {
    /// Opens (creating when missing) the database at `url`.
    pub fn open(url: &str) -> Result<Self> {
        let path = database_path(url)?;
        let conn = Connection::open(&path).map_err(|source| SyncError::DatabaseFile {
            action: "open",
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (which fsync) run on a background thread, not inside a local write:
        // see `Checkpointer`. This keeps local writes under a millisecond at p99.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(SCHEMA).map_err(|source| SyncError::DatabaseFile {
            action: "prepare",
            path: path.clone(),
            source,
        })?;
        let mut store = Self { conn };
        store.migrate().map_err(|e| match e {
            SyncError::Database(source) => SyncError::DatabaseFile { action: "migrate", path, source },
            other => other,
        })?;
        Ok(store)
    }

    /// Applies the [`MIGRATIONS`] this database has not had, each in its own transaction
    /// with the version that counts it.
    fn migrate(&mut self) -> Result<()> {
        let applied: usize = self.meta("schema_version")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(migration)?;
            set_meta(&tx, "schema_version", &(index + 1).to_string())?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn, key, value)
    }

    /// The client id of this database, created on first use.
    pub fn client_id(&self) -> Result<String> {
        if let Some(id) = self.meta("client_id")? {
            return Ok(id);
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.set_meta("client_id", &id)?;
        Ok(id)
    }

    /// The sync cursor: the newest server sequence stored.
    pub fn cursor(&self) -> Result<u64> {
        Ok(self.meta("cursor")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The user id the server authenticated this replica as, once it has connected.
    pub fn user_id(&self) -> Result<Option<String>> {
        self.meta("user_id")
    }

    /// Starts partial sync of `collections` (`None`: every collection). When the stored
    /// cursor was reached syncing fewer collections than that, it goes back to 0 so that
    /// the next catch-up brings the documents of the added ones (changes already held
    /// are skipped by revision). Returns the cursor to start from.
    pub fn begin_sync_of(&mut self, collections: Option<&[String]>) -> Result<u64> {
        let wanted = collections.map(|names| names.join(","));
        let stored = self.meta("sync_collections")?;
        let cursor = self.cursor()?;
        // A database from before partial sync synced everything (and has no entry).
        let widened = match (&stored, collections) {
            (_, None) => stored.is_some(),
            (None, Some(_)) => false,
            (Some(stored), Some(names)) => !names.iter().all(|n| stored.split(',').any(|s| s == n)),
        };
        if stored == wanted && !widened {
            return Ok(cursor);
        }
        self.transaction(|tx| {
            match &wanted {
                Some(names) => set_meta(tx, "sync_collections", names)?,
                None => {
                    tx.execute("DELETE FROM meta WHERE key = 'sync_collections'", [])?;
                }
            }
            if widened {
                store_cursor(tx, 0)?;
            }
            Ok(())
        })?;
        Ok(if widened { 0 } else { cursor })
    }

    /// Loads a document row.
    pub fn load(&self, id: &str, policy_for: impl Fn(&str) -> Policy) -> Result<Option<DocRow>> {
        load(&self.conn, id, &policy_for)
    }

    /// Every live document, optionally of one collection, ordered by id.
    pub fn list(&self, collection: Option<&str>, policy_for: impl Fn(&str) -> Policy) -> Result<Vec<Document>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, collection, revision, deleted, view, replica, conflict, owner FROM documents
             WHERE (?1 IS NULL OR collection = ?1) AND view IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map(params![collection], row_to_doc)?;
        let mut out = Vec::new();
        for row in rows {
            let row = finish_row(row?, &policy_for)?;
            if let Some(doc) = row.document() {
                out.push(doc);
            }
        }
        Ok(out)
    }

    /// How many live documents there are.
    pub fn count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM documents WHERE view IS NOT NULL", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// How many local changes wait for the server.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT COALESCE(SUM(pending), 0) FROM documents WHERE pending > 0", [], |r| {
            r.get::<_, i64>(0)
        })? as u64)
    }

    /// Ids of documents with pending changes.
    pub fn pending_ids(&self) -> Result<Vec<String>> {
        // `+id` keeps the planner on the small `documents_pending` index (then sorting the
        // few ids) instead of walking every row in id order to skip those in sync.
        let mut stmt = self.conn.prepare_cached("SELECT id FROM documents WHERE pending > 0 ORDER BY +id")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Runs `f` in one transaction.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// Copies the WAL back into the database file from a background thread, so that local
/// writes never pay for a checkpoint. Stops (after a last checkpoint) when dropped.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `url` every `every`.
    pub fn start(url: &str, every: std::time::Duration) -> Result<Self> {
        let path = database_path(url)?;
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sync-client-checkpoint".into())
            .spawn(move || {
                loop {
                    let done = !matches!(stopped.recv_timeout(every), Err(std::sync::mpsc::RecvTimeoutError::Timeout));
                    // PASSIVE never blocks the writer; it copies what readers allow.
                    let mode = if done { "TRUNCATE" } else { "PASSIVE" };
                    if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
                        tracing::debug!(error = %e, "local checkpoint failed; retrying later");
                    }
                    if done {
                        break;
                    }
                }
            })
            .map_err(|source| SyncError::Thread { what: "the checkpoint thread", source })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const LOAD_SQL: &str =
    "SELECT id, collection, revision, deleted, view, replica, conflict, owner FROM documents WHERE id = ?1";

// An unknown owner (`NULL`) never overwrites a known one.
const SAVE_SQL: &str =
    "INSERT INTO documents (id, collection, revision, deleted, view, replica, pending, conflict, updated_at, owner)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT(id) DO UPDATE SET collection = ?2, revision = ?3, deleted = ?4, view = ?5, replica = ?6,
         pending = ?7, conflict = ?8, updated_at = ?9, owner = COALESCE(?10, owner)";

const INSERT_NEW_SQL: &str =
    "INSERT INTO documents (id, collection, revision, deleted, view, replica, pending, conflict, updated_at, owner)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
     ON CONFLICT(id) DO NOTHING";

/// Loads a document row inside a transaction or on the connection.
pub fn load(conn: &Connection, id: &str, policy_for: &dyn Fn(&str) -> Policy) -> Result<Option<DocRow>> {
    let mut stmt = conn.prepare_cached(LOAD_SQL)?;
    load_with(&mut stmt, id, policy_for)
}

/// Stores a document row (view, replica when pending, counters). Returns the view's
/// JSON as stored (`None` when deleted), so that an event about the row can carry it
/// without building it again.
pub fn save(conn: &Connection, row: &DocRow) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(SAVE_SQL)?;
    write_with(&mut stmt, row).map(|(_, view)| view)
}

/// The row statements prepared once for a run of reads and writes in one transaction
/// (a catch-up page stores thousands of rows: looking each statement up in the cache
/// and handing it back costs about as much as a row's index search).
pub struct Rows<'c> {
    load: CachedStatement<'c>,
    save: CachedStatement<'c>,
    insert_new: CachedStatement<'c>,
}

impl<'c> Rows<'c> {
    /// Prepares (or takes from the cache) the statements on `conn`.
    pub fn new(conn: &'c Connection) -> Result<Self> {
        Ok(Self {
            load: conn.prepare_cached(LOAD_SQL)?,
            save: conn.prepare_cached(SAVE_SQL)?,
            insert_new: conn.prepare_cached(INSERT_NEW_SQL)?,
        })
    }

    /// Like [`load`].
    pub fn load(&mut self, id: &str, policy_for: &dyn Fn(&str) -> Policy) -> Result<Option<DocRow>> {
        load_with(&mut self.load, id, policy_for)
    }

    /// Like [`save`].
    pub fn save(&mut self, row: &DocRow) -> Result<Option<String>> {
        write_with(&mut self.save, row).map(|(_, view)| view)
    }

    /// Stores `row` only if no row has its id (one index search instead of a load and
    /// a save). `Some(view JSON)` when stored, `None` when a row with that id exists.
    pub fn insert_new(&mut self, row: &DocRow) -> Result<Option<Option<String>>> {
        let (inserted, view) = write_with(&mut self.insert_new, row)?;
        Ok(inserted.then_some(view))
    }
}

fn load_with(stmt: &mut Statement<'_>, id: &str, policy_for: &dyn Fn(&str) -> Policy) -> Result<Option<DocRow>> {
    let raw = stmt.query_row([id], row_to_doc).optional()?;
    raw.map(|raw| finish_row(raw, policy_for)).transpose()
}

/// Runs an insert statement of [`SAVE_SQL`]'s shape for `row`; returns whether a row
/// was written, and the view's JSON.
fn write_with(stmt: &mut Statement<'_>, row: &DocRow) -> Result<(bool, Option<String>)> {
    let replica = &row.replica;
    let confirmed = replica.confirmed.as_ref();
    let pending = replica.pending.len() as i64;
    let replica_json = if pending > 0 { Some(serde_json::to_string(replica)?) } else { None };
    let view_json = if pending > 0 {
        replica.view().as_ref().map(serde_json::to_string).transpose()?
    } else {
        // In sync, the view is the confirmed content: serialize it in place rather than
        // through `view()`, which copies it (this is most rows during a catch-up).
        confirmed.filter(|c| !c.deleted).map(|c| serde_json::to_string(&c.content)).transpose()?
    };
    let written = stmt.execute(params![
        row.id,
        row.collection,
        confirmed.map_or(0, |c| c.revision) as i64,
        confirmed.is_some_and(|c| c.deleted),
        view_json,
        replica_json,
        pending,
        row.conflict,
        sync_core::Timestamp::now().unix_millis(),
        row.owner,
    ])?;
    Ok((written > 0, view_json))
}

/// Removes a document row, and with it every pending change of the document (they live
/// in the row). Returns the row as it was, `None` when there was none.
pub fn remove(conn: &Connection, id: &str, policy_for: &dyn Fn(&str) -> Policy) -> Result<Option<DocRow>> {
    let row = load(conn, id, policy_for)?;
    if row.is_some() {
        conn.prepare_cached("DELETE FROM documents WHERE id = ?1")?.execute([id])?;
    }
    Ok(row)
}

/// The ids of the documents held here whose owner is known and is not `user_id`.
pub(crate) fn ids_of_others(conn: &Connection, user_id: &str) -> Result<Vec<String>> {
    let mut statement = conn.prepare_cached("SELECT id FROM documents WHERE owner IS NOT NULL AND owner <> ?1")?;
    let ids = statement.query_map([user_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Records the user id the server authenticated this replica as, and makes it the owner
/// of the rows whose owner is unknown: those stored before owners were kept and those
/// created here before the first connection, all of them this user's own.
pub(crate) fn store_user_id(conn: &Connection, user_id: &str) -> Result<()> {
    set_meta(conn, "user_id", user_id)?;
    conn.prepare_cached("UPDATE documents SET owner = ?1 WHERE owner IS NULL")?.execute([user_id])?;
    Ok(())
}

/// Stores the sync cursor (the newest server sequence stored) inside a transaction.
pub(crate) fn store_cursor(conn: &Connection, sequence: u64) -> Result<()> {
    set_meta(conn, "cursor", &sequence.to_string())
}

/// Sets a meta value inside a transaction or on the connection.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2")?
        .execute(params![key, value])?;
    Ok(())
}

type RawRow = (String, String, i64, bool, Option<String>, Option<String>, bool, Option<String>);

fn row_to_doc(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn finish_row(raw: RawRow, policy_for: &dyn Fn(&str) -> Policy) -> Result<DocRow> {
    let (id, collection, revision, deleted, view, replica, conflict, owner) = raw;
    let replica = match replica {
        Some(json) => serde_json::from_str::<Replica>(&json).map_err(|source| SyncError::CorruptRow {
            id: id.clone(),
            what: "state",
            source,
        })?,
        None => {
            // In sync: the view is the confirmed state.
            let content = match view {
                Some(text) => serde_json::from_str(&text).map_err(|source| SyncError::CorruptRow {
                    id: id.clone(),
                    what: "content",
                    source,
                })?,
                None => Value::Null,
            };
            Replica::from_server(content, revision as u64, deleted, policy_for(&collection))
        }
    };
    Ok(DocRow { id, collection, replica, conflict, owner })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(_: &str) -> Policy {
        Policy::LastWriterWins
    }

    #[test]
    fn rows_round_trip_with_and_without_pending() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display());
        let mut store = LocalStore::open(&url).unwrap();
        let mut row = DocRow {
            id: "d1".into(),
            collection: "tasks".into(),
            replica: Replica::from_server(json!({"title": "T", "n": 1}), 4, false, Policy::LastWriterWins),
            conflict: false,
            owner: None,
        };
        store.transaction(|tx| save(tx, &row)).unwrap();
        let loaded = store.load("d1", policy).unwrap().unwrap();
        assert_eq!(loaded.document().unwrap().content, json!({"title": "T", "n": 1}));
        assert_eq!(loaded.document().unwrap().status, DocStatus::Synced);
        row.replica
            .local_update(
                sync_core::patch::parse_patch(json!([{"op": "replace", "path": "/n", "value": 2}])).unwrap(),
                "c1".into(),
            )
            .unwrap();
        store.transaction(|tx| save(tx, &row)).unwrap();
        assert_eq!(store.pending_count().unwrap(), 1);
        assert_eq!(store.pending_ids().unwrap(), vec!["d1".to_owned()]);
        let loaded = store.load("d1", policy).unwrap().unwrap();
        assert_eq!(loaded.document().unwrap().content["n"], 2);
        assert_eq!(loaded.replica.revision(), 4);
        assert_eq!(store.list(Some("tasks"), policy).unwrap().len(), 1);
        assert_eq!(store.list(Some("other"), policy).unwrap().len(), 0);
        assert_eq!(store.count().unwrap(), 1);
        // Reopening keeps everything, including the client id.
        let id = store.client_id().unwrap();
        drop(store);
        let store = LocalStore::open(&url).unwrap();
        assert_eq!(store.client_id().unwrap(), id);
        assert_eq!(store.pending_count().unwrap(), 1);
    }

    /// A database made before owners were kept gets the column; an unknown owner never
    /// overwrites a known one and becomes the user's once the server names the user;
    /// removing a row takes its pending changes with it.
    #[test]
    fn owners_are_kept_and_removal_takes_pending_changes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display());
        {
            // The schema as it was before the owner column, with a row in it.
            let conn = Connection::open(dir.path().join("c.db")).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO documents (id, collection, revision, deleted, view, replica, pending, conflict, updated_at)
                 VALUES ('old', 'tasks', 1, 0, '{\"title\":\"old\"}', NULL, 0, 0, 0)",
                [],
            )
            .unwrap();
        }
        let mut store = LocalStore::open(&url).unwrap();
        assert_eq!(store.load("old", policy).unwrap().unwrap().owner, None);
        let shared = DocRow {
            id: "shared".into(),
            collection: "tasks".into(),
            replica: Replica::from_server(json!({"n": 1}), 3, false, Policy::LastWriterWins),
            conflict: false,
            owner: Some("alice".into()),
        };
        store.transaction(|tx| save(tx, &shared)).unwrap();
        let mut unknown = shared.clone();
        unknown.owner = None;
        unknown
            .replica
            .local_update(
                sync_core::patch::parse_patch(json!([{"op": "add", "path": "/m", "value": 2}])).unwrap(),
                "c1".into(),
            )
            .unwrap();
        store.transaction(|tx| save(tx, &unknown)).unwrap();
        store.transaction(|tx| store_user_id(tx, "bob")).unwrap();
        assert_eq!(store.user_id().unwrap().as_deref(), Some("bob"));
        assert_eq!(store.load("old", policy).unwrap().unwrap().owner.as_deref(), Some("bob"), "rows from before");
        let loaded = store.load("shared", policy).unwrap().unwrap();
        assert_eq!(loaded.document().unwrap().owner.as_deref(), Some("alice"), "kept through a save without it");
        assert_eq!(store.pending_count().unwrap(), 1);

        let removed = store.transaction(|tx| remove(tx, "shared", &policy)).unwrap().unwrap();
        assert_eq!(removed.replica.pending.len(), 1);
        assert_eq!(store.pending_count().unwrap(), 0);
        assert!(store.pending_ids().unwrap().is_empty());
        assert!(store.load("shared", policy).unwrap().is_none());
        assert!(store.transaction(|tx| remove(tx, "shared", &policy)).unwrap().is_none());
        // Reopening runs no migration twice.
        drop(store);
        assert_eq!(LocalStore::open(&url).unwrap().meta("schema_version").unwrap().as_deref(), Some("1"));
    }

    /// Partial sync: narrowing keeps the cursor; widening (to more names, or to every
    /// collection) starts the catch-up again from 0.
    #[test]
    fn widening_partial_sync_restarts_the_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display());
        let mut store = LocalStore::open(&url).unwrap();
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let at = |store: &mut LocalStore, cursor: u64| store.transaction(|tx| store_cursor(tx, cursor)).unwrap();
        at(&mut store, 40);
        assert_eq!(store.begin_sync_of(None).unwrap(), 40, "unchanged");
        assert_eq!(store.begin_sync_of(Some(&names(&["a", "b"]))).unwrap(), 40, "narrowed from everything");
        assert_eq!(store.begin_sync_of(Some(&names(&["b"]))).unwrap(), 40, "narrowed");
        assert_eq!(store.begin_sync_of(Some(&names(&["b"]))).unwrap(), 40, "unchanged");
        assert_eq!(store.begin_sync_of(Some(&names(&["a", "b"]))).unwrap(), 0, "widened");
        assert_eq!(store.cursor().unwrap(), 0);
        at(&mut store, 50);
        assert_eq!(store.begin_sync_of(None).unwrap(), 0, "widened to everything");
        at(&mut store, 60);
        assert_eq!(store.begin_sync_of(None).unwrap(), 60);
    }

    /// The errors of a file that cannot be opened and of a row that does not decode name
    /// the file and the document, and keep SQLite's and serde_json's errors as sources.
    #[test]
    fn database_errors_say_where_and_keep_their_cause() {
        use std::error::Error as _;

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("c.db");
        let Err(err) = LocalStore::open(&missing.display().to_string()) else { panic!("opened {missing:?}") };
        assert!(matches!(err, SyncError::DatabaseFile { action: "open", .. }), "{err:?}");
        let source = err.source().map(ToString::to_string).unwrap_or_default();
        assert!(!source.is_empty(), "{err:?}");
        assert_eq!(err.to_string(), format!("local database error: cannot open {}: {source}", missing.display()));

        let store = LocalStore::open(&dir.path().join("c.db").display().to_string()).unwrap();
        store
            .conn
            .execute(
                "INSERT INTO documents (id, collection, revision, deleted, view, replica, pending, conflict, updated_at)
                 VALUES ('d1', 'default', 1, 0, '{not json', NULL, 0, 0, 0)",
                [],
            )
            .unwrap();
        let err = store.load("d1", policy).unwrap_err();
        assert!(matches!(err, SyncError::CorruptRow { ref id, what: "content", .. } if id == "d1"), "{err:?}");
        assert!(err.to_string().starts_with("local database error: corrupt local content of d1: "), "{err}");
        assert!(err.source().is_some());
    }
}
