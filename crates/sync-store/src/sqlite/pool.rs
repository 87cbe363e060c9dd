//! The read pool: read-only connections, used from blocking tasks, so that reads never
//! wait for the writer and never block the async runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::open::open_reader;
use crate::{StoreError, StoreResult};

/// Read-only connections, handed out one per blocking task.
pub(super) struct ReadPool {
    /// Where to open a replacement connection.
    pub(super) path: PathBuf,
    /// Connections not in use.
    pub(super) idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use at once.
    pub(super) slots: Arc<Semaphore>,
}

impl ReadPool {
    pub(super) fn checkout(&self) -> StoreResult<Connection> {
        // A poisoned lock only means a panic elsewhere; the Vec itself is always intact.
        let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match conn {
            Some(conn) => Ok(conn),
            // A connection is lost when a read task panics; open a replacement.
            None => open_reader(&self.path).map_err(|e| StoreError::database("cannot open a reader", e)),
        }
    }

    pub(super) fn checkin(&self, conn: Connection) {
        // A connection left inside a transaction would pin an old snapshot: drop it.
        if conn.is_autocommit() {
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}
