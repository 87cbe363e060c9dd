//! Crash safety of the real binary, on SQLite and on PostgreSQL: several clients write as
//! fast as they can, the process is killed with SIGKILL mid-load, and after a restart on
//! the same database every acknowledged change is present with its revision and
//! sequence, the change log is gap-free from 1, and new changes continue the sequence.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Backend, Client, ServerBinary, assert_ok, hmac_auth};
use serde_json::json;

const EMAIL: &str = "crash@example.com";
const WRITERS: usize = 4;

async fn connect(addr: SocketAddr, api_key: &str, secret: &str) -> Client {
    let mut client = Client::connect(&format!("ws://{addr}/ws")).await;
    client.send(hmac_auth(api_key, secret, EMAIL, None, None)).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    client
}

/// One acknowledged change.
#[derive(Debug, Clone)]
struct Acked {
    sequence: u64,
    document_id: String,
    revision: u64,
    value: u64,
}

/// Writes to its own document until the connection dies; returns what was acknowledged.
async fn writer(mut client: Client, w: usize, total: Arc<AtomicUsize>) -> Vec<Acked> {
    let doc = format!("crash-{w}");
    let mut acked = Vec::new();
    let Some(reply) = client
        .try_request(
            json!({"type": "create_document", "document": {"id": doc, "content": {"n": 0}}}),
            Duration::from_secs(10),
        )
        .await
    else {
        return acked;
    };
    assert_ok(&reply, "document_created_response");
    acked.push(Acked {
        sequence: reply["sequence"].as_u64().unwrap(),
        document_id: doc.clone(),
        revision: 1,
        value: 0,
    });
    for value in 1u64.. {
        // Two changes per frame, so the server also sees batches and group commits.
        let frame = json!([
            {"type": "update_document", "request_id": format!("{value}a"), "patch": {"document_id": doc, "patch": [{"op": "replace", "path": "/n", "value": value}]}},
            {"type": "update_document", "request_id": format!("{value}b"), "patch": {"document_id": doc, "patch": [{"op": "add", "path": format!("/k{}", value % 5), "value": value}]}},
        ]);
        if !client.try_send(frame).await {
            return acked;
        }
        for suffix in ["a", "b"] {
            let wanted = json!(format!("{value}{suffix}"));
            let reply = loop {
                match client.try_recv(Duration::from_secs(10)).await {
                    None => return acked,
                    Some(m) if m["request_id"] == wanted => break m,
                    Some(_) => {}
                }
            };
            assert_ok(&reply, "document_updated_response");
            let revision = reply["sync_revision"].as_u64().unwrap();
            let sequence = reply["sequence"].as_u64().unwrap();
            // Only the `replace /n` change is checked for its content later.
            let value = if suffix == "a" { value } else { u64::MAX };
            acked.push(Acked { sequence, document_id: doc.clone(), revision, value });
            total.fetch_add(1, Ordering::Relaxed);
        }
    }
    acked
}

async fn sigkill_mid_load_loses_no_acknowledged_change(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::test_config_on(backend, dir.path()).await;
    let (api_key, secret) = sync_server::generate_credentials(&config, "crash", false).await.expect("credentials");

    let mut server = ServerBinary::start(dir.path(), &config.database.url).await;
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = connect(server.addr, &api_key, &secret).await;
        tasks.push(tokio::spawn(writer(client, w, Arc::clone(&total))));
    }
    // Let the load run, then kill the process while the writers are still going.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::Relaxed) < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load never got going: {} acks",
            total.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let mut acked = Vec::new();
    for task in tasks {
        let mine =
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("writer ends").expect("writer task");
        acked.extend(mine);
    }
    assert!(acked.len() >= 300, "{}", acked.len());

    // Restart on the same database.
    let server = ServerBinary::start(dir.path(), &config.database.url).await;
    let mut client = connect(server.addr, &api_key, &secret).await;
    let events = client.all_changes_since(0, 97).await;
    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().expect("sequence")).collect();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "the change log is gap-free from 1");
    let by_sequence: HashMap<u64, &serde_json::Value> =
        events.iter().map(|e| (e["sequence"].as_u64().unwrap(), e)).collect();
    for change in &acked {
        let event = by_sequence
            .get(&change.sequence)
            .unwrap_or_else(|| panic!("acknowledged change lost: {change:?} (log ends at {})", sequences.len()));
        assert_eq!(event["document_id"], change.document_id, "{change:?}");
        assert_eq!(event["sync_revision"], change.revision, "{change:?}");
    }
    // Per document: revisions 1..=current with no gap, at least up to the newest ack, and
    // the content at each acknowledged `replace` is what was written.
    for w in 0..WRITERS {
        let doc = format!("crash-{w}");
        let revisions: Vec<u64> =
            events.iter().filter(|e| e["document_id"] == doc).map(|e| e["sync_revision"].as_u64().unwrap()).collect();
        assert_eq!(revisions, (1..=revisions.len() as u64).collect::<Vec<_>>(), "{doc}");
        let newest_ack = acked.iter().filter(|a| a.document_id == doc).map(|a| a.revision).max().unwrap_or(0);
        let current = client.get(&doc).await;
        let current_revision = current["document"]["sync_revision"].as_u64().expect("revision");
        assert!(current_revision >= newest_ack, "{doc}: at {current_revision}, acknowledged {newest_ack}");
        assert_eq!(current_revision, revisions.len() as u64, "{doc}: the document matches its log");
        if let Some(last) =
            acked.iter().filter(|a| a.document_id == doc && a.value != u64::MAX).max_by_key(|a| a.revision)
        {
            let at =
                client.request(json!({"type": "get_document", "document_id": doc, "at_revision": last.revision})).await;
            assert_eq!(at["document"]["content"]["n"], last.value, "{doc}: {at}");
        }
    }
    // New changes continue the sequence.
    let reply = client.update("crash-0", json!([{"op": "replace", "path": "/n", "value": -1}]), None).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sequence"], sequences.len() as u64 + 1);
}

common::backend_tests!(sigkill_mid_load_loses_no_acknowledged_change);
