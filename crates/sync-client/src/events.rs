//! Events: what changed locally or remotely, and what the connection did.
//!
//! The engine queues events from its own threads; [`EventDispatcher::process_events`]
//! runs the registered callbacks on the caller's thread (a UI thread, a timer), and
//! [`EventStream`] gives the same events as an async stream for Rust applications.
//! The queue is bounded: when the application never processes events, the oldest are
//! dropped and a `SyncError` event says how many.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::error::Result;

/// Kinds of events, numbered as in the C API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EventType {
    /// A document was created (here or elsewhere).
    DocumentCreated = 0,
    /// A document was changed (here or elsewhere).
    DocumentUpdated = 1,
    /// A document was deleted (here or elsewhere).
    DocumentDeleted = 2,
    /// Catching up with the server started.
    SyncStarted = 3,
    /// Caught up; `numeric_data` is the number of documents synced.
    SyncCompleted = 4,
    /// Something failed: a refused change, an authentication failure, lost events.
    SyncError = 5,
    /// A concurrent edit was resolved; `content` holds the conflicting paths as JSON.
    ConflictDetected = 6,
    /// The connection to the server was lost.
    ConnectionLost = 7,
    /// A connection attempt started; `numeric_data` is the attempt number.
    ConnectionAttempted = 8,
    /// Connected and authenticated.
    ConnectionSucceeded = 9,
    /// The server's access rules now let this user read another user's document: its
    /// current state was stored (`content`, `title`); the document's later changes come
    /// as document events. [`Document::owner`](crate::Document::owner) names its owner.
    DocumentShared = 10,
    /// The server's access rules no longer let this user read the document: its local
    /// copy was removed, and with it `numeric_data` local changes not yet sent (`title`
    /// is the last one shown).
    AccessRevoked = 11,
    /// An application event was recorded on a document (`POST /events` with an action
    /// other than create, update or delete): `action` names it, `content` is its payload
    /// as JSON, `author` the user who recorded it, `numeric_data` the revision it made.
    /// The document's content did not change.
    ApplicationEvent = 12,
}

impl EventType {
    /// All event types, in numbering order.
    pub const ALL: [EventType; 13] = [
        EventType::DocumentCreated,
        EventType::DocumentUpdated,
        EventType::DocumentDeleted,
        EventType::SyncStarted,
        EventType::SyncCompleted,
        EventType::SyncError,
        EventType::ConflictDetected,
        EventType::ConnectionLost,
        EventType::ConnectionAttempted,
        EventType::ConnectionSucceeded,
        EventType::DocumentShared,
        EventType::AccessRevoked,
        EventType::ApplicationEvent,
    ];

    /// The type with this number.
    pub fn from_i32(n: i32) -> Option<EventType> {
        usize::try_from(n).ok().and_then(|i| Self::ALL.get(i).copied())
    }

    /// A readable name (`document_created`, …).
    pub fn name(self) -> &'static str {
        match self {
            EventType::DocumentCreated => "document_created",
            EventType::DocumentUpdated => "document_updated",
            EventType::DocumentDeleted => "document_deleted",
            EventType::SyncStarted => "sync_started",
            EventType::SyncCompleted => "sync_completed",
            EventType::SyncError => "sync_error",
            EventType::ConflictDetected => "conflict_detected",
            EventType::ConnectionLost => "connection_lost",
            EventType::ConnectionAttempted => "connection_attempted",
            EventType::ConnectionSucceeded => "connection_succeeded",
            EventType::DocumentShared => "document_shared",
            EventType::AccessRevoked => "access_revoked",
            EventType::ApplicationEvent => "application_event",
        }
    }
}

/// One event, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncEvent {
    /// What happened.
    pub event_type: EventType,
    /// The document concerned.
    pub document_id: Option<String>,
    /// Its title.
    pub title: Option<String>,
    /// Its content as JSON (for conflicts: the conflicts).
    pub content: Option<String>,
    /// The error message, for `SyncError` (and refused changes).
    pub error: Option<String>,
    /// A count: documents synced, the connection attempt number, local changes dropped
    /// with a revoked document.
    pub numeric_data: u64,
    /// For document events: whether the change came from another replica. For
    /// `ConflictDetected`: whether the local edit was kept.
    pub boolean_data: bool,
    /// For `ApplicationEvent`: the action (`"rated"`, …).
    pub action: Option<String>,
    /// For `ApplicationEvent`: the user who recorded it.
    pub author: Option<String>,
}

impl SyncEvent {
    /// An event with only its type set.
    pub fn new(event_type: EventType) -> Self {
        Self {
            event_type,
            document_id: None,
            title: None,
            content: None,
            error: None,
            numeric_data: 0,
            boolean_data: false,
            action: None,
            author: None,
        }
    }
}

/// The callback signature: event type, document id, title, content, error, numeric
/// data, boolean data, and the context pointer given at registration.
pub type Callback =
    dyn Fn(EventType, Option<&str>, Option<&str>, Option<&str>, Option<&str>, u64, bool, *mut c_void) + Send + Sync;

/// A callback given the whole event (what [`EventDispatcher::register_event_callback`]
/// takes; [`Callback`]s are wrapped into one).
type EventCallback = dyn Fn(&SyncEvent, *mut c_void) + Send + Sync;

struct Registration {
    callback: Arc<EventCallback>,
    /// The context pointer, kept as an address so the registry can cross threads; it is
    /// only ever handed back to the callback, never dereferenced here.
    context: usize,
    filter: Option<EventType>,
}

/// Shared between the engine (which queues) and dispatchers (which process).
pub(crate) struct EventHub {
    queue: Mutex<VecDeque<SyncEvent>>,
    dropped: Mutex<u64>,
    capacity: usize,
    callbacks: Mutex<Vec<Arc<Registration>>>,
    stream: broadcast::Sender<SyncEvent>,
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        let (stream, _) = broadcast::channel(4096);
        Self {
            queue: Mutex::new(VecDeque::new()),
            dropped: Mutex::new(0),
            capacity: capacity.max(16),
            callbacks: Mutex::new(Vec::new()),
            stream,
        }
    }

    /// Queues an event for `process_events` and the async streams.
    pub(crate) fn emit(&self, event: SyncEvent) {
        // Without a subscribed stream the copy would only be thrown away (the queue below
        // is what `process_events` reads). A stream subscribing meanwhile starts after it.
        if self.stream.receiver_count() > 0 {
            let _ = self.stream.send(event.clone());
        }
        let mut queue = lock(&self.queue);
        if queue.len() >= self.capacity {
            queue.pop_front();
            *lock(&self.dropped) += 1;
        }
        queue.push_back(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.stream.subscribe()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers callbacks and runs them on the calling thread.
#[derive(Clone)]
pub struct EventDispatcher {
    hub: Arc<EventHub>,
}

impl EventDispatcher {
    pub(crate) fn new(hub: Arc<EventHub>) -> Self {
        Self { hub }
    }

    /// Registers a callback for every event (`filter: None`) or one type. `context` is
    /// handed back to the callback untouched. The callback is given the fields every
    /// event has; [`EventDispatcher::register_event_callback`] gives the whole event.
    pub fn register_callback<F>(&self, callback: F, context: *mut c_void, filter: Option<EventType>) -> Result<()>
    where
        F: Fn(EventType, Option<&str>, Option<&str>, Option<&str>, Option<&str>, u64, bool, *mut c_void)
            + Send
            + Sync
            + 'static,
    {
        self.register_event_callback(
            move |event: &SyncEvent, context| {
                callback(
                    event.event_type,
                    event.document_id.as_deref(),
                    event.title.as_deref(),
                    event.content.as_deref(),
                    event.error.as_deref(),
                    event.numeric_data,
                    event.boolean_data,
                    context,
                );
            },
            context,
            filter,
        )
    }

    /// Registers a callback given each whole event (an application event's `action`
    /// and `author` included), for every event (`filter: None`) or one type. `context`
    /// is handed back to the callback untouched.
    pub fn register_event_callback<F>(&self, callback: F, context: *mut c_void, filter: Option<EventType>) -> Result<()>
    where
        F: Fn(&SyncEvent, *mut c_void) + Send + Sync + 'static,
    {
        let registration = Registration { callback: Arc::new(callback), context: context as usize, filter };
        lock(&self.hub.callbacks).push(Arc::new(registration));
        Ok(())
    }

    /// Removes every callback.
    pub fn clear_callbacks(&self) {
        lock(&self.hub.callbacks).clear();
    }

    /// Runs the callbacks for every queued event, on this thread; returns how many
    /// callbacks ran.
    pub fn process_events(&self) -> Result<usize> {
        let dropped = std::mem::take(&mut *lock(&self.hub.dropped));
        let mut events: VecDeque<SyncEvent> = std::mem::take(&mut *lock(&self.hub.queue));
        if dropped > 0 {
            let mut warning = SyncEvent::new(EventType::SyncError);
            warning.error = Some(format!("{dropped} events were dropped because process_events was not called"));
            warning.numeric_data = dropped;
            events.push_front(warning);
        }
        // Callbacks may register more callbacks: never call them under the lock.
        let callbacks: Vec<Arc<Registration>> = lock(&self.hub.callbacks).clone();
        let mut ran = 0;
        for event in &events {
            for registration in callbacks.iter().filter(|r| r.filter.is_none_or(|f| f == event.event_type)) {
                (registration.callback)(event, registration.context as *mut c_void);
                ran += 1;
            }
        }
        Ok(ran)
    }

    /// Events waiting to be processed.
    pub fn pending_events(&self) -> usize {
        lock(&self.hub.queue).len()
    }
}

/// Events as an async stream (independent of `process_events`).
pub struct EventStream {
    receiver: broadcast::Receiver<SyncEvent>,
}

impl EventStream {
    pub(crate) fn new(receiver: broadcast::Receiver<SyncEvent>) -> Self {
        Self { receiver }
    }

    /// The next event; `None` once the engine is gone. A consumer too slow to keep up
    /// skips the events it missed.
    pub async fn next(&mut self) -> Option<SyncEvent> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// This stream as a `futures::Stream`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = SyncEvent> {
        use futures_util::StreamExt;
        tokio_stream::wrappers::BroadcastStream::new(self.receiver).filter_map(|r| std::future::ready(r.ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn callbacks_run_on_process_with_filter_and_context() {
        let hub = Arc::new(EventHub::new(100));
        let dispatcher = EventDispatcher::new(Arc::clone(&hub));
        let all = Arc::new(AtomicUsize::new(0));
        let created = Arc::new(AtomicUsize::new(0));
        let a = Arc::clone(&all);
        dispatcher
            .register_callback(
                move |_, _, _, _, _, _, _, _| {
                    a.fetch_add(1, Ordering::SeqCst);
                },
                std::ptr::null_mut(),
                None,
            )
            .unwrap();
        let c = Arc::clone(&created);
        let mut marker = 7u8;
        let context = (&raw mut marker).cast::<c_void>();
        let expected = context as usize;
        dispatcher
            .register_callback(
                move |t, id, _, _, _, _, _, ctx| {
                    assert_eq!(t, EventType::DocumentCreated);
                    assert_eq!(id, Some("d1"));
                    assert_eq!(ctx as usize, expected);
                    c.fetch_add(1, Ordering::SeqCst);
                },
                context,
                Some(EventType::DocumentCreated),
            )
            .unwrap();
        let mut event = SyncEvent::new(EventType::DocumentCreated);
        event.document_id = Some("d1".into());
        hub.emit(event);
        hub.emit(SyncEvent::new(EventType::SyncStarted));
        assert_eq!(all.load(Ordering::SeqCst), 0, "nothing runs before process_events");
        assert_eq!(dispatcher.process_events().unwrap(), 3);
        assert_eq!((all.load(Ordering::SeqCst), created.load(Ordering::SeqCst)), (2, 1));
        assert_eq!(dispatcher.process_events().unwrap(), 0);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_says_so() {
        let hub = Arc::new(EventHub::new(16));
        let dispatcher = EventDispatcher::new(Arc::clone(&hub));
        for _ in 0..20 {
            hub.emit(SyncEvent::new(EventType::DocumentUpdated));
        }
        let errors = Arc::new(Mutex::new(Vec::new()));
        let e = Arc::clone(&errors);
        dispatcher
            .register_callback(
                move |_, _, _, _, error, n, _, _| e.lock().unwrap().push((error.map(str::to_owned), n)),
                std::ptr::null_mut(),
                Some(EventType::SyncError),
            )
            .unwrap();
        dispatcher.process_events().unwrap();
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].1, 4);
    }

    #[test]
    fn numbering_matches_the_c_api() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(*t as i32, i as i32);
            assert_eq!(EventType::from_i32(i as i32), Some(*t));
        }
        assert_eq!(EventType::from_i32(12), Some(EventType::ApplicationEvent));
        assert_eq!(EventType::from_i32(13), None);
        assert_eq!(EventType::from_i32(-1), None);
    }
}
