//! Several `sync-server` processes on one PostgreSQL database (PROTOCOL.md §6): writers
//! on both processes commit concurrently — to their own documents and to one document
//! they all share — while a reader follows the log with `get_changes_since`. The reader
//! never sees a gap, a reordering or a change below its position that it missed; every
//! acknowledged change is in the log once, under the sequence it was acknowledged with;
//! and the shared document holds every acknowledged append exactly once.
//!
//! PostgreSQL only, by nature; skipped loudly without PostgreSQL.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Backend, Client, assert_ok, hmac_auth};
use serde_json::{Value, json};
use sync_testkit::{PgServer, ServerProcess};

/// Every client is this one user, so the reader's view is the whole log: a sequence it
/// skips, or sees out of order, is a gap or a reordering.
const EMAIL: &str = "cluster@example.com";
const SERVERS: usize = 2;
const WRITERS_PER_SERVER: usize = 5;
const CHANGES_PER_WRITER: usize = 60;
/// Every this many changes, a writer appends to the shared document instead of its own.
const SHARED_EVERY: usize = 4;

/// One acknowledged change.
#[derive(Clone, Debug)]
struct Acked {
    sequence: u64,
    document_id: String,
    revision: u64,
    value: String,
}

async fn connect(server: &ServerProcess) -> Client {
    let mut client = Client::connect(&server.ws_url()).await;
    client.send(hmac_auth(&server.api_key, &server.secret, EMAIL, None, None)).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    client
}

fn append(doc: &str, value: &str) -> Value {
    json!({"type": "update_document", "patch": {
        "document_id": doc,
        "patch": [{"op": "add", "path": "/list/-", "value": value}],
        "client_change_id": value,
    }})
}

/// Appends to its own document, and now and then to the shared one; returns the acks.
async fn writer(mut client: Client, name: String) -> Vec<Acked> {
    let own = format!("doc-{name}");
    let reply = client.create(&own, json!({"list": []})).await;
    assert_ok(&reply, "document_created_response");
    let mut acked = Vec::new();
    for n in 0..CHANGES_PER_WRITER {
        let doc = if n % SHARED_EVERY == SHARED_EVERY - 1 { "shared".to_owned() } else { own.clone() };
        let value = format!("{name}-{n}");
        let reply = client.request(append(&doc, &value)).await;
        assert_ok(&reply, "document_updated_response");
        acked.push(Acked {
            sequence: reply["sequence"].as_u64().expect("sequence"),
            document_id: doc,
            revision: reply["sync_revision"].as_u64().expect("revision"),
            value,
        });
    }
    acked
}

/// Follows the log page by page until `done` and caught up; checks every page as it
/// comes. Returns sequence → event.
async fn reader(mut client: Client, done: Arc<AtomicBool>) -> BTreeMap<u64, Value> {
    let mut seen = BTreeMap::new();
    let mut after = 0;
    loop {
        let finished = done.load(Ordering::Acquire);
        let page = client.request(json!({"type": "get_changes_since", "last_sequence": after, "limit": 5})).await;
        assert_eq!(page["type"], "changes", "{page}");
        let events = page["events"].as_array().expect("events");
        for event in events {
            let sequence = event["sequence"].as_u64().expect("sequence");
            assert_eq!(sequence, after + 1, "after {after} the reader got {sequence}: a gap or a reordering");
            after = sequence;
            seen.insert(sequence, event.clone());
        }
        // The reader sees every change, so a page that reached further than its last
        // event would have skipped a committed change it could read.
        assert_eq!(page["latest_sequence"], after, "the page reached past what it returned: {page}");
        if finished && page["has_more"] != true {
            return seen;
        }
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_database_commit_in_order_and_a_reader_misses_nothing() {
    if !Backend::Postgres.available() {
        return;
    }
    let url = PgServer::shared().expect("checked above").create_database().await.expect("database");
    let env = [("SYNC_RATE_LIMIT_PER_SECOND", "0"), ("SYNC_DB_POOL_SIZE", "6")];
    // Started one after the other: the second finds the schema migrated.
    let servers: Vec<ServerProcess> =
        (0..SERVERS).map(|_| ServerProcess::start(&url, None, &env).expect("server process")).collect();

    let mut setup = connect(&servers[0]).await;
    assert_ok(&setup.create("shared", json!({"list": []})).await, "document_created_response");

    let done = Arc::new(AtomicBool::new(false));
    // The reader asks the second process, which writes only half of the changes.
    let follower = tokio::spawn(reader(connect(&servers[1]).await, Arc::clone(&done)));
    let mut writers = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for w in 0..WRITERS_PER_SERVER {
            let client = connect(server).await;
            writers.push(tokio::spawn(writer(client, format!("s{s}w{w}"))));
        }
    }
    let mut acked = Vec::new();
    for task in writers {
        acked.extend(tokio::time::timeout(Duration::from_secs(120), task).await.expect("writer ends").expect("writer"));
    }
    done.store(true, Ordering::Release);
    let log = tokio::time::timeout(Duration::from_secs(60), follower).await.expect("reader ends").expect("reader");

    // The log is 1..=N and every acknowledged change is in it, where it was acknowledged.
    let newest = log.keys().next_back().copied().unwrap_or(0);
    assert!(log.keys().copied().eq(1..=newest), "the log is gap-free from 1");
    let mut sequences = HashSet::new();
    for change in &acked {
        assert!(sequences.insert(change.sequence), "sequence {} acknowledged twice", change.sequence);
        let event = log.get(&change.sequence).unwrap_or_else(|| panic!("acknowledged change missing: {change:?}"));
        assert_eq!(event["document_id"], change.document_id, "{change:?}: {event}");
        assert_eq!(event["sync_revision"], change.revision, "{change:?}: {event}");
        assert_eq!(event["client_change_id"], change.value, "{change:?}: {event}");
    }
    // Documents, creates and the writers' changes: nothing else was written.
    let creates = SERVERS * WRITERS_PER_SERVER + 1;
    assert_eq!(newest as usize, acked.len() + creates, "every change in the log was acknowledged");

    // Each document holds its acknowledged appends exactly once, in commit order.
    let mut client = connect(&servers[0]).await;
    let mut by_document: BTreeMap<&str, Vec<&Acked>> = BTreeMap::new();
    for change in &acked {
        by_document.entry(&change.document_id).or_default().push(change);
    }
    for (doc, mut changes) in by_document {
        changes.sort_by_key(|c| c.sequence);
        let expected: Vec<&str> = changes.iter().map(|c| c.value.as_str()).collect();
        let content = client.content(doc).await;
        let list: Vec<&str> = content["list"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
        assert_eq!(list, expected, "{doc}");
    }
}
