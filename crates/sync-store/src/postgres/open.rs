//! Opening a PostgreSQL store: connecting, checking the server's version and durability
//! settings, and the migrations, which bring any older schema up to this build's (under
//! sqlx's advisory lock) before the store answers.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Row, SqlSafeStr};
use tokio::sync::mpsc;

use super::committer::Committer;
use super::{ACQUIRE_TIMEOUT, PgOptions, PgStore};
use crate::{StoreError, StoreResult};

/// The schema, one step per entry: (version, description, SQL). Steps are appended, never
/// edited: sqlx stores each step's checksum and refuses a database whose applied steps
/// changed.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "owner and read indexes", include_str!("../../migrations/postgres/0002_owner_and_read_indexes.sql")),
    (3, "acl versions", include_str!("../../migrations/postgres/0003_acl_versions.sql")),
];

/// The oldest server this store runs on (`server_version_num`): 14 brought the
/// multi-argument `UNNEST … WITH ORDINALITY` plans and the lock behaviour the tests cover.
const MIN_SERVER_VERSION: i64 = 140_000;

/// Appends that may wait for the committer; callers beyond this wait asynchronously (in
/// the order they came), so a burst never grows memory.
const WRITE_QUEUE: usize = 256;

impl PgStore {
    /// Connects to the database a `postgres://` URL names, checks the server version,
    /// applies the migrations it lacks, and starts the committer task on the current
    /// Tokio runtime.
    ///
    /// Fails with [`StoreError::Open`] when the URL is invalid, the server cannot be
    /// reached, is older than PostgreSQL 14, or holds a schema newer than this build
    /// knows. Error messages never contain the password.
    pub async fn open(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        // The driver's error is not kept as the source: its message may hold the URL, and
        // with it the password.
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::open_message(format!("invalid PostgreSQL URL: {}", without_url(&e.to_string()))))?
            .application_name("sync-server");
        let target =
            format!("{}:{}/{}", connect.get_host(), connect.get_port(), connect.get_database().unwrap_or_default());
        let failed = |doing: &str, e: sqlx::Error| StoreError::open(format!("{target}: {doing}"), e);

        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| StoreError::open_message(format!("{target}: no answer within {ACQUIRE_TIMEOUT:?}")))?
            .map_err(|e| failed("cannot connect", e))?;
        check_server_version(&mut conn, &target).await?;
        // An acknowledgement promises durability; a server configured to acknowledge
        // commits before they are flushed would break that promise, so this store's
        // sessions override it. Stronger settings (remote_apply, …) are kept.
        let synchronous_commit: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| failed("reading synchronous_commit", e))?;
        if synchronous_commit == "off" {
            tracing::info!(%target, "synchronous_commit is off on the server; this store's sessions turn it on");
            connect = connect.options([("synchronous_commit", "on")]);
        }
        let fsync: String = sqlx::query_scalar("SELECT current_setting('fsync')")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| failed("reading fsync", e))?;
        if fsync == "off" {
            tracing::warn!(%target, "PostgreSQL runs with fsync=off: committed changes may be lost if the machine crashes");
        }
        let applied = migrate(&mut conn, &target).await?;
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
        let committer = Committer::new(connect);
        tokio::spawn(committer.run(queue));
        Ok(PgStore { pool, commands, target })
    }
}

/// Refuses servers older than [`MIN_SERVER_VERSION`]; the error names both versions.
async fn check_server_version(conn: &mut PgConnection, target: &str) -> StoreResult<()> {
    let failed = |e| StoreError::open(format!("{target}: reading the server version"), e);
    let row = sqlx::query("SELECT current_setting('server_version_num')::int8, current_setting('server_version')")
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let number: i64 = row.try_get(0).map_err(failed)?;
    let text: String = row.try_get(1).map_err(failed)?;
    version_supported(number, &text).map_err(|message| StoreError::open_message(format!("{target}: {message}")))
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

/// Applies the migrations the database lacks; returns how many ran. Errors name `target`.
async fn migrate(conn: &mut PgConnection, target: &str) -> StoreResult<usize> {
    let migrator = migrator();
    // Counted before and after, under the migrator's own lock for the run itself.
    conn.ensure_migrations_table("_sqlx_migrations")
        .await
        .map_err(|e| StoreError::open(format!("{target}: cannot prepare migrations"), e))?;
    let listing = |e| StoreError::open(target.to_owned(), e);
    let before = conn.list_applied_migrations("_sqlx_migrations").await.map_err(listing)?.len();
    // `run_direct` is `run` without the generic `Acquire` parameter, which keeps callers'
    // futures from being proven `Send` ("implementation of `Acquire` is not general
    // enough" where the server is spawned); it takes the same advisory lock.
    migrator.run_direct(None, &mut *conn, false).await.map_err(|e| match e {
        MigrateError::VersionMissing(version) => StoreError::open_message(format!(
            "{target}: the database schema has migration {version}, which this build does not know \
             (it knows {}); use a newer release",
            MIGRATIONS.len()
        )),
        other => StoreError::open(format!("{target}: migration failed"), other),
    })?;
    let after = conn.list_applied_migrations("_sqlx_migrations").await.map_err(listing)?.len();
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
