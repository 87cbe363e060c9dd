//! What can go wrong in storage: [`StoreError`], and the [`Cause`] underneath it.
//!
//! Guarantee: when `Open` or `Database` comes from an error below (the database driver,
//! the JSON encoder, the runtime), that error is kept as its `source`, typed, next to a
//! context that says what was being done. `Corrupt` names the record and the column, and
//! keeps what the decoder said (the driver's or serde_json's error) as its source.

use std::fmt;
use std::sync::Arc;

use crate::url::UrlError;

/// What went wrong in storage.
///
/// `Open` and `Database` show their cause in their own message as well as returning it
/// from `source()`: the server logs and answers storage errors with their `Display`
/// alone, and those messages must keep naming the cause. A printer that walks the chain
/// (`anyhow`'s `{:#}`) therefore shows the cause twice.
///
/// Cloning is cheap (the cause is shared): a group commit that fails answers every
/// caller of the group with the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database: {context}{}", Because(.source))]
    Open {
        /// What was being done, naming the file or server.
        context: String,
        /// The underlying error, when something below failed.
        #[source]
        source: Option<Arc<Cause>>,
    },
    /// A query failed (connection lost, disk full, constraint, …).
    #[error("database error: {context}{}", Because(.source))]
    Database {
        /// What was being done.
        context: String,
        /// The underlying error, when something below failed.
        #[source]
        source: Option<Arc<Cause>>,
    },
    /// A document in the batch was changed by someone else since it was loaded: its
    /// stored revision is not the expected one. Nothing of the batch was written.
    #[error("documents changed concurrently: {0:?}")]
    Conflict(Vec<String>),
    /// A document or change id that must be new already exists.
    #[error("already exists: {0}")]
    Duplicate(String),
    /// Stored data could not be decoded (corruption or a bug).
    #[error("corrupt stored data: {what}{}", Because(.source))]
    Corrupt {
        /// The record and the column (or the value) that could not be decoded.
        what: String,
        /// What the decoder reported, when something below failed.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The error underneath a [`StoreError`]: what the database driver, the JSON encoder,
/// the operating system or the runtime reported. Its message and `source()` are those of
/// the error it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// From SQLite.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// From PostgreSQL or the connection to it.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    /// From applying the PostgreSQL migrations.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    PostgresMigration(#[from] sqlx::migrate::MigrateError),
    /// Encoding a value as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The operating system (starting a thread).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A blocking task that ran a read panicked or was cancelled.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The database URL names no database.
    #[error(transparent)]
    Url(#[from] UrlError),
}

impl StoreError {
    /// [`StoreError::Open`] with `context` and the error underneath.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn open(context: impl Into<String>, cause: impl Into<Cause>) -> StoreError {
        StoreError::Open { context: context.into(), source: Some(Arc::new(cause.into())) }
    }

    /// [`StoreError::Open`] for a failure that has no error underneath.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn open_message(context: impl Into<String>) -> StoreError {
        StoreError::Open { context: context.into(), source: None }
    }

    /// [`StoreError::Database`] with `context` and the error underneath.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn database(context: impl Into<String>, cause: impl Into<Cause>) -> StoreError {
        StoreError::Database { context: context.into(), source: Some(Arc::new(cause.into())) }
    }

    /// [`StoreError::Database`] for a failure that has no error underneath.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn database_message(context: impl Into<String>) -> StoreError {
        StoreError::Database { context: context.into(), source: None }
    }
}

impl StoreError {
    /// [`StoreError::Corrupt`]: `what` could not be decoded, because of `error`.
    pub fn corrupt(what: impl Into<String>, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Corrupt { what: what.into(), source: Some(Arc::from(error.into())) }
    }

    /// [`StoreError::Corrupt`] for a value that is wrong with no error underneath.
    pub fn corrupt_value(what: impl Into<String>) -> Self {
        StoreError::Corrupt { what: what.into(), source: None }
    }
}

/// Writes `: cause` after a context when there is a cause.
struct Because<'a, T: ?Sized>(&'a Option<Arc<T>>);

impl<T: fmt::Display + ?Sized> fmt::Display for Because<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads_and_live_anywhere() {
        fn assert_send_sync_static<T: Send + Sync + 'static>() {}
        assert_send_sync_static::<StoreError>();
        assert_send_sync_static::<Cause>();
    }

    #[test]
    fn messages_name_the_context_and_the_cause() {
        let json = serde_json::from_str::<u8>("x").err().map(|e| Arc::new(Cause::Json(e)));
        let error = StoreError::Database { context: "encoding JSON".to_owned(), source: json };
        assert_eq!(error.to_string(), "database error: encoding JSON: expected value at line 1 column 1");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("expected value at line 1 column 1"));

        let error = StoreError::Open { context: "sync.db: the file is read-only".to_owned(), source: None };
        assert_eq!(error.to_string(), "cannot open the database: sync.db: the file is read-only");
        assert!(std::error::Error::source(&error).is_none());
    }
}
