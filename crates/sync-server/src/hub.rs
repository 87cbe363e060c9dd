//! The hub: which sessions are connected, and delivery of committed changes to them.
//!
//! Guarantees:
//! - deliveries happen in sequence order (one caller delivers, in order), and a change is
//!   pushed to every session of a user who may read it except the session that made it,
//!   which gets its `*_response` at the same position in its stream;
//! - a change's pushes are queued before its answer: once a writer holds the answer,
//!   every other session of the user has the push ahead of anything it is sent later
//!   (what the writer does next on another device never overtakes its own change);
//! - delivery never waits: every session has a bounded queue, and a session whose queue
//!   is full is told to disconnect (it resumes from its cursor), so one slow client never
//!   stalls a writer or grows server memory;
//! - a session registered before a change is delivered receives it; `delivered()` read
//!   after registering is therefore a position from which live pushes start, gap-free;
//! - the hub holds the access rules in force: each session's [`ReadView`] is compiled
//!   from them under the registry's lock, so a change of rules and a delivery never
//!   interleave. When the rules change, every session whose view changed is sent an
//!   [`AccessChange`] marker in its queue: what came before it was decided by the old
//!   rules, what comes after by the new ones.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use sync_core::acl::{Acl, ReadView};
use tokio_util::sync::CancellationToken;

use crate::authenticated::Identity;
use crate::queue::{self, TrySendError};

/// What a session's queue carries.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    /// The text of one WebSocket message (shared between recipients).
    pub(crate) frame: Bytes,
    /// The change's sequence, for pushes and successful change responses.
    pub(crate) sequence: Option<u64>,
    /// Whether this answers one of the session's own change requests.
    pub(crate) completes_write: bool,
    /// A change of what the session may read (the frame is empty).
    pub(crate) access: Option<Box<AccessChange>>,
}

impl Outbound {
    /// A frame to send.
    pub(crate) fn frame(frame: Bytes, sequence: Option<u64>, completes_write: bool) -> Self {
        Self { frame, sequence, completes_write, access: None }
    }
}

/// The rules changed what a session may read, at this point of its stream.
#[derive(Clone, Debug)]
pub(crate) struct AccessChange {
    /// What it could read before.
    pub(crate) old: Arc<ReadView>,
    /// What it may read now.
    pub(crate) new: Arc<ReadView>,
}

/// The sending side of a session's queue, and the switch that disconnects it.
#[derive(Clone, Debug)]
pub(crate) struct SessionLink {
    pub(crate) id: u64,
    /// Its bounded queue.
    pub(crate) tx: queue::Sender<Outbound>,
    /// Cancelled when the session must go (too slow, or shut down).
    pub(crate) kill: CancellationToken,
}

impl SessionLink {
    /// Queues a message without waiting; a full queue disconnects the session. Returns
    /// whether the message was queued.
    pub(crate) fn offer(&self, outbound: Outbound) -> bool {
        match self.tx.try_send(outbound) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(session = self.id, "session queue full: disconnecting the slow client");
                self.kill.cancel();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

struct Member {
    link: SessionLink,
    client_id: String,
    /// What it may read, compiled from the rules in force.
    view: Arc<ReadView>,
    /// Partial sync: the only collections it is pushed.
    collections: Option<Arc<[String]>>,
}

impl Member {
    fn syncs(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|c| c.iter().any(|name| name == collection))
    }
}

/// The sessions and the rules, under one lock.
#[derive(Default)]
struct Registry {
    users: HashMap<String, Vec<Member>>,
    /// The rules in force.
    acl: Arc<Acl>,
    /// Users with a session that may read documents of others: the only ones, besides a
    /// document's owner, that a change is checked against.
    readers_of_others: HashSet<String>,
}

impl Registry {
    fn view(&self, user_id: &str) -> Arc<ReadView> {
        Arc::new(self.acl.read_view(user_id))
    }

    fn note_reader(&mut self, user_id: &str) {
        let reads_others = self.users.get(user_id).is_some_and(|m| m.iter().any(|m| !m.view.is_owner_only()));
        if reads_others {
            self.readers_of_others.insert(user_id.to_owned());
        } else {
            self.readers_of_others.remove(user_id);
        }
    }
}

/// A committed change, ready to deliver.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) sequence: u64,
    /// The owner of the document.
    pub(crate) user_id: String,
    /// The document's collection and id, which the rules match.
    pub(crate) collection: String,
    pub(crate) document_id: String,
    /// The push for other sessions (`document_created`/`_updated`/`_deleted`).
    pub(crate) push: Bytes,
    /// A `conflict_detected` for other sessions, when the change overwrote a concurrent one.
    pub(crate) conflict: Option<Bytes>,
}

/// One item to deliver, in order.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A committed change, and the response for the session that made it (if it is here).
    Commit {
        /// The change.
        change: Arc<Committed>,
        /// The originating session and its response.
        reply: Option<(SessionLink, Bytes)>,
    },
    /// An answer that is not a commit (a refused change, a repeated `client_change_id`).
    Reply {
        /// The session.
        to: SessionLink,
        /// The response.
        frame: Bytes,
        /// The sequence of the original change, for a repeated one.
        sequence: Option<u64>,
    },
}

/// The registry of connected, authenticated sessions.
#[derive(Default)]
pub(crate) struct Hub {
    registry: RwLock<Registry>,
    delivered: AtomicU64,
}

/// Removes its session from the hub when dropped.
pub(crate) struct Registration {
    hub: Arc<Hub>,
    user_id: String,
    session_id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.user_id, self.session_id);
    }
}

impl Hub {
    /// A hub whose log position starts at `delivered` (the latest committed sequence),
    /// with the rules `acl` in force.
    pub(crate) fn new(delivered: u64, acl: Acl) -> Self {
        let registry = Registry { acl: Arc::new(acl), ..Registry::default() };
        Self { registry: RwLock::new(registry), delivered: AtomicU64::new(delivered) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session of `identity`. Read [`Hub::delivered`] afterwards for the position
    /// its live pushes start after. Returns the registration and what the session may
    /// read now.
    pub(crate) fn register(self: &Arc<Self>, identity: &Identity, link: SessionLink) -> (Registration, Arc<ReadView>) {
        let session_id = link.id;
        let user_id = identity.user_id.as_str();
        let mut registry = self.write();
        // A user's sessions share one compiled view.
        let shared = registry.users.get(user_id).and_then(|members| members.first()).map(|m| Arc::clone(&m.view));
        let view = shared.unwrap_or_else(|| registry.view(user_id));
        // Most users have one session: room for one, not the four a first push reserves.
        registry.users.entry(user_id.to_owned()).or_insert_with(|| Vec::with_capacity(1)).push(Member {
            link,
            client_id: identity.client_id.clone(),
            view: Arc::clone(&view),
            collections: identity.collections.clone(),
        });
        registry.note_reader(user_id);
        (Registration { hub: Arc::clone(self), user_id: user_id.to_owned(), session_id }, view)
    }

    fn unregister(&self, user_id: &str, session_id: u64) {
        let mut registry = self.write();
        if let Some(members) = registry.users.get_mut(user_id) {
            // Order among a user's sessions does not matter: swap the last one in, so a
            // user with thousands of sessions disconnecting at once costs a scan each,
            // not a scan and a shift.
            if let Some(position) = members.iter().position(|m| m.link.id == session_id) {
                members.swap_remove(position);
            }
            if members.is_empty() {
                registry.users.remove(user_id);
            }
        }
        registry.note_reader(user_id);
    }

    /// The rules in force.
    pub(crate) fn acl(&self) -> Arc<Acl> {
        Arc::clone(&self.read().acl)
    }

    /// Puts `acl` in force. Every session whose view changes gets an [`AccessChange`] in
    /// its queue, at the point from which the new rules decide what it is pushed.
    /// Returns how many sessions that was.
    pub(crate) fn set_acl(&self, acl: Acl) -> usize {
        let mut registry = self.write();
        registry.acl = Arc::new(acl);
        let mut changed = 0;
        let users: Vec<String> = registry.users.keys().cloned().collect();
        for user_id in users {
            // Compiled once for all the user's sessions.
            let view = registry.view(&user_id);
            let Some(members) = registry.users.get_mut(&user_id) else { continue };
            for member in members.iter_mut() {
                let new = Arc::clone(&view);
                if new == member.view {
                    continue;
                }
                let old = std::mem::replace(&mut member.view, Arc::clone(&new));
                changed += 1;
                member.link.offer(Outbound {
                    frame: Bytes::new(),
                    sequence: None,
                    completes_write: false,
                    access: Some(Box::new(AccessChange { old, new })),
                });
            }
            registry.note_reader(&user_id);
        }
        changed
    }

    /// The newest sequence delivered to sessions.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Authenticated sessions connected.
    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.read().users.values().map(Vec::len).sum()
    }

    /// Users with at least one session.
    pub(crate) fn active_users(&self) -> Vec<String> {
        let mut list: Vec<String> = self.read().users.keys().cloned().collect();
        list.sort_unstable();
        list
    }

    /// Distinct client ids connected.
    pub(crate) fn client_count(&self) -> usize {
        let registry = self.read();
        registry.users.values().flatten().map(|m| m.client_id.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// Delivers items in order. Must be called by one task at a time, in sequence order.
    pub(crate) fn deliver(&self, items: Vec<Delivery>) {
        let registry = self.read();
        for item in items {
            match item {
                Delivery::Commit { change, reply } => {
                    // Advanced under the read lock, so registration cannot come between
                    // this and the pushes: a session registering after this call sees the
                    // new position, one registered before it receives the pushes. And
                    // advanced before the answer is queued: a client holding the answer
                    // never reads an older position (`latest_sequence` of a full sync).
                    self.delivered.fetch_max(change.sequence, Ordering::AcqRel);
                    let origin = reply.as_ref().map(|(link, _)| link.id);
                    let push = |member: &Member| {
                        if Some(member.link.id) == origin || !member.syncs(&change.collection) {
                            return;
                        }
                        member.link.offer(Outbound::frame(change.push.clone(), Some(change.sequence), false));
                        if let Some(conflict) = &change.conflict {
                            member.link.offer(Outbound::frame(conflict.clone(), None, false));
                        }
                    };
                    if let Some(members) = registry.users.get(&change.user_id) {
                        members.iter().for_each(push);
                    }
                    for reader in registry.readers_of_others.iter().filter(|r| **r != change.user_id) {
                        let Some(members) = registry.users.get(reader) else { continue };
                        members
                            .iter()
                            .filter(|m| m.view.may_read(&change.user_id, &change.collection, &change.document_id))
                            .for_each(push);
                    }
                    if let Some((link, frame)) = reply {
                        link.offer(Outbound::frame(frame, Some(change.sequence), true));
                    }
                }
                Delivery::Reply { to, frame, sequence } => {
                    to.offer(Outbound::frame(frame, sequence, true));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, client: &str) -> Identity {
        Identity { user_id: user.into(), client_id: client.into(), collections: None }
    }

    fn link(id: u64, capacity: usize) -> (SessionLink, queue::Receiver<Outbound>) {
        let (tx, rx) = queue::channel(capacity);
        (SessionLink { id, tx, kill: CancellationToken::new() }, rx)
    }

    fn commit(sequence: u64, user: &str, reply: Option<(SessionLink, Bytes)>) -> Delivery {
        Delivery::Commit {
            change: Arc::new(Committed {
                sequence,
                user_id: user.into(),
                collection: "tasks".into(),
                document_id: format!("d{sequence}"),
                push: Bytes::from(format!("push{sequence}")),
                conflict: None,
            }),
            reply,
        }
    }

    #[test]
    fn pushes_go_to_the_users_other_sessions_and_the_reply_to_the_sender() {
        let hub = Arc::new(Hub::new(0, Acl::default()));
        let (a, mut ra) = link(1, 8);
        let (b, mut rb) = link(2, 8);
        let (c, mut rc) = link(3, 8);
        let _ga = hub.register(&identity("u1", "ca"), a.clone()).0;
        let _gb = hub.register(&identity("u1", "cb"), b).0;
        let _gc = hub.register(&identity("u2", "cc"), c).0;
        hub.deliver(vec![commit(5, "u1", Some((a, Bytes::from("reply5"))))]);
        assert_eq!(ra.try_recv().unwrap().frame, "reply5");
        assert!(ra.try_recv().is_none(), "the sender gets no push");
        assert_eq!(rb.try_recv().unwrap().frame, "push5");
        assert!(rc.try_recv().is_none(), "another user's session sees nothing");
        assert_eq!(hub.delivered(), 5);
        assert_eq!(hub.session_count(), 3);
        assert_eq!(hub.active_users(), vec!["u1".to_owned(), "u2".to_owned()]);
    }

    fn rules(value: serde_json::Value) -> Acl {
        Acl::from_json(&value).unwrap()
    }

    fn frames(rx: &mut queue::Receiver<Outbound>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(
                |o| {
                    if o.access.is_some() {
                        "access".to_owned()
                    } else {
                        String::from_utf8_lossy(&o.frame).into_owned()
                    }
                },
            )
            .collect()
    }

    #[test]
    fn readers_of_others_get_the_changes_the_rules_let_them_read_and_no_more() {
        let acl = rules(serde_json::json!([
            {"user": "bob", "item": "doc:tasks/d2", "action": "read", "allow": false},
            {"user": "bob", "item": "doc:tasks/*", "action": "read", "allow": true},
        ]));
        let hub = Arc::new(Hub::new(0, acl));
        let (a, mut ra) = link(1, 8);
        let (b, mut rb) = link(2, 8);
        let (c, mut rc) = link(3, 8);
        let _ga = hub.register(&identity("alice", "ca"), a.clone()).0;
        let _gb = hub.register(&identity("bob", "cb"), b).0;
        let _gc = hub.register(&identity("carol", "cc"), c).0;
        // d1 is readable by bob; d2 is denied before the allow.
        hub.deliver(vec![commit(1, "alice", Some((a.clone(), Bytes::from("reply1")))), commit(2, "alice", None)]);
        assert_eq!(frames(&mut ra), ["reply1", "push2"], "the owner's session gets its answer, then its other change");
        assert_eq!(frames(&mut rb), ["push1"], "bob reads d1, not d2");
        assert!(frames(&mut rc).is_empty(), "carol has no rule");
    }

    #[test]
    fn a_change_of_rules_marks_the_sessions_whose_view_changed() {
        let hub = Arc::new(Hub::new(0, Acl::default()));
        let (a, mut ra) = link(1, 8);
        let (b, mut rb) = link(2, 8);
        let _ga = hub.register(&identity("alice", "ca"), a).0;
        let (_gb, before) = hub.register(&identity("bob", "cb"), b);
        assert!(before.is_owner_only());
        hub.deliver(vec![commit(1, "alice", None)]);
        let changed =
            hub.set_acl(rules(serde_json::json!([{"user": "bob", "item": "*", "action": "read", "allow": true}])));
        assert_eq!(changed, 1, "only bob's view changed");
        hub.deliver(vec![commit(2, "alice", None)]);
        assert_eq!(frames(&mut rb), ["access", "push2"], "the marker sits where the rules changed");
        assert_eq!(frames(&mut ra), ["push1", "push2"], "alice's view did not change: no marker");
        assert_eq!(
            hub.set_acl(rules(serde_json::json!([{"user": "bob", "item": "*", "action": "read", "allow": true}]))),
            0
        );
        assert_eq!(hub.set_acl(Acl::default()), 1);
        hub.deliver(vec![commit(3, "alice", None)]);
        assert_eq!(frames(&mut rb), ["access"], "after revocation nothing more reaches bob");
    }

    #[test]
    fn a_partial_sync_session_is_pushed_only_its_collections() {
        let hub = Arc::new(Hub::new(0, Acl::default()));
        let (a, mut ra) = link(1, 8);
        let (b, mut rb) = link(2, 8);
        let _ga = hub.register(&identity("u", "ca"), a).0;
        let notes = Identity { collections: Some(Arc::from(vec!["notes".to_owned()])), ..identity("u", "cb") };
        let _gb = hub.register(&notes, b).0;
        hub.deliver(vec![commit(1, "u", None)]);
        assert_eq!(frames(&mut ra), ["push1"]);
        assert!(frames(&mut rb).is_empty(), "the change is in tasks, the session syncs notes");
    }

    #[test]
    fn a_full_queue_disconnects_instead_of_waiting() {
        let hub = Arc::new(Hub::new(0, Acl::default()));
        let (a, _ra) = link(1, 1);
        let kill = a.kill.clone();
        let _g = hub.register(&identity("u", "c"), a).0;
        hub.deliver(vec![commit(1, "u", None), commit(2, "u", None)]);
        assert!(kill.is_cancelled());
    }

    #[test]
    fn dropping_the_registration_unregisters() {
        let hub = Arc::new(Hub::new(0, Acl::default()));
        let (a, _ra) = link(1, 1);
        let guard = hub.register(&identity("u", "c"), a).0;
        assert_eq!(hub.session_count(), 1);
        drop(guard);
        assert_eq!(hub.session_count(), 0);
        assert!(hub.active_users().is_empty());
    }
}
