//! PostgreSQL restarted under load: while the database is gone the server answers the
//! changes it cannot commit with `server_error` (never with success) and `/ready` turns
//! 503; when the database is back the server recovers by itself, without a restart.
//! Every acknowledged change survives, and retrying the refused ones with their
//! `client_change_id` applies each exactly once.
//!
//! PostgreSQL only, by nature (it stops the database server); skipped loudly without it.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Client, TestServer, assert_ok, error_code};
use serde_json::{Value, json};
use sync_testkit::{PgServer, PgSettings};

const EMAIL: &str = "outage@example.com";
const WRITERS: usize = 4;

fn append(doc: &str, value: &str) -> Value {
    json!({"type": "update_document", "patch": {
        "document_id": doc,
        "patch": [{"op": "add", "path": "/list/-", "value": value}],
        "client_change_id": value,
    }})
}

/// What one writer sent, in order, and what became of each.
#[derive(Default)]
struct Outcomes {
    /// (value, sequence) of each acknowledged change.
    acked: Vec<(String, u64)>,
    /// Values answered with `server_error`: not applied, or applied without an answer.
    refused: Vec<String>,
}

/// Appends to its own document until `stop`; counts acknowledgements and refusals.
async fn writer(
    mut client: Client,
    doc: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    refusals: Arc<AtomicUsize>,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let value = format!("{doc}-{n}");
        // While the database is down an answer takes as long as the store waits for a
        // connection, once for the batch's reads and once for its commit.
        let reply = client.try_request(append(&doc, &value), Duration::from_secs(30)).await.expect("an answer");
        if reply["success"] == true {
            outcomes.acked.push((value, reply["sequence"].as_u64().expect("sequence")));
            acks.fetch_add(1, Ordering::Relaxed);
        } else {
            // The only acceptable refusal of a valid change is "could not store it".
            assert_eq!(error_code(&reply), "server_error", "{reply}");
            assert!(reply.get("sequence").is_none_or(Value::is_null), "a refusal carries no sequence: {reply}");
            outcomes.refused.push(value);
            refusals.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    outcomes
}

/// Waits until `/ready` answers `status`.
async fn ready_becomes(server: &TestServer, status: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ready = server.http_get("/ready").await;
        if ready.status == status {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "/ready stayed {} (wanted {status})", ready.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `counter` reaches `target`.
async fn reaches(counter: &AtomicUsize, target: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::Relaxed) < target {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} of {target}", counter.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_nothing_acknowledged_and_the_server_recovers() {
    let Some(database) = PgServer::private_or_skip(PgSettings::default()) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config(dir.path());
    config.database.url = database.create_database().await.expect("database");
    config.rate_limit.per_second = 0;
    let server = TestServer::start_in(dir, config).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (acks, refusals) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.client(EMAIL).await;
        let doc = format!("w{w}");
        assert_ok(&client.create(&doc, json!({"list": []})).await, "document_created_response");
        let task = writer(client, doc.clone(), Arc::clone(&stop), Arc::clone(&acks), Arc::clone(&refusals));
        tasks.push((doc, tokio::spawn(task)));
    }
    reaches(&acks, 100, "acknowledgements before the outage").await;

    // The database goes away the hard way: no checkpoint, sessions cut.
    database.stop_immediately().expect("stop PostgreSQL");
    ready_becomes(&server, 503, Duration::from_secs(15)).await;
    reaches(&refusals, WRITERS, "refusals during the outage").await;
    let acked_during = acks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(acks.load(Ordering::Relaxed), acked_during, "a change was acknowledged while the database was down");

    // Back, on the same data: the server recovers without a restart.
    database.start().expect("start PostgreSQL");
    ready_becomes(&server, 200, Duration::from_secs(30)).await;
    reaches(&acks, acked_during + 100, "acknowledgements after the outage").await;
    stop.store(true, Ordering::Release);

    let mut client = server.client(EMAIL).await;
    let mut acked_sequences = Vec::new();
    for (doc, task) in tasks {
        let outcomes = tokio::time::timeout(Duration::from_secs(30), task).await.expect("writer ends").expect("writer");
        assert!(!outcomes.refused.is_empty(), "{doc} saw the outage");
        // A refused change may have committed without an answer: its retry gets the
        // original result or applies it now, exactly once either way.
        for value in &outcomes.refused {
            assert_ok(&client.request(append(&doc, value)).await, "document_updated_response");
        }
        let content = client.content(&doc).await;
        let list: Vec<String> = serde_json::from_value(content["list"].clone()).expect("list");
        let unique: HashSet<&String> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "{doc}: a change applied twice: {list:?}");
        let sent: HashSet<&String> = outcomes.acked.iter().map(|(v, _)| v).chain(outcomes.refused.iter()).collect();
        assert_eq!(unique, sent, "{doc}: exactly what was sent, each once");
        // Acknowledged changes keep the order in which they were acknowledged.
        let positions: Vec<usize> = outcomes
            .acked
            .iter()
            .map(|(v, _)| list.iter().position(|x| x == v).unwrap_or_else(|| panic!("{doc}: acknowledged {v} lost")))
            .collect();
        assert!(positions.windows(2).all(|p| p[0] < p[1]), "{doc}: acknowledged changes out of order");
        acked_sequences.extend(outcomes.acked.iter().map(|(_, s)| *s));
    }

    // The log is gap-free and holds every acknowledged sequence.
    let events = client.all_changes_since(0, 500).await;
    let logged: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().expect("sequence")).collect();
    assert_eq!(logged, (1..=logged.len() as u64).collect::<Vec<_>>(), "the log is gap-free from 1");
    let logged: HashSet<u64> = logged.into_iter().collect();
    for sequence in acked_sequences {
        assert!(logged.contains(&sequence), "acknowledged sequence {sequence} is not in the log");
    }
    server.stop().await;
}
