//! Monitoring mode (`MONITORING=true`): a colored, human-readable activity log on stdout
//! — connections, authentication, messages, committed patches with their ops,
//! conflicts, topic subscriptions and publishes (by topic name, never their data),
//! refusals and errors.
//!
//! The log is a `tracing` layer: the server emits its activity as events on the target
//! [`TARGET`] (with [`activity!`]), and [`layer`] prints them, one line each, when
//! monitoring is on. Anything else that subscribes (metrics, a dashboard) can read the
//! same events. Credentials never appear: no event carries one — messages are described
//! by their type and document, never by their credentials, tokens or signatures.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use sync_core::patch::PatchOp;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of activity events.
pub(crate) const TARGET: &str = "sync_server::monitor";

/// Emits one line of the activity log: the tag (`CONNECT`, `COMMIT`, …) picks its
/// column and color, the format arguments are the line. The line is only formatted when
/// someone listens.
macro_rules! activity {
    ($tag:literal, $($arg:tt)+) => {
        tracing::info!(target: $crate::monitor::TARGET, tag = $tag, $($arg)+)
    };
}
pub(crate) use activity;

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BLUE: &str = "\x1b[34m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

fn color_of(tag: &str) -> &'static str {
    match tag {
        "CONNECT" => CYAN,
        "AUTH" | "COMMIT" => GREEN,
        "AUTH FAIL" => RED,
        "IN" => BLUE,
        "CONFLICT" => MAGENTA,
        "PUBLISH" | "SUBSCRIBE" => CYAN,
        "REFUSED" | "ERROR" => YELLOW,
        _ => DIM,
    }
}

/// The layer that prints activity events on stdout (colored unless `NO_COLOR` is set).
/// It ignores every other event; filter it to [`TARGET`] so the others cost nothing.
pub(crate) fn layer<S: Subscriber>() -> impl Layer<S> {
    Printer { color: std::env::var_os("NO_COLOR").is_none() }
}

struct Printer {
    color: bool,
}

impl<S: Subscriber> Layer<S> for Printer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let time = sync_core::Timestamp::now().to_string();
        let tag = line.tag.as_str();
        let text = line.text;
        let mut out = std::io::stdout().lock();
        let _ = if self.color {
            writeln!(out, "{DIM}{time}{RESET} {}{tag:<9}{RESET} {text}", color_of(tag))
        } else {
            writeln!(out, "{time} {tag:<9} {text}")
        };
    }
}

/// The tag and text of one activity event.
#[derive(Default)]
struct Line {
    tag: String,
    text: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "tag" => self.tag = value.to_owned(),
            "message" => self.text = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // The format arguments of the event: their Debug is the text itself. (The tag is
        // always a `&str`, recorded by `record_str`.)
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        }
    }
}

/// `replace /status, add /tags/-` — the ops of a patch without their values.
pub(crate) fn describe_ops(ops: &[PatchOp]) -> String {
    let mut parts: Vec<String> = ops.iter().take(8).map(|op| format!("{} {}", op.name(), op.path())).collect();
    if ops.len() > 8 {
        parts.push(format!("… {} more", ops.len() - 8));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records what the printer would print, without colors.
    struct Capture(Arc<Mutex<Vec<(String, String)>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == TARGET {
                let mut line = Line::default();
                event.record(&mut line);
                self.0.lock().unwrap().push((line.tag, line.text));
            }
        }
    }

    #[test]
    fn activity_events_carry_their_tag_and_line() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&lines)));
        tracing::subscriber::with_default(subscriber, || {
            activity!("CONNECT", session = 7u64, "session {} from {}", 7, "127.0.0.1:5");
            tracing::info!("not activity");
        });
        assert_eq!(*lines.lock().unwrap(), vec![("CONNECT".to_owned(), "session 7 from 127.0.0.1:5".to_owned())]);
    }

    #[test]
    fn ops_are_described_without_values() {
        let patch = sync_core::patch::parse_patch(serde_json::json!([
            {"op": "replace", "path": "/status", "value": "secret value"},
            {"op": "add", "path": "/tags/-", "value": 1}
        ]))
        .unwrap();
        assert_eq!(describe_ops(&patch), "replace /status, add /tags/-");
    }
}
