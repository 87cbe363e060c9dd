//! The PostgreSQL backend: for installations that outgrow one file, or run several server
//! processes on one database.
//!
//! Guarantees:
//! - Durable on `Ok`: an append is answered after its transaction committed, with
//!   `synchronous_commit` on (forced for this store's sessions when the server has it off).
//! - Gap-free sequences in commit order, across processes: an append takes its numbers by
//!   updating the `counters` row in the transaction that inserts its events. The row lock
//!   is held until that transaction commits, so the next append (from any process) waits
//!   and continues from the committed value. A transaction becomes visible before it
//!   releases its locks, so a reader that sees sequence N also sees every change below N:
//!   no gap that fills later. (A plain SEQUENCE hands out numbers before commit and gives
//!   no such order.)
//! - Group commit: one committer task per store takes every append already queued and
//!   writes them in one statement: documents and events travel as arrays (`UNNEST`), and
//!   the statement runs in its own transaction, so a group costs one round trip and one
//!   WAL flush, and the counter row stays locked only while the server works, never
//!   while a reply travels. Within a process, appends commit in the order they were queued.
//! - A refused append (a document moved underneath it, a duplicate id) writes nothing and
//!   does not fail the appends grouped with it; they are written without it.
//! - Connection loss: a statement that fails answers an error, never `Ok`; the pool opens
//!   new connections when the database is back, without a restart.
//! - The schema is created and upgraded at open by embedded migrations (sqlx's migrator,
//!   under an advisory lock, so processes that start together take turns), after a check
//!   that the server is PostgreSQL 14 or newer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, SqlSafeStr};
use sync_core::{ChangeEvent, Document, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{self, ColumnError, Columns, corrupt};
use crate::{ApiCredential, ChangePage, NewChange, ReadScope, Store, StoreError, StoreResult, StoreStats, TokenRecord};

/// The schema, one step per entry: (version, description, SQL). Steps are appended, never
/// edited: sqlx stores each step's checksum and refuses a database whose applied steps
/// changed.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", include_str!("../migrations/postgres/0001_initial.sql"))];

/// The oldest server this store runs on (`server_version_num`): 14 brought the
/// multi-argument `UNNEST … WITH ORDINALITY` plans and the lock behaviour the tests cover.
const MIN_SERVER_VERSION: i64 = 140_000;

/// Appends that may wait for the committer; callers beyond this wait asynchronously (in
/// the order they came), so a burst never grows memory.
const WRITE_QUEUE: usize = 256;
/// At most this many appends share one statement, so the first of them is not kept
/// waiting behind an unbounded group.
const GROUP_MAX_COMMANDS: usize = 64;
/// A group stops taking appends once it holds this many changes.
const GROUP_MAX_CHANGES: usize = 4096;
/// How long a caller waits for a connection (the pool retries connecting meanwhile).
/// While the database is down, writes fail after this long instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// `/ready` must answer promptly even when the database does not.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A group statement that has not answered after this long is abandoned (its connection
/// closed) and reported as failed; the database rolls it back when the connection drops.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a group is tried again after a deadlock or serialization failure (both leave
/// nothing written).
const TRANSIENT_RETRIES: usize = 3;
/// The SQLSTATE `sync_refuse_moved` raises when expected revisions did not hold.
const MOVED_SQLSTATE: &str = "SY409";

/// The columns of a document, in the order [`document_from_row`] reads them. JSON columns
/// come back as text and are parsed here, so that a corrupt value is reported with its id.
macro_rules! document_columns {
    () => {
        "id, user_id, collection, title, content::text, sync_revision, vector_clock::text, content_hash, \
         created_at, updated_at, deleted_at"
    };
}

/// The columns of a change event, in the order [`event_from_row`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, event_id, document_id, collection, user_id, client_id, event_type, forward_patch::text, \
         reverse_patch::text, sync_revision, created_at, client_change_id, content_hash"
    };
}

/// One group of appends as one statement. `$1`–`$12` are the documents (one row per
/// document, its state after the group, and the revision the database must hold before
/// it: 0 for a create); `$13`–`$24` are the events in order.
///
/// `checked` raises (rolling everything back) when an update found another revision or
/// a create found the id taken. Only then does `counter` take the counter row — its
/// one-time filter waits for the check — so the row is locked for the event inserts and
/// the commit only. The events get `base + 1 …` in array order.
const APPEND: &str = "\
WITH doc_in AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[],
                         $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[])
        AS t(id, user_id, collection, title, content, sync_revision, vector_clock, content_hash,
             created_at, updated_at, deleted_at, expected)
), updated AS (
    UPDATE documents AS d SET title = n.title,
        content = n.content::jsonb, sync_revision = n.sync_revision, vector_clock = n.vector_clock::jsonb,
        content_hash = n.content_hash, updated_at = n.updated_at, deleted_at = n.deleted_at
    FROM doc_in AS n
    WHERE n.expected > 0 AND d.id = n.id AND d.sync_revision = n.expected
    RETURNING d.id
), inserted AS (
    INSERT INTO documents (id, user_id, collection, title, content, sync_revision, vector_clock, content_hash,
                           created_at, updated_at, deleted_at)
    SELECT id, user_id, collection, title, content::jsonb, sync_revision, vector_clock::jsonb, content_hash,
           created_at, updated_at, deleted_at
    FROM doc_in WHERE expected = 0
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), checked AS (
    SELECT sync_refuse_moved(array_agg(n.id)) AS ok FROM doc_in AS n
    WHERE n.id NOT IN (SELECT id FROM updated UNION ALL SELECT id FROM inserted)
), counter AS (
    UPDATE counters SET value = value + cardinality($13::text[])
    WHERE name = 'change_events' AND (SELECT ok FROM checked)
    RETURNING value - cardinality($13::text[]) AS base
), events AS (
    INSERT INTO change_events (sequence, event_id, document_id, collection, user_id, client_id, event_type,
                               forward_patch, reverse_patch, sync_revision, created_at, client_change_id,
                               content_hash)
    SELECT counter.base + e.ord, e.event_id, e.document_id, e.collection, e.user_id, e.client_id, e.event_type,
           e.forward_patch::jsonb, e.reverse_patch::jsonb, e.sync_revision, e.created_at, e.client_change_id,
           e.content_hash
    FROM counter, UNNEST($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                         $19::text[], $20::text[], $21::int8[], $22::int8[], $23::text[], $24::text[])
        WITH ORDINALITY AS e(event_id, document_id, collection, user_id, client_id, event_type, forward_patch,
                             reverse_patch, sync_revision, created_at, client_change_id, content_hash, ord)
)
SELECT base FROM counter";

/// Settings of a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections open at once. One is held by the committer; the rest serve reads.
    pub pool_size: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { pool_size: 10 }
    }
}

/// The PostgreSQL [`Store`]: a connection pool and one committer task.
///
/// Dropping the store closes the append queue; the committer finishes every append
/// already queued, then stops.
pub struct PgStore {
    /// Reads (and the committer's connection) come from here.
    pool: PgPool,
    /// The committer's queue, in arrival order.
    commands: mpsc::Sender<Command>,
    /// `host:port/database`, for `Debug` and logs (never the password).
    target: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("target", &self.target).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database a `postgres://` URL names, checks the server version,
    /// applies the migrations it lacks, and starts the committer task on the current
    /// Tokio runtime.
    ///
    /// Fails with [`StoreError::Open`] when the URL is invalid, the server cannot be
    /// reached, is older than PostgreSQL 14, or holds a schema newer than this build
    /// knows. Error messages never contain the password.
    pub async fn open(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {}", without_url(&e.to_string()))))?
            .application_name("sync-server");
        let target =
            format!("{}:{}/{}", connect.get_host(), connect.get_port(), connect.get_database().unwrap_or_default());
        let open_error = |cause: String| StoreError::Open(format!("{target}: {cause}"));

        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| open_error(format!("no answer within {ACQUIRE_TIMEOUT:?}")))?
            .map_err(|e| open_error(format!("cannot connect: {e}")))?;
        check_server_version(&mut conn).await.map_err(open_error)?;
        // An acknowledgement promises durability; a server configured to acknowledge
        // commits before they are flushed would break that promise, so this store's
        // sessions override it. Stronger settings (remote_apply, …) are kept.
        let synchronous_commit: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| open_error(format!("reading synchronous_commit: {e}")))?;
        if synchronous_commit == "off" {
            tracing::info!(%target, "synchronous_commit is off on the server; this store's sessions turn it on");
            connect = connect.options([("synchronous_commit", "on")]);
        }
        let fsync: String = sqlx::query_scalar("SELECT current_setting('fsync')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| open_error(format!("reading fsync: {e}")))?;
        if fsync == "off" {
            tracing::warn!(%target, "PostgreSQL runs with fsync=off: committed changes may be lost if the machine crashes");
        }
        let applied = migrate(&mut conn).await.map_err(open_error)?;
        if applied > 0 {
            tracing::info!(%target, applied, version = MIGRATIONS.len(), "migrated the database");
        }
        // Closing politely lets the server end the session at once instead of at timeout.
        let _ = conn.close().await;

        // One connection of the configured size is the committer's.
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.saturating_sub(1).max(1))
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A pooled connection may have died with the server since it was last used;
            // the test before use replaces it instead of failing the caller's query.
            .test_before_acquire(true)
            .connect_lazy_with(connect.clone());

        let (commands, queue) = mpsc::channel(WRITE_QUEUE);
        let committer = Committer { connect, conn: None };
        tokio::spawn(committer.run(queue));
        Ok(PgStore { pool, commands, target })
    }

    /// `host:port/database` of the server this store writes to.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(db("ping")(e)),
            Err(_) => Err(StoreError::Database(format!("ping: no answer within {PING_TIMEOUT:?}"))),
        }
    }

    async fn latest_sequence(&self) -> StoreResult<u64> {
        let value: i64 = sqlx::query_scalar("SELECT value FROM counters WHERE name = 'change_events'")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the latest sequence"))?;
        unsigned(value, "latest sequence")
    }

    async fn load_documents(&self, ids: Vec<String>) -> StoreResult<Vec<Document>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The id list is one array parameter: one statement shape for any number of ids.
        let sql = concat!("SELECT ", document_columns!(), " FROM documents WHERE id = ANY($1::text[]) ORDER BY id");
        let rows = sqlx::query(sql).bind(ids).fetch_all(&self.pool).await.map_err(db("loading documents"))?;
        rows.iter().map(document_from_row).collect()
    }

    async fn list_documents(
        &self,
        scope: ReadScope,
        collections: Option<Vec<String>>,
        after_id: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<Document>> {
        // The page's ids first, then its rows (see `changes_since`).
        let sql = concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents WHERE id = ANY(ARRAY(SELECT id FROM documents WHERE user_id = $1 AND id > $2",
            " AND ($3::text[] IS NULL OR collection = ANY($3::text[]))",
            " ORDER BY id LIMIT $4)) ORDER BY id"
        );
        let rows = sqlx::query(sql)
            .bind(scope.user_id)
            // Ids are never empty, so "after the empty string" means from the start.
            .bind(after_id.unwrap_or_default())
            .bind(collections)
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing documents"))?;
        rows.iter().map(document_from_row).collect()
    }

    async fn append_batch(&self, batch: Vec<NewChange>) -> StoreResult<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || StoreError::Database("the committer has stopped".to_owned());
        let (reply, answer) = oneshot::channel();
        // A bounded queue with fair waiting: appends keep the order in which they were
        // first polled, which is the order the write path hands them over.
        self.commands.send(Command { batch, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn changes_since(
        &self,
        scope: ReadScope,
        after: u64,
        limit: usize,
        collections: Option<Vec<String>>,
    ) -> StoreResult<ChangePage> {
        // One statement, so one snapshot, for the page and the counter: `reached` must
        // not pass a change the page did not see. One row more than the page tells
        // whether more follow. The counter row joins every event row (and stands alone
        // when there are none).
        //
        // The page's sequences are chosen first and its rows read after: on a table
        // whose statistics lag behind (a bulk load autovacuum has not analyzed yet),
        // PostgreSQL takes the page for a few rows, reads every later row of the user,
        // turns all of their patches into text and sorts them on disk before the LIMIT —
        // 160 ms a page of 5,000 at the middle of 100,000 changes, against 35 ms this way
        // (and the same 20 ms either way once analyzed).
        let sql = concat!(
            "SELECT c.value, e.* FROM counters AS c LEFT JOIN LATERAL (SELECT ",
            event_columns!(),
            " FROM change_events WHERE sequence = ANY(ARRAY(SELECT sequence FROM change_events",
            " WHERE user_id = $1 AND sequence > $2",
            " AND ($3::text[] IS NULL OR collection = ANY($3::text[]))",
            " ORDER BY sequence LIMIT $4))) AS e ON TRUE",
            " WHERE c.name = 'change_events' ORDER BY e.sequence"
        );
        let rows = sqlx::query(sql)
            .bind(scope.user_id)
            .bind(sql_int(after, "sequence")?)
            .bind(collections)
            .bind(sql_limit(limit.saturating_add(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading changes"))?;
        let mut latest = 0;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let value: i64 = row.try_get(0).map_err(|e| corrupt("the change_events counter".to_owned(), e))?;
            latest = unsigned(value, "latest sequence")?;
            let sequence: Option<i64> = row.try_get(1).map_err(|e| corrupt("change event sequence".to_owned(), e))?;
            if sequence.is_some() {
                events.push(rows::event(row, 1)?);
            }
        }
        let has_more = events.len() > limit;
        events.truncate(limit);
        let reached = if events.len() >= limit {
            // A full page reaches its last event (or stays at `after` for a zero limit).
            events.last().map_or(after, |e| e.sequence)
        } else {
            // Everything visible after `after` in this snapshot is in the page.
            latest.max(after)
        };
        Ok(ChangePage { events, reached, has_more })
    }

    async fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let to = to_revision.map_or(Ok(i64::MAX), |to| sql_int(to, "revision"))?;
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM change_events WHERE document_id = $1 AND sync_revision > $2 AND sync_revision <= $3",
            " ORDER BY sync_revision"
        );
        let rows = sqlx::query(sql)
            .bind(document_id)
            .bind(sql_int(from_revision, "revision")?)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading a document's changes"))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn history(
        &self,
        document_id: String,
        before_revision: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let before = before_revision.map_or(Ok(i64::MAX), |b| sql_int(b, "revision"))?;
        // The page's sequences first, then its rows (see `changes_since`).
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM change_events WHERE sequence = ANY(ARRAY(SELECT sequence FROM change_events",
            " WHERE document_id = $1 AND sync_revision < $2 ORDER BY sync_revision DESC LIMIT $3))",
            " ORDER BY sync_revision DESC"
        );
        let rows = sqlx::query(sql)
            .bind(document_id)
            .bind(before)
            .bind(sql_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading history"))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn find_client_changes(
        &self,
        user_id: String,
        client_change_ids: Vec<String>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        if client_change_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One array parameter whatever the number of ids (PostgreSQL binds at most 65535).
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM change_events WHERE user_id = $1 AND client_change_id = ANY($2::text[]) ORDER BY sequence"
        );
        let rows = sqlx::query(sql)
            .bind(user_id)
            .bind(client_change_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("finding client changes"))?;
        rows.iter().map(event_from_row).collect()
    }

    async fn ack_cursor(&self, user_id: String, client_id: String, sequence: u64) -> StoreResult<()> {
        // The WHERE keeps a late or repeated acknowledgement from moving the cursor back.
        let sql = "INSERT INTO client_cursors (user_id, client_id, sequence, updated_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (user_id, client_id) DO UPDATE \
                   SET sequence = excluded.sequence, updated_at = excluded.updated_at \
                   WHERE excluded.sequence >= client_cursors.sequence";
        sqlx::query(sql)
            .bind(user_id)
            .bind(client_id)
            .bind(sql_int(sequence, "sequence")?)
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(db("acknowledging a cursor"))?;
        Ok(())
    }

    async fn ensure_user(&self, user_id: String, email: Option<String>) -> StoreResult<()> {
        let sql = "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";
        sqlx::query(sql)
            .bind(user_id)
            .bind(email)
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(db("creating a user"))?;
        Ok(())
    }

    async fn create_api_credential(&self, credential: ApiCredential) -> StoreResult<()> {
        let sql = "INSERT INTO api_credentials (api_key, name, is_admin, created_at, revoked_at) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (api_key) DO NOTHING";
        let inserted = sqlx::query(sql)
            .bind(&credential.api_key)
            .bind(&credential.name)
            .bind(credential.is_admin)
            .bind(credential.created_at)
            .bind(credential.revoked_at)
            .execute(&self.pool)
            .await
            .map_err(db("creating an API credential"))?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Duplicate(credential.api_key));
        }
        Ok(())
    }

    async fn get_api_credential(&self, api_key: String) -> StoreResult<Option<ApiCredential>> {
        let sql = "SELECT api_key, name, is_admin, created_at, revoked_at FROM api_credentials WHERE api_key = $1";
        let row =
            sqlx::query(sql).bind(api_key).fetch_optional(&self.pool).await.map_err(db("reading an API credential"))?;
        row.map(|r| {
            Ok(ApiCredential {
                api_key: r.try_get(0)?,
                name: r.try_get(1)?,
                is_admin: r.try_get(2)?,
                created_at: r.try_get(3)?,
                revoked_at: r.try_get(4)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| corrupt("api credential".to_owned(), e))
    }

    async fn count_api_credentials(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_credentials")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting API credentials"))?;
        unsigned(count, "credential count")
    }

    async fn create_token(&self, token: TokenRecord) -> StoreResult<()> {
        let sql = "INSERT INTO tokens (id, user_id, hash, is_admin, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";
        let inserted = sqlx::query(sql)
            .bind(&token.id)
            .bind(&token.user_id)
            .bind(&token.hash)
            .bind(token.is_admin)
            .bind(token.created_at)
            .bind(token.expires_at)
            .execute(&self.pool)
            .await
            .map_err(db("creating a token"))?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Duplicate(token.id));
        }
        Ok(())
    }

    async fn get_token(&self, id: String) -> StoreResult<Option<TokenRecord>> {
        let sql = "SELECT id, user_id, hash, is_admin, created_at, expires_at FROM tokens WHERE id = $1";
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await.map_err(db("reading a token"))?;
        row.map(|r| {
            Ok(TokenRecord {
                id: r.try_get(0)?,
                user_id: r.try_get(1)?,
                hash: r.try_get(2)?,
                is_admin: r.try_get(3)?,
                created_at: r.try_get(4)?,
                expires_at: r.try_get(5)?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| corrupt("token".to_owned(), e))
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        // One statement: both numbers from one snapshot.
        let sql = "SELECT (SELECT COUNT(*) FROM documents WHERE deleted_at IS NULL), \
                          (SELECT value FROM counters WHERE name = 'change_events')";
        let row = sqlx::query(sql).fetch_one(&self.pool).await.map_err(db("reading stats"))?;
        let documents: i64 = row.try_get(0).map_err(|e| corrupt("document count".to_owned(), e))?;
        let total: i64 = row.try_get(1).map_err(|e| corrupt("the change_events counter".to_owned(), e))?;
        Ok(StoreStats {
            documents: unsigned(documents, "document count")?,
            total_changes: unsigned(total, "sequence")?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Opening and migrating

/// Refuses servers older than [`MIN_SERVER_VERSION`]; the error names both versions.
async fn check_server_version(conn: &mut PgConnection) -> Result<(), String> {
    let row = sqlx::query("SELECT current_setting('server_version_num')::int8, current_setting('server_version')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| format!("reading the server version: {e}"))?;
    let number: i64 = row.try_get(0).map_err(|e| format!("reading the server version: {e}"))?;
    let text: String = row.try_get(1).map_err(|e| format!("reading the server version: {e}"))?;
    version_supported(number, &text)
}

/// Whether `server_version_num` is new enough; the error is for a human.
fn version_supported(number: i64, text: &str) -> Result<(), String> {
    if number < MIN_SERVER_VERSION {
        return Err(format!(
            "PostgreSQL {text} is not supported: PostgreSQL {} or newer is required",
            MIN_SERVER_VERSION / 10_000
        ));
    }
    Ok(())
}

/// The embedded migrations as sqlx's migrator (the same table and checksums `migrate!`
/// would use).
fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Applies the migrations the database lacks; returns how many ran.
async fn migrate(conn: &mut PgConnection) -> Result<usize, String> {
    let migrator = migrator();
    // Counted before and after, under the migrator's own lock for the run itself.
    conn.ensure_migrations_table("_sqlx_migrations").await.map_err(|e| format!("cannot prepare migrations: {e}"))?;
    let before = conn.list_applied_migrations("_sqlx_migrations").await.map_err(|e| e.to_string())?.len();
    // `run_direct` is `run` without the generic `Acquire` parameter, which keeps callers'
    // futures from being proven `Send` ("implementation of `Acquire` is not general
    // enough" where the server is spawned); it takes the same advisory lock.
    migrator.run_direct(None, &mut *conn, false).await.map_err(|e| match e {
        MigrateError::VersionMissing(version) => format!(
            "the database schema has migration {version}, which this build does not know \
             (it knows {}); use a newer release",
            MIGRATIONS.len()
        ),
        other => format!("migration failed: {other}"),
    })?;
    let after = conn.list_applied_migrations("_sqlx_migrations").await.map_err(|e| e.to_string())?.len();
    Ok(after.saturating_sub(before))
}

/// Removes anything that looks like a URL from an error message, so a password in it
/// cannot reach a log.
fn without_url(message: &str) -> String {
    message
        .split_whitespace()
        .map(|word| if word.contains("://") { "<url>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// The committer

/// A queued append and where its answer goes.
struct Command {
    batch: Vec<NewChange>,
    reply: oneshot::Sender<StoreResult<Vec<u64>>>,
}

impl Command {
    fn answer(self, result: StoreResult<Vec<u64>>) {
        // A send fails only when the caller stopped waiting; the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// The loop that writes every append, one group at a time, on its own connection.
struct Committer {
    /// Where to connect.
    connect: PgConnectOptions,
    /// Kept between groups; dropped after a connection error, so the next group opens a
    /// fresh one (while the server is down, that fails at once and the group with it).
    conn: Option<PgConnection>,
}

/// Why a group statement failed, as far as the committer must act on it.
enum Failure {
    /// These documents did not hold their expected revisions (or their ids were taken).
    Moved(Vec<String>),
    /// Deadlock or serialization failure: nothing was written; try again.
    Transient(String),
    /// A value or a constraint was refused; some append of the group is at fault.
    Refused(StoreError),
    /// The connection or the server failed; the outcome of the statement is unknown.
    Broken(String),
}

impl Committer {
    /// Runs until the store is dropped and the queue is empty.
    async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut group = Vec::with_capacity(GROUP_MAX_COMMANDS);
        while let Some(first) = queue.recv().await {
            let mut weight = first.batch.len();
            group.push(first);
            // Everything already waiting shares the statement, and so the WAL flush.
            while group.len() < GROUP_MAX_COMMANDS && weight < GROUP_MAX_CHANGES {
                match queue.try_recv() {
                    Ok(next) => {
                        weight += next.batch.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group).await;
        }
        tracing::debug!("the PostgreSQL committer stopped");
    }

    /// Writes the appends of `group` in one statement and answers each.
    ///
    /// When an append is refused, the others are written again without it: the
    /// statement rolled back as a whole, so nothing of it stands. Each retry removes at
    /// least one append, so this ends.
    async fn commit_group(&mut self, group: &mut Vec<Command>) {
        let mut pending: Vec<Command> = std::mem::take(group);
        let mut transient = 0;
        while !pending.is_empty() {
            let plan = match Plan::build(&pending) {
                Ok(plan) => plan,
                Err((index, error)) => {
                    pending.remove(index).answer(Err(error));
                    continue;
                }
            };
            let outcome = self.execute(&plan).await;
            let refusals = match outcome {
                Ok(base) => {
                    let sequences = plan.sequences(base);
                    for (command, sequences) in pending.drain(..).zip(sequences) {
                        command.answer(Ok(sequences));
                    }
                    return;
                }
                Err(Failure::Moved(ids)) => plan.refusals(&ids),
                Err(Failure::Transient(message)) if transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tracing::debug!(error = %message, attempt = transient, "an append group is tried again");
                    continue;
                }
                Err(Failure::Transient(message)) | Err(Failure::Broken(message)) => {
                    tracing::warn!(error = %message, "an append group failed");
                    for command in pending.drain(..) {
                        command.answer(Err(StoreError::Database(message.clone())));
                    }
                    return;
                }
                Err(Failure::Refused(_)) => Vec::new(),
            };
            drop(plan);
            if refusals.is_empty() {
                // The statement names no culprit: write the appends one at a time, in order.
                self.one_by_one(pending).await;
                return;
            }
            // Highest index first, so the lower indexes stay valid while removing.
            for (index, error) in refusals.into_iter().rev() {
                pending.remove(index).answer(Err(error));
            }
        }
    }

    /// Writes each append in its own statement, in order: the fallback when a group
    /// failed on something that cannot be traced to one append.
    async fn one_by_one(&mut self, pending: Vec<Command>) {
        let mut pending = pending.into_iter();
        while let Some(command) = pending.next() {
            let single = std::slice::from_ref(&command);
            let result = match Plan::build(single) {
                Err((_, error)) => Err(error),
                Ok(plan) => match self.execute(&plan).await {
                    Ok(base) => Ok(plan.sequences(base).into_iter().next().unwrap_or_default()),
                    Err(Failure::Moved(ids)) => {
                        Err(plan.refusals(&ids).into_iter().next().map_or_else(|| moved_error(ids), |(_, e)| e))
                    }
                    Err(Failure::Refused(error)) => Err(error),
                    Err(Failure::Transient(message)) => Err(StoreError::Database(message)),
                    Err(Failure::Broken(message)) => {
                        // The server is gone: the rest would fail the same way.
                        tracing::warn!(error = %message, "an append failed");
                        command.answer(Err(StoreError::Database(message.clone())));
                        for rest in pending {
                            rest.answer(Err(StoreError::Database(message.clone())));
                        }
                        return;
                    }
                },
            };
            command.answer(result);
        }
    }

    /// Runs the statement of `plan`; `Ok` carries the sequence before its first event.
    async fn execute(&mut self, plan: &Plan<'_>) -> Result<i64, Failure> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => {
                let connecting = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.connect));
                let conn = match connecting.await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(Failure::Broken(format!("cannot connect: {e}"))),
                    Err(_) => return Err(Failure::Broken(format!("cannot connect within {ACQUIRE_TIMEOUT:?}"))),
                };
                self.conn.insert(conn)
            }
        };
        let statement = plan.bind(sqlx::query_scalar::<_, i64>(APPEND)).fetch_one(&mut *conn);
        let result = match tokio::time::timeout(STATEMENT_TIMEOUT, statement).await {
            Ok(result) => result,
            Err(_) => {
                self.discard_connection();
                return Err(Failure::Broken(format!("the database did not answer within {STATEMENT_TIMEOUT:?}")));
            }
        };
        match result {
            Ok(base) => Ok(base),
            Err(error) => {
                let failure = classify(error, plan);
                if matches!(failure, Failure::Broken(_)) {
                    self.discard_connection();
                }
                Err(failure)
            }
        }
    }

    /// Drops the committer's connection (closing its socket).
    fn discard_connection(&mut self) {
        self.conn = None;
    }
}

/// Sorts a failed group statement into what the committer does next.
fn classify(error: sqlx::Error, plan: &Plan<'_>) -> Failure {
    let sqlx::Error::Database(database) = &error else {
        // I/O, TLS, protocol, pool: the connection is not usable, the outcome unknown.
        return Failure::Broken(format!("appending changes: {error}"));
    };
    let Some(pg) = database.try_downcast_ref::<PgDatabaseError>() else {
        return Failure::Broken(format!("appending changes: {error}"));
    };
    let code = pg.code();
    if code == MOVED_SQLSTATE {
        return match pg.detail().and_then(|d| serde_json::from_str::<Vec<String>>(d).ok()) {
            Some(ids) => Failure::Moved(ids),
            None => Failure::Broken(format!("appending changes: unreadable refusal: {error}")),
        };
    }
    match code.get(..2).unwrap_or_default() {
        // Serialization failure, deadlock: rolled back, nothing written.
        "40" => Failure::Transient(format!("appending changes: {error}")),
        // Data exceptions (a value PostgreSQL cannot store), integrity violations,
        // program limits: one of the appends is at fault.
        "22" | "23" | "54" => Failure::Refused(constraint_error(pg, plan)),
        // Everything else — connection exceptions (08), shutdown (57), resources (53),
        // … — says nothing about the appends.
        _ => Failure::Broken(format!("appending changes: {error}")),
    }
}

/// The error an append gets for a refused value or a broken unique constraint, naming
/// the id involved, like the SQLite backend.
fn constraint_error(pg: &PgDatabaseError, plan: &Plan<'_>) -> StoreError {
    let detail = pg.detail().unwrap_or_default();
    let find = |key: &dyn Fn(&ChangeEvent) -> Option<String>| {
        plan.events.iter().filter_map(|e| key(e.event)).find(|k| detail.contains(&format!("=({k})")))
    };
    match pg.constraint() {
        Some("change_events_client_change") => {
            let found = find(&|e| e.client_change_id.as_ref().map(|c| format!("{}, {c}", e.user_id)));
            let ccid = found.and_then(|k| k.rsplit_once(", ").map(|(_, c)| c.to_owned()));
            StoreError::Duplicate(ccid.unwrap_or_else(|| detail.to_owned()))
        }
        Some("change_events_event_id_key") => {
            StoreError::Duplicate(find(&|e| Some(e.event_id.clone())).unwrap_or_else(|| detail.to_owned()))
        }
        Some("change_events_document_revision") => {
            // Another change already produced this revision of the document.
            let found = find(&|e| Some(format!("{}, {}", e.document_id, e.sync_revision)));
            let id = found.and_then(|k| k.rsplit_once(", ").map(|(id, _)| id.to_owned()));
            StoreError::Conflict(vec![id.unwrap_or_else(|| detail.to_owned())])
        }
        _ => StoreError::Database(format!("cannot store the change: {}", pg.message())),
    }
}

/// The error for documents that moved, when no append of the plan touched them.
fn moved_error(ids: Vec<String>) -> StoreError {
    StoreError::Conflict(ids)
}

// ---------------------------------------------------------------------------------------
// Planning a group

/// A group of appends as the arrays of one statement.
struct Plan<'a> {
    /// One row per document: its state after the group.
    docs: Vec<DocRow<'a>>,
    /// Events in order; event `k` gets sequence `base + k + 1`.
    events: Vec<EventRow<'a>>,
    /// Which events belong to which append.
    ranges: Vec<Range<usize>>,
}

/// A document as the group leaves it.
struct DocRow<'a> {
    document: &'a Document,
    /// The revision the database must hold first (0: the id must be new).
    expected: i64,
    /// The append whose change touches the database's copy first: a refusal of this
    /// document is that append's.
    owner: usize,
    revision: i64,
    content: String,
    clock: String,
}

/// A change event to insert.
struct EventRow<'a> {
    event: &'a ChangeEvent,
    revision: i64,
    forward: Option<String>,
    reverse: Option<String>,
}

impl<'a> Plan<'a> {
    /// Lays the appends out as rows. A change that the group itself contradicts (a
    /// revision another change of the group did not produce, an id or client change id
    /// used twice) refuses its append: `Err((index, error))`, like the SQLite backend,
    /// whose statements see the earlier changes of the transaction.
    fn build(commands: &'a [Command]) -> Result<Plan<'a>, (usize, StoreError)> {
        let changes: usize = commands.iter().map(|c| c.batch.len()).sum();
        let mut plan = Plan { docs: Vec::new(), events: Vec::with_capacity(changes), ranges: Vec::new() };
        // Document id → (row, revision after the group's changes so far).
        let mut docs: HashMap<&'a str, (usize, u64)> = HashMap::new();
        let mut event_ids: HashMap<&'a str, ()> = HashMap::new();
        let mut client_changes: HashMap<(&'a str, &'a str), ()> = HashMap::new();
        for (index, command) in commands.iter().enumerate() {
            let refuse = |error| (index, error);
            let start = plan.events.len();
            let mut conflicts: Vec<String> = Vec::new();
            for change in &command.batch {
                let document = &change.document;
                let revision = sql_int(document.sync_revision, "revision").map_err(refuse)?;
                let content = to_json(&document.content).map_err(refuse)?;
                let clock = to_json(&document.vector_clock).map_err(refuse)?;
                match docs.get_mut(document.id.as_str()) {
                    Some((row, current)) => {
                        if change.expected_revision == 0 {
                            return Err(refuse(StoreError::Duplicate(document.id.clone())));
                        }
                        if change.expected_revision != *current {
                            // Keep checking: the write path reloads every moved document at once.
                            if !conflicts.contains(&document.id) {
                                conflicts.push(document.id.clone());
                            }
                            continue;
                        }
                        *current = document.sync_revision;
                        let slot = &mut plan.docs[*row];
                        slot.document = document;
                        slot.revision = revision;
                        slot.content = content;
                        slot.clock = clock;
                    }
                    None => {
                        let expected = sql_int(change.expected_revision, "revision").map_err(refuse)?;
                        docs.insert(&document.id, (plan.docs.len(), document.sync_revision));
                        plan.docs.push(DocRow { document, expected, owner: index, revision, content, clock });
                    }
                }
                let event = &change.event;
                if event_ids.insert(&event.event_id, ()).is_some() {
                    return Err(refuse(StoreError::Duplicate(event.event_id.clone())));
                }
                if let Some(ccid) = &event.client_change_id
                    && client_changes.insert((&event.user_id, ccid), ()).is_some()
                {
                    return Err(refuse(StoreError::Duplicate(ccid.clone())));
                }
                plan.events.push(EventRow {
                    event,
                    revision: sql_int(event.sync_revision, "revision").map_err(refuse)?,
                    forward: event.forward_patch.as_ref().map(to_json).transpose().map_err(refuse)?,
                    reverse: event.reverse_patch.as_ref().map(to_json).transpose().map_err(refuse)?,
                });
            }
            if !conflicts.is_empty() {
                return Err(refuse(StoreError::Conflict(conflicts)));
            }
            plan.ranges.push(start..plan.events.len());
        }
        Ok(plan)
    }

    /// The sequences of each append, given the sequence before the first event.
    fn sequences(&self, base: i64) -> Vec<Vec<u64>> {
        let base = base.unsigned_abs();
        self.ranges.iter().map(|range| range.clone().map(|k| base + k as u64 + 1).collect()).collect()
    }

    /// The appends refused because these documents moved, by index, in index order: an
    /// update that found another revision is a `Conflict` naming every such document of
    /// the append; a create that found the id taken is a `Duplicate`.
    fn refusals(&self, moved: &[String]) -> Vec<(usize, StoreError)> {
        let mut by_owner: std::collections::BTreeMap<usize, (Vec<String>, Option<String>)> = Default::default();
        for row in self.docs.iter().filter(|row| moved.contains(&row.document.id)) {
            let entry = by_owner.entry(row.owner).or_default();
            if row.expected == 0 {
                entry.1.get_or_insert_with(|| row.document.id.clone());
            } else {
                entry.0.push(row.document.id.clone());
            }
        }
        by_owner
            .into_iter()
            .map(|(owner, (conflicts, duplicate))| match duplicate {
                Some(id) => (owner, StoreError::Duplicate(id)),
                None => (owner, StoreError::Conflict(conflicts)),
            })
            .collect()
    }

    /// Binds the arrays of [`APPEND`].
    fn bind<'q>(&'q self, query: AppendQuery<'q>) -> AppendQuery<'q> {
        let docs = &self.docs;
        let events = &self.events;
        let texts = |values: Vec<&'q str>| values;
        query
            .bind(texts(docs.iter().map(|r| r.document.id.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.user_id.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.collection.as_str()).collect()))
            .bind(docs.iter().map(|r| r.document.title.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(texts(docs.iter().map(|r| r.content.as_str()).collect()))
            .bind(docs.iter().map(|r| r.revision).collect::<Vec<i64>>())
            .bind(texts(docs.iter().map(|r| r.clock.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.content_hash.as_str()).collect()))
            .bind(docs.iter().map(|r| r.document.created_at.unix_millis()).collect::<Vec<i64>>())
            .bind(docs.iter().map(|r| r.document.updated_at.unix_millis()).collect::<Vec<i64>>())
            .bind(docs.iter().map(|r| r.document.deleted_at.map(Timestamp::unix_millis)).collect::<Vec<Option<i64>>>())
            .bind(docs.iter().map(|r| r.expected).collect::<Vec<i64>>())
            .bind(texts(events.iter().map(|r| r.event.event_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.document_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.collection.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.user_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.client_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.event_type.as_str()).collect()))
            .bind(events.iter().map(|r| r.forward.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.reverse.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.revision).collect::<Vec<i64>>())
            .bind(events.iter().map(|r| r.event.created_at.unix_millis()).collect::<Vec<i64>>())
            .bind(events.iter().map(|r| r.event.client_change_id.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.event.content_hash.as_deref()).collect::<Vec<Option<&str>>>())
    }
}

/// The group statement with its arguments.
type AppendQuery<'q> = sqlx::query::QueryScalar<'q, Postgres, i64, sqlx::postgres::PgArguments>;

// ---------------------------------------------------------------------------------------
// Rows and values

fn document_from_row(row: &PgRow) -> StoreResult<Document> {
    rows::document(row)
}

fn event_from_row(row: &PgRow) -> StoreResult<ChangeEvent> {
    rows::event(row, 0)
}

/// JSON columns are selected as text (`::text`), so a corrupt value is reported with its id.
impl Columns for PgRow {
    fn text(&self, index: usize) -> Result<String, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, ColumnError> {
        Ok(self.try_get(index)?)
    }

    fn json<T: DeserializeOwned>(&self, index: usize) -> Result<T, ColumnError> {
        let text: &str = self.try_get(index)?;
        Ok(serde_json::from_str(text)?)
    }

    fn optional_json<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, ColumnError> {
        let text: Option<&str> = self.try_get(index)?;
        Ok(text.map(serde_json::from_str).transpose()?)
    }
}

/// Maps an sqlx error to [`StoreError::Database`] with what was being done.
fn db(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::Database(format!("{context}: {e}"))
}

/// A stored count or sequence, which is never negative.
fn unsigned(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

/// A `u64` as PostgreSQL's BIGINT.
fn sql_int(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{what} {value} is beyond the stored range")))
}

/// A page size as a SQL LIMIT (larger than any table can hold becomes "no limit").
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// JSON text of a value, for a JSONB parameter.
fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(format!("encoding JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_servers_are_refused_by_name() {
        assert_eq!(version_supported(140_000, "14.0"), Ok(()));
        assert_eq!(version_supported(170_002, "17.2"), Ok(()));
        let message = version_supported(130_011, "13.11 (Debian 13.11-1)").unwrap_err();
        assert!(message.contains("13.11") && message.contains("14 or newer"), "{message}");
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        let migrator = migrator();
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    }

    #[test]
    fn urls_never_reach_error_messages() {
        let message = without_url("error with postgres://sync:hunter2@db/sync: bad port");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
