//! Graceful shutdown: cancelling the server's shutdown token closes every session with
//! code 1001, and a write sent just before is either answered (and then durable) or never
//! acknowledged and absent — never acknowledged and lost, never applied behind the
//! client's back. A retry with its `client_change_id` then settles it exactly once.

use crate::common;

use std::time::Duration;

use crate::common::{Backend, TestServer, assert_ok};
use serde_json::{Value, json};

const EMAIL: &str = "shutdown@example.com";

fn append(doc: &str, value: &str) -> Value {
    json!({"type": "update_document", "patch": {
        "document_id": doc,
        "patch": [{"op": "add", "path": "/list/-", "value": value}],
        "client_change_id": value,
    }})
}

async fn sessions_close_with_1001_and_in_flight_writes_are_answered_or_absent(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut writers = Vec::new();
    for w in 0..3 {
        let mut c = server.client(EMAIL).await;
        assert_ok(&c.create(&format!("doc{w}"), json!({"list": []})).await, "document_created_response");
        writers.push(c);
    }
    let mut idle = server.client("idle@example.com").await;

    // Every writer sends a burst of appends; the shutdown starts while they are in flight.
    let mut sent: Vec<Vec<(String, String)>> = Vec::new();
    for (w, c) in writers.iter_mut().enumerate() {
        let values: Vec<String> = (0..8).map(|k| format!("6a0f4c2e-0000-4000-8000-{w:04}{k:08}")).collect();
        let ids = c.send_batch(values.iter().map(|v| append(&format!("doc{w}"), v)).collect()).await;
        sent.push(ids.into_iter().zip(values).collect());
    }
    server.shutdown.cancel();

    let mut acked: Vec<Vec<String>> = Vec::new();
    for (w, c) in writers.iter_mut().enumerate() {
        let (messages, code) = c.recv_until_close(Duration::from_secs(15)).await;
        assert_eq!(code, Some(1001), "writer {w}: {messages:?}");
        let mut mine = Vec::new();
        for (id, value) in &sent[w] {
            let replies: Vec<&Value> = messages.iter().filter(|m| m["request_id"] == json!(id)).collect();
            assert!(replies.len() <= 1, "{replies:?}");
            if let Some(reply) = replies.first() {
                // A refusal at shutdown must say so; here every append was valid.
                assert_ok(reply, "document_updated_response");
                mine.push(value.clone());
            }
        }
        acked.push(mine);
    }
    let (_, code) = idle.recv_until_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(1001), "an idle session is closed with 1001 too");

    // Restart on the same database and look at what was kept.
    let (dir, config) = server.stop().await;
    let server = TestServer::start_in(dir, config).await;
    let mut c = server.client(EMAIL).await;
    for (w, mine) in acked.iter().enumerate() {
        let doc = c.get(&format!("doc{w}")).await;
        let list: Vec<String> = serde_json::from_value(doc["document"]["content"]["list"].clone()).expect("list");
        assert_eq!(&list, mine, "doc{w}: exactly the acknowledged appends, in order");
        assert_eq!(doc["document"]["sync_revision"], 1 + mine.len() as u64, "doc{w}");
    }
    // Retrying everything with the same ids applies each append exactly once.
    for (w, ids) in sent.iter().enumerate() {
        for (_, value) in ids {
            assert_ok(&c.request(append(&format!("doc{w}"), value)).await, "document_updated_response");
        }
        let list: Vec<String> =
            serde_json::from_value(c.content(&format!("doc{w}")).await["list"].clone()).expect("list");
        let expected: Vec<String> = ids.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(list, expected, "doc{w}");
    }
    server.stop().await;
}

async fn after_shutdown_the_port_no_longer_accepts_sessions(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let addr = server.addr;
    let mut c = server.client(EMAIL).await;
    assert_ok(&c.create("d", json!({})).await, "document_created_response");
    let (dir, _) = server.stop().await;
    let (_, code) = c.recv_until_close(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1001));
    let refused = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await;
    assert!(matches!(refused, Ok(Err(_))), "the listener is closed");
    drop(dir);
}

common::backend_tests!(
    sessions_close_with_1001_and_in_flight_writes_are_answered_or_absent,
    after_shutdown_the_port_no_longer_accepts_sessions,
);
