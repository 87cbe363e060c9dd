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

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgPool;
use sync_core::acl::Acl;
use sync_core::{ChangeEvent, Document, Timestamp};
use tokio::sync::{mpsc, oneshot};

use self::committer::Command;
use self::decode::{document_from_row, event_from_row};
use self::scoped::{Filter, ScopedRead, read_changes, read_documents};
use crate::params::{sql_bound, sql_int, sql_limit};
use crate::rows::{acl_history_json, acl_since_from, corrupt, decode_acl, rule_columns};
use crate::scope;
use crate::{
    AclSince, ApiCredential, ChangePage, NewChange, ReadScope, Store, StoreError, StoreResult, StoreStats, TokenRecord,
};

/// How long a caller waits for a connection (the pool retries connecting meanwhile).
/// While the database is down, writes fail after this long instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// `/ready` must answer promptly even when the database does not.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The columns of a document, in the order [`decode::document_from_row`] reads them.
/// JSON columns come back as text and are parsed here, so that a corrupt value is
/// reported with its id.
macro_rules! document_columns {
    () => {
        "id, user_id, collection, title, content::text, sync_revision, vector_clock::text, content_hash, \
         created_at, updated_at, deleted_at"
    };
}

/// The columns of a change event, in the order [`decode::event_from_row`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, event_id, document_id, collection, user_id, client_id, event_type, forward_patch::text, \
         reverse_patch::text, sync_revision, created_at, client_change_id, content_hash"
    };
}

mod committer;
mod decode;
mod open;
mod plan;
mod scoped;

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
    /// `host:port/database` of the server this store writes to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The read pool's connections: (in use, idle), for metrics. The committer's own
    /// connection is counted in use.
    pub fn pool_use(&self) -> (u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (self.pool.size().saturating_sub(idle), idle)
    }
}

impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(db("ping")(e)),
            Err(_) => Err(StoreError::database_message(format!("ping: no answer within {PING_TIMEOUT:?}"))),
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
        let read = ScopedRead::documents(&scope::select(&scope.view, collections.as_deref()), collections.is_some());
        let filter = Filter { view: &scope.view, collections: collections.as_deref() };
        // Ids are never empty, so "after the empty string" means from the start.
        read_documents(&self.pool, &read, &filter, after_id.unwrap_or_default(), limit).await
    }

    async fn append_batch(&self, batch: Vec<NewChange>) -> StoreResult<Vec<u64>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let stopped = || StoreError::database_message("the committer has stopped");
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
        // Each chunk is one statement, so one snapshot, for its rows and the counter:
        // `reached` must not pass a change the page did not see. The counter row joins
        // every event row (and stands alone when there are none).
        //
        // A chunk's sequences are chosen first and its rows read after: on a table
        // whose statistics lag behind (a bulk load autovacuum has not analyzed yet),
        // PostgreSQL takes the page for a few rows, reads every later row of the user,
        // turns all of their patches into text and sorts them on disk before the LIMIT —
        // 160 ms a page of 5,000 at the middle of 100,000 changes, against 35 ms this way
        // (and the same 20 ms either way once analyzed).
        let read = ScopedRead::changes(&scope::select(&scope.view, collections.as_deref()), collections.is_some());
        let filter = Filter { view: &scope.view, collections: collections.as_deref() };
        read_changes(&self.pool, &read, &filter, after, limit).await
    }

    async fn document_changes(
        &self,
        document_id: String,
        from_revision: u64,
        to_revision: Option<u64>,
    ) -> StoreResult<Vec<ChangeEvent>> {
        let to = to_revision.map_or(i64::MAX, sql_bound);
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM change_events WHERE document_id = $1 AND sync_revision > $2 AND sync_revision <= $3",
            " ORDER BY sync_revision"
        );
        let rows = sqlx::query(sql)
            .bind(document_id)
            .bind(sql_bound(from_revision))
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
        let before = before_revision.map_or(i64::MAX, sql_bound);
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

    async fn get_acl(&self) -> StoreResult<Acl> {
        let sql = "SELECT user_pattern, item, action, allow FROM acl_rules ORDER BY position";
        let rows: Vec<(String, String, String, bool)> =
            sqlx::query_as(sql).fetch_all(&self.pool).await.map_err(db("reading the access rules"))?;
        decode_acl(rows)
    }

    async fn set_acl(&self, acl: Acl) -> StoreResult<()> {
        let (mut users, mut items, mut actions, mut allows) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rule in acl.rules() {
            let (user, item, action, allow) = rule_columns(rule);
            users.push(user);
            items.push(item);
            actions.push(action);
            allows.push(allow);
        }
        // One transaction: a reader sees the old list or the new one.
        let mut tx = self.pool.begin().await.map_err(db("replacing the access rules"))?;
        // Two processes replacing the list at once: the second waits for the first, then
        // deletes what the first wrote (readers are not blocked by this lock).
        sqlx::query("LOCK TABLE acl_rules IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db("replacing the access rules"))?;
        sqlx::query("DELETE FROM acl_rules").execute(&mut *tx).await.map_err(db("replacing the access rules"))?;
        let sql = "INSERT INTO acl_rules (position, user_pattern, item, action, allow) \
                   SELECT r.position - 1, r.user_pattern, r.item, r.action, r.allow \
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::boolean[]) \
                   WITH ORDINALITY AS r(user_pattern, item, action, allow, position)";
        sqlx::query(sql)
            .bind(users)
            .bind(items)
            .bind(actions)
            .bind(allows)
            .execute(&mut *tx)
            .await
            .map_err(db("replacing the access rules"))?;
        // Read after the lock: the lists' sequences grow with their versions. Changes
        // committed before this statement's snapshot are at or below it.
        let sql = "INSERT INTO acl_versions (version, sequence, rules) \
                   SELECT (SELECT COALESCE(MAX(version), 0) + 1 FROM acl_versions), \
                          (SELECT value FROM counters WHERE name = 'change_events'), $1";
        sqlx::query(sql)
            .bind(acl_history_json(&acl)?)
            .execute(&mut *tx)
            .await
            .map_err(db("recording the access rules"))?;
        let sql = "DELETE FROM acl_versions WHERE version IN (\
                     SELECT version FROM (SELECT version, \
                         ROW_NUMBER() OVER (ORDER BY version DESC) AS n, \
                         SUM(octet_length(rules)) OVER (ORDER BY version DESC) AS total \
                       FROM acl_versions) AS history \
                     WHERE n > 1 AND (n > $1 OR total > $2))";
        sqlx::query(sql)
            .bind(sql_limit(crate::ACL_HISTORY_VERSIONS))
            .bind(sql_limit(crate::ACL_HISTORY_BYTES))
            .execute(&mut *tx)
            .await
            .map_err(db("trimming the access rules' history"))?;
        tx.commit().await.map_err(db("replacing the access rules"))?;
        Ok(())
    }

    async fn acl_since(&self, sequence: u64) -> StoreResult<AclSince> {
        // From the list before the first stored at or after `sequence` (the newest alone
        // when there is none), in version order.
        let sql = "SELECT sequence, rules FROM acl_versions WHERE version >= COALESCE(\
                     (SELECT MIN(version) FROM acl_versions WHERE sequence >= $1), \
                     (SELECT MAX(version) FROM acl_versions) + 1) - 1 \
                   ORDER BY version";
        let sequence = sql_bound(sequence);
        let rows: Vec<(i64, String)> = sqlx::query_as(sql)
            .bind(sequence)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the access rules' history"))?;
        acl_since_from(rows, sequence)
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
// Values

/// Maps an sqlx error to [`StoreError::Database`] with what was being done.
fn db(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::database(context, e)
}

/// A stored count or sequence, which is never negative.
fn unsigned(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::corrupt_value(format!("negative {what} {value}")))
}

/// JSON text of a value, for a JSONB parameter.
fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::database("encoding JSON", e))
}
