//! The one error-code vocabulary shared by WebSocket `error` messages, `*_response`
//! failures and HTTP error bodies (PROTOCOL.md §6 and §9).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error code on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Credentials missing, malformed, expired or wrong.
    InvalidAuth,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// No readable document with that id.
    DocumentNotFound,
    /// A document with that id already exists.
    DocumentExists,
    /// The document is deleted (a tombstone).
    DocumentDeleted,
    /// The patch is malformed or does not apply.
    InvalidPatch,
    /// The change was made against a state the server cannot reconcile (failed `test`,
    /// stale blind write, base revision from the future).
    VersionMismatch,
    /// A frame, document, patch or nesting depth is over its limit.
    PayloadTooLarge,
    /// Too many requests; retry later.
    RateLimitExceeded,
    /// Malformed JSON, unknown message type, or a field of the wrong type.
    InvalidMessage,
    /// The server failed; the change was not applied.
    ServerError,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidAuth => "invalid_auth",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::DocumentNotFound => "document_not_found",
            ErrorCode::DocumentExists => "document_exists",
            ErrorCode::DocumentDeleted => "document_deleted",
            ErrorCode::InvalidPatch => "invalid_patch",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimitExceeded => "rate_limit_exceeded",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::ServerError => "server_error",
        }
    }

    /// The HTTP status that goes with the code in REST answers.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidAuth => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::DocumentNotFound => 404,
            ErrorCode::DocumentExists | ErrorCode::DocumentDeleted | ErrorCode::VersionMismatch => 409,
            ErrorCode::InvalidPatch | ErrorCode::InvalidMessage => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::ServerError => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{code, message}`: the error object of `*_response` messages and HTTP bodies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation, lowercase, without a trailing period.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        let all = [
            ErrorCode::InvalidAuth,
            ErrorCode::Forbidden,
            ErrorCode::DocumentNotFound,
            ErrorCode::DocumentExists,
            ErrorCode::DocumentDeleted,
            ErrorCode::InvalidPatch,
            ErrorCode::VersionMismatch,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RateLimitExceeded,
            ErrorCode::InvalidMessage,
            ErrorCode::ServerError,
        ];
        for code in all {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(code.as_str().into()));
        }
    }
}
