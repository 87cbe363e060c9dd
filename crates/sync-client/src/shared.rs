//! The state the application's handle ([`crate::engine`]) and the background connection
//! ([`crate::connection`]) share: the local database behind its lock, the events, and the
//! signals between the two sides.
//!
//! Guarantees: the in-memory sync cursor never runs ahead of the cursor stored in the
//! local database (it moves only after the transaction that stored it commits), and every
//! change a `wait_for_sync` can observe (connected, caught up, the outbox) wakes its
//! waiters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Transaction;
use serde_json::Value;
use sync_core::Policy;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::config::SyncConfig;
use crate::error::Result;
use crate::events::{EventDispatcher, EventHub, EventStream, EventType, SyncEvent};
use crate::local::{self, DocRow, Document, LocalStore};
use crate::topics::Topics;

/// State shared by the handle and the background connection.
pub(crate) struct Shared {
    /// The engine's options; fixed for its life.
    config: SyncConfig,
    /// This replica's id, read (or made) once when the engine starts.
    client_id: String,
    /// The user id the server authenticated this replica as (stored; `None` before the
    /// first connection).
    user_id: Mutex<Option<String>>,
    /// The local database. A `std` mutex: no guard is ever held across an `.await`.
    local: Mutex<LocalStore>,
    /// Where events are queued for the application.
    events: Arc<EventHub>,
    /// Topic subscriptions and publishes (shared with the subscription handles).
    topics: Arc<Topics>,
    /// Connected and authenticated.
    connected: AtomicBool,
    /// Caught up with the server on the current connection.
    caught_up: AtomicBool,
    /// The newest server sequence stored locally (a copy of the stored cursor that the
    /// application can read without the database lock).
    cursor: AtomicU64,
    /// Something to send (a local change), `sync_now`, or shutdown: the connection
    /// task looks at its outbox again.
    wake: Notify,
    /// Connection state or the outbox changed (for `wait_for_sync`).
    changed: Notify,
    /// `sync_now` was called: skip the reconnect delay once.
    sync_now: AtomicBool,
    /// Stop now.
    stop: CancellationToken,
    /// Push the outbox (connecting if needed), then stop.
    flush: CancellationToken,
}

impl Shared {
    /// Shares `local` under `config`, reading the client id and the stored cursor.
    /// Partial sync: a cursor reached with fewer collections than `config` names goes
    /// back to 0 here (see [`LocalStore::begin_sync_of`]).
    pub(crate) fn new(config: SyncConfig, mut local: LocalStore) -> Result<Shared> {
        let client_id = local.client_id()?;
        let cursor = local.begin_sync_of(config.collections.as_deref())?;
        let user_id = local.user_id()?;
        Ok(Shared {
            user_id: Mutex::new(user_id),
            events: Arc::new(EventHub::new(config.event_queue)),
            topics: Arc::new(Topics::new(config.topic_buffer)),
            config,
            client_id,
            local: Mutex::new(local),
            connected: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            cursor: AtomicU64::new(cursor),
            wake: Notify::new(),
            changed: Notify::new(),
            sync_now: AtomicBool::new(false),
            stop: CancellationToken::new(),
            flush: CancellationToken::new(),
        })
    }

    pub(crate) fn config(&self) -> &SyncConfig {
        &self.config
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The local rebase policy of a collection.
    pub(crate) fn policy(&self, collection: &str) -> Policy {
        self.config.policy_for(collection)
    }

    /// Whether documents of `collection` are stored when the server sends them (partial
    /// sync; an empty name is a message that does not say, which the server filtered).
    pub(crate) fn syncs(&self, collection: &str) -> bool {
        collection.is_empty() || self.config.syncs(collection)
    }

    /// The user id the server authenticated this replica as, once known.
    pub(crate) fn user_id(&self) -> Option<String> {
        self.user_id.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the user id of `auth_success` (and owns the rows whose owner was unknown).
    pub(crate) fn authenticated_as(&self, user_id: &str) -> Result<()> {
        if self.user_id().as_deref() == Some(user_id) {
            return Ok(());
        }
        self.transaction(|tx| local::store_user_id(tx, user_id))?;
        *self.user_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(user_id.to_owned());
        Ok(())
    }

    // The local database. Every call below takes the database lock and runs SQLite on
    // the calling thread: see `SyncEngine`'s "Blocking" section for what that costs.

    fn local(&self) -> MutexGuard<'_, LocalStore> {
        // A panic inside a local transaction leaves SQLite consistent (it rolls back).
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one local transaction.
    pub(crate) fn transaction<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.local().transaction(f)
    }

    /// Runs `f` in one local transaction that also stores the sync cursor `f` returns
    /// (if any): the cursor covers exactly what the transaction wrote. The in-memory copy
    /// moves once the transaction has committed, before the lock is let go.
    pub(crate) fn transaction_moving_cursor<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<(T, Option<u64>)>,
    ) -> Result<T> {
        let mut local = self.local();
        let (out, cursor) = local.transaction(|tx| {
            let (out, cursor) = f(tx)?;
            if let Some(sequence) = cursor {
                local::store_cursor(tx, sequence)?;
            }
            Ok((out, cursor))
        })?;
        if let Some(sequence) = cursor {
            self.cursor.store(sequence, Ordering::Release);
        }
        Ok(out)
    }

    /// A document row, `None` when the database has none with that id.
    pub(crate) fn load(&self, id: &str) -> Result<Option<DocRow>> {
        self.local().load(id, |c| self.policy(c))
    }

    /// Every live document, or those of one collection, ordered by id.
    pub(crate) fn list(&self, collection: Option<&str>) -> Result<Vec<Document>> {
        self.local().list(collection, |c| self.policy(c))
    }

    /// How many live documents there are.
    pub(crate) fn count(&self) -> Result<u64> {
        self.local().count()
    }

    /// How many local changes wait for the server.
    pub(crate) fn pending_count(&self) -> Result<u64> {
        self.local().pending_count()
    }

    /// Ids of the documents with local changes waiting for the server.
    pub(crate) fn pending_ids(&self) -> Result<Vec<String>> {
        self.local().pending_ids()
    }

    /// The newest server sequence stored locally.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// The topic registry.
    pub(crate) fn topics(&self) -> &Arc<Topics> {
        &self.topics
    }

    // Events.

    pub(crate) fn emit(&self, event: SyncEvent) {
        self.events.emit(event);
    }

    /// Emits a document event for the view of `row`.
    pub(crate) fn emit_document(&self, event_type: EventType, row: &DocRow, remote: bool) {
        let content = row.replica.view().as_ref().map(Value::to_string);
        self.emit_document_with(event_type, row, remote, content);
    }

    /// Emits a document event for `row` whose view's JSON is `content` (as `local::save`
    /// returned it, which spares serializing the view a second time).
    pub(crate) fn emit_document_with(
        &self,
        event_type: EventType,
        row: &DocRow,
        remote: bool,
        content: Option<String>,
    ) {
        let mut event = SyncEvent::new(event_type);
        event.document_id = Some(row.id.clone());
        event.title = row.title();
        event.content = content;
        event.boolean_data = remote;
        self.emit(event);
    }

    /// A dispatcher of this engine's events.
    pub(crate) fn event_dispatcher(&self) -> EventDispatcher {
        EventDispatcher::new(Arc::clone(&self.events))
    }

    /// This engine's events from now on, as an async stream.
    pub(crate) fn event_stream(&self) -> EventStream {
        EventStream::new(self.events.subscribe())
    }

    // The connection's state, set by the connection task and read by the handle.

    /// Connected and authenticated.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Connected and caught up with the server.
    pub(crate) fn is_caught_up(&self) -> bool {
        self.is_connected() && self.caught_up.load(Ordering::Acquire)
    }

    /// The connection task authenticated a new connection.
    pub(crate) fn connection_up(&self) {
        self.connected.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The connection task caught up with the server on the current connection.
    pub(crate) fn caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// The connection ended (or was never made): not connected, not caught up.
    pub(crate) fn connection_down(&self) {
        self.connected.store(false, Ordering::Release);
        self.caught_up.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    // Signals between the two sides.

    /// Wakes every `wait_for_sync`: something it looks at (the outbox) changed.
    pub(crate) fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Completes at the next [`Shared::notify_changed`] (or connection change) after it
    /// was made, even one that comes before it is first polled.
    pub(crate) fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Tells the connection task that the outbox changed (a local write).
    pub(crate) fn local_change(&self) {
        self.wake.notify_one();
        self.changed.notify_waiters();
    }

    /// Asks the connection task to push the outbox now and, when disconnected, to retry
    /// at once instead of after the reconnect delay.
    pub(crate) fn sync_now(&self) {
        self.sync_now.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether `sync_now` was called since the last time this was asked.
    pub(crate) fn take_sync_now(&self) -> bool {
        self.sync_now.swap(false, Ordering::AcqRel)
    }

    /// Completes when the connection task is woken: a local change, `sync_now` or
    /// shutdown. One wake-up is kept for a task that is not waiting yet.
    pub(crate) fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Asks the connection task to push the outbox (connecting if needed) within the
    /// grace period, then stop.
    pub(crate) fn flush_and_stop(&self) {
        self.flush.cancel();
        self.wake.notify_one();
    }

    /// Whether [`Shared::flush_and_stop`] was asked for.
    pub(crate) fn is_flushing(&self) -> bool {
        self.flush.is_cancelled()
    }

    /// Completes once [`Shared::flush_and_stop`] is asked for.
    pub(crate) fn flushing(&self) -> WaitForCancellationFuture<'_> {
        self.flush.cancelled()
    }

    /// Stops the connection task now.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether [`Shared::stop`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes once [`Shared::stop`] is called.
    pub(crate) fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }
}
