//! Catching up after connecting: pages through `get_changes_since` from the stored
//! cursor and applies each page in one local transaction that also moves the cursor.
//! Live pushes that arrive meanwhile are held and applied after the last page (those the
//! pages covered are skipped), so every change is applied once, in sequence order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sync_core::protocol::{
    Changes, ClientEnvelope, ClientMessage, GetChangesSince, RequestId, ServerEnvelope, ServerMessage,
};
use sync_core::{ChangeEvent, ChangeKind};

use super::Session;
use super::apply::{Origin, apply_remote, remote_change};
use super::wire::{decode_text, frame_text, next_text_frame, send};
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
    /// Reads a frame that is the `changes` answer to `request_id` in one pass, straight
    /// into the events (the general decoder builds a JSON tree of the whole frame first,
    /// then the messages from it: three copies of every page). `None` for anything else
    /// (another message, a batch, an unexpected shape), which the general decoder then
    /// handles, errors included.
    fn decode(text: &str, request_id: &RequestId) -> Option<Page> {
        let frame: PageFrame = serde_json::from_str(text).ok()?;
        if frame.kind != "changes" || frame.request_id.as_ref() != Some(request_id) {
            return None;
        }
        Some(Page { events: frame.events?, latest_sequence: frame.latest_sequence?, has_more: frame.has_more? })
    }
}

impl Session {
    /// Pages through `get_changes_since` from the cursor; live pushes that arrive meanwhile
    /// are held and applied after, those already covered skipped. Returns how many
    /// documents changed.
    ///
    /// The next page is asked for as soon as a page has arrived, before it is stored, so
    /// the server reads and encodes one page while this replica stores the previous one.
    /// At most one request is ahead, so at most two pages are in memory; the cursor still
    /// moves only with the page it covers.
    pub(super) async fn catch_up(&mut self) -> Result<u64> {
        let mut held: Vec<ServerEnvelope> = Vec::new();
        let mut documents: HashSet<String> = HashSet::new();
        let mut request_id = self.request_page(self.shared.cursor()).await?;
        loop {
            let page = self.receive_page(&request_id, &mut held).await?;
            let next = if page.has_more {
                let after = page.latest_sequence.max(self.shared.cursor());
                Some(self.request_page(after).await?)
            } else {
                None
            };
            for event in &page.events {
                documents.insert(event.document_id.clone());
            }
            self.apply_events(page.events, page.latest_sequence)?;
            match next {
                Some(id) => request_id = id,
                None => break,
            }
        }
        for envelope in held {
            self.on_message(envelope)?;
        }
        Ok(documents.len() as u64)
    }

    /// Sends `get_changes_since` for the changes after `after`; returns its request id.
    async fn request_page(&mut self, after: u64) -> Result<RequestId> {
        let request_id = RequestId::Str(self.request_id("catch-up"));
        let message = ClientMessage::GetChangesSince(GetChangesSince {
            last_sequence: after,
            limit: Some(self.shared.config().catch_up_page),
            // The server limits the session's pushes by what `authenticate` named, but a
            // query by what the query names.
            collections: self.shared.config().collections.clone(),
        });
        send(&mut self.socket, &[ClientEnvelope::with_id(message, request_id.clone())]).await?;
        Ok(request_id)
    }

    /// Waits for the `changes` answering `request_id`; other messages are held.
    async fn receive_page(&mut self, request_id: &RequestId, held: &mut Vec<ServerEnvelope>) -> Result<Page> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), next_text_frame(&mut self.socket))
                .await
                .map_err(|_| SyncError::Connection("no answer to get_changes_since".into()))??;
            let text = frame_text(&frame)?;
            if let Some(page) = Page::decode(text, request_id) {
                return Ok(page);
            }
            let mut page = None;
            for envelope in decode_text(text)? {
                match envelope.message {
                    ServerMessage::Changes(changes) if envelope.request_id.as_ref() == Some(request_id) => {
                        page = Some(Page::from(changes));
                    }
                    ServerMessage::Error(e) if envelope.request_id.as_ref() == Some(request_id) => {
                        return Err(SyncError::Server { code: e.code, message: e.message });
                    }
                    // Topic messages do not depend on documents: handled at once.
                    _ => held.extend(self.on_topic_message(envelope)),
                }
            }
            if let Some(page) = page {
                return Ok(page);
            }
        }
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
