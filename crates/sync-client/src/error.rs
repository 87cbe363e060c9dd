//! The client's error type. Every fallible call returns a clear `Err` and leaves the
//! local database unchanged.

use sync_core::ErrorCode;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad input from the application: malformed JSON, an invalid id, a bad patch.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No such document (or it is deleted).
    #[error("document not found: {0}")]
    NotFound(String),
    /// The local database failed.
    #[error("local database error: {0}")]
    Database(String),
    /// Connecting or talking to the server failed.
    #[error("connection error: {0}")]
    Connection(String),
    /// JSON could not be encoded or decoded.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// Configuration is incomplete or contradictory.
    #[error("configuration error: {0}")]
    Config(String),
    /// The server refused something.
    #[error("server refused: {code}: {message}")]
    Server {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The engine is shut down.
    #[error("the sync engine is shut down")]
    Shutdown,
    /// A wait ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<rusqlite::Error> for SyncError {
    fn from(e: rusqlite::Error) -> Self {
        SyncError::Database(e.to_string())
    }
}

impl From<serde_json::Error> for SyncError {
    fn from(e: serde_json::Error) -> Self {
        SyncError::Serialization(e.to_string())
    }
}

/// Result of client calls.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;
