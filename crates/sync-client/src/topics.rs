//! Topics (PROTOCOL.md §4.1): live messages that are not documents. The application
//! subscribes to names or patterns and gets a [`Subscription`], a bounded queue of
//! [`TopicEvent`]s it drains on its own thread (`try_recv`) or awaits (`recv`, or as a
//! stream); it publishes with [`SyncEngine::publish`](crate::SyncEngine::publish).
//!
//! This file is the registry the application's handle and the connection task share:
//! which subscriptions exist (the connection task makes the server's set match it after
//! every change and every reconnect), the last offset seen per topic with history, the
//! publishes waiting to be sent, and one queue per subscription handle.
//!
//! Guarantees:
//! - a message reaches every local subscription whose pattern matches its topic, once
//!   each, in the order the server sent it (the server sends it once per session);
//! - every buffer is bounded: a subscription keeps at most `SyncConfig::topic_buffer`
//!   events; when the application does not drain it, the oldest are dropped and the next
//!   event it receives is a [`Gap::Dropped`] saying how many; at most
//!   [`MAX_PUBLISHES_IN_FLIGHT`] publishes wait for the server; nothing ever blocks the
//!   connection task;
//! - publishing is live, not queued: while disconnected it fails with
//!   [`SyncError::NotConnected`], and a publish still unanswered when the connection drops
//!   fails with a connection error (the server may or may not have delivered it);
//! - subscriptions survive reconnects: after every (re)connect each one is renewed, with
//!   `since_offset` and `epoch` for topics with history, and a renewal that did not
//!   recover what was published meanwhile is reported as [`Gap::NotRecovered`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use sync_core::ErrorCode;
use sync_core::protocol::{Published, Subscribed, TopicData};
use sync_core::topic::{BROADCAST, Pattern, personal_topic};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::{Result, SyncError};

/// Most publishes queued or awaiting the server's answer at once; one more is refused
/// until an answer comes.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 1024;

/// How long `subscribe` (while connected) and a publish wait for the server's answer.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A message published on a topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicMessage {
    /// The topic it was published on (a name, never a pattern).
    pub topic: String,
    /// What was published.
    pub data: Value,
    /// The publishing user; `None` when the server published it (REST, broadcasts).
    pub from: Option<String>,
    /// When the server received it.
    pub timestamp: sync_core::Timestamp,
    /// Its offset, on a topic whose history the server keeps (1, 2, … within `epoch`).
    pub offset: Option<u64>,
    /// The history's epoch the offset belongs to.
    pub epoch: Option<String>,
}

impl From<TopicData> for TopicMessage {
    fn from(d: TopicData) -> Self {
        Self {
            topic: d.topic,
            data: d.data,
            from: d.from.or(d.user_id),
            timestamp: d.timestamp,
            offset: d.offset,
            epoch: d.epoch,
        }
    }
}

/// Where messages may be missing from a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The connection was lost and the subscription was renewed without recovering what
    /// was published meanwhile: the topic keeps no history on the server (or it is a
    /// pattern), the messages are no longer held, or the server restarted. The
    /// application reloads what it needs another way.
    NotRecovered,
    /// The application did not drain the subscription: this many of its oldest events
    /// were dropped to keep it within `SyncConfig::topic_buffer`.
    Dropped(u64),
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum TopicEvent {
    /// A message on a topic the subscription matches.
    Message(TopicMessage),
    /// Messages may be missing here.
    Gap(Gap),
    /// The server ended the subscription (the access rules changed and no longer allow
    /// it), or refused to renew it after a reconnect; nothing more comes, and `recv` then
    /// answers `None`.
    Refused {
        /// The protocol error code (`forbidden`, …).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

/// Which messages a registry entry takes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    /// The personal topic of whoever this engine is authenticated as (`user.<id>`),
    /// whether or not the user id is known yet; never sent to the server, which delivers
    /// it without subscribing.
    Personal,
    /// A name or pattern, as subscribed.
    Topic(String),
}

/// One subscription text (or the personal topic) and its local subscribers.
struct Entry {
    /// The parsed pattern (`None` for the personal topic).
    pattern: Option<Pattern>,
    /// Whether the server holds it (`broadcast` and the personal topic come without).
    server: bool,
    /// Made anew for each entry, so a subscription dropped and made again between two
    /// looks of the connection task is still renewed (and its waiters answered).
    id: u64,
    subscribers: Vec<Arc<Queue>>,
    /// `subscribe` calls waiting for the server's answer.
    waiters: Vec<oneshot::Sender<Result<(), Refusal>>>,
    /// Confirmed by the server on the current connection.
    confirmed: bool,
    /// Confirmed on some connection before: a later confirmation is a renewal.
    was_live: bool,
    /// The last offset seen (topics with history, exact names only), and its epoch.
    offset: Option<u64>,
    epoch: Option<String>,
}

/// The server's refusal of a subscription.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl From<Refusal> for SyncError {
    fn from(r: Refusal) -> Self {
        SyncError::Server { code: r.code, message: r.message }
    }
}

/// A publish on its way to the server.
pub(crate) struct PublishRequest {
    pub(crate) topic: String,
    pub(crate) data: Value,
    pub(crate) echo: bool,
    pub(crate) reply: oneshot::Sender<Result<Published>>,
    /// Released when the answer comes or the request is dropped.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// What the connection task is to send for the subscriptions: the renewals and new
/// subscriptions, and the texts to unsubscribe.
pub(crate) struct Changes {
    pub(crate) subscribe: Vec<Renewal>,
    pub(crate) unsubscribe: Vec<String>,
}

/// A subscription to send: `(text, entry id, since_offset and epoch when recoverable)`.
pub(crate) type Renewal = (String, u64, Option<(u64, String)>);

/// The answer a `subscribe` made while connected waits for.
pub(crate) type Answer = oneshot::Receiver<Result<(), Refusal>>;

struct State {
    entries: BTreeMap<Key, Entry>,
    next_id: u64,
    /// A session is up (set and cleared by the connection task).
    online: bool,
    /// Whether some session was up before: the next one is a reconnect.
    was_online: bool,
    /// The authenticated user, for the personal topic.
    user_id: Option<String>,
    /// Publishes the connection task has not taken yet.
    publishes: VecDeque<PublishRequest>,
    /// The engine is gone: no more subscriptions.
    closed: bool,
}

/// The registry shared by the engine's handle, the subscription handles and the
/// connection task.
pub(crate) struct Topics {
    state: Mutex<State>,
    /// Wakes the connection task: the subscriptions changed or a publish is queued.
    wake: Notify,
    /// Events each subscription keeps before dropping the oldest.
    capacity: usize,
    /// Bounds the publishes queued or in flight.
    publishing: Arc<Semaphore>,
}

impl Topics {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                next_id: 0,
                online: false,
                was_online: false,
                user_id: None,
                publishes: VecDeque::new(),
                closed: false,
            }),
            wake: Notify::new(),
            capacity: capacity.max(1),
            publishing: Arc::new(Semaphore::new(MAX_PUBLISHES_IN_FLIGHT)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change below is a few field updates that cannot be left half-done by a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // The application's side.

    /// Adds a subscriber of `key`. Returns its handle, and when the server is to confirm
    /// it on the current connection, the receiver of that answer.
    pub(crate) fn subscribe(self: &Arc<Self>, key: Key) -> Result<(Subscription, Option<Answer>)> {
        let pattern = match &key {
            Key::Personal => None,
            Key::Topic(text) => Some(Pattern::parse(text).map_err(|e| SyncError::InvalidInput(e.to_string()))?),
        };
        let mut state = self.lock();
        if state.closed {
            return Err(SyncError::Shutdown);
        }
        state.next_id += 1;
        let id = state.next_id;
        let online = state.online;
        let entry = state.entries.entry(key.clone()).or_insert_with(|| Entry {
            server: pattern.as_ref().is_some_and(|p| p.as_str() != BROADCAST),
            pattern,
            id,
            subscribers: Vec::new(),
            waiters: Vec::new(),
            confirmed: false,
            was_live: false,
            offset: None,
            epoch: None,
        });
        let queue = Arc::new(Queue::new(id, self.capacity));
        entry.subscribers.push(Arc::clone(&queue));
        let answer = if entry.server && online && !entry.confirmed {
            let (tx, rx) = oneshot::channel();
            entry.waiters.push(tx);
            Some(rx)
        } else {
            None
        };
        let server = entry.server;
        drop(state);
        if server {
            self.wake.notify_one();
        }
        Ok((Subscription { queue, key, topics: Arc::clone(self) }, answer))
    }

    /// Removes the subscription `text` and closes every handle of it.
    pub(crate) fn unsubscribe(&self, text: &str) -> Result<()> {
        Pattern::parse(text).map_err(|e| SyncError::InvalidInput(e.to_string()))?;
        let removed = self.lock().entries.remove(&Key::Topic(text.to_owned()));
        if let Some(entry) = removed {
            for queue in &entry.subscribers {
                queue.close();
            }
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Removes one subscriber (its handle was dropped); the entry goes with its last one.
    fn remove_subscriber(&self, key: &Key, queue: &Arc<Queue>) {
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(key) else { return };
        entry.subscribers.retain(|q| !Arc::ptr_eq(q, queue));
        if entry.subscribers.is_empty() {
            let server = entry.server;
            state.entries.remove(key);
            drop(state);
            if server {
                self.wake.notify_one();
            }
        }
    }

    /// Queues a publish for the current connection; the receiver gets the answer.
    pub(crate) fn publish(&self, topic: &str, data: Value, echo: bool) -> Result<oneshot::Receiver<Result<Published>>> {
        sync_core::topic::validate_name(topic).map_err(|e| SyncError::InvalidInput(e.to_string()))?;
        if topic == BROADCAST {
            return Err(SyncError::InvalidInput(
                "topic \"broadcast\": nobody publishes to it over the WebSocket (the server's POST /api/sync/broadcast does)"
                    .into(),
            ));
        }
        let permit = Arc::clone(&self.publishing).try_acquire_owned().map_err(|_| {
            SyncError::InvalidInput(format!(
                "{MAX_PUBLISHES_IN_FLIGHT} publishes are already waiting for the server's answer; await some first"
            ))
        })?;
        let (reply, answer) = oneshot::channel();
        let mut state = self.lock();
        if state.closed {
            return Err(SyncError::Shutdown);
        }
        // Checked under the lock the connection task takes to go offline, so a publish is
        // either taken by the current connection or refused now, never sent late by the next.
        if !state.online {
            return Err(SyncError::NotConnected("topic messages are live, not queued: publish once connected".into()));
        }
        state.publishes.push_back(PublishRequest { topic: topic.to_owned(), data, echo, reply, permit });
        drop(state);
        self.wake.notify_one();
        Ok(answer)
    }

    /// The engine is going away: every handle's `recv` answers `None` from now on.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let entries = std::mem::take(&mut state.entries);
        state.publishes.clear();
        drop(state);
        for entry in entries.values() {
            for queue in &entry.subscribers {
                queue.close();
            }
        }
        self.wake.notify_one();
    }

    // The connection task's side.

    /// Completes when the subscriptions changed or a publish was queued (one wake-up is
    /// kept for a task that is not waiting yet).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A session authenticated as `user_id` is up. On a reconnect, subscriptions the
    /// server does not hold (`broadcast`, the personal topic) may have missed messages:
    /// they get a [`Gap::NotRecovered`].
    pub(crate) fn online(&self, user_id: &str) {
        let mut state = self.lock();
        state.online = true;
        state.user_id = Some(user_id.to_owned());
        if std::mem::replace(&mut state.was_online, true) {
            for entry in state.entries.values().filter(|e| !e.server) {
                for queue in &entry.subscribers {
                    queue.push(TopicEvent::Gap(Gap::NotRecovered));
                }
            }
        }
    }

    /// The session ended: queued publishes fail (their receivers see the sender go), and
    /// `subscribe` calls waiting for an answer return: their subscriptions are renewed on
    /// the next connection.
    pub(crate) fn offline(&self) {
        let mut state = self.lock();
        state.online = false;
        state.publishes.clear();
        for entry in state.entries.values_mut() {
            entry.confirmed = false;
            for waiter in entry.waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// What to send so that the server holds exactly the registry's subscriptions, given
    /// what it holds now (`held`: text → entry id); updates `held` to match.
    pub(crate) fn changes(&self, held: &mut BTreeMap<String, u64>) -> Changes {
        let state = self.lock();
        let mut changes = Changes { subscribe: Vec::new(), unsubscribe: Vec::new() };
        for (key, entry) in &state.entries {
            let Key::Topic(text) = key else { continue };
            if !entry.server || held.get(text) == Some(&entry.id) {
                continue;
            }
            let since = match (&entry.pattern, entry.offset, &entry.epoch) {
                (Some(p), Some(offset), Some(epoch)) if !p.is_wildcard() => Some((offset, epoch.clone())),
                _ => None,
            };
            held.insert(text.clone(), entry.id);
            changes.subscribe.push((text.clone(), entry.id, since));
        }
        held.retain(|text, _| {
            let keep = state.entries.get(&Key::Topic(text.clone())).is_some_and(|e| e.server);
            if !keep {
                changes.unsubscribe.push(text.clone());
            }
            keep
        });
        changes
    }

    /// Takes the queued publishes.
    pub(crate) fn take_publishes(&self) -> Vec<PublishRequest> {
        self.lock().publishes.drain(..).collect()
    }

    /// The server confirmed the subscription `text` (entry `id`, asked with
    /// `since_offset` when `asked_recovery`).
    pub(crate) fn subscribed(&self, reply: &Subscribed, id: u64, asked_recovery: bool) {
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(&Key::Topic(reply.topic.clone())) else { return };
        if entry.id != id {
            // Dropped and made again meanwhile: the renewal sent for the new one answers it.
            return;
        }
        let recovered = asked_recovery && reply.recovered == Some(true);
        if !recovered {
            // Live from the server's latest offset on (recovered messages, when there are
            // some, move the offset as they arrive).
            entry.offset = reply.offset;
            entry.epoch = reply.epoch.clone();
            if entry.was_live {
                for queue in &entry.subscribers {
                    queue.push(TopicEvent::Gap(Gap::NotRecovered));
                }
            }
        }
        entry.confirmed = true;
        entry.was_live = true;
        for waiter in entry.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }

    /// The server refused the subscription `text` (entry `id`; any entry of that text
    /// when `None`: the server ended the subscription it held): the waiting `subscribe`
    /// fails, the handles get [`TopicEvent::Refused`], and the entry goes.
    pub(crate) fn refused(&self, text: &str, id: Option<u64>, refusal: Refusal) {
        let mut state = self.lock();
        let key = Key::Topic(text.to_owned());
        if state.entries.get(&key).is_none_or(|e| id.is_some_and(|id| e.id != id)) {
            return;
        }
        let Some(mut entry) = state.entries.remove(&key) else { return };
        drop(state);
        for waiter in entry.waiters.drain(..) {
            let _ = waiter.send(Err(refusal.clone()));
        }
        for queue in &entry.subscribers {
            queue.push(TopicEvent::Refused { code: refusal.code, message: refusal.message.clone() });
            queue.close();
        }
    }

    /// Routes a `data` message to every local subscription it matches, and moves the
    /// offset of its topic's own subscription. One that matches none (the personal topic
    /// or a broadcast nobody here subscribed to) is dropped.
    pub(crate) fn deliver(&self, data: TopicData) {
        let message = TopicMessage::from(data);
        let mut state = self.lock();
        let personal = state.user_id.as_deref().map(personal_topic);
        for (key, entry) in state.entries.iter_mut() {
            let matches = match key {
                Key::Personal => personal.as_deref() == Some(message.topic.as_str()),
                Key::Topic(_) => entry.pattern.as_ref().is_some_and(|p| p.matches(&message.topic)),
            };
            if !matches {
                continue;
            }
            if matches!(key, Key::Topic(text) if *text == message.topic) && message.offset.is_some() {
                if entry.epoch != message.epoch {
                    entry.epoch = message.epoch.clone();
                    entry.offset = message.offset;
                } else {
                    entry.offset = entry.offset.max(message.offset);
                }
            }
            for queue in &entry.subscribers {
                queue.push(TopicEvent::Message(message.clone()));
            }
        }
    }
}

/// One subscription handle's bounded queue.
struct Queue {
    inner: Mutex<QueueState>,
    /// Wakes `recv` (one permit is kept for a receiver not waiting yet).
    notify: Notify,
    capacity: usize,
    /// Entry id, for `Debug`.
    id: u64,
}

struct QueueState {
    events: VecDeque<TopicEvent>,
    /// Dropped since the last [`Gap::Dropped`] was handed out.
    unreported: u64,
    /// Dropped in all.
    dropped: u64,
    closed: bool,
}

impl Queue {
    fn new(id: u64, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(QueueState { events: VecDeque::new(), unreported: 0, dropped: 0, closed: false }),
            notify: Notify::new(),
            capacity,
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, event: TopicEvent) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        if queue.events.len() >= self.capacity {
            queue.events.pop_front();
            queue.unreported += 1;
            queue.dropped += 1;
        }
        queue.events.push_back(event);
        drop(queue);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// The next event, `Err(closed)` when there is none.
    fn pop(&self) -> std::result::Result<TopicEvent, bool> {
        let mut queue = self.lock();
        if queue.unreported > 0 {
            let n = std::mem::take(&mut queue.unreported);
            return Ok(TopicEvent::Gap(Gap::Dropped(n)));
        }
        queue.events.pop_front().ok_or(queue.closed)
    }
}

/// A subscription to a topic name or pattern (or the personal topic): a bounded queue
/// of what arrives for it. Dropping it unsubscribes (the server is told once the last
/// handle of that name or pattern is gone).
///
/// Events are taken on the application's own thread: `try_recv` from a UI loop or
/// timer, `recv` or [`Subscription::into_stream`] from async code.
pub struct Subscription {
    queue: Arc<Queue>,
    key: Key,
    topics: Arc<Topics>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("topic", &self.topic()).field("entry", &self.queue.id).finish()
    }
}

impl Subscription {
    /// The name or pattern subscribed to; `user.<id>` for the personal topic (`user.`
    /// alone while the user id is not known yet).
    pub fn topic(&self) -> String {
        match &self.key {
            Key::Topic(text) => text.clone(),
            Key::Personal => personal_topic(self.topics.lock().user_id.as_deref().unwrap_or_default()),
        }
    }

    /// The next event if one is waiting; never blocks.
    pub fn try_recv(&self) -> Option<TopicEvent> {
        self.queue.pop().ok()
    }

    /// The next event; `None` once the subscription is closed (by
    /// [`SyncEngine::unsubscribe`](crate::SyncEngine::unsubscribe), a refusal, or the
    /// engine's shutdown) and drained.
    pub async fn recv(&mut self) -> Option<TopicEvent> {
        loop {
            match self.queue.pop() {
                Ok(event) => return Some(event),
                Err(true) => return None,
                Err(false) => self.queue.notify.notified().await,
            }
        }
    }

    /// Whether the subscription is closed (it may still hold events).
    pub fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.lock().dropped
    }

    /// The events as a `futures::Stream`, ending when the subscription closes.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = TopicEvent> + Send {
        futures_util::stream::unfold(self, |mut subscription| async move {
            subscription.recv().await.map(|event| (event, subscription))
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.topics.remove_subscriber(&self.key, &self.queue);
    }
}

/// A publish sent (or about to be) to the server: await it for the answer — how many
/// sessions the message was queued for, and its offset on a topic with history. Dropping
/// it does not take the message back.
#[must_use = "a publish is sent whether or not its answer is awaited; await it to see a refusal"]
pub struct Publishing {
    pub(crate) answer: oneshot::Receiver<Result<Published>>,
}

impl fmt::Debug for Publishing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Publishing")
    }
}

impl IntoFuture for Publishing {
    type Output = Result<Published>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Published>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match tokio::time::timeout(ANSWER_TIMEOUT, self.answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(SyncError::Connection(
                    "the connection was lost before the server answered the publish (it may or may not have been delivered)"
                        .into(),
                )),
                Err(_) => Err(SyncError::Timeout(format!("no answer to the publish within {ANSWER_TIMEOUT:?}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(topic: &str, n: u64) -> TopicData {
        TopicData {
            topic: topic.into(),
            data: serde_json::json!({ "n": n }),
            from: Some("u".into()),
            user_id: Some("u".into()),
            timestamp: sync_core::Timestamp::now(),
            offset: None,
            epoch: None,
        }
    }

    fn numbers(subscription: &Subscription) -> Vec<u64> {
        std::iter::from_fn(|| subscription.try_recv())
            .map(|e| match e {
                TopicEvent::Message(m) => m.data["n"].as_u64().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_message_reaches_every_matching_subscription_once() {
        let topics = Arc::new(Topics::new(100));
        let (exact, _) = topics.subscribe(Key::Topic("chat.room1".into())).unwrap();
        let (star, _) = topics.subscribe(Key::Topic("chat.*".into())).unwrap();
        let (rest, _) = topics.subscribe(Key::Topic("chat.>".into())).unwrap();
        let (other, _) = topics.subscribe(Key::Topic("news.>".into())).unwrap();
        topics.deliver(data("chat.room1", 1));
        topics.deliver(data("chat.room2.x", 2));
        assert_eq!(numbers(&exact), vec![1]);
        assert_eq!(numbers(&star), vec![1]);
        assert_eq!(numbers(&rest), vec![1, 2]);
        assert_eq!(numbers(&other), Vec::<u64>::new());
    }

    #[test]
    fn the_personal_topic_is_local_and_follows_the_user_id() {
        let topics = Arc::new(Topics::new(100));
        let (personal, answer) = topics.subscribe(Key::Personal).unwrap();
        assert!(answer.is_none());
        topics.online("me");
        assert!(topics.changes(&mut BTreeMap::new()).subscribe.is_empty(), "never sent to the server");
        topics.deliver(data("user.me", 1));
        topics.deliver(data("user.someone", 2));
        assert_eq!(numbers(&personal), vec![1]);
        assert_eq!(personal.topic(), "user.me");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_says_how_many() {
        let topics = Arc::new(Topics::new(3));
        let (s, _) = topics.subscribe(Key::Topic("a".into())).unwrap();
        for n in 0..5 {
            topics.deliver(data("a", n));
        }
        assert_eq!(s.try_recv(), Some(TopicEvent::Gap(Gap::Dropped(2))));
        assert_eq!(numbers(&s), vec![2, 3, 4]);
        assert_eq!(s.dropped(), 2);
    }

    #[test]
    fn the_server_set_follows_the_registry_and_renewals_carry_the_offset() {
        let topics = Arc::new(Topics::new(10));
        let (a, _) = topics.subscribe(Key::Topic("chat.a".into())).unwrap();
        let (_b, _) = topics.subscribe(Key::Topic("chat.>".into())).unwrap();
        let (_c, _) = topics.subscribe(Key::Topic(BROADCAST.into())).unwrap();
        let mut held = BTreeMap::new();
        let first = topics.changes(&mut held);
        let texts: Vec<&str> = first.subscribe.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(texts, ["chat.>", "chat.a"], "broadcast is not sent");
        assert!(topics.changes(&mut held).subscribe.is_empty(), "nothing new");
        let id = first.subscribe.iter().find(|s| s.0 == "chat.a").unwrap().1;
        let reply = Subscribed { topic: "chat.a".into(), offset: Some(4), epoch: Some("e1".into()), recovered: None };
        topics.subscribed(&reply, id, false);
        let mut m = data("chat.a", 1);
        (m.offset, m.epoch) = (Some(5), Some("e1".into()));
        topics.deliver(m);
        // A reconnect: the server holds nothing; the exact name is renewed from offset 5.
        topics.offline();
        let mut held = BTreeMap::new();
        let renew = topics.changes(&mut held);
        let a_renewal = renew.subscribe.iter().find(|s| s.0 == "chat.a").unwrap();
        assert_eq!(a_renewal.2, Some((5, "e1".to_owned())));
        assert_eq!(renew.subscribe.iter().find(|s| s.0 == "chat.>").unwrap().2, None, "patterns recover nothing");
        let reply = Subscribed { recovered: Some(false), ..reply };
        topics.subscribed(&reply, id, true);
        assert_eq!(numbers_and_gaps(&a), ["1", "gap"]);
        drop(a);
        assert_eq!(topics.changes(&mut held).unsubscribe, ["chat.a"]);
    }

    fn numbers_and_gaps(subscription: &Subscription) -> Vec<String> {
        std::iter::from_fn(|| subscription.try_recv())
            .map(|e| match e {
                TopicEvent::Message(m) => m.data["n"].to_string(),
                TopicEvent::Gap(Gap::NotRecovered) => "gap".into(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn publishing_needs_a_connection_and_a_valid_name() {
        let topics = Arc::new(Topics::new(10));
        assert!(matches!(topics.publish("a.b", Value::Null, false), Err(SyncError::NotConnected(_))));
        topics.online("me");
        assert!(matches!(topics.publish("a.*", Value::Null, false), Err(SyncError::InvalidInput(_))));
        assert!(matches!(topics.publish("broadcast", Value::Null, false), Err(SyncError::InvalidInput(_))));
        assert!(topics.publish("a.b", Value::Null, false).is_ok());
        assert_eq!(topics.take_publishes().len(), 1);
        assert!(matches!(topics.subscribe(Key::Topic("a..b".into())), Err(SyncError::InvalidInput(_))));
    }
}
