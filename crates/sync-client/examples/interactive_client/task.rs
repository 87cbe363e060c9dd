//! The task model of the interactive client: how a task is stored as a JSON document in
//! the `tasks` collection, and how a document (possibly written by another client, with
//! missing or odd fields) is read back as a task without failing.

use serde_json::{Value, json};
use sync_client::{DocStatus, Document};

/// The collection every task lives in.
pub(crate) const COLLECTION: &str = "tasks";

/// How urgent a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Can wait.
    Low,
    /// The default.
    Medium,
    /// Do it first.
    High,
}

impl Priority {
    /// The stored spelling (`low`, `medium`, `high`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }

    /// Reads a stored value or what a user typed (`h`, `High`, `med`, …).
    pub(crate) fn parse(text: &str) -> Option<Priority> {
        match text.trim().to_ascii_lowercase().as_str() {
            "l" | "low" => Some(Priority::Low),
            "m" | "med" | "medium" => Some(Priority::Medium),
            "h" | "high" => Some(Priority::High),
            _ => None,
        }
    }

    /// The next priority in the `p` key's cycle: low → medium → high → low.
    pub(crate) fn next(self) -> Priority {
        match self {
            Priority::Low => Priority::Medium,
            Priority::Medium => Priority::High,
            Priority::High => Priority::Low,
        }
    }
}

/// A task as the UI shows it.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    /// The document id.
    pub(crate) id: String,
    /// `content.title`, or a placeholder when another client stored none.
    pub(crate) title: String,
    /// `content.status == "completed"`.
    pub(crate) done: bool,
    /// `content.priority`; medium when missing or unknown.
    pub(crate) priority: Priority,
    /// `content.tags` (string members only).
    pub(crate) tags: Vec<String>,
    /// `content.created` (RFC 3339), the sort key so that the list keeps its order.
    pub(crate) created: String,
    /// Whether the server has this version (from the local database).
    pub(crate) sync: DocStatus,
    /// The owner's user id, when the task is another user's, shared with this one.
    pub(crate) shared_by: Option<String>,
}

impl Task {
    /// Reads a task from a document, tolerating any content shape. `me` is this user's
    /// id (once known), to tell shared tasks from one's own.
    pub(crate) fn from_document(doc: &Document, me: Option<&str>) -> Task {
        let text = |key: &str| doc.content.get(key).and_then(Value::as_str);
        Task {
            id: doc.id.clone(),
            title: doc.title.clone().unwrap_or_else(|| "(untitled)".to_owned()),
            done: text("status") == Some("completed"),
            priority: text("priority").and_then(Priority::parse).unwrap_or(Priority::Medium),
            tags: doc
                .content
                .get("tags")
                .and_then(Value::as_array)
                .map(|tags| tags.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            created: text("created").unwrap_or_default().to_owned(),
            sync: doc.status,
            shared_by: doc.owner.clone().filter(|owner| me.is_some_and(|me| me != owner)),
        }
    }
}

/// The content of a new task.
pub(crate) fn new_task(title: &str, priority: Priority, tags: &[String]) -> Value {
    json!({
        "title": title,
        "status": "pending",
        "priority": priority.as_str(),
        "tags": tags,
        // The client library already depends on sync-core, whose timestamps print as RFC 3339.
        "created": sync_core::Timestamp::now().to_string(),
    })
}

/// The stored `status` of a task that is (or is not) done.
pub(crate) fn status_value(done: bool) -> &'static str {
    if done { "completed" } else { "pending" }
}

/// Splits `a, b,,c` into `["a", "b", "c"]`: trimmed, no empty tags, no duplicates.
pub(crate) fn parse_tags(input: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// An announcement of a change, for the user's other devices (on the personal topic):
/// `{"kind": "task_activity", "device", "action", "title"}`.
pub(crate) fn activity(device: &str, action: &str, title: &str) -> Value {
    json!({"kind": "task_activity", "device": device, "action": action, "title": title})
}

/// The activity line for an announcement; `None` for anything else on the topic.
pub(crate) fn activity_line(data: &Value) -> Option<String> {
    if data["kind"] != "task_activity" {
        return None;
    }
    let field = |name: &str| data[name].as_str().unwrap_or("?").to_owned();
    Some(format!("device {} {} \"{}\"", field("device"), field("action"), field("title")))
}
