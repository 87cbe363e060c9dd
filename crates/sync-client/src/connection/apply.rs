//! A committed remote change applied to its local row, and the events that tell the
//! application about it. Applying happens inside the caller's transaction; reporting
//! after it commits, so no event describes a change that was rolled back.

use serde_json::Value;
use sync_core::patch::parse_patch;
use sync_core::replica::{Outcome, RemoteChange, Replica};
use sync_core::{ChangeKind, PatchError};

use super::Session;
use crate::error::Result;
use crate::events::{EventType, SyncEvent};
use crate::local::{self, DocRow};
use crate::shared::Shared;

/// The change an event describes; an error when its stored patch does not parse.
pub(super) fn remote_change(kind: ChangeKind, forward_patch: Option<Value>) -> Result<RemoteChange, PatchError> {
    Ok(match kind {
        ChangeKind::Create => RemoteChange::Create(forward_patch.unwrap_or(Value::Null)),
        ChangeKind::Delete => RemoteChange::Delete,
        // An application event (`POST /events`): a revision without a content change.
        ChangeKind::Custom(_) => RemoteChange::Update(Vec::new()),
        ChangeKind::Update => RemoteChange::Update(parse_patch(forward_patch.unwrap_or(Value::Array(Vec::new())))?),
    })
}

/// An application event (`POST /events`): a revision of the document with an action
/// and a payload instead of a content change, reported as such.
pub(super) struct Application {
    pub(super) action: String,
    pub(super) payload: Value,
    /// Who recorded it.
    pub(super) author: Option<String>,
    /// The revision it made.
    pub(super) revision: u64,
}

/// A remote change applied to its local row.
pub(super) struct Applied {
    row: DocRow,
    outcome: Outcome,
    kind: ChangeKind,
    /// This replica's own change coming back.
    own: bool,
    /// The view's JSON as saved, when the row was saved (for the event).
    saved_view: Option<String>,
    /// When the change is an application event: what to report instead of an update.
    application: Option<Application>,
}

impl Applied {
    /// The change was an application event (applied as the empty update it is).
    pub(super) fn with_application(mut self, application: Option<Application>) -> Self {
        self.application = application;
        self
    }

    /// The row could not be brought up to date from the change alone: its whole state
    /// must be fetched.
    pub(super) fn resync_needed(&self) -> bool {
        self.outcome.resync_needed
    }
}

/// Where a remote change comes from: the document, its collection and owner when the
/// message says (a `document_updated` push names neither), the revision it made, and the
/// `client_change_id` it was sent with.
pub(super) struct Origin<'a> {
    pub(super) id: &'a str,
    /// Empty when the message does not say.
    pub(super) collection: &'a str,
    pub(super) owner: Option<&'a str>,
    pub(super) revision: u64,
    pub(super) change_id: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// A push that names only the document, its new revision and the change's id (an
    /// update, a delete, an application event).
    pub(super) fn of_change(id: &'a str, revision: u64, change_id: Option<&'a str>) -> Self {
        Origin { id, collection: "", owner: None, revision, change_id }
    }
}

/// Applies a committed remote change to the local row, inside the transaction `rows`
/// works in. `None` when the change is of a collection this replica does not sync
/// (partial sync): nothing is stored.
pub(super) fn apply_remote(
    rows: &mut local::Rows<'_>,
    shared: &Shared,
    origin: &Origin<'_>,
    mut change: RemoteChange,
) -> Result<Option<Applied>> {
    let &Origin { id, collection, owner, revision, change_id } = origin;
    if !shared.syncs(collection) {
        return Ok(None);
    }
    let kind = match &change {
        RemoteChange::Create(_) => ChangeKind::Create,
        RemoteChange::Update(_) => ChangeKind::Update,
        RemoteChange::Delete => ChangeKind::Delete,
    };
    let stored_collection = || if collection.is_empty() { "default".into() } else { collection.to_owned() };
    if revision == 1
        && let RemoteChange::Create(content) = change
    {
        // Most creates a catch-up brings are of documents never seen here, which become
        // the server's content at revision 1: stored with one insert-if-absent instead of
        // a load and a save.
        let mut row = DocRow {
            id: id.to_owned(),
            collection: stored_collection(),
            replica: Replica::from_server(content, 1, false, shared.policy(collection)),
            conflict: false,
            owner: owner.map(str::to_owned),
        };
        if let Some(saved_view) = rows.insert_new(&row)? {
            return Ok(Some(Applied {
                row,
                outcome: Outcome::default(),
                kind,
                own: false,
                saved_view,
                application: None,
            }));
        }
        // The row exists (our own create coming back, or a duplicate): apply it there.
        change = RemoteChange::Create(row.replica.confirmed.take().map_or(Value::Null, |c| c.content));
    }
    let existing = rows.load(id, &|c| shared.policy(c))?;
    let mut row = match existing {
        Some(mut row) => {
            if let Some(owner) = owner {
                row.owner = Some(owner.to_owned());
            }
            row
        }
        None => match &change {
            RemoteChange::Create(_) => DocRow {
                id: id.to_owned(),
                collection: stored_collection(),
                replica: Replica { policy: shared.policy(collection), ..Replica::default() },
                conflict: false,
                owner: owner.map(str::to_owned),
            },
            // An update or delete of a document never seen here (one just shared with this
            // user, whose state has not arrived yet): fetch it whole. Nothing is stored,
            // and nothing reported (the outcome counts as a duplicate) until it arrives.
            _ => {
                let row = DocRow {
                    id: id.to_owned(),
                    collection: stored_collection(),
                    replica: Replica::default(),
                    conflict: false,
                    owner: owner.map(str::to_owned),
                };
                let outcome = Outcome { resync_needed: true, duplicate: true, ..Outcome::default() };
                return Ok(Some(Applied { row, outcome, kind, own: false, saved_view: None, application: None }));
            }
        },
    };
    let own = change_id.is_some_and(|c| row.replica.in_flight().is_some_and(|p| p.change_id == c));
    let outcome = row.replica.on_remote(revision, change, change_id);
    if !outcome.conflicts.is_empty() {
        row.conflict = true;
    } else if !own && !outcome.duplicate && row.replica.pending.is_empty() {
        row.conflict = false;
    }
    let saved_view = if !outcome.duplicate && !outcome.resync_needed { rows.save(&row)? } else { None };
    Ok(Some(Applied { row, outcome, kind, own, saved_view, application: None }))
}

impl Session {
    /// Emits the events of a change `apply_remote` applied.
    pub(super) fn report_applied(&self, applied: Applied) {
        let Applied { row, outcome, kind, own, saved_view, application } = applied;
        match application {
            Some(application) => {
                // Reported once: not again when it comes back after being stored (a
                // document not held yet is fetched whole, and the event is still news).
                if !outcome.duplicate || outcome.resync_needed {
                    let mut event = SyncEvent::new(EventType::ApplicationEvent);
                    event.document_id = Some(row.id.clone());
                    event.title = row.title();
                    event.content = Some(application.payload.to_string());
                    event.action = Some(application.action);
                    event.author = application.author;
                    event.numeric_data = application.revision;
                    event.boolean_data = true;
                    self.shared.emit(event);
                }
                self.report_outcome(&row, &outcome);
            }
            None => self.report_with(&row, &outcome, kind, own, saved_view),
        }
    }

    /// Emits the events of an applied change.
    pub(super) fn report(&self, row: &DocRow, outcome: &Outcome, kind: ChangeKind, own: bool) {
        self.report_with(row, outcome, kind, own, None);
    }

    /// Emits the events of an applied change; `saved_view` is the view's JSON when the
    /// row was just saved (else it is built from the row).
    fn report_with(&self, row: &DocRow, outcome: &Outcome, kind: ChangeKind, own: bool, saved_view: Option<String>) {
        if !outcome.duplicate && !own {
            let event_type = match kind {
                ChangeKind::Create => EventType::DocumentCreated,
                ChangeKind::Delete => EventType::DocumentDeleted,
                _ => EventType::DocumentUpdated,
            };
            if event_type == EventType::DocumentDeleted {
                let mut event = SyncEvent::new(event_type);
                event.document_id = Some(row.id.clone());
                event.boolean_data = true;
                self.shared.emit(event);
            } else {
                let content = saved_view.or_else(|| row.replica.view().as_ref().map(Value::to_string));
                self.shared.emit_document_with(event_type, row, true, content);
            }
        }
        self.report_outcome(row, outcome);
    }

    /// Emits the events of what a remote change did to the row's pending changes: the
    /// conflicts met rebasing them, and those refused (after which the view rolled back).
    pub(super) fn report_outcome(&self, row: &DocRow, outcome: &Outcome) {
        if !outcome.conflicts.is_empty() {
            let mut event = SyncEvent::new(EventType::ConflictDetected);
            event.document_id = Some(row.id.clone());
            event.title = row.replica.view().as_ref().and_then(sync_core::model::title_of);
            event.content = serde_json::to_string(&outcome.conflicts).ok();
            event.numeric_data = outcome.conflicts.len() as u64;
            event.boolean_data =
                outcome.conflicts.iter().all(|c| c.resolution == sync_core::transform::ConflictResolution::Applied);
            self.shared.emit(event);
        }
        for rejected in &outcome.rejected {
            let mut event = SyncEvent::new(EventType::SyncError);
            event.document_id = Some(row.id.clone());
            event.error = Some(format!("change refused ({}): {}", rejected.code, rejected.message));
            self.shared.emit(event);
        }
        if !outcome.rejected.is_empty() {
            // The view rolled back: tell the application what it shows now.
            self.shared.emit_document(EventType::DocumentUpdated, row, false);
        }
    }
}
