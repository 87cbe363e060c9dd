//! Multi-device fan-out: a change reaches every other session of the same user, in
//! sequence order, never the session that made it (which gets only its `*_response`),
//! and never another user's sessions.

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_ok};
use serde_json::json;

async fn every_change_reaches_every_other_session_of_the_user_and_no_one_else(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice: Vec<Client> = Vec::new();
    for _ in 0..4 {
        alice.push(server.client("alice@example.com").await);
    }
    let mut bob = server.client("bob@example.com").await;
    let mut bob2 = server.client("bob@example.com").await;

    // Each of alice's sessions makes one kind of change in turn.
    let created = alice[0].create("doc", json!({"n": 0})).await;
    assert_ok(&created, "document_created_response");
    let seq_create = created["sequence"].as_u64().expect("sequence");
    let updated = alice[1].update("doc", json!([{"op": "replace", "path": "/n", "value": 1}]), Some(1)).await;
    assert_ok(&updated, "document_updated_response");
    let seq_update = updated["sequence"].as_u64().expect("sequence");
    let deleted = alice[2].delete("doc").await;
    assert_ok(&deleted, "document_deleted_response");
    let seq_delete = deleted["sequence"].as_u64().expect("sequence");
    assert!(seq_create < seq_update && seq_update < seq_delete);

    // Session i made change i (none for session 3): it sees the other two, in order.
    let changes =
        [("document_created", seq_create), ("document_updated", seq_update), ("document_deleted", seq_delete)];
    for (i, session) in alice.iter_mut().enumerate() {
        let received = session.until_pong().await;
        let expected: Vec<_> = changes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect();
        let got: Vec<_> = received
            .iter()
            .map(|m| (m["type"].as_str().unwrap_or_default(), m["sequence"].as_u64().unwrap_or_default()))
            .collect();
        assert_eq!(got, expected, "alice session {i}: {received:?}");
        for m in &received {
            assert!(m.get("request_id").is_none(), "a push is no reply: {m}");
        }
    }
    // The pushes carry what a replica needs to apply them.
    let mut late = server.client("alice@example.com").await;
    assert_ok(&alice[3].create("doc2", json!({"title": "T"})).await, "document_created_response");
    let push = late.recv_type("document_created").await;
    assert_eq!(push["document"]["content"], json!({"title": "T"}));
    assert_eq!(push["document"]["sync_revision"], 1);
    assert_ok(
        &alice[3].update("doc2", json!([{"op": "add", "path": "/x", "value": 1}]), Some(1)).await,
        "document_updated_response",
    );
    let push = late.recv_type("document_updated").await;
    assert_eq!(push["patch"]["document_id"], "doc2");
    assert_eq!(push["patch"]["patch"], json!([{"op": "add", "path": "/x", "value": 1}]));
    assert_eq!(
        push["patch"]["content_hash"],
        json!(sync_core::canonical::content_hash(&json!({"title": "T", "x": 1})))
    );

    // Bob's sessions received nothing of alice's.
    Client::assert_nothing(&bob.until_pong().await, "bob");
    Client::assert_nothing(&bob2.until_pong().await, "bob's second session");
    // And bob's own change reaches his other session, not alice's.
    assert_ok(&bob.create("bobs-doc", json!({"bob": true})).await, "document_created_response");
    let push = bob2.recv_type("document_created").await;
    assert_eq!(push["document"]["content"], json!({"bob": true}));
    for (i, session) in alice.iter_mut().enumerate() {
        let received = session.until_pong().await;
        let foreign: Vec<_> = received.iter().filter(|m| m["document"]["content"]["bob"] == true).collect();
        assert!(foreign.is_empty(), "alice session {i} saw bob's document: {foreign:?}");
    }
    server.stop().await;
}

async fn the_sender_gets_only_its_responses_even_for_batches(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut writer = server.client("carol@example.com").await;
    let mut readers = [server.client("carol@example.com").await, server.client("carol@example.com").await];
    let ops: Vec<_> = (0..20)
        .map(|i| json!({"type": "create_document", "document": {"id": format!("d{i}"), "content": {"i": i}}}))
        .collect();
    let ids = writer.send_batch(ops).await;
    let replies = writer.replies(&ids).await;
    let mut sequences = Vec::new();
    for reply in &replies {
        assert_ok(reply, "document_created_response");
        sequences.push(reply["sequence"].as_u64().expect("sequence"));
    }
    Client::assert_nothing(&writer.until_pong().await, "the writer");
    for (r, reader) in readers.iter_mut().enumerate() {
        let received = reader.until_pong().await;
        let got: Vec<u64> = received.iter().map(|m| m["sequence"].as_u64().expect("sequence")).collect();
        assert_eq!(got, sequences, "reader {r}");
        assert!(received.iter().all(|m| m["type"] == "document_created"), "reader {r}: {received:?}");
    }
    server.stop().await;
}

async fn a_closed_session_does_not_stop_delivery_to_the_others(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut writer = server.client("dave@example.com").await;
    let mut stays = server.client("dave@example.com").await;
    let leaves = server.client("dave@example.com").await;
    drop(leaves);
    for i in 0..5 {
        assert_ok(&writer.create(&format!("d{i}"), json!({})).await, "document_created_response");
    }
    let received = stays.until_pong().await;
    assert_eq!(received.len(), 5, "{received:?}");
    server.stop().await;
}

common::backend_tests!(
    every_change_reaches_every_other_session_of_the_user_and_no_one_else,
    the_sender_gets_only_its_responses_even_for_batches,
    a_closed_session_does_not_stop_delivery_to_the_others,
);
