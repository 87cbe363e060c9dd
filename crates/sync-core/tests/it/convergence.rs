//! Convergence simulator: one server and N clients, in memory, seeded and deterministic.
//!
//! Clients edit documents (objects, arrays, nested paths, removals, moves, whole
//! documents created and deleted) while going offline and online; messages travel over
//! per-connection FIFO links with random delays, and a dropped connection loses what was
//! in flight in either direction (a change may still reach the server after its sender
//! lost the connection). The server rebases stale updates with `sync_core::transform`,
//! deduplicates by `client_change_id`, and pushes every commit to the other sessions;
//! clients run `sync_core::replica`, the same code the Rust client runs.
//!
//! After quiescence every replica must equal the server byte for byte (canonical JSON),
//! every edit to a path only its author touched must be there, and every concurrent
//! array insert must survive. A failure prints its seed; replay one with
//! `SIM_SEED=<seed> cargo test -p sync-core --test convergence -- --nocapture`.

use std::collections::{HashMap, VecDeque};

use crate::common::{Rng, random_patch, random_value};
use serde_json::{Map, Value, json};
use sync_core::canonical::canonical_json;
use sync_core::error::ErrorCode;
use sync_core::patch::{Patch, PatchOp, apply, apply_with_inverse};
use sync_core::pointer::JsonPointer;
use sync_core::replica::{Outcome, Outgoing, PendingChange, RemoteChange, Replica};
use sync_core::transform::{Policy, rebase};

#[derive(Clone, Debug)]
enum ToServer {
    Hello { cursors: Vec<u64> },
    Change { doc: usize, out: Outgoing },
}

#[derive(Clone, Debug)]
enum ToClient {
    Event { doc: usize, revision: u64, change: RemoteChange, change_id: Option<String> },
    Ack { doc: usize, change_id: String, result: AckResult },
}

struct LogEntry {
    change: RemoteChange,
    /// For updates: restores the pre-state.
    reverse: Option<Patch>,
    change_id: Option<String>,
}

#[derive(Default)]
struct ServerDoc {
    content: Value,
    deleted: bool,
    log: Vec<LogEntry>,
}

impl ServerDoc {
    fn revision(&self) -> u64 {
        self.log.len() as u64
    }
}

type AckResult = Result<(u64, Option<Patch>, Option<Value>), (ErrorCode, String)>;

struct Server {
    docs: Vec<ServerDoc>,
    policy: Policy,
    /// Results of committed changes by `client_change_id`.
    done: HashMap<String, (usize, AckResult)>,
    /// The live session of each client: its connection epoch.
    sessions: Vec<Option<u64>>,
}

struct Client {
    replicas: HashMap<usize, Replica>,
    epoch: u64,
    online: bool,
    /// Count and log entries of this client's own subtree in document 0.
    own_count: u64,
    own_log: Vec<String>,
    inserted: Vec<String>,
    counter: u64,
}

/// A message on a link, with the connection epoch it belongs to.
struct Envelope<T> {
    at: u64,
    epoch: u64,
    msg: T,
}

struct Sim {
    rng: Rng,
    seed: u64,
    now: u64,
    server: Server,
    clients: Vec<Client>,
    up: Vec<VecDeque<Envelope<ToServer>>>,
    down: Vec<VecDeque<Envelope<ToClient>>>,
    next_doc: usize,
}

impl Sim {
    fn new(seed: u64, clients: usize) -> Self {
        let mut rng = Rng(seed);
        let policy = if seed.is_multiple_of(2) { Policy::LastWriterWins } else { Policy::ServerWins };
        // Document 0 holds the invariants: each client's own subtree and an insert-only list.
        let mut own = Map::new();
        for c in 0..clients {
            own.insert(format!("c{c}"), json!({"count": 0, "log": []}));
        }
        let doc0 = json!({"own": own, "inserts": [], "shared": {"x": [1, 2, 3], "o": {"a": 1}}});
        let mut docs = vec![doc0];
        for _ in 0..2 {
            docs.push(json!({"list": [random_value(&mut rng, 1), random_value(&mut rng, 1)], "obj": {"a": {"b": 1}}}));
        }
        let server_docs = docs
            .iter()
            .map(|content| ServerDoc {
                content: content.clone(),
                deleted: false,
                log: vec![LogEntry { change: RemoteChange::Create(content.clone()), reverse: None, change_id: None }],
            })
            .collect();
        let clients_vec = (0..clients)
            .map(|_| Client {
                replicas: docs
                    .iter()
                    .enumerate()
                    .map(|(i, content)| (i, Replica::from_server(content.clone(), 1, false, policy)))
                    .collect(),
                epoch: 0,
                online: false,
                own_count: 0,
                own_log: Vec::new(),
                inserted: Vec::new(),
                counter: 0,
            })
            .collect();
        let mut sim = Sim {
            rng,
            seed,
            now: 0,
            server: Server { docs: server_docs, policy, done: HashMap::new(), sessions: vec![None; clients] },
            clients: clients_vec,
            up: (0..clients).map(|_| VecDeque::new()).collect(),
            down: (0..clients).map(|_| VecDeque::new()).collect(),
            next_doc: 3,
        };
        for c in 0..clients {
            if sim.rng.chance(70) {
                sim.connect(c);
            }
        }
        sim
    }

    fn fail(&self, msg: String) -> ! {
        panic!("seed {}: {msg}", self.seed)
    }

    fn delay(&mut self) -> u64 {
        1 + self.rng.below(6) as u64
    }

    fn send_up(&mut self, c: usize, msg: ToServer) {
        let at = self.now + self.delay();
        let at = self.up[c].back().map_or(at, |last| last.at.max(at));
        let epoch = self.clients[c].epoch;
        self.up[c].push_back(Envelope { at, epoch, msg });
    }

    fn send_down(&mut self, c: usize, msg: ToClient) {
        let Some(epoch) = self.server.sessions[c] else { return };
        let at = self.now + self.delay();
        let at = self.down[c].back().map_or(at, |last| last.at.max(at));
        self.down[c].push_back(Envelope { at, epoch, msg });
    }

    fn connect(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.epoch += 1;
        client.online = true;
        let cursors = (0..self.next_doc).map(|d| client.replicas.get(&d).map_or(0, Replica::revision)).collect();
        self.send_up(c, ToServer::Hello { cursors });
        let mut resends: Vec<(usize, Outgoing)> =
            self.clients[c].replicas.iter_mut().filter_map(|(&d, r)| r.resend().map(|o| (d, o))).collect();
        resends.sort_by_key(|(d, _)| *d);
        for (doc, out) in resends {
            self.send_up(c, ToServer::Change { doc, out });
        }
        self.pump(c);
    }

    fn disconnect(&mut self, c: usize) {
        self.clients[c].online = false;
        self.down[c].clear();
        // What was on its way up may or may not have reached the server.
        let keep: Vec<bool> = (0..self.up[c].len()).map(|_| self.rng.chance(50)).collect();
        let mut i = 0;
        self.up[c].retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.server.sessions[c] = None;
    }

    /// Sends whatever each replica has ready.
    fn pump(&mut self, c: usize) {
        if !self.clients[c].online {
            return;
        }
        let mut docs: Vec<usize> = self.clients[c].replicas.keys().copied().collect();
        docs.sort_unstable();
        for doc in docs {
            let out = self.clients[c].replicas.get_mut(&doc).and_then(Replica::next_to_send);
            if let Some(out) = out {
                self.send_up(c, ToServer::Change { doc, out });
            }
        }
    }

    fn local_edit(&mut self, c: usize) {
        let choice = self.rng.below(100);
        let client_count = self.clients.len();
        if choice < 20 {
            // Own subtree of document 0: only this client writes it.
            let view = self.clients[c].replicas[&0].view().unwrap_or_else(|| self.fail("doc 0 vanished".into()));
            let own = JsonPointer::from_tokens(["own".to_owned(), format!("c{c}")]);
            let count = own.child("count").get(&view).and_then(Value::as_u64).unwrap_or(0);
            let client = &mut self.clients[c];
            client.counter += 1;
            let token = format!("c{c}-{}", client.counter);
            client.own_count += 1;
            client.own_log.push(token.clone());
            let patch = vec![
                PatchOp::Replace { path: own.child("count"), value: json!(count + 1) },
                PatchOp::Add { path: own.child("log").child("-"), value: json!(token) },
            ];
            self.update(c, 0, patch);
        } else if choice < 35 {
            // The insert-only list of document 0.
            let view = self.clients[c].replicas[&0].view().unwrap_or_default();
            let len = view["inserts"].as_array().map_or(0, Vec::len);
            let client = &mut self.clients[c];
            client.counter += 1;
            let token = format!("i{c}-{}", client.counter);
            client.inserted.push(token.clone());
            let index = self.rng.below(len + 1);
            self.update(
                c,
                0,
                vec![PatchOp::Add {
                    path: JsonPointer::from_tokens(["inserts".to_owned(), index.to_string()]),
                    value: json!(token),
                }],
            );
        } else if choice < 50 {
            let view = self.clients[c].replicas[&0].view().unwrap_or_default();
            let patch = random_patch(&mut self.rng, &view, &JsonPointer::from_tokens(["shared"]));
            self.update(c, 0, patch);
        } else if choice < 53 {
            // A new document.
            let doc = self.next_doc;
            self.next_doc += 1;
            let content = json!({"title": format!("doc{doc}"), "list": [], "by": c});
            let policy = self.server.policy;
            self.clients[c]
                .replicas
                .insert(doc, Replica::created_locally(content, sync_core::replica::new_change_id(), policy));
            self.server.docs.push(ServerDoc::default());
            let _ = client_count;
            self.pump(c);
        } else {
            let mut docs: Vec<usize> = self.clients[c].replicas.keys().copied().filter(|&d| d != 0).collect();
            docs.sort_unstable();
            if docs.is_empty() {
                return;
            }
            let doc = docs[self.rng.below(docs.len())];
            let Some(view) = self.clients[c].replicas[&doc].view() else { return };
            if self.rng.chance(3) {
                if let Some(r) = self.clients[c].replicas.get_mut(&doc) {
                    r.local_delete(sync_core::replica::new_change_id());
                }
                self.pump(c);
                return;
            }
            let patch = random_patch(&mut self.rng, &view, &JsonPointer::root());
            self.update(c, doc, patch);
        }
    }

    fn update(&mut self, c: usize, doc: usize, patch: Patch) {
        if patch.is_empty() {
            return;
        }
        let replica = self.clients[c].replicas.get_mut(&doc).unwrap_or_else(|| panic!("no replica"));
        if let Err(err) = replica.local_update(patch.clone(), sync_core::replica::new_change_id()) {
            self.fail(format!("client {c}: local patch {patch:?} did not apply to its own view: {err}"));
        }
        self.pump(c);
    }

    fn server_receive(&mut self, c: usize, epoch: u64, msg: ToServer) {
        match msg {
            ToServer::Hello { cursors } => {
                if self.clients[c].epoch != epoch {
                    return;
                }
                self.server.sessions[c] = Some(epoch);
                for doc in 0..self.server.docs.len() {
                    let from = cursors.get(doc).copied().unwrap_or(0) as usize;
                    for (i, entry) in self.server.docs[doc].log.iter().enumerate().skip(from) {
                        let msg = ToClient::Event {
                            doc,
                            revision: i as u64 + 1,
                            change: entry.change.clone(),
                            change_id: entry.change_id.clone(),
                        };
                        let at = self.now + 1;
                        let at = self.down[c].back().map_or(at, |last| last.at.max(at));
                        self.down[c].push_back(Envelope { at, epoch, msg });
                    }
                }
            }
            ToServer::Change { doc, out } => {
                let live = self.server.sessions[c] == Some(epoch);
                if let Some((_, result)) = self.server.done.get(&out.change_id) {
                    let result = result.clone();
                    if live {
                        self.send_down(c, ToClient::Ack { doc, change_id: out.change_id, result });
                    }
                    return;
                }
                let result = self.commit(doc, &out);
                if std::env::var("SIM_TRACE").is_ok() && doc == 0 {
                    eprintln!(
                        "t={} server <- client {c} (live {live}) {:?}\n   => {:?}\n   own/c0 now {}",
                        self.now, out, result, self.server.docs[0].content["own"]["c0"]
                    );
                }
                if let Ok((revision, _, _)) = &result {
                    self.server.done.insert(out.change_id.clone(), (doc, result.clone()));
                    let entry = &self.server.docs[doc].log[*revision as usize - 1];
                    let event = ToClient::Event {
                        doc,
                        revision: *revision,
                        change: entry.change.clone(),
                        change_id: entry.change_id.clone(),
                    };
                    for other in 0..self.clients.len() {
                        if other != c || !live {
                            self.send_down(other, event.clone());
                        }
                    }
                }
                if live {
                    self.send_down(c, ToClient::Ack { doc, change_id: out.change_id, result });
                }
            }
        }
    }

    fn commit(&mut self, doc: usize, out: &Outgoing) -> AckResult {
        let policy = self.server.policy;
        let server_doc = &mut self.server.docs[doc];
        let change_id = Some(out.change_id.clone());
        match &out.change {
            PendingChange::Create { content } => {
                if server_doc.revision() > 0 {
                    return Err((ErrorCode::DocumentExists, "exists".into()));
                }
                server_doc.content = content.clone();
                server_doc.log.push(LogEntry {
                    change: RemoteChange::Create(content.clone()),
                    reverse: None,
                    change_id,
                });
                Ok((1, None, Some(content.clone())))
            }
            PendingChange::Delete { .. } => {
                if server_doc.deleted {
                    return Err((ErrorCode::DocumentDeleted, "deleted".into()));
                }
                server_doc.deleted = true;
                server_doc.log.push(LogEntry { change: RemoteChange::Delete, reverse: None, change_id });
                Ok((server_doc.revision(), None, None))
            }
            PendingChange::Update { patch, base_revision } => {
                if server_doc.deleted {
                    return Err((ErrorCode::DocumentDeleted, "deleted".into()));
                }
                let current = server_doc.revision();
                let base_revision = base_revision.unwrap_or(current);
                let (to_apply, transformed) = if base_revision == current {
                    (patch.clone(), false)
                } else {
                    // Rebuild the base state from reverse patches, as the real server does.
                    let mut base = server_doc.content.clone();
                    let mut committed = Vec::new();
                    for entry in server_doc.log[base_revision as usize..].iter().rev() {
                        match (&entry.change, &entry.reverse) {
                            (RemoteChange::Update(forward), Some(reverse)) => {
                                apply(&mut base, reverse).unwrap_or_else(|e| panic!("reverse patch failed: {e}"));
                                committed.splice(0..0, forward.iter().cloned());
                            }
                            _ => panic!("unexpected log entry between base and current"),
                        }
                    }
                    match rebase(&base, patch, &committed, policy) {
                        Ok(rebased) => (rebased.patch, true),
                        Err(err) => return Err((err.code(), err.to_string())),
                    }
                };
                let reverse = match apply_with_inverse(&mut server_doc.content, &to_apply) {
                    Ok(reverse) => reverse,
                    Err(err) => return Err((ErrorCode::VersionMismatch, err.to_string())),
                };
                server_doc.log.push(LogEntry {
                    change: RemoteChange::Update(to_apply.clone()),
                    reverse: Some(reverse),
                    change_id,
                });
                Ok((server_doc.revision(), transformed.then_some(to_apply), None))
            }
        }
    }

    fn client_receive(&mut self, c: usize, msg: ToClient) {
        let policy = self.server.policy;
        let outcome: Outcome = match msg {
            ToClient::Event { doc, revision, change, change_id } => {
                let replica = match self.clients[c].replicas.get_mut(&doc) {
                    Some(r) => r,
                    None => match &change {
                        RemoteChange::Create(content) => {
                            self.clients[c]
                                .replicas
                                .insert(doc, Replica::from_server(content.clone(), revision, false, policy));
                            return;
                        }
                        _ => self.fail(format!("client {c}: event for unknown doc {doc}")),
                    },
                };
                replica.on_remote(revision, change, change_id.as_deref())
            }
            ToClient::Ack { doc, change_id, result } => {
                let Some(replica) = self.clients[c].replicas.get_mut(&doc) else { return };
                match result {
                    Ok((revision, applied, content)) => replica.on_ack(&change_id, revision, applied, content),
                    Err((code, message)) => replica.on_reject(&change_id, code, &message),
                }
            }
        };
        if std::env::var("SIM_TRACE").is_ok() && (!outcome.rejected.is_empty() || !outcome.conflicts.is_empty()) {
            eprintln!("t={} client {c}: {outcome:?}", self.now);
        }
        if outcome.resync_needed {
            self.fail(format!("client {c} needed a resync"));
        }
        self.pump(c);
    }

    /// Delivers the earliest message due, if any. Returns whether one was delivered.
    fn deliver_one(&mut self, until: u64) -> bool {
        let mut best: Option<(u64, bool, usize)> = None;
        for c in 0..self.clients.len() {
            if let Some(m) = self.up[c].front()
                && m.at <= until
                && best.is_none_or(|b| m.at < b.0)
            {
                best = Some((m.at, true, c));
            }
            if let Some(m) = self.down[c].front()
                && m.at <= until
                && best.is_none_or(|b| m.at < b.0)
            {
                best = Some((m.at, false, c));
            }
        }
        let Some((_, up, c)) = best else { return false };
        if up {
            let Some(env) = self.up[c].pop_front() else { return false };
            self.server_receive(c, env.epoch, env.msg);
        } else {
            let Some(env) = self.down[c].pop_front() else { return false };
            if self.clients[c].online && env.epoch == self.clients[c].epoch {
                self.client_receive(c, env.msg);
            }
        }
        true
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.now += 1;
            for c in 0..self.clients.len() {
                let roll = self.rng.below(100);
                if roll < 6 {
                    if self.clients[c].online {
                        self.disconnect(c);
                    } else {
                        self.connect(c);
                    }
                } else if roll < 45 {
                    self.local_edit(c);
                }
            }
            while self.deliver_one(self.now) {}
        }
        // Quiescence: everyone online, no new edits, deliver until nothing moves.
        for c in 0..self.clients.len() {
            if !self.clients[c].online {
                self.connect(c);
            }
        }
        let mut rounds = 0;
        loop {
            self.now += 1;
            while self.deliver_one(self.now) {}
            let idle = self.up.iter().all(VecDeque::is_empty) && self.down.iter().all(VecDeque::is_empty);
            if idle {
                break;
            }
            rounds += 1;
            if rounds > 100_000 {
                self.fail("did not quiesce".into());
            }
        }
    }

    fn check(&self) {
        for (c, client) in self.clients.iter().enumerate() {
            for (doc, server_doc) in self.server.docs.iter().enumerate() {
                let replica = client.replicas.get(&doc);
                if server_doc.revision() == 0 {
                    // Created by a client whose create never reached the server: only its
                    // author may know it, with the create still pending.
                    if let Some(r) = replica
                        && !r.has_pending()
                    {
                        self.fail(format!("client {c} has doc {doc} the server never got, with nothing pending"));
                    }
                    continue;
                }
                let Some(replica) = replica else { self.fail(format!("client {c} never learned of doc {doc}")) };
                if replica.has_pending() {
                    self.fail(format!("client {c} still has pending changes on doc {doc}: {:?}", replica.pending));
                }
                let expected = (!server_doc.deleted).then(|| canonical_json(&server_doc.content));
                let got = replica.view().map(|v| canonical_json(&v));
                if got != expected {
                    self.fail(format!("client {c} doc {doc} diverged:\n  client {got:?}\n  server {expected:?}"));
                }
            }
            let own = &self.server.docs[0].content["own"][format!("c{c}")];
            if own["count"] != json!(client.own_count) {
                self.fail(format!("client {c}: own count {} != {} edits made", own["count"], client.own_count));
            }
            if own["log"] != json!(client.own_log) {
                self.fail(format!("client {c}: own log {} != {:?}", own["log"], client.own_log));
            }
        }
        let inserts: Vec<&str> = self.server.docs[0].content["inserts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut expected: Vec<&str> = self.clients.iter().flat_map(|c| c.inserted.iter().map(String::as_str)).collect();
        let mut got = inserts.clone();
        expected.sort_unstable();
        got.sort_unstable();
        if got != expected {
            self.fail(format!("concurrent inserts lost or duplicated: got {got:?}, expected {expected:?}"));
        }
    }
}

fn run_scenario(seed: u64) {
    let clients = 2 + (seed % 3) as usize;
    let mut sim = Sim::new(seed, clients);
    sim.run(40 + seed % 40);
    sim.check();
}

#[test]
fn replicas_converge_across_thousands_of_seeds() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED must be an integer");
        run_scenario(seed);
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    // Seeds are independent: spread them over the cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for seed in (t..seeds).step_by(threads as usize) {
                        if let Err(panic) = std::panic::catch_unwind(|| run_scenario(seed)) {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_default();
                            failures.push(format!("seed {seed} (replay with SIM_SEED={seed}): {msg}"));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    assert!(failures.is_empty(), "convergence failed for {} seed(s):\n{}", failures.len(), failures.join("\n"));
}
