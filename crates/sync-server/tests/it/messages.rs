//! The request/reply messages of PROTOCOL.md §4: batch frames, `request_sync`,
//! `request_full_sync`, `get_document` (also `at_revision`), `get_history`,
//! `ack_changes`, `ping`, and the `request_id` echo on every direct reply.

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_error, assert_ok};
use serde_json::{Value, json};

async fn a_batch_is_processed_in_order_and_every_message_answered(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("batch@example.com").await;
    let ids = c
        .send_batch(vec![
            json!({"type": "create_document", "document": {"id": "b", "content": {"n": 0}}}),
            json!({"type": "get_document", "document_id": "b"}),
            json!({"type": "no_such_type"}),
            json!({"type": "update_document", "patch": {"document_id": "b", "patch": [{"op": "replace", "path": "/n", "value": 1}], "base_revision": 1}}),
            json!({"type": "get_document", "document_id": "b"}),
            json!({"type": "update_document", "patch": {"document_id": "b", "patch": [{"op": "remove", "path": "/missing"}], "base_revision": 2}}),
            json!({"type": "get_document", "document_id": "missing"}),
            json!({"type": "update_document", "patch": {"document_id": "b", "patch": [{"op": "replace", "path": "/n", "value": 2}], "base_revision": 2}}),
            json!({"type": "get_changes_since", "last_sequence": 0}),
            json!({"type": "ping"}),
        ])
        .await;
    let r = c.replies(&ids).await;
    assert_ok(&r[0], "document_created_response");
    // A read after a write in the same frame sees the write.
    assert_eq!(r[1]["type"], "sync_document", "{}", r[1]);
    assert_eq!(r[1]["document"]["content"], json!({"n": 0}));
    assert_error(&r[2], "invalid_message");
    assert_ok(&r[3], "document_updated_response");
    assert_eq!(r[4]["document"]["content"], json!({"n": 1}));
    assert_eq!(r[4]["document"]["sync_revision"], 2);
    common::assert_refused(&r[5], "document_updated_response", "invalid_patch");
    assert_error(&r[6], "document_not_found");
    assert_ok(&r[7], "document_updated_response");
    assert_eq!(r[7]["sync_revision"], 3, "the failed update in between applied nothing");
    assert_eq!(r[8]["events"].as_array().map(Vec::len), Some(3), "{}", r[8]);
    assert_eq!(r[9]["type"], "pong");
    // Sequences follow the order of the frame.
    assert!(r[0]["sequence"].as_u64() < r[3]["sequence"].as_u64());
    assert!(r[3]["sequence"].as_u64() < r[7]["sequence"].as_u64());

    // Invalid entries of a batch (not objects, no type) each get their own error.
    c.send(json!([1, {"type": "ping", "request_id": "p1"}, "text", {"request_id": "p2"}, {"type": "ping", "request_id": "p3"}]))
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = c.recv().await;
        got.push((m["type"].as_str().unwrap_or_default().to_owned(), m["request_id"].clone()));
    }
    assert_eq!(
        got,
        vec![
            ("error".to_owned(), Value::Null),
            ("pong".to_owned(), json!("p1")),
            ("error".to_owned(), Value::Null),
            ("error".to_owned(), json!("p2")),
            ("pong".to_owned(), json!("p3")),
        ]
    );
    // An empty batch is answered with nothing.
    c.send(json!([])).await;
    Client::assert_nothing(&c.until_pong().await, "after an empty batch");
    server.stop().await;
}

async fn request_sync_sends_each_named_document_then_sync_complete(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("sync@example.com").await;
    assert_ok(&c.create("s1", json!({"k": 1})).await, "document_created_response");
    assert_ok(&c.create("s2", json!({"k": 2})).await, "document_created_response");
    assert_ok(&c.delete("s2").await, "document_deleted_response");
    let ids = c.send_batch(vec![json!({"type": "request_sync", "document_ids": ["s1", "nope", "s2"]})]).await;
    let mut answers = Vec::new();
    loop {
        let m = c.recv().await;
        assert_eq!(m["request_id"], json!(ids[0]), "every part of the answer echoes the id: {m}");
        let done = m["type"] == "sync_complete";
        answers.push(m);
        if done {
            break;
        }
    }
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[0]["type"], "sync_document");
    assert_eq!(answers[0]["document"]["content"], json!({"k": 1}));
    assert_error(&answers[1], "document_not_found");
    assert_eq!(answers[2]["document"]["id"], "s2");
    assert!(answers[2]["document"]["deleted_at"].is_string(), "tombstones are synced: {}", answers[2]);
    assert_eq!(answers[3]["synced_count"], 2);
    assert_eq!(answers[3]["latest_sequence"], 3);
    server.stop().await;
}

async fn request_full_sync_includes_tombstones_and_counts(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("full@example.com").await;
    for i in 0..4 {
        assert_ok(&c.create(&format!("f{i}"), json!({"i": i})).await, "document_created_response");
    }
    assert_ok(&c.create_in("notes", "n0", json!({"note": true})).await, "document_created_response");
    assert_ok(&c.delete("f1").await, "document_deleted_response");
    assert_ok(
        &c.update("f2", json!([{"op": "replace", "path": "/i", "value": 20}]), Some(1)).await,
        "document_updated_response",
    );

    let collect = |messages: Vec<Value>| -> (Vec<Value>, Value) {
        let (docs, complete): (Vec<Value>, Vec<Value>) =
            messages.into_iter().partition(|m| m["type"] == "sync_document");
        assert_eq!(complete.len(), 1, "{complete:?}");
        (docs.into_iter().map(|m| m["document"].clone()).collect(), complete[0].clone())
    };
    let (docs, complete) = collect(full_sync(&mut c, json!({"type": "request_full_sync"})).await);
    assert_eq!(complete["synced_count"], 5, "{complete}");
    assert_eq!(docs.len(), 5);
    let by_id = |id: &str| docs.iter().find(|d| d["id"] == id).cloned().unwrap_or_else(|| panic!("{id} missing"));
    assert!(by_id("f1")["deleted_at"].is_string(), "the tombstone is included");
    assert_eq!(by_id("f1")["sync_revision"], 2);
    assert!(by_id("f0")["deleted_at"].is_null());
    assert_eq!(by_id("f2")["content"], json!({"i": 20}));
    assert_eq!(by_id("f2")["sync_revision"], 2);
    assert_eq!(by_id("n0")["collection"], "notes");
    assert_eq!(complete["latest_sequence"], 7);

    let (docs, complete) =
        collect(full_sync(&mut c, json!({"type": "request_full_sync", "collections": ["notes"]})).await);
    assert_eq!(complete["synced_count"], 1);
    assert_eq!(docs[0]["id"], "n0");
    let (docs, complete) = collect(full_sync(&mut c, json!({"type": "request_full_sync", "collections": []})).await);
    assert_eq!((docs.len(), complete["synced_count"].clone()), (0, json!(0)));
    server.stop().await;
}

/// Sends a full sync request and returns every message of its answer, `sync_complete` last.
async fn full_sync(c: &mut Client, message: Value) -> Vec<Value> {
    let ids = c.send_batch(vec![message]).await;
    let mut answers = Vec::new();
    loop {
        let m = c.recv().await;
        assert_eq!(m["request_id"], json!(ids[0]), "{m}");
        let done = m["type"] == "sync_complete";
        answers.push(m);
        if done {
            return answers;
        }
    }
}

async fn get_document_at_an_older_revision_is_what_it_was(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("revisions@example.com").await;
    let mut states = vec![json!({"title": "v1", "list": [1]})];
    let created = c.create("h", states[0].clone()).await;
    assert_ok(&created, "document_created_response");
    let mut hashes = vec![created["document"]["content_hash"].clone()];
    let patches = [
        json!([{"op": "add", "path": "/list/-", "value": 2}]),
        json!([{"op": "replace", "path": "/title", "value": "v3"}, {"op": "remove", "path": "/list/0"}]),
        json!([{"op": "add", "path": "/extra", "value": {"deep": [true]}}]),
        json!([{"op": "move", "from": "/extra", "path": "/moved"}]),
    ];
    for (i, ops) in patches.iter().enumerate() {
        let reply = c.update("h", ops.clone(), Some(i as u64 + 1)).await;
        assert_ok(&reply, "document_updated_response");
        hashes.push(reply["content_hash"].clone());
        states.push(c.content("h").await);
    }
    assert_ok(&c.delete("h").await, "document_deleted_response");

    for (i, state) in states.iter().enumerate() {
        let revision = i as u64 + 1;
        let reply = c.request(json!({"type": "get_document", "document_id": "h", "at_revision": revision})).await;
        assert_eq!(reply["type"], "sync_document", "{reply}");
        let doc = &reply["document"];
        assert_eq!(&doc["content"], state, "revision {revision}");
        assert_eq!(doc["sync_revision"], revision);
        assert_eq!(doc["content_hash"], hashes[i], "revision {revision}");
        assert!(doc["deleted_at"].is_null(), "revision {revision} was before the delete");
        assert_eq!(doc["title"], state["title"], "revision {revision}");
    }
    let current = c.get("h").await;
    assert_eq!(current["document"]["sync_revision"], 6);
    assert!(current["document"]["deleted_at"].is_string());
    let at_latest = c.request(json!({"type": "get_document", "document_id": "h", "at_revision": 6})).await;
    assert_eq!(at_latest["document"], current["document"]);
    for bad in [0, 7, 100] {
        let reply = c.request(json!({"type": "get_document", "document_id": "h", "at_revision": bad})).await;
        assert_error(&reply, "document_not_found");
    }
    server.stop().await;
}

async fn get_history_is_newest_first_with_limit_and_before_revision(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("history@example.com").await;
    assert_ok(&c.create("h", json!({"n": 0})).await, "document_created_response");
    for i in 1..=4u64 {
        assert_ok(
            &c.update("h", json!([{"op": "replace", "path": "/n", "value": i}]), Some(i)).await,
            "document_updated_response",
        );
    }
    assert_ok(&c.delete("h").await, "document_deleted_response");
    let revisions = |reply: &Value| -> Vec<u64> {
        assert_eq!(reply["type"], "history", "{reply}");
        assert_eq!(reply["document_id"], "h");
        reply["events"].as_array().expect("events").iter().map(|e| e["sync_revision"].as_u64().expect("rev")).collect()
    };
    let all = c.request(json!({"type": "get_history", "document_id": "h"})).await;
    assert_eq!(revisions(&all), [6, 5, 4, 3, 2, 1]);
    let events = all["events"].as_array().unwrap();
    assert_eq!(events[0]["event_type"], "delete");
    assert_eq!(events[5]["event_type"], "create");
    // Each update's reverse patch turns its post-state back into its pre-state.
    for e in &events[1..5] {
        assert_eq!(e["event_type"], "update");
        // Revision r holds n = r - 1.
        let revision = e["sync_revision"].as_u64().unwrap();
        let mut state = json!({"n": revision - 2});
        let forward = sync_core::patch::parse_patch(e["forward_patch"].clone()).expect("forward");
        sync_core::patch::apply(&mut state, &forward).expect("forward applies to the pre-state");
        assert_eq!(state, json!({"n": revision - 1}));
        let reverse = sync_core::patch::parse_patch(e["reverse_patch"].clone()).expect("reverse");
        sync_core::patch::apply(&mut state, &reverse).expect("reverse applies to the post-state");
        assert_eq!(state, json!({"n": revision - 2}));
    }
    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] > w[1]), "{sequences:?}");

    let limited = c.request(json!({"type": "get_history", "document_id": "h", "limit": 2})).await;
    assert_eq!(revisions(&limited), [6, 5]);
    let before = c.request(json!({"type": "get_history", "document_id": "h", "before_revision": 5, "limit": 2})).await;
    assert_eq!(revisions(&before), [4, 3]);
    let before = c.request(json!({"type": "get_history", "document_id": "h", "before_revision": 3})).await;
    assert_eq!(revisions(&before), [2, 1]);
    let before = c.request(json!({"type": "get_history", "document_id": "h", "before_revision": 1})).await;
    assert_eq!(revisions(&before), Vec::<u64>::new());
    assert_error(&c.request(json!({"type": "get_history", "document_id": "nope"})).await, "document_not_found");
    server.stop().await;
}

async fn ack_changes_confirms_the_position(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("ack@example.com").await;
    for i in 0..3 {
        assert_ok(&c.create(&format!("a{i}"), json!({})).await, "document_created_response");
    }
    let reply = c.request(json!({"type": "ack_changes", "up_to_sequence": 2})).await;
    assert_eq!(reply["type"], "changes_acknowledged", "{reply}");
    assert_eq!(reply["sequence"], 2);
    // Never beyond what exists.
    let reply = c.request(json!({"type": "ack_changes", "up_to_sequence": 1_000_000})).await;
    assert_eq!(reply["sequence"], 3, "{reply}");
    // Acknowledging does not push or change anything.
    Client::assert_nothing(&c.until_pong().await, "after ack");
    assert_eq!(c.all_changes_since(0, 10).await.len(), 3);
    server.stop().await;
}

async fn every_direct_reply_echoes_the_request_id(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("echo@example.com").await;
    // Integer and string ids, on every kind of reply, success and error alike.
    let messages = [
        json!({"type": "ping"}),
        json!({"type": "create_document", "document": {"id": "e", "content": {"n": 0}}}),
        json!({"type": "create_document", "document": {"id": "e", "content": {}}}),
        json!({"type": "update_document", "patch": {"document_id": "e", "patch": [{"op": "replace", "path": "/n", "value": 1}], "base_revision": 1}}),
        json!({"type": "update_document", "patch": {"document_id": "e", "patch": [{"op": "remove", "path": "/x"}], "base_revision": 2}}),
        json!({"type": "get_document", "document_id": "e"}),
        json!({"type": "get_document", "document_id": "missing"}),
        json!({"type": "get_history", "document_id": "e"}),
        json!({"type": "get_changes_since", "last_sequence": 0}),
        json!({"type": "ack_changes", "up_to_sequence": 1}),
        json!({"type": "request_full_sync"}),
        json!({"type": "subscribe", "topic": "t"}),
        json!({"type": "delete_document", "document_id": "e"}),
        json!({"type": "delete_document", "document_id": "e"}),
        json!({"type": "unknown"}),
        json!({"type": "get_document"}),
    ];
    for (i, message) in messages.iter().enumerate() {
        for id in [json!(1000 + i), json!(format!("str-{i}")), json!(-5)] {
            let mut m = message.clone();
            m["request_id"] = id.clone();
            c.send(m).await;
            let mut replies = Vec::new();
            loop {
                let reply = c.recv().await;
                if reply["type"] == "document_created" || reply["type"] == "document_updated" {
                    continue;
                }
                let done = reply["type"] != "sync_document" || message["type"] == "get_document";
                replies.push(reply);
                if done {
                    break;
                }
            }
            for reply in replies {
                assert_eq!(reply["request_id"], id, "{message} → {reply}");
            }
        }
    }
    let reply = c.request(json!({"type": "ping"})).await;
    assert_eq!(reply, json!({"type": "pong", "request_id": reply["request_id"].clone()}));
    // Without a request id, the reply has none.
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
    server.stop().await;
}

common::backend_tests!(
    a_batch_is_processed_in_order_and_every_message_answered,
    request_sync_sends_each_named_document_then_sync_complete,
    request_full_sync_includes_tombstones_and_counts,
    get_document_at_an_older_revision_is_what_it_was,
    get_history_is_newest_first_with_limit_and_before_revision,
    ack_changes_confirms_the_position,
    every_direct_reply_echoes_the_request_id,
);
