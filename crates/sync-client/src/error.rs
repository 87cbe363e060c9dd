//! The client's error type. Every fallible call returns a clear `Err` and leaves the
//! local database unchanged.
//!
//! Variants that wrap another error keep it as their [`std::error::Error::source`], and
//! also print its message in their own: the C ABI (`sync_last_error()`) and the events'
//! `error` field carry only the top-level message, and must say what went wrong.

use std::path::PathBuf;

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
    /// A call on the local database failed.
    #[error("local database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The local database file could not be opened, or its schema not prepared.
    #[error("local database error: cannot {action} {}: {source}", path.display())]
    DatabaseFile {
        /// What was being done: `open`, `prepare` or `migrate`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A row of the local database does not decode (damaged, or written by something
    /// other than this library).
    #[error("local database error: corrupt local {what} of {id}: {source}")]
    CorruptRow {
        /// The document's id.
        id: String,
        /// What did not decode: `state` (the replica) or `content` (the view).
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The engine could not start a thread it needs.
    #[error("cannot start {what}: {source}")]
    Thread {
        /// Which: the engine's runtime or the checkpoint thread.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The session with the server failed without an underlying error: no answer in
    /// time, an unexpected answer, the server closed the connection.
    #[error("connection error: {0}")]
    Connection(String),
    /// The WebSocket failed: the server URL, connecting, or sending.
    #[error("connection error: {context}: {source}")]
    WebSocket {
        /// What was being done.
        context: String,
        /// The WebSocket library's error.
        #[source]
        source: yawc::WebSocketError,
    },
    /// JSON could not be encoded or decoded.
    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A message from the server did not decode.
    #[error("serialization error: server message: {0}")]
    ServerMessage(#[source] serde_json::Error),
    /// A text frame from the server is not UTF-8.
    #[error("serialization error: server sent invalid UTF-8: {0}")]
    ServerText(#[source] std::str::Utf8Error),
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
    /// Something that needs a live connection was asked for while there is none
    /// (publishing on a topic: topic messages are live, not queued).
    #[error("not connected: {0}")]
    NotConnected(String),
    /// A wait ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result of client calls.
pub type Result<T, E = SyncError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Errors cross threads (the engine's runtime, `spawn_blocking`) and end up in
    /// `anyhow` and `Box<dyn Error + Send + Sync>` in applications.
    #[test]
    fn errors_are_send_sync_and_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<SyncError>();
    }

    /// The message keeps the cause's text (the C ABI shows only the message), and the
    /// cause stays reachable as the source.
    #[test]
    fn wrapped_errors_print_their_cause_and_keep_it_as_source() {
        let sqlite = rusqlite::Connection::open_in_memory().unwrap().execute("NOT SQL", []).unwrap_err();
        let text = sqlite.to_string();
        let err = SyncError::from(sqlite);
        assert_eq!(err.to_string(), format!("local database error: {text}"));
        assert_eq!(err.source().map(ToString::to_string), Some(text));

        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let text = json.to_string();
        let err = SyncError::CorruptRow { id: "d1".into(), what: "content", source: json };
        assert_eq!(err.to_string(), format!("local database error: corrupt local content of d1: {text}"));
        assert_eq!(err.source().map(ToString::to_string), Some(text));

        let err =
            SyncError::WebSocket { context: "sending failed".into(), source: yawc::WebSocketError::ConnectionClosed };
        assert_eq!(err.to_string(), "connection error: sending failed: Connection is closed");
        assert!(err.source().is_some());
    }
}
