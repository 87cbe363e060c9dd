//! The interactive client's state and behaviour: what a key does to the tasks (through
//! the engine), and what an engine event does to the screen. Nothing here draws; `ui.rs`
//! renders this state.
//!
//! Every engine call commits locally and returns at once, so a key press never waits for
//! the network; the list is re-read from the local database after each change, after each
//! batch of engine events, and whenever the sync state (connection, pending count, last
//! sequence) moves, which is how "pending" turns into "synced" on screen.
//!
//! Activity: each change made with keys is announced on the user's personal topic
//! (`user.<id>`, which only the user's own sessions receive), and what the user's other
//! devices announce shows on the activity line. Announcements are live, not stored: one
//! made while offline is not sent (the change itself still syncs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::widgets::TableState;
use serde_json::json;
use sync_client::{DocStatus, EventDispatcher, EventType, Subscription, SyncEngine, SyncEvent, TopicEvent};

use crate::task::{self, COLLECTION, Priority, Task};

/// What the keyboard is doing.
pub(crate) enum Mode {
    /// Moving through the list; single keys are commands.
    Browse,
    /// Typing an answer to a prompt.
    Input(Prompt),
    /// Waiting for `y` to delete a task.
    ConfirmDelete {
        /// The task to delete.
        id: String,
        /// Its title, for the question.
        title: String,
    },
}

/// A one-line text prompt.
pub(crate) struct Prompt {
    /// What the answer is for.
    pub(crate) purpose: Purpose,
    /// What has been typed (the cursor is always at the end).
    pub(crate) input: String,
}

/// What a prompt's answer is for. Creating a task asks three questions in turn, carrying
/// the earlier answers along.
pub(crate) enum Purpose {
    /// The title of a new task.
    NewTitle,
    /// The priority of a new task.
    NewPriority {
        /// The title typed before.
        title: String,
    },
    /// The tags of a new task.
    NewTags {
        /// The title typed before.
        title: String,
        /// The priority chosen before.
        priority: Priority,
    },
    /// A new title for an existing task.
    EditTitle {
        /// The task.
        id: String,
    },
    /// New tags for an existing task.
    EditTags {
        /// The task.
        id: String,
    },
}

impl Purpose {
    /// The question shown above the input.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Purpose::NewTitle => "New task: title",
            Purpose::NewPriority { .. } => "New task: priority (low / medium / high, Enter = medium)",
            Purpose::NewTags { .. } => "New task: tags (comma-separated, may be empty)",
            Purpose::EditTitle { .. } => "Edit title",
            Purpose::EditTags { .. } => "Edit tags (comma-separated)",
        }
    }
}

/// The connection facts shown in the header; a change in any of them re-reads the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SyncState {
    /// Connected and authenticated.
    pub(crate) connected: bool,
    /// Local changes the server has not acknowledged.
    pub(crate) pending: u64,
    /// The newest server sequence stored locally.
    pub(crate) sequence: u64,
}

/// The last thing worth telling the user.
pub(crate) struct StatusLine {
    /// The message.
    pub(crate) text: String,
    /// Whether it reports a failure (drawn in red).
    pub(crate) error: bool,
}

/// The whole application state.
pub(crate) struct App<'a> {
    engine: &'a SyncEngine,
    dispatcher: EventDispatcher,
    /// Events the dispatcher's callback collected, drained on every tick.
    inbox: Arc<Mutex<Vec<SyncEvent>>>,
    /// Shown in the header.
    pub(crate) user: String,
    /// The user id the server knows this user as (what an admin names in a sharing
    /// rule), shown in the header once known.
    pub(crate) user_id: Option<String>,
    /// Named in connection messages.
    server: String,
    /// The tasks, oldest first.
    pub(crate) tasks: Vec<Task>,
    /// Selection and scroll position of the task table.
    pub(crate) table: TableState,
    /// What keys do now.
    pub(crate) mode: Mode,
    /// The last event or error.
    pub(crate) status: StatusLine,
    /// What the user's other devices did last, as announced on the personal topic.
    pub(crate) activity: Option<String>,
    /// The personal topic, where the other devices announce their changes.
    announcements: Subscription,
    /// The sync facts as of the last tick.
    pub(crate) sync: SyncState,
    /// Tasks whose sync met a conflict, shown as such until the user edits them again.
    /// The engine's own flag only lasts until the server acknowledges the rebased edit,
    /// usually milliseconds later, which is too short for anyone to notice.
    conflicts: HashSet<String>,
    quit: bool,
}

impl<'a> App<'a> {
    /// Prepares the state and starts collecting the engine's events.
    pub(crate) async fn new(engine: &'a SyncEngine, user: &str, server: &str) -> anyhow::Result<App<'a>> {
        let dispatcher = engine.event_dispatcher();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&inbox);
        dispatcher.register_event_callback(
            move |event: &SyncEvent, _context| lock(&sink).push(event.clone()),
            std::ptr::null_mut(),
            None,
        )?;
        let mut app = App {
            engine,
            dispatcher,
            inbox,
            user: user.to_owned(),
            user_id: None,
            server: server.to_owned(),
            tasks: Vec::new(),
            table: TableState::default(),
            mode: Mode::Browse,
            status: StatusLine { text: format!("connecting to {server}..."), error: false },
            activity: None,
            announcements: engine.subscribe_personal()?,
            sync: SyncState::default(),
            conflicts: HashSet::new(),
            quit: false,
        };
        app.refresh().await;
        Ok(app)
    }

    /// Whether `q` (or Ctrl-C) was pressed.
    pub(crate) fn should_quit(&self) -> bool {
        self.quit
    }

    /// The selected task, if any.
    pub(crate) fn selected(&self) -> Option<&Task> {
        self.table.selected().and_then(|i| self.tasks.get(i))
    }

    /// One UI tick: runs the engine's queued events through the callback, reacts to them,
    /// and re-reads the list when anything it shows may have changed.
    pub(crate) async fn tick(&mut self) {
        if let Err(e) = self.dispatcher.process_events() {
            self.error(format!("cannot process events: {e}"));
        }
        while let Some(event) = self.announcements.try_recv() {
            if let TopicEvent::Message(message) = event
                && let Some(line) = task::activity_line(&message.data)
            {
                self.activity = Some(line);
            }
        }
        let events = std::mem::take(&mut *lock(&self.inbox));
        let mut changed = false;
        for event in events {
            changed |= self.on_event(event).await;
        }
        let now = SyncState {
            connected: self.engine.is_connected(),
            pending: self.engine.pending_count().unwrap_or(self.sync.pending),
            sequence: self.engine.last_synced_sequence(),
        };
        if changed || now != self.sync {
            self.sync = now;
            self.refresh().await;
        }
    }

    /// Reacts to one engine event; returns whether the task list may have changed.
    async fn on_event(&mut self, event: SyncEvent) -> bool {
        let title = event.title.clone().unwrap_or_else(|| "(untitled)".to_owned());
        match event.event_type {
            EventType::DocumentCreated | EventType::DocumentUpdated => {
                // Local changes already said what they did; report only other clients'.
                if event.boolean_data && self.is_task(event.document_id.as_deref()).await {
                    let verb = if event.event_type == EventType::DocumentCreated { "new" } else { "update" };
                    self.info(format!("remote {verb}: {title}"));
                }
                true
            }
            EventType::DocumentDeleted => {
                if event.boolean_data
                    && let Some(task) = self.tasks.iter().find(|t| Some(t.id.as_str()) == event.document_id.as_deref())
                {
                    self.info(format!("remote delete: {}", task.title));
                }
                true
            }
            EventType::ConflictDetected => {
                self.conflicts.extend(event.document_id.clone());
                let outcome = if event.boolean_data { "your edit was kept" } else { "another client's edit won" };
                self.error(format!("conflict on {title}: {outcome}"));
                true
            }
            EventType::ConnectionLost => {
                let why = event.error.map(|e| format!(" ({e})")).unwrap_or_default();
                self.error(format!("connection lost{why}; changes are kept locally, retrying"));
                false
            }
            // The second attempt means the first failed. Later attempts say nothing, so as
            // not to hide what the user just did or why it failed (a refused API key); the
            // header keeps saying "offline".
            EventType::ConnectionAttempted if event.numeric_data == 2 && !self.status.error => {
                self.error(format!("offline: cannot reach {}; changes are kept locally and sent later", self.server));
                false
            }
            EventType::ConnectionSucceeded => {
                self.info(format!("connected to {}", self.server));
                // The header shows the user id (the server named it on connecting).
                true
            }
            EventType::DocumentShared => {
                if let Some(id) = event.document_id.as_deref()
                    && let Ok(doc) = self.engine.get_document(id).await
                    && doc.collection == COLLECTION
                {
                    let owner = doc.owner.unwrap_or_else(|| "another user".to_owned());
                    self.info(format!("shared with you by {owner}: {title}"));
                }
                true
            }
            EventType::AccessRevoked => {
                let dropped = match event.numeric_data {
                    0 => String::new(),
                    n => format!("; {n} unsent change(s) dropped"),
                };
                // The document is gone: whether it was a task is no longer known.
                self.error(format!("no longer shared with you: {title}{dropped}"));
                true
            }
            EventType::ApplicationEvent => {
                if self.is_task(event.document_id.as_deref()).await {
                    let action = event.action.as_deref().unwrap_or("event");
                    let payload = event.content.as_deref().unwrap_or("null");
                    self.info(format!("{action} on {title}: {payload}"));
                }
                false
            }
            EventType::SyncCompleted => {
                // A conflict or error met while catching up stays on the line.
                if !self.status.error {
                    self.info(format!("caught up with the server ({} documents synced)", event.numeric_data));
                }
                true
            }
            EventType::SyncError => {
                self.error(format!("sync error: {}", event.error.unwrap_or_default()));
                true
            }
            EventType::SyncStarted | EventType::ConnectionAttempted => false,
        }
    }

    /// Whether a document is a task (events carry no collection).
    async fn is_task(&self, id: Option<&str>) -> bool {
        match id {
            Some(id) => self.engine.get_document(id).await.is_ok_and(|doc| doc.collection == COLLECTION),
            None => false,
        }
    }

    /// Re-reads the tasks from the local database, keeping the selected task selected.
    async fn refresh(&mut self) {
        let keep = self.selected().map(|t| t.id.clone());
        match self.engine.list_documents(Some(COLLECTION)).await {
            Ok(docs) => {
                self.user_id = self.engine.user_id();
                let me = self.user_id.as_deref();
                self.tasks = docs.iter().map(|doc| Task::from_document(doc, me)).collect();
                for task in self.tasks.iter_mut().filter(|t| self.conflicts.contains(&t.id)) {
                    task.sync = DocStatus::Conflict;
                }
                self.tasks.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
            }
            Err(e) => self.error(format!("cannot read the tasks: {e}")),
        }
        self.select(keep.as_deref());
    }

    /// Selects the task `id`, or keeps the row index in range when it is gone.
    fn select(&mut self, id: Option<&str>) {
        let found = id.and_then(|id| self.tasks.iter().position(|t| t.id == id));
        let index = match (found, self.table.selected()) {
            (Some(i), _) => Some(i),
            _ if self.tasks.is_empty() => None,
            (None, Some(i)) => Some(i.min(self.tasks.len() - 1)),
            (None, None) => Some(0),
        };
        self.table.select(index);
    }

    /// Handles one key press.
    pub(crate) async fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Browse) {
            Mode::Browse => self.browse_key(key).await,
            Mode::Input(prompt) => self.input_key(prompt, key).await,
            Mode::ConfirmDelete { id, title } => {
                if key.code == KeyCode::Char('y') {
                    self.conflicts.remove(&id);
                    match self.engine.delete_document(&id).await {
                        Ok(()) => {
                            self.announce("deleted", &title);
                            self.info(format!("deleted: {title}"));
                        }
                        Err(e) => self.error(format!("cannot delete {title}: {e}")),
                    }
                    self.refresh().await;
                } else {
                    self.info("delete cancelled".to_owned());
                }
            }
        }
    }

    async fn browse_key(&mut self, key: KeyEvent) {
        let selected = self.selected().cloned();
        match (key.code, selected) {
            (KeyCode::Char('q'), _) => self.quit = true,
            (KeyCode::Down | KeyCode::Char('j'), _) => self.table.select_next(),
            (KeyCode::Up | KeyCode::Char('k'), _) => self.table.select_previous(),
            (KeyCode::Home | KeyCode::Char('g'), _) => self.table.select_first(),
            (KeyCode::End | KeyCode::Char('G'), _) => self.table.select_last(),
            (KeyCode::Char('n'), _) => self.prompt(Purpose::NewTitle, String::new()),
            (KeyCode::Char('s'), _) => {
                self.engine.sync_now();
                self.info(format!("syncing now ({} changes pending)", self.sync.pending));
            }
            (KeyCode::Char('e'), Some(task)) => self.prompt(Purpose::EditTitle { id: task.id }, task.title),
            (KeyCode::Char('t'), Some(task)) => self.prompt(Purpose::EditTags { id: task.id }, task.tags.join(", ")),
            (KeyCode::Char('p'), Some(task)) => {
                let priority = task.priority.next();
                let what = format!("priority {}", priority.as_str());
                self.update(&task.id, json!({"priority": priority.as_str()}), what).await;
            }
            (KeyCode::Char(' ' | 'c'), Some(task)) => {
                let done = !task.done;
                let what = if done { "completed" } else { "reopened" };
                self.update(&task.id, json!({"status": task::status_value(done)}), what.to_owned()).await;
            }
            (KeyCode::Char('d'), Some(task)) => self.mode = Mode::ConfirmDelete { id: task.id, title: task.title },
            _ => {}
        }
        // `select_next`/`select_last` may step past the last row (the table clamps only when
        // drawing); keep the index on a real task so that the next key acts on what is shown.
        if let Some(i) = self.table.selected()
            && i >= self.tasks.len()
        {
            self.table.select(self.tasks.len().checked_sub(1));
        }
    }

    async fn input_key(&mut self, mut prompt: Prompt, key: KeyEvent) {
        match key.code {
            KeyCode::Esc => {
                self.info("cancelled".to_owned());
                return;
            }
            KeyCode::Enter => return self.submit(prompt).await,
            KeyCode::Backspace => {
                prompt.input.pop();
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => prompt.input.clear(),
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => prompt.input.push(c),
            _ => {}
        }
        self.mode = Mode::Input(prompt);
    }

    /// Acts on a prompt's answer; an invalid answer keeps the prompt open.
    async fn submit(&mut self, prompt: Prompt) {
        let answer = prompt.input.trim().to_owned();
        match prompt.purpose {
            Purpose::NewTitle | Purpose::EditTitle { .. } if answer.is_empty() => {
                self.error("the title cannot be empty".to_owned());
                self.mode = Mode::Input(prompt);
            }
            Purpose::NewTitle => self.prompt(Purpose::NewPriority { title: answer }, String::new()),
            Purpose::NewPriority { title } => {
                let priority = if answer.is_empty() { Some(Priority::Medium) } else { Priority::parse(&answer) };
                match priority {
                    Some(priority) => self.prompt(Purpose::NewTags { title, priority }, String::new()),
                    None => {
                        self.error(format!("{answer:?} is not a priority: type low, medium or high"));
                        self.mode =
                            Mode::Input(Prompt { purpose: Purpose::NewPriority { title }, input: String::new() });
                    }
                }
            }
            Purpose::NewTags { title, priority } => {
                let content = task::new_task(&title, priority, &task::parse_tags(&answer));
                match self.engine.create_document_in(COLLECTION, content).await {
                    Ok(doc) => {
                        self.announce("added", &title);
                        self.info(format!("created: {title}"));
                        self.refresh().await;
                        self.select(Some(&doc.id));
                    }
                    Err(e) => self.error(format!("cannot create {title}: {e}")),
                }
            }
            Purpose::EditTitle { id } => self.update(&id, json!({"title": answer}), "renamed".to_owned()).await,
            Purpose::EditTags { id } => {
                let tags = task::parse_tags(&answer);
                self.update(&id, json!({"tags": tags}), "tags changed".to_owned()).await;
            }
        }
    }

    fn prompt(&mut self, purpose: Purpose, input: String) {
        self.mode = Mode::Input(Prompt { purpose, input });
    }

    /// Merges `partial` into a task (only the named fields change, so concurrent edits of
    /// other fields by other clients survive) and reports the outcome.
    async fn update(&mut self, id: &str, partial: serde_json::Value, what: String) {
        // Editing a task after a conflict is the user's answer to it.
        self.conflicts.remove(id);
        match self.engine.update_document(id, partial).await {
            Ok(doc) => {
                let title = doc.title.unwrap_or_default();
                self.announce(&what, &title);
                self.info(format!("{what}: {title}"));
            }
            Err(e) => self.error(format!("cannot update the task: {e}")),
        }
        self.refresh().await;
    }

    /// Tells the user's other devices what was just done, on the personal topic. Live
    /// only: nothing is sent while offline (or before the user id is known), and the
    /// server's answer is not awaited, so a key press never waits for the network.
    fn announce(&self, action: &str, title: &str) {
        let Some(topic) = self.engine.personal_topic() else { return };
        let device: String = self.engine.client_id().chars().take(8).collect();
        if let Ok(publishing) = self.engine.publish(&topic, task::activity(&device, action, title)) {
            // Sent already; the answer (how many devices got it) is not needed.
            drop(publishing);
        }
    }

    fn info(&mut self, text: String) {
        self.status = StatusLine { text, error: false };
    }

    fn error(&mut self, text: String) {
        self.status = StatusLine { text, error: true };
    }
}

/// Locks the inbox; a panic in the callback cannot leave it half-written (it only pushes).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
