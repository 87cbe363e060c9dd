//! Topics (PROTOCOL.md §4.1): who is subscribed to what, the messages kept for
//! recovery, and the one fan-out function, [`Topics::deliver`], that puts a message in
//! the queues of the local sessions it reaches — the same bounded queues the hub
//! delivers document changes into. Nothing here touches the database or the hub.
//!
//! Structure: exact names live in [`SHARDS`] shards (a hash map of topics each, behind
//! its own lock); wildcard patterns in one token trie (`wildcards`); every session in
//! `members`, by user, for personal topics and broadcasts. A message is delivered under
//! the lock of its topic's shard, so the messages of one topic reach every subscriber
//! in one order (the order of their offsets), while topics in other shards go on in
//! parallel; a recovering subscriber reads the history and registers under that same
//! lock, so it misses nothing between them and gets nothing twice.
//!
//! Guarantees:
//! - a message reaches a session at most once, however many of its subscriptions match,
//!   and never the publishing session unless it asked for an echo;
//! - delivery never waits: each message's frame is serialized once and its bytes shared
//!   by every queue; a session whose queue is full is disconnected (`SessionLink::offer`);
//! - no lock is held across an `.await` (there is none here), and lock order is
//!   a session's subscriptions → a shard → the wildcards / the members, so none deadlocks;
//! - a wildcard delivers only names the rules let the user subscribe to, checked per
//!   name (and cached per session, until the rules change) only while some rule is about
//!   topics; with none, delivery costs no rule check at all;
//! - when the rules change, a subscription they no longer allow is ended and its session
//!   pushed `unsubscribed{topic, reason:"forbidden"}` after the last message it got;
//! - a session that ends leaves nothing behind ([`Membership`] removes it all);
//! - memory is bounded: per topic by its history rule's messages and seconds, and at
//!   most `topics.max_history_topics` topics hold history (a topic beyond that keeps none
//!   and its messages carry no offset until others' history expires).
//!
//! A cluster bus (issue 15) feeds messages from other nodes to [`Topics::deliver`] like
//! local ones, and carries local ones out from where the handlers call it.

mod history;
mod wildcards;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sync_core::Timestamp;
use sync_core::acl::{Acl, Action};
use sync_core::protocol::{ServerMessage, Subscribed, TopicReply};
use sync_core::topic::{self, BROADCAST, Pattern};

use self::history::{History, Recovery};
use self::wildcards::Wildcards;
use crate::config::TopicsSection;
use crate::hub::{Outbound, SessionLink};

/// Shards of exact topic names: topics in different shards are delivered in parallel.
const SHARDS: usize = 64;
/// Names a session remembers the rules' verdict on, for its wildcard deliveries.
const FILTER_NAMES: usize = 4096;
/// The reason of the `unsubscribed` push that ends a subscription the rules no longer allow.
pub(crate) const REASON_FORBIDDEN: &str = "forbidden";

/// A message to deliver to the local sessions it reaches.
#[derive(Debug)]
pub(crate) struct TopicMessage {
    /// The topic name (checked: no wildcard).
    pub(crate) topic: String,
    /// What was published.
    pub(crate) data: Value,
    /// The publishing user; `None` when the server publishes (REST).
    pub(crate) from: Option<String>,
    /// When the server received it.
    pub(crate) timestamp: Timestamp,
    /// The publishing session, which does not receive it (no echo).
    pub(crate) skip_session: Option<u64>,
}

/// What became of a delivered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The sessions it was queued for.
    pub(crate) sessions: u64,
    /// Its offset, on a topic with history.
    pub(crate) offset: Option<u64>,
}

/// Why a subscription was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A personal topic of another user, or the rules (`forbidden`).
    Forbidden(String),
    /// The session holds `limits.max_subscriptions` already.
    TooMany(usize),
}

/// The answer to a subscription: the `subscribed` reply and the recovered `data`
/// frames that follow it, in order, before any live message.
pub(crate) struct SubscribeAnswer {
    pub(crate) reply: Subscribed,
    pub(crate) recovered: Vec<Bytes>,
}

/// One session, as topics know it.
pub(crate) struct Member {
    id: u64,
    user: Arc<str>,
    link: SessionLink,
    /// Its subscriptions, by text: whether each is a wildcard.
    subscriptions: Mutex<HashMap<Box<str>, bool>>,
    /// The rules' verdict on names its wildcards matched.
    filter: Mutex<Filter>,
}

/// Per name: whether the rules of `generation` let the member's user subscribe to it.
#[derive(Default)]
struct Filter {
    generation: u64,
    names: HashMap<Box<str>, bool>,
}

impl Member {
    /// Whether a message on `name` may reach this member through a wildcard.
    fn may_receive(&self, name: &str, rules: &Rules) -> bool {
        let mut filter = lock(&self.filter);
        if filter.generation != rules.generation {
            filter.names.clear();
            filter.generation = rules.generation;
        }
        if let Some(&allowed) = filter.names.get(name) {
            return allowed;
        }
        let allowed = rules.acl.may_topic(&self.user, name, Action::Subscribe);
        if filter.names.len() >= FILTER_NAMES {
            filter.names.clear();
        }
        filter.names.insert(name.into(), allowed);
        allowed
    }
}

/// The access rules in force, numbered so cached verdicts know when they are stale.
struct Rules {
    acl: Arc<Acl>,
    generation: u64,
}

/// One exact topic name with subscribers or held history.
struct Topic {
    subscribers: HashMap<u64, Arc<Member>>,
    /// The history rule its name matches (decided when the entry was made).
    rule: Option<usize>,
    history: Option<History>,
}

#[derive(Default)]
struct Shard {
    topics: HashMap<Box<str>, Topic>,
}

/// Every session, by user.
#[derive(Default)]
struct Members {
    by_user: HashMap<Arc<str>, Vec<Arc<Member>>>,
}

/// A `[topics] history` rule, checked.
struct HistoryRule {
    pattern: Pattern,
    messages: usize,
    keep: Duration,
}

/// The topic registry.
pub(crate) struct Topics {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    wildcards: RwLock<Wildcards<Arc<Member>>>,
    members: RwLock<Members>,
    rules: RwLock<Arc<Rules>>,
    /// Whether some rule is about topics: read without a lock by every delivery.
    rules_topics: AtomicBool,
    history_rules: Vec<HistoryRule>,
    max_history_topics: usize,
    /// Topics holding history now.
    history_topics: AtomicUsize,
    /// This process's part of every epoch.
    process_epoch: String,
    /// Histories opened, for the other part.
    epochs: AtomicU64,
    /// Subscriptions held by all sessions.
    subscriptions: AtomicUsize,
    /// A `data` frame larger than this is refused.
    max_frame_bytes: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, even one a panic cut short.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Topics {
    /// A registry with `[topics]` as configured and `acl` in force; refuses a history
    /// rule that is not a valid pattern.
    pub(crate) fn new(config: &TopicsSection, acl: Arc<Acl>, max_frame_bytes: usize) -> Result<Self, String> {
        let mut history_rules = Vec::with_capacity(config.history.len());
        for (i, rule) in config.history.iter().enumerate() {
            let pattern = Pattern::parse(&rule.pattern).map_err(|e| format!("[topics] history rule {i}: {e}"))?;
            if topic::is_reserved(pattern.as_str()) {
                return Err(format!("[topics] history rule {i}: reserved topics keep no history"));
            }
            if rule.messages == 0 || rule.seconds == 0 {
                return Err(format!("[topics] history rule {i}: messages and seconds must be at least 1"));
            }
            history_rules.push(HistoryRule {
                pattern,
                messages: rule.messages,
                keep: Duration::from_secs(rule.seconds),
            });
        }
        let rules_topics = acl.rules_topics();
        Ok(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            wildcards: RwLock::new(Wildcards::default()),
            members: RwLock::new(Members::default()),
            rules: RwLock::new(Arc::new(Rules { acl, generation: 0 })),
            rules_topics: AtomicBool::new(rules_topics),
            history_rules,
            max_history_topics: config.max_history_topics,
            history_topics: AtomicUsize::new(0),
            process_epoch: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            epochs: AtomicU64::new(0),
            subscriptions: AtomicUsize::new(0),
            max_frame_bytes,
        })
    }

    fn shard(&self, name: &str) -> MutexGuard<'_, Shard> {
        // The modulo keeps the index in range whatever the hash.
        lock(&self.shards[(self.hasher.hash_one(name) % SHARDS as u64) as usize])
    }

    fn rules(&self) -> Arc<Rules> {
        Arc::clone(&read(&self.rules))
    }

    /// Registers a session: from now on it receives its user's personal topic and
    /// broadcasts. Dropping the membership ends every subscription of the session.
    pub(crate) fn join(self: &Arc<Self>, session_id: u64, user_id: &str, link: SessionLink) -> Membership {
        let mut members = write(&self.members);
        let user = members.by_user.get_key_value(user_id).map_or_else(|| Arc::from(user_id), |(k, _)| Arc::clone(k));
        let member = Arc::new(Member {
            id: session_id,
            user: Arc::clone(&user),
            link,
            subscriptions: Mutex::new(HashMap::new()),
            filter: Mutex::new(Filter::default()),
        });
        members.by_user.entry(user).or_default().push(Arc::clone(&member));
        Membership { topics: Arc::clone(self), member }
    }

    fn leave(&self, member: &Member) {
        {
            let mut members = write(&self.members);
            if let Some(list) = members.by_user.get_mut(&*member.user) {
                if let Some(position) = list.iter().position(|m| m.id == member.id) {
                    list.swap_remove(position);
                }
                if list.is_empty() {
                    members.by_user.remove(&*member.user);
                }
            }
        }
        let subscriptions = std::mem::take(&mut *lock(&member.subscriptions));
        for (text, wildcard) in subscriptions {
            self.detach(member.id, &text, wildcard, None);
        }
    }

    /// Subscribes `member` to `pattern`; with `since`, recovers the messages after that
    /// offset (of that epoch, or the current one) on a topic with history.
    pub(crate) fn subscribe(
        &self,
        member: &Arc<Member>,
        pattern: &Pattern,
        since: Option<(u64, Option<&str>)>,
        max: usize,
    ) -> Result<SubscribeAnswer, Refusal> {
        let text = pattern.as_str();
        let unrecovered = since.map(|_| false);
        let plain = |recovered| SubscribeAnswer {
            reply: Subscribed { topic: text.to_owned(), offset: None, epoch: None, recovered },
            recovered: Vec::new(),
        };
        // Reserved names are decided before the rules: every session already receives
        // its own personal topic and broadcasts.
        if let Some(owner) = topic::personal_owner(text) {
            if owner != &*member.user {
                return Err(Refusal::Forbidden(format!("{text:?} is another user's personal topic")));
            }
            return Ok(plain(unrecovered));
        }
        if text == BROADCAST {
            return Ok(plain(unrecovered));
        }
        let mut subscriptions = lock(&member.subscriptions);
        // Read under the session's lock: a change of rules either comes before this
        // (and decides it) or re-checks the subscription after it (see `set_acl`).
        let rules = self.rules();
        if !rules.acl.may_topic(&member.user, text, Action::Subscribe) {
            return Err(Refusal::Forbidden(format!("the access rules do not let you subscribe to {text:?}")));
        }
        let repeated = subscriptions.contains_key(text);
        if !repeated && subscriptions.len() >= max {
            return Err(Refusal::TooMany(max));
        }
        if !repeated {
            subscriptions.insert(text.into(), pattern.is_wildcard());
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        if pattern.is_wildcard() {
            if !repeated {
                write(&self.wildcards).insert(text, member.id, Arc::clone(member));
            }
            return Ok(plain(unrecovered));
        }
        let now = Instant::now();
        let mut shard = self.shard(text);
        let topic = self.entry(&mut shard, text);
        if !repeated {
            topic.subscribers.insert(member.id, Arc::clone(member));
        }
        let mut answer = plain(None);
        match &mut topic.history {
            Some(history) => {
                answer.reply.offset = Some(history.latest());
                answer.reply.epoch = Some(history.epoch().to_string());
                // A repeated subscription has been receiving the topic all along: it
                // recovers nothing.
                if let Some((offset, epoch)) = since.filter(|_| !repeated) {
                    answer.reply.recovered = Some(match history.since(now, offset, epoch) {
                        Recovery::Complete(frames) => {
                            answer.recovered = frames;
                            true
                        }
                        Recovery::Gap => false,
                    });
                } else {
                    answer.reply.recovered = unrecovered;
                }
            }
            None => answer.reply.recovered = unrecovered,
        }
        Ok(answer)
    }

    /// Ends `member`'s subscription to `text`; whether it held one.
    pub(crate) fn unsubscribe(&self, member: &Member, text: &str) -> bool {
        let mut subscriptions = lock(&member.subscriptions);
        let Some(wildcard) = subscriptions.remove(text) else { return false };
        self.detach(member.id, text, wildcard, None);
        true
    }

    /// Removes session `id`'s subscription from the structures that deliver; `notice`
    /// is queued for it under the same lock, so it follows every message that found the
    /// subscription and precedes none.
    fn detach(&self, id: u64, text: &str, wildcard: bool, notice: Option<(&SessionLink, Bytes)>) {
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        let offer = |notice: Option<(&SessionLink, Bytes)>| {
            if let Some((link, frame)) = notice {
                link.offer(Outbound::frame(frame, None, false));
            }
        };
        if wildcard {
            let mut trie = write(&self.wildcards);
            trie.remove(text, id);
            offer(notice);
        } else {
            let mut shard = self.shard(text);
            if let Some(topic) = shard.topics.get_mut(text) {
                topic.subscribers.remove(&id);
            }
            self.tidy(&mut shard, text);
            offer(notice);
        }
    }

    /// The entry of `name`, made when missing (with the history its rule asks for, if
    /// the cap allows).
    fn entry<'s>(&self, shard: &'s mut Shard, name: &str) -> &'s mut Topic {
        if !shard.topics.contains_key(name) {
            let topic = Topic { subscribers: HashMap::new(), rule: self.history_rule(name), history: None };
            shard.topics.insert(name.into(), topic);
        }
        let Some(topic) = shard.topics.get_mut(name) else { unreachable!("inserted above") };
        if let (None, Some(rule)) = (&topic.history, topic.rule) {
            topic.history = self.open_history(rule);
        }
        topic
    }

    /// Removes the entry of `name` if it holds nothing.
    fn tidy(&self, shard: &mut Shard, name: &str) {
        let idle = shard
            .topics
            .get(name)
            .is_some_and(|t| t.subscribers.is_empty() && t.history.as_ref().is_none_or(History::is_empty));
        if idle && shard.topics.remove(name).is_some_and(|t| t.history.is_some()) {
            self.history_topics.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn history_rule(&self, name: &str) -> Option<usize> {
        if topic::is_reserved(name) {
            return None;
        }
        self.history_rules.iter().position(|rule| rule.pattern.matches(name))
    }

    fn open_history(&self, rule: usize) -> Option<History> {
        let rule = &self.history_rules[rule];
        let max = self.max_history_topics;
        self.history_topics.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        let epoch = format!("{}-{}", self.process_epoch, self.epochs.fetch_add(1, Ordering::Relaxed) + 1);
        Some(History::new(Arc::from(epoch), rule.messages, rule.keep))
    }

    /// Delivers `message` to every local session it reaches: the subscribers of its name
    /// and of the patterns that match it (each session once), every session of the user
    /// of a personal topic, every session for `broadcast`; holds it in the topic's
    /// history when it has one. Refuses a message whose frame would exceed the frame
    /// limit. Never waits.
    pub(crate) fn deliver(&self, message: &TopicMessage) -> Result<Delivered, String> {
        let name = message.topic.as_str();
        let plain = encode_data(message);
        if plain.len() > self.max_frame_bytes {
            return Err(format!(
                "the data message would be {} bytes; the frame limit is {}",
                plain.len(),
                self.max_frame_bytes
            ));
        }
        let now = Instant::now();
        let mut shard = self.shard(name);
        let mut frame = plain;
        let mut offset = None;
        if !self.history_rules.is_empty() && (shard.topics.contains_key(name) || self.history_rule(name).is_some()) {
            let topic = self.entry(&mut shard, name);
            if let Some(history) = &mut topic.history {
                let (n, numbered) = history.push(now, |n, epoch| with_offset(&frame, n, epoch));
                (offset, frame) = (Some(n), numbered);
            }
        }
        let sessions = self.fan_out(&shard, name, &frame, message.skip_session);
        // An entry made for a history the cap did not allow holds nothing.
        self.tidy(&mut shard, name);
        Ok(Delivered { sessions, offset })
    }

    /// Queues `frame` for every session `name` reaches; the count of those it was queued for.
    fn fan_out(&self, shard: &Shard, name: &str, frame: &Bytes, skip: Option<u64>) -> u64 {
        let mut delivered = 0u64;
        let mut offer = |member: &Member| {
            if Some(member.id) != skip && member.link.offer(Outbound::frame(frame.clone(), None, false)) {
                delivered += 1;
            }
        };
        if let Some(owner) = topic::personal_owner(name) {
            if let Some(list) = read(&self.members).by_user.get(owner) {
                list.iter().for_each(|m| offer(m));
            }
            return delivered;
        }
        if name == BROADCAST {
            read(&self.members).by_user.values().flatten().for_each(|m| offer(m));
            return delivered;
        }
        let exact = shard.topics.get(name).map(|t| &t.subscribers);
        if let Some(exact) = exact {
            exact.values().for_each(|m| offer(m));
        }
        let trie = read(&self.wildcards);
        if trie.is_empty() {
            return delivered;
        }
        let mut matched = Vec::new();
        trie.matching(name, &mut matched);
        if matched.is_empty() {
            return delivered;
        }
        let rules = self.rules_topics.load(Ordering::Acquire).then(|| self.rules());
        // One session may hold several matching patterns, and an exact subscription too.
        let mut seen = HashSet::with_capacity(if matched.len() > 1 { matched.len() } else { 0 });
        for member in matched {
            if exact.is_some_and(|e| e.contains_key(&member.id)) {
                continue;
            }
            if seen.capacity() > 0 && !seen.insert(member.id) {
                continue;
            }
            if rules.as_ref().is_some_and(|rules| !member.may_receive(name, rules)) {
                continue;
            }
            offer(member);
        }
        delivered
    }

    /// Whether `user` may publish to `name` (checked): their own personal topic always,
    /// another's and `broadcast` never, any other as the rules say.
    pub(crate) fn may_publish(&self, user: &str, name: &str) -> Result<(), String> {
        if let Some(owner) = topic::personal_owner(name) {
            return if owner == user { Ok(()) } else { Err(format!("{name:?} is another user's personal topic")) };
        }
        if name == BROADCAST {
            return Err("only the server publishes to `broadcast` (POST /api/sync/broadcast)".into());
        }
        if self.rules_topics.load(Ordering::Acquire) && !self.rules().acl.may_topic(user, name, Action::Publish) {
            return Err(format!("the access rules do not let you publish to {name:?}"));
        }
        Ok(())
    }

    /// Puts `acl` in force: subscriptions it no longer allows are ended, each session
    /// told with an `unsubscribed` push; cached verdicts are dropped. Returns how many
    /// subscriptions ended.
    pub(crate) fn set_acl(&self, acl: Arc<Acl>) -> usize {
        let rules = {
            let mut rules = write(&self.rules);
            *rules = Arc::new(Rules { acl, generation: rules.generation + 1 });
            Arc::clone(&*rules)
        };
        self.rules_topics.store(rules.acl.rules_topics(), Ordering::Release);
        if !rules.acl.rules_topics() {
            return 0;
        }
        let members: Vec<Arc<Member>> = read(&self.members).by_user.values().flatten().cloned().collect();
        let mut ended = 0;
        for member in members {
            let mut subscriptions = lock(&member.subscriptions);
            let gone: Vec<(Box<str>, bool)> = subscriptions
                .iter()
                .filter(|(text, _)| !rules.acl.may_topic(&member.user, text, Action::Subscribe))
                .map(|(text, wildcard)| (text.clone(), *wildcard))
                .collect();
            for (text, wildcard) in gone {
                subscriptions.remove(&text);
                let notice = crate::wire::encode(
                    &ServerMessage::Unsubscribed(TopicReply {
                        topic: text.to_string(),
                        reason: Some(REASON_FORBIDDEN.to_owned()),
                    }),
                    None,
                );
                self.detach(member.id, &text, wildcard, Some((&member.link, notice)));
                ended += 1;
            }
        }
        ended
    }

    /// Drops expired history, and the topics left with nothing.
    pub(crate) fn expire(&self) {
        if self.history_rules.is_empty() {
            return;
        }
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let mut released = 0;
            shard.topics.retain(|_, topic| {
                let Some(history) = &mut topic.history else { return true };
                history.expire(now);
                let idle = history.is_empty() && topic.subscribers.is_empty();
                released += usize::from(idle);
                !idle
            });
            self.history_topics.fetch_sub(released, Ordering::AcqRel);
        }
    }

    /// Topics with a subscriber or held history, and the subscriptions of all sessions.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let topics = self.shards.iter().map(|shard| lock(shard).topics.len()).sum();
        (topics, self.subscriptions.load(Ordering::Relaxed))
    }
}

/// A session's place among topics; dropping it ends all the session's subscriptions.
pub(crate) struct Membership {
    topics: Arc<Topics>,
    member: Arc<Member>,
}

impl Membership {
    /// The session as topics know it.
    pub(crate) fn member(&self) -> &Arc<Member> {
        &self.member
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.topics.leave(&self.member);
    }
}

/// The `data` frame of a message, without `offset` and `epoch`.
fn encode_data(message: &TopicMessage) -> Bytes {
    // The same shape as `ServerMessage::Data` serializes to, from borrowed fields.
    #[derive(serde::Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        topic: &'a str,
        data: &'a Value,
        from: Option<&'a str>,
        user_id: Option<&'a str>,
        timestamp: &'a Timestamp,
    }
    let from = message.from.as_deref();
    let frame = Frame {
        kind: "data",
        topic: &message.topic,
        data: &message.data,
        from,
        user_id: from,
        timestamp: &message.timestamp,
    };
    // Strings, a timestamp and a JSON value: nothing a JSON serializer refuses.
    Bytes::from(serde_json::to_vec(&frame).unwrap_or_default())
}

/// `plain` (a JSON object) with `offset` and `epoch` appended.
fn with_offset(plain: &[u8], offset: u64, epoch: &str) -> Bytes {
    let body = plain.strip_suffix(b"}").unwrap_or(plain);
    let mut out = Vec::with_capacity(plain.len() + 40 + epoch.len());
    out.extend_from_slice(body);
    out.extend_from_slice(format!(",\"offset\":{offset},\"epoch\":").as_bytes());
    // A string always serializes.
    let _ = serde_json::to_writer(&mut out, epoch);
    out.push(b'}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
