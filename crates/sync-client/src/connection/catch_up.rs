//! Catching up after connecting: the session resumed from the stored cursor
//! (`authenticate{last_sequence}`), and the server sends what the access rules changed
//! since then and every readable change after it, as `changes` pages; each page is
//! applied in local transactions that also move the cursor. The server holds live
//! pushes back until the last page, so every change is applied once, in sequence order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sync_core::protocol::{Changes, RequestId, ServerMessage};
use sync_core::{ChangeEvent, ChangeKind};

use super::Session;
use super::apply::{Application, Origin, apply_remote, remote_change};
use super::wire::{decode_text, frame_text, next_text_frame};
use crate::error::{Result, SyncError};
use crate::local;

/// A page of the change log, with the parts of each event that catch-up uses.
struct Page {
    events: Vec<PageEvent>,
    latest_sequence: u64,
    has_more: bool,
}

/// The parts of a change event (PROTOCOL.md §5) that a replica applies. The others
/// (`reverse_patch`, which for a delete is the whole old content, `created_at`, …) are
/// skipped while parsing instead of being built and dropped.
#[derive(Deserialize)]
struct PageEvent {
    sequence: u64,
    document_id: String,
    #[serde(default)]
    collection: String,
    /// The change's author: the owner for a create (a user creates only their own
    /// documents), anyone allowed for the other kinds.
    #[serde(default)]
    user_id: Option<String>,
    event_type: ChangeKind,
    #[serde(default)]
    forward_patch: Option<Value>,
    sync_revision: u64,
    #[serde(default)]
    client_change_id: Option<String>,
}

impl From<ChangeEvent> for PageEvent {
    fn from(e: ChangeEvent) -> Self {
        Self {
            sequence: e.sequence,
            document_id: e.document_id,
            collection: e.collection,
            user_id: Some(e.user_id),
            event_type: e.event_type,
            forward_patch: e.forward_patch,
            sync_revision: e.sync_revision,
            client_change_id: e.client_change_id,
        }
    }
}

impl From<Changes> for Page {
    fn from(c: Changes) -> Self {
        Self {
            events: c.events.into_iter().map(PageEvent::from).collect(),
            latest_sequence: c.latest_sequence,
            has_more: c.has_more,
        }
    }
}

/// A frame holding exactly one message, read as a `changes` page. Every field is
/// optional so that any single message parses; `Page::decode` checks the shape.
#[derive(Deserialize)]
struct PageFrame {
    #[serde(rename = "type")]
    kind: String,
    request_id: Option<RequestId>,
    events: Option<Vec<PageEvent>>,
    latest_sequence: Option<u64>,
    has_more: Option<bool>,
}

impl Page {
    /// Reads a frame that is an unrequested `changes` page (the server's catch-up of a
    /// resuming session) in one pass, straight into the events (the general decoder
    /// builds a JSON tree of the whole frame first, then the messages from it: three
    /// copies of every page). `None` for anything else (another message, a batch, an
    /// unexpected shape), which the general decoder then handles, errors included.
    fn decode(text: &str) -> Option<Page> {
        let frame: PageFrame = serde_json::from_str(text).ok()?;
        if frame.kind != "changes" || frame.request_id.is_some() {
            return None;
        }
        Some(Page { events: frame.events?, latest_sequence: frame.latest_sequence?, has_more: frame.has_more? })
    }
}

impl Session {
    /// Takes the server's catch-up of this session, which resumed from the cursor: what
    /// the access rules changed since the cursor (`document_shared`, `access_revoked`),
    /// then `changes` pages until one without `has_more`. Everything is applied in the
    /// order it comes; the server holds live pushes back until the last page and drops
    /// those the pages covered. Returns how many documents changed.
    ///
    /// The server sends the pages one after another without waiting for this replica,
    /// so it reads and encodes the next page while this replica stores the previous one
    /// (the socket's buffers bound how far ahead it gets). Each page is stored in local
    /// transactions of at most `catch_up_page` changes, each moving the cursor.
    pub(super) async fn catch_up(&mut self) -> Result<u64> {
        let mut documents: HashSet<String> = HashSet::new();
        let mut done = false;
        while !done {
            let frame = tokio::time::timeout(Duration::from_secs(60), next_text_frame(&mut self.socket))
                .await
                .map_err(|_| SyncError::Connection("the catch-up stopped arriving".into()))??;
            let text = frame_text(&frame)?;
            if let Some(page) = Page::decode(text) {
                done = self.take_page(page, &mut documents)?;
                continue;
            }
            for envelope in decode_text(text)? {
                match envelope.message {
                    ServerMessage::Changes(changes) if envelope.request_id.is_none() && !done => {
                        done = self.take_page(Page::from(changes), &mut documents)?;
                    }
                    _ => self.on_message(envelope)?,
                }
            }
        }
        Ok(documents.len() as u64)
    }

    /// Stores one catch-up page; says whether it was the last.
    fn take_page(&mut self, page: Page, documents: &mut HashSet<String>) -> Result<bool> {
        let Page { mut events, latest_sequence, has_more } = page;
        for event in &events {
            documents.insert(event.document_id.clone());
        }
        let chunk = usize::try_from(self.shared.config().catch_up_page.max(1)).unwrap_or(usize::MAX);
        while events.len() > chunk {
            let rest = events.split_off(chunk);
            // Every change up to the chunk's last is in it.
            let reached = events.last().map_or(0, |e| e.sequence);
            self.apply_events(std::mem::replace(&mut events, rest), reached)?;
        }
        self.apply_events(events, latest_sequence)?;
        Ok(!has_more)
    }

    /// Applies a page of change events and moves the cursor, in one local transaction.
    fn apply_events(&mut self, events: Vec<PageEvent>, reached: u64) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut emitted = Vec::with_capacity(events.len());
        let mut refetch = Vec::new();
        let cursor = shared.cursor();
        shared.transaction_moving_cursor(|tx| {
            let mut rows = local::Rows::new(tx)?;
            // Partial sync: the server sends only the collections asked for; a page of
            // others (from a server that ignores the field) is skipped all the same.
            for event in events.into_iter().filter(|e| e.sequence > cursor && shared.syncs(&e.collection)) {
                let PageEvent {
                    document_id,
                    collection,
                    user_id,
                    event_type,
                    forward_patch,
                    sync_revision,
                    client_change_id,
                    ..
                } = event;
                let owner = if event_type == ChangeKind::Create { user_id.as_deref() } else { None };
                let application = match &event_type {
                    ChangeKind::Custom(action) => Some(Application {
                        action: action.clone(),
                        payload: forward_patch.clone().unwrap_or(Value::Null),
                        author: user_id.clone(),
                        revision: sync_revision,
                    }),
                    _ => None,
                };
                let change = match remote_change(event_type, forward_patch) {
                    Ok(change) => change,
                    Err(e) => {
                        tracing::warn!(error = %e, document = %document_id, "unreadable stored patch; refetching");
                        refetch.push(document_id);
                        continue;
                    }
                };
                let origin = Origin {
                    id: &document_id,
                    collection: &collection,
                    owner,
                    revision: sync_revision,
                    change_id: client_change_id.as_deref(),
                };
                if let Some(applied) = apply_remote(&mut rows, &shared, &origin, change)? {
                    let applied = applied.with_application(application);
                    if applied.resync_needed() {
                        refetch.push(document_id);
                    }
                    emitted.push(applied);
                }
            }
            Ok(((), Some(reached.max(cursor))))
        })?;
        for applied in emitted {
            self.report_applied(applied);
        }
        for id in refetch {
            self.refetch(&id);
        }
        Ok(())
    }
}
