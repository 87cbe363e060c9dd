//! Monitoring mode (`MONITORING=true`): a colored, human-readable activity log on stdout
//! — connections, authentication, messages, committed patches with their ops,
//! conflicts, refusals and errors. Credentials never appear: API keys are masked and
//! signatures, tokens and secrets are not printed at all.

use std::io::Write;

use sync_core::ErrorBody;
use sync_core::patch::PatchOp;

use crate::writer::{Summary, WriteRequest};

/// A cheap handle; every method is a no-op when monitoring is off.
#[derive(Clone, Copy, Debug, Default)]
pub struct Monitor {
    enabled: bool,
    color: bool,
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

impl Monitor {
    /// A monitor that prints when `enabled` (colors unless `NO_COLOR` is set).
    pub fn new(enabled: bool) -> Self {
        Self { enabled, color: std::env::var_os("NO_COLOR").is_none() }
    }

    /// Whether monitoring is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn line(&self, color: &str, tag: &str, text: std::fmt::Arguments<'_>) {
        if !self.enabled {
            return;
        }
        let time = sync_core::Timestamp::now().to_string();
        let mut out = std::io::stdout().lock();
        let _ = if self.color {
            writeln!(out, "{DIM}{time}{RESET} {color}{tag:<9}{RESET} {text}")
        } else {
            writeln!(out, "{time} {tag:<9} {text}")
        };
    }

    /// A WebSocket connection opened.
    pub fn connected(&self, session: u64, peer: &str) {
        self.line(CYAN, "CONNECT", format_args!("session {session} from {peer}"));
    }

    /// A session authenticated.
    pub fn authenticated(&self, session: u64, user: &str, client: &str, method: &str) {
        self.line(GREEN, "AUTH", format_args!("session {session} user {user} client {client} via {method}"));
    }

    /// Authentication failed.
    pub fn auth_failed(&self, session: u64, reason: &str) {
        self.line(RED, "AUTH FAIL", format_args!("session {session}: {reason}"));
    }

    /// A message arrived.
    pub fn message_in(&self, session: u64, message_type: &str, detail: &str) {
        self.line(BLUE, "IN", format_args!("session {session} {message_type} {detail}"));
    }

    /// A change was committed.
    pub fn committed(&self, request: &WriteRequest, summary: &Summary, sequence: u64) {
        if !self.enabled {
            return;
        }
        let ops = summary.forward.as_deref().map(|ops| describe_ops(ops)).unwrap_or_default();
        self.line(
            GREEN,
            "COMMIT",
            format_args!(
                "#{sequence} {} {} r{} by {} {ops}",
                summary.kind(),
                summary.document_id,
                summary.revision,
                request.client_id
            ),
        );
        for conflict in &summary.conflicts {
            self.line(
                MAGENTA,
                "CONFLICT",
                format_args!(
                    "{} {} {} at #{sequence}: {:?}, {:?} ({:?})",
                    summary.document_id,
                    conflict.op,
                    conflict.path,
                    conflict.reason,
                    conflict.resolution,
                    summary.policy
                ),
            );
        }
    }

    /// A change was refused.
    pub fn refused(&self, request: &WriteRequest, body: &ErrorBody) {
        self.line(YELLOW, "REFUSED", format_args!("{} from {}: {body}", request.user_id, request.client_id));
    }

    /// An error was sent to a session.
    pub fn error(&self, session: u64, body: &str) {
        self.line(YELLOW, "ERROR", format_args!("session {session}: {body}"));
    }

    /// A connection closed.
    pub fn disconnected(&self, session: u64, why: &str) {
        self.line(DIM, "CLOSE", format_args!("session {session}: {why}"));
    }
}

/// `replace /status, add /tags/-` — the ops of a patch without their values.
fn describe_ops(ops: &[PatchOp]) -> String {
    let mut parts: Vec<String> = ops.iter().take(8).map(|op| format!("{} {}", op.name(), op.path())).collect();
    if ops.len() > 8 {
        parts.push(format!("… {} more", ops.len() - 8));
    }
    parts.join(", ")
}
