//! Opening an SQLite store: the file and its connections, their pragmas, and the
//! migrations, which bring any older schema up to this build's before the store answers.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::Semaphore;

use super::SqliteStore;
use super::pool::ReadPool;
use super::queries::latest_sequence;
use super::writer::Writer;
use crate::{DatabaseUrl, StoreError, StoreResult};

/// The schema, one step per entry; entry `i` moves the database to `user_version = i + 1`.
/// Steps are appended, never edited: a database that ran a step must never see it change.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_owner_and_read_indexes.sql"),
    include_str!("../../migrations/sqlite/0003_acl_versions.sql"),
    include_str!("../../migrations/sqlite/0004_sequence_names_index.sql"),
];

/// Read-only connections kept open. Reads are short; four keep both cores busy while one
/// waits on the disk.
const READERS: usize = 4;
/// Write commands that may wait for the writer. Callers beyond this wait asynchronously
/// for a slot, so a burst of writes never blocks a runtime thread or grows memory.
const WRITE_QUEUE: usize = 256;
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

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, applies the migrations it
    /// lacks, and starts the writer thread.
    ///
    /// Fails with [`StoreError::Open`], naming the path and the cause, when the file cannot
    /// be opened for writing, is not a SQLite database, or has a schema newer than this
    /// build knows.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let mut conn = open_writer(path)?;
        let applied = migrate(&mut conn).map_err(|e| e.opening(path))?;
        if applied > 0 {
            tracing::info!(path = %path.display(), applied, version = MIGRATIONS.len(), "migrated the database");
        }
        let latest = latest_sequence(&conn).map_err(|e| match e {
            StoreError::Database { context, source } => {
                StoreError::Open { context: format!("{}: {context}", path.display()), source }
            }
            other => StoreError::open_message(format!("{}: {other}", path.display())),
        })?;

        let mut idle = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            idle.push(
                open_reader(path)
                    .map_err(|e| StoreError::open(format!("{}: cannot open a reader", path.display()), e))?,
            );
        }
        let readers = Arc::new(ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(idle),
            slots: Arc::new(Semaphore::new(READERS)),
        });

        let (commands, queue) = mpsc::sync_channel(WRITE_QUEUE);
        let writer = Writer::new(conn, latest + 1);
        let writer = std::thread::Builder::new()
            .name("sync-store-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::open(format!("{}: cannot start the writer thread", path.display()), e))?;

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
    /// path; see [`DatabaseUrl`].
    ///
    /// Fails with [`StoreError::Open`] as [`SqliteStore::open`] does, and for a URL that
    /// names no SQLite file.
    pub fn open_url(url: &str) -> StoreResult<SqliteStore> {
        match DatabaseUrl::parse(url) {
            Ok(DatabaseUrl::Sqlite(path)) => SqliteStore::open(&path),
            Ok(DatabaseUrl::Postgres(_)) => Err(StoreError::open_message(
                "a PostgreSQL URL names no SQLite file (use sqlite://PATH, sqlite:PATH or a path)",
            )),
            Err(e) => Err(StoreError::open("invalid database URL", e)),
        }
    }
}

/// Opens the write connection and sets it up; every error names the path.
fn open_writer(path: &Path) -> StoreResult<Connection> {
    let failed = |e| StoreError::open(path.display().to_string(), e);
    // No URI flag: the path is taken literally, even one that starts with `file:`.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    // SQLite silently falls back to read-only when the file is not writable; a store
    // that cannot write must say so now, not at the first change.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(failed)? {
        return Err(StoreError::open_message(format!("{}: the file is read-only", path.display())));
    }
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    // The first statement that reads the file: a file that is not a database fails here.
    // 2 KiB pages (SQLite's default is 4 KiB), for a database created now; an existing
    // one keeps its size. Each commit writes every page it dirtied to the WAL, and a batch
    // of changes to many documents dirties one leaf per document in the per-user and
    // per-document indexes: smaller pages halve those bytes. Measured: about +20%
    // acknowledged updates/s with 100 writers (docs/BENCHMARKS.md).
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(failed)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| StoreError::open(format!("{}: cannot switch to WAL mode", path.display()), e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::open_message(format!(
            "{}: cannot switch to WAL mode (the journal mode stays {mode:?})",
            path.display()
        )));
    }
    set_common_pragmas(&conn).map_err(failed)?;
    // A larger page cache for the writer, which walks the indexes of every insert.
    conn.pragma_update(None, "cache_size", -16_384).map_err(failed)?;
    // Checkpoint every ~40 MB of WAL instead of SQLite's 4 MB: index pages that many
    // commits touch are copied back once instead of ten times. Checkpoints had been a
    // fifth of the writer's time with 1 KB documents. The size limit trims the file
    // after a burst.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES).map_err(failed)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT).map_err(failed)?;
    Ok(conn)
}

/// Opens one read-only connection; the caller says what it was for.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    set_common_pragmas(&conn)?;
    Ok(conn)
}

/// The settings every connection carries (they are per connection, not stored in the file).
fn set_common_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Why the schema could not be brought up to date.
#[derive(Debug, PartialEq)]
pub(super) enum MigrationError {
    /// `PRAGMA user_version` could not be read.
    Version(rusqlite::Error),
    /// The file's schema is newer than this build knows: it was written by a newer release.
    TooNew { version: i64, known: usize },
    /// A step failed; its transaction was rolled back.
    Step { step: usize, error: rusqlite::Error },
}

impl MigrationError {
    /// The error `open` answers, naming the file.
    fn opening(self, path: &Path) -> StoreError {
        let path = path.display();
        match self {
            MigrationError::Version(e) => StoreError::open(format!("{path}: cannot read the schema version"), e),
            MigrationError::TooNew { version, known } => StoreError::open_message(format!(
                "{path}: the schema version is {version}, newer than this build knows ({known}); use a newer release"
            )),
            MigrationError::Step { step, error } => StoreError::open(format!("{path}: migration {step} failed"), error),
        }
    }
}

/// Applies the migrations the database lacks, each in its own transaction together with
/// its `user_version` bump; returns how many ran.
pub(super) fn migrate(conn: &mut Connection) -> Result<usize, MigrationError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(MigrationError::Version)?;
    let known = MIGRATIONS.len();
    let current =
        usize::try_from(version).ok().filter(|&v| v <= known).ok_or(MigrationError::TooNew { version, known })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let step = index + 1;
        apply_migration(conn, sql, step).map_err(|error| MigrationError::Step { step, error })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_name_no_sqlite_file_are_refused() {
        for url in ["postgres://user@host/db", "sqlite://", "sqlite:?mode=rwc", ""] {
            assert!(matches!(SqliteStore::open_url(url), Err(StoreError::Open { .. })), "{url}");
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
}
