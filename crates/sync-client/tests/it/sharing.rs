//! Sharing between users as an application sees it, against a real server process: an
//! admin changes the access rules with `PUT /acl` while two users' engines are connected;
//! the reader's local database gets the owner's documents (and their owner) without
//! reconnecting, edits them when allowed, loses them (and its unsent edits) when access
//! is revoked, and an engine limited to some collections never stores another one's
//! documents. Rules changed while an engine was stopped are applied when it resumes.
//!
//! The users sign in with an ordinary API key made for the test; the test kit's key (an
//! admin's) changes the rules. Application events recorded with `POST /events` keep a
//! connected replica's revision in step.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sync_client::{DocStatus, EventType, SyncEngine, SyncError, SyncEvent};
use sync_core::auth::user_id_for_email;
use sync_testkit::ServerProcess;

use crate::common;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// Longest wait for anything to arrive.
const WAIT: Duration = Duration::from_secs(15);

/// A private server, and an API key that is not an admin's for the users.
pub(crate) struct Sharing {
    pub(crate) server: ServerProcess,
    /// The users' API key and its secret.
    pub(crate) key: String,
    pub(crate) secret: String,
    dir: tempfile::TempDir,
}

impl Sharing {
    pub(crate) fn start() -> anyhow::Result<Sharing> {
        let mut server = ServerProcess::prepare_sqlite(&[])?;
        let output = Command::new(sync_testkit::server_binary()?)
            .args(["generate-credentials", "--name", "users"])
            .env("DATABASE_URL", &server.database_url)
            .env("SYNC_SECRET_KEY", sync_testkit::server::SECRET_KEY)
            .env("SYNC_BOOTSTRAP_CREDENTIALS", "false")
            .output()
            .context("running generate-credentials")?;
        if !output.status.success() {
            bail!("generate-credentials failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |label: &str| {
            text.lines().find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_owned())).context("credential output")
        };
        let (key, secret) = (field("API Key:")?, field("Secret:")?);
        server.spawn()?;
        Ok(Sharing { server, key, secret, dir: tempfile::tempdir()? })
    }

    /// An engine of `email` on its own local database `name`, syncing `collections`
    /// (every collection when `None`).
    pub(crate) fn engine(&self, name: &str, email: &str, collections: Option<&[&str]>) -> SyncEngine {
        self.engine_at(&self.server.ws_url(), name, email, collections)
    }

    fn engine_at(&self, url: &str, name: &str, email: &str, collections: Option<&[&str]>) -> SyncEngine {
        let mut config = common::config(url, &self.key, &self.secret, self.dir.path(), name, email);
        config.collections = collections.map(|names| names.iter().map(|n| (*n).to_owned()).collect());
        SyncEngine::with_config(config).expect("engine")
    }

    /// Replaces the rules with `PUT /acl`, signed with the admin key; returns the status.
    pub(crate) fn put_acl(&self, rules: Value) -> anyhow::Result<u16> {
        let body = json!({ "rules": rules }).to_string();
        let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
        let email = "admin@example.com";
        let (key, secret) = (&self.server.api_key, &self.server.secret);
        let signature = sync_core::auth::sign(secret, timestamp, email, key, body.as_bytes());
        let mut stream = std::net::TcpStream::connect(&self.server.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "PUT /acl HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             X-Api-Key: {key}\r\nX-Email: {email}\r\nX-Timestamp: {timestamp}\r\nX-Signature: {signature}\r\n\
             Connection: close\r\n\r\n{body}",
            self.server.addr,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad HTTP response")
    }
}

impl Sharing {
    /// `POST /events` as `email` with the users' key; returns the status and the body.
    fn post_events(&self, email: &str, events: &Value) -> anyhow::Result<(u16, Value)> {
        common::post_events(&self.server.addr, &self.key, &self.secret, email, events)
    }
}

pub(crate) fn rule(user: &str, item: &str, action: &str) -> Value {
    json!({"user": user, "item": item, "action": action, "allow": true})
}

/// Every event of an engine from now on.
#[derive(Clone)]
struct Recorder(Arc<Mutex<Vec<SyncEvent>>>);

impl Recorder {
    fn start(engine: &SyncEngine) -> Recorder {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let mut stream = engine.events();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                sink.lock().unwrap().push(event);
            }
        });
        Recorder(events)
    }

    fn of(&self, event_type: EventType, id: &str) -> Vec<SyncEvent> {
        let events = self.0.lock().unwrap();
        events.iter().filter(|e| e.event_type == event_type && e.document_id.as_deref() == Some(id)).cloned().collect()
    }

    fn count(&self, event_type: EventType) -> usize {
        self.0.lock().unwrap().iter().filter(|e| e.event_type == event_type).count()
    }

    fn all(&self) -> Vec<SyncEvent> {
        self.0.lock().unwrap().clone()
    }
}

async fn has(engine: &SyncEngine, id: &str, check: impl Fn(&Value) -> bool) -> bool {
    engine.get_document(id).await.is_ok_and(|d| check(&d.content))
}

async fn ids(engine: &SyncEngine) -> BTreeSet<String> {
    engine.list_documents(None).await.expect("list").into_iter().map(|d| d.id).collect()
}

/// A grant reaches a connected reader without reconnecting: the owner's document arrives
/// with its owner named and a `DocumentShared` event, then every later change of it;
/// documents the rules do not cover never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_reader_gets_the_document_then_its_changes_without_reconnecting() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let alice = s.engine("alice", ALICE, None);
    let bob = s.engine("bob", BOB, None);
    let bob_events = Recorder::start(&bob);
    alice.wait_for_sync(WAIT).await?;
    bob.wait_for_sync(WAIT).await?;
    let list = alice.create_document_in("team", json!({"title": "Groceries", "items": ["milk"]})).await?;
    let diary = alice.create_document_in("private", json!({"title": "Diary"})).await?;
    alice.wait_for_sync(WAIT).await?;
    bob.wait_for_sync(WAIT).await?;
    assert!(matches!(bob.get_document(&list.id).await, Err(SyncError::NotFound(_))), "not shared yet");

    assert_eq!(s.put_acl(json!([rule(&user_id_for_email(BOB), "doc:team/*", "read")]))?, 204);
    common::eventually(WAIT, "bob has the shared list", || has(&bob, &list.id, |_| true)).await;
    let shared = bob.get_document(&list.id).await?;
    assert_eq!(shared.content, json!({"title": "Groceries", "items": ["milk"]}));
    assert_eq!(shared.collection, "team");
    assert_eq!(shared.status, DocStatus::Synced);
    assert_eq!(shared.owner, Some(user_id_for_email(ALICE)), "the owner is alice, not bob");
    assert_eq!(bob.user_id(), Some(user_id_for_email(BOB)));
    assert_eq!(alice.get_document(&list.id).await?.owner, alice.user_id(), "alice's own document");
    common::eventually(WAIT, "the document_shared event", || async {
        bob_events.of(EventType::DocumentShared, &list.id).iter().any(|e| {
            e.title.as_deref() == Some("Groceries") && e.content.as_deref().is_some_and(|c| c.contains("milk"))
        })
    })
    .await;

    // The owner's later change arrives live.
    alice.update_document(&list.id, json!({"items": ["milk", "eggs"]})).await?;
    common::eventually(WAIT, "bob sees alice's change", || {
        has(&bob, &list.id, |c| c["items"] == json!(["milk", "eggs"]))
    })
    .await;
    assert!(matches!(bob.get_document(&diary.id).await, Err(SyncError::NotFound(_))), "the rule covers team only");
    assert_eq!(bob.count_documents().await?, 1);
    assert_eq!(bob_events.count(EventType::ConnectionLost), 0, "no reconnect was needed");
    Ok(())
}

/// With update rights the reader edits the owner's document: an owner's change right
/// after the grant reaches the reader (even one the reader gets before the document
/// itself, which is then fetched whole), then both edit at once and converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_writer_edits_and_both_converge() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let alice = s.engine("alice", ALICE, None);
    let bob = s.engine("bob", BOB, None);
    let bob_events = Recorder::start(&bob);
    alice.wait_for_sync(WAIT).await?;
    bob.wait_for_sync(WAIT).await?;
    let plan = alice.create_document_in("team", json!({"title": "Plan", "a": 1, "b": 1})).await?;
    alice.wait_for_sync(WAIT).await?;

    let bob_id = user_id_for_email(BOB);
    assert_eq!(s.put_acl(json!([rule(&bob_id, "doc:team/*", "read"), rule(&bob_id, "doc:team/*", "update")]))?, 204);
    alice.update_document(&plan.id, json!({"a": 2})).await?;
    common::eventually(WAIT, "bob has the plan with alice's change", || has(&bob, &plan.id, |c| c["a"] == 2)).await;
    assert_eq!(bob.get_document(&plan.id).await?.owner, Some(user_id_for_email(ALICE)));

    // Concurrent edits of different fields both survive, on both sides.
    alice.update_document(&plan.id, json!({"a": 3})).await?;
    bob.update_document(&plan.id, json!({"b": 4})).await?;
    alice.wait_for_sync(WAIT).await?;
    bob.wait_for_sync(WAIT).await?;
    let expected = json!({"title": "Plan", "a": 3, "b": 4});
    common::eventually(WAIT, "both replicas equal", || async {
        let (a, b) = (alice.get_document(&plan.id).await, bob.get_document(&plan.id).await);
        matches!((a, b), (Ok(a), Ok(b)) if a.content == expected && b.content == expected && a.pending + b.pending == 0)
    })
    .await;
    // Every event bob's application got about the plan shows it: none describes a
    // document not stored yet.
    for event in bob_events.all().iter().filter(|e| e.document_id.as_deref() == Some(plan.id.as_str())) {
        if matches!(
            event.event_type,
            EventType::DocumentCreated | EventType::DocumentUpdated | EventType::DocumentShared
        ) {
            assert!(event.content.is_some() && event.title.as_deref() == Some("Plan"), "{event:?}");
        }
    }
    Ok(())
}

/// Revoking access removes the reader's copy and the edit it had not sent yet (held in
/// a proxy when the rules change), tells the application, and the edit never reaches
/// the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_access_drops_the_copy_and_its_unsent_edit() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let proxy = HoldingProxy::start(&s.server.addr).await?;
    let alice = s.engine("alice", ALICE, None);
    let bob = s.engine_at(&format!("ws://{}/ws", proxy.addr), "bob", BOB, None);
    let bob_events = Recorder::start(&bob);
    alice.wait_for_sync(WAIT).await?;
    bob.wait_for_sync(WAIT).await?;
    let list = alice.create_document_in("team", json!({"title": "Chores", "n": 1})).await?;
    alice.wait_for_sync(WAIT).await?;
    assert_eq!(s.put_acl(json!([rule(&user_id_for_email(BOB), "doc:team/*", "*")]))?, 204);
    common::eventually(WAIT, "bob has the list", || has(&bob, &list.id, |c| c["n"] == 1)).await;

    // Bob's edit leaves the engine but is held on its way to the server.
    proxy.hold(true);
    bob.update_document(&list.id, json!({"note": "from bob"})).await?;
    assert_eq!(bob.pending_count()?, 1);
    assert_eq!(s.put_acl(json!([]))?, 204);
    common::eventually(WAIT, "bob's copy and its pending edit gone", || async {
        matches!(bob.get_document(&list.id).await, Err(SyncError::NotFound(_))) && bob.pending_count().unwrap() == 0
    })
    .await;
    let revoked = bob_events.of(EventType::AccessRevoked, &list.id);
    assert_eq!(revoked.len(), 1, "{:?}", bob_events.all());
    assert_eq!(revoked[0].title.as_deref(), Some("Chores"));
    assert_eq!(revoked[0].numeric_data, 1, "one unsent change dropped");
    assert_eq!(bob.list_documents(None).await?.len(), 0);

    // Let the held edit through: the server refuses it, and nothing is sent again.
    proxy.hold(false);
    let own = bob.create_document_in("team", json!({"title": "bob's own"})).await?;
    bob.wait_for_sync(WAIT).await?;
    assert_eq!(bob.get_document(&own.id).await?.pending, 0, "bob's own document syncs");
    assert!(matches!(bob.get_document(&list.id).await, Err(SyncError::NotFound(_))), "not brought back");
    alice.update_document(&list.id, json!({"n": 2})).await?;
    alice.wait_for_sync(WAIT).await?;
    assert_eq!(alice.get_document(&list.id).await?.content, json!({"title": "Chores", "n": 2}));
    Ok(())
}

/// The rules changed while the reader's engine was stopped: when it starts again, the
/// copy it may no longer read is dropped (and the application told), and a document
/// shared meanwhile arrives, although all its changes are older than the engine's cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_changed_while_offline_is_applied_on_resume() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let alice = s.engine("alice", ALICE, None);
    alice.wait_for_sync(WAIT).await?;
    let list = alice.create_document_in("team", json!({"title": "Chores"})).await?;
    let plan = alice.create_document_in("plans", json!({"title": "Plan"})).await?;
    alice.wait_for_sync(WAIT).await?;
    let bob_id = user_id_for_email(BOB);
    assert_eq!(s.put_acl(json!([rule(&bob_id, "doc:team/*", "read")]))?, 204);
    let bob = s.engine("bob", BOB, None);
    bob.wait_for_sync(WAIT).await?;
    common::eventually(WAIT, "bob has the list", || has(&bob, &list.id, |c| c["title"] == "Chores")).await;
    assert!(matches!(bob.get_document(&plan.id).await, Err(SyncError::NotFound(_))));
    bob.shutdown().await?;

    // Offline: the team is no longer shared, the plans are.
    assert_eq!(s.put_acl(json!([rule(&bob_id, "doc:plans/*", "read")]))?, 204);
    let bob = s.engine("bob", BOB, None);
    let bob_events = Recorder::start(&bob);
    common::eventually(WAIT, "bob has the plan and not the list", || async {
        has(&bob, &plan.id, |c| c["title"] == "Plan").await
            && matches!(bob.get_document(&list.id).await, Err(SyncError::NotFound(_)))
    })
    .await;
    let expected: BTreeSet<String> = [plan.id.clone()].into_iter().collect();
    assert_eq!(ids(&bob).await, expected);
    assert_eq!(bob.get_document(&plan.id).await?.owner, Some(user_id_for_email(ALICE)));
    common::eventually(WAIT, "the application is told", || async {
        bob_events.of(EventType::AccessRevoked, &list.id).len() == 1
            && bob_events.of(EventType::DocumentShared, &plan.id).len() == 1
    })
    .await;
    Ok(())
}

/// The rules changed more often while the engine was stopped than the server's history
/// of rules keeps: the server cannot name what was revoked and asks the engine to
/// reconcile; the engine's full sync drops the copy no longer shared (and tells the
/// application), and keeps its user's own documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_rules_history_is_reconciled_with_a_full_sync() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let alice = s.engine("alice", ALICE, None);
    alice.wait_for_sync(WAIT).await?;
    let list = alice.create_document_in("team", json!({"title": "Chores"})).await?;
    alice.wait_for_sync(WAIT).await?;
    let bob_id = user_id_for_email(BOB);
    assert_eq!(s.put_acl(json!([rule(&bob_id, "doc:team/*", "read")]))?, 204);
    let bob = s.engine("bob", BOB, None);
    common::eventually(WAIT, "bob has the list", || has(&bob, &list.id, |c| c["title"] == "Chores")).await;
    let mine = bob.create_document_in("team", json!({"title": "Mine"})).await?;
    bob.wait_for_sync(WAIT).await?;
    bob.shutdown().await?;

    // More lists than the history keeps (100), none sharing the team: the one that
    // shared it is gone from the history.
    for _ in 0..=100 {
        assert_eq!(s.put_acl(json!([]))?, 204);
    }
    let bob = s.engine("bob", BOB, None);
    let bob_events = Recorder::start(&bob);
    common::eventually(WAIT, "bob's copy of the list goes", || async {
        matches!(bob.get_document(&list.id).await, Err(SyncError::NotFound(_)))
    })
    .await;
    let expected: BTreeSet<String> = [mine.id.clone()].into_iter().collect();
    assert_eq!(ids(&bob).await, expected, "bob's own document stays");
    common::eventually(WAIT, "the application is told", || async {
        bob_events.of(EventType::AccessRevoked, &list.id).len() == 1
    })
    .await;
    Ok(())
}

/// An engine limited to the `team` collection stores the team documents, its user's own
/// and those shared with it, as they are made, and never a document of another
/// collection; widening the list later brings the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_sync_stores_only_the_named_collections_live() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    assert_eq!(s.put_acl(json!([rule(&user_id_for_email(BOB), "doc:*", "read")]))?, 204);
    let alice = s.engine("alice", ALICE, None);
    let bob_team = s.engine("bob-team", BOB, Some(&["team"]));
    let bob_all = s.engine("bob-all", BOB, None);
    for engine in [&alice, &bob_team, &bob_all] {
        engine.wait_for_sync(WAIT).await?;
    }
    let alice_team = alice.create_document_in("team", json!({"title": "alice team"})).await?;
    let alice_notes = alice.create_document_in("notes", json!({"title": "alice notes"})).await?;
    let bob_team_doc = bob_all.create_document_in("team", json!({"title": "bob team"})).await?;
    let bob_notes = bob_all.create_document_in("notes", json!({"title": "bob notes"})).await?;
    // Every document reaches the engine that syncs everything.
    let all: BTreeSet<String> =
        [&alice_team.id, &alice_notes.id, &bob_team_doc.id, &bob_notes.id].into_iter().cloned().collect();
    common::eventually(WAIT, "bob's full engine has all four", || async { ids(&bob_all).await == all }).await;
    // Changes of the notes documents, then one of a team document as a marker.
    alice.update_document(&alice_notes.id, json!({"n": 1})).await?;
    bob_all.update_document(&bob_notes.id, json!({"n": 1})).await?;
    bob_all.wait_for_sync(WAIT).await?;
    alice.wait_for_sync(WAIT).await?;
    alice.update_document(&alice_team.id, json!({"n": 1})).await?;
    common::eventually(WAIT, "the team engine sees the marker", || has(&bob_team, &alice_team.id, |c| c["n"] == 1))
        .await;
    let team: BTreeSet<String> = [&alice_team.id, &bob_team_doc.id].into_iter().cloned().collect();
    assert_eq!(ids(&bob_team).await, team, "only team documents, own and shared");
    assert_eq!(bob_team.get_document(&alice_team.id).await?.owner, Some(user_id_for_email(ALICE)));

    // Widened to every collection, the same database catches up with the rest.
    bob_team.shutdown().await?;
    let widened = s.engine("bob-team", BOB, None);
    common::eventually(WAIT, "bob's own notes arrive once widened", || has(&widened, &bob_notes.id, |c| c["n"] == 1))
        .await;
    Ok(())
}

/// An engine limited to the `team` collection that starts after the documents exist
/// catches up with the team documents, its user's own and those shared with it, and with
/// nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_sync_catches_up_with_own_and_shared_documents_of_the_named_collections() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    assert_eq!(s.put_acl(json!([rule(&user_id_for_email(BOB), "doc:*", "read")]))?, 204);
    let alice = s.engine("alice", ALICE, None);
    let bob_all = s.engine("bob-all", BOB, None);
    let alice_team = alice.create_document_in("team", json!({"title": "alice team"})).await?;
    alice.create_document_in("notes", json!({"title": "alice notes"})).await?;
    let bob_team_doc = bob_all.create_document_in("team", json!({"title": "bob team"})).await?;
    bob_all.create_document_in("notes", json!({"title": "bob notes"})).await?;
    alice.wait_for_sync(WAIT).await?;
    bob_all.wait_for_sync(WAIT).await?;

    let bob_team = s.engine("bob-team", BOB, Some(&["team"]));
    bob_team.wait_for_sync(WAIT).await?;
    let team: BTreeSet<String> = [&alice_team.id, &bob_team_doc.id].into_iter().cloned().collect();
    assert_eq!(ids(&bob_team).await, team, "own and shared team documents, nothing else");
    Ok(())
}

/// A TCP proxy whose client-to-server direction can be held: bytes a client sends wait
/// in the proxy (the client believes them sent) until released, while the server's
/// messages still reach the client.
struct HoldingProxy {
    addr: std::net::SocketAddr,
    held: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HoldingProxy {
    async fn start(target: &str) -> anyhow::Result<HoldingProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (held, watch) = tokio::sync::watch::channel(false);
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, watch) = (target.clone(), watch.clone());
                connections.spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let upstream = async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut watch = watch;
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_client.read(&mut buffer).await?;
                            if n == 0 {
                                return to_server.shutdown().await;
                            }
                            // Wait while held; a dropped sender means the test is over.
                            if watch.wait_for(|held| !held).await.is_err() {
                                return Ok(());
                            }
                            to_server.write_all(&buffer[..n]).await?;
                        }
                    };
                    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
                    let _: (std::io::Result<()>, std::io::Result<u64>) = tokio::join!(upstream, downstream);
                });
            }
        });
        Ok(HoldingProxy { addr, held, task })
    }

    fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An application event (`POST /events`) moves a document's revision without changing
/// its content: a connected replica follows it and tells the application (the action,
/// the payload, who recorded it), a replica catching up later is told too, and the next
/// edit is no stale change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_events_keep_a_replica_in_step() -> anyhow::Result<()> {
    let s = Sharing::start()?;
    let alice = s.engine("alice", ALICE, None);
    let alice_events = Recorder::start(&alice);
    alice.wait_for_sync(WAIT).await?;
    let chore = alice.create_document_in("chores", json!({"title": "Bins", "done": false})).await?;
    alice.wait_for_sync(WAIT).await?;
    let (status, reply) = s.post_events(
        ALICE,
        &json!([{"uuid": "ev-1", "itemUuid": chore.id, "action": "rated", "payload": {"stars": 5}}]),
    )?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"][0]["status"], "applied", "{reply}");
    common::eventually(WAIT, "alice's replica is at revision 2", || async {
        alice.get_document(&chore.id).await.is_ok_and(|d| d.revision == 2)
    })
    .await;
    assert_eq!(alice.get_document(&chore.id).await?.content, json!({"title": "Bins", "done": false}));
    let check = |events: &Recorder, who: &str| {
        let rated = events.of(EventType::ApplicationEvent, &chore.id);
        assert_eq!(rated.len(), 1, "{who}: {:?}", events.all());
        assert_eq!(rated[0].action.as_deref(), Some("rated"), "{who}");
        assert_eq!(rated[0].content.as_deref(), Some(r#"{"stars":5}"#), "{who}");
        assert_eq!(rated[0].author, Some(user_id_for_email(ALICE)), "{who}");
        assert_eq!((rated[0].numeric_data, rated[0].title.as_deref()), (2, Some("Bins")), "{who}");
        assert!(events.of(EventType::DocumentUpdated, &chore.id).is_empty(), "{who}: no update: {:?}", events.all());
    };
    common::eventually(WAIT, "alice is told", || async {
        !alice_events.of(EventType::ApplicationEvent, &chore.id).is_empty()
    })
    .await;
    check(&alice_events, "live");
    // Another replica of alice's, catching up from nothing, is told too.
    let laptop = s.engine("alice-laptop", ALICE, None);
    let laptop_events = Recorder::start(&laptop);
    laptop.wait_for_sync(WAIT).await?;
    common::eventually(WAIT, "the laptop is told", || async {
        !laptop_events.of(EventType::ApplicationEvent, &chore.id).is_empty()
    })
    .await;
    assert_eq!(laptop.get_document(&chore.id).await?.revision, 2);
    let created = laptop_events.of(EventType::DocumentCreated, &chore.id);
    assert_eq!(created.len(), 1, "{:?}", laptop_events.all());
    check(&laptop_events, "catch-up");
    alice.update_document(&chore.id, json!({"done": true})).await?;
    alice.wait_for_sync(WAIT).await?;
    let doc = alice.get_document(&chore.id).await?;
    assert_eq!((doc.revision, doc.pending), (3, 0));
    assert_eq!(doc.content, json!({"title": "Bins", "done": true}));
    Ok(())
}
