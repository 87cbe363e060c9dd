//! What one hostile (or careless) client can do to the server, and the bounds that hold:
//! a batch of reads whose answers are huge is written out as it is answered (the
//! server's memory does not grow with what the batch asks for); a batch of 10,000
//! changes gets all 10,000 answers on a connection that stays open (the session's own
//! answers never count against it as a slow consumer); a client that stops reading is
//! dropped after the write timeout; sequences and revisions of 2^63 and more read like
//! any other bound; a frame refused as a whole keeps its `request_id`; a malformed
//! upgrade query gets the JSON error body; one user's flood of costly changes does not
//! stand between another user and the write path; a stale change's cost counts the ops
//! it is carried over.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_testkit::ServerProcess;

use crate::common::{self, Backend, Client, TestServer, assert_ok};

/// The peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the process status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// One frame of 400 `get_document` of a 256 KiB document asks for 100 MiB of answers.
/// They are written out as they are made: the server process's peak memory grows by far
/// less than the answers' volume (before, every answer of a batch was built first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_huge_reads_is_answered_in_bounded_memory() {
    let server = tokio::task::spawn_blocking(|| ServerProcess::start_sqlite(&[])).await.unwrap().expect("server");
    let pid = server.pid().expect("pid");
    let mut client = Client::connect(&server.ws_url()).await;
    let reply = client.authenticate(&server.api_key, &server.secret, "reader@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    let big = "a".repeat(256 << 10);
    assert_ok(&client.create("big", json!({ "s": big })).await, "document_created_response");
    // Warm up: one read of the document, so the baseline includes one answer's cost.
    assert_eq!(client.get("big").await["type"], "sync_document");
    let before = peak_rss(pid);

    const READS: usize = 400;
    let batch: Vec<Value> = (0..READS).map(|_| json!({"type": "get_document", "document_id": "big"})).collect();
    client.send(Value::Array(batch)).await;
    let volume = client.read_raw(READS).await;
    assert!(volume > READS * (256 << 10), "each answer carries the whole document: {volume} bytes");
    let growth = peak_rss(pid).saturating_sub(before);
    assert!(
        growth < 40 << 20,
        "the server's peak memory grew by {} MiB answering {} MiB of reads",
        growth >> 20,
        volume >> 20
    );
    // And the connection still works.
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

/// 10,000 creates in one frame: every one is answered, in order, and the connection
/// stays open (before, the session's own answers filled its queue and it was closed
/// with 1013 after a few hundred).
async fn a_batch_of_ten_thousand_changes_gets_every_answer(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut client = server.client("batcher@example.com").await;
    const CHANGES: usize = 10_000;
    let batch: Vec<Value> = (0..CHANGES)
        .map(|i| json!({"type": "create_document", "document": {"id": format!("b-{i:05}"), "content": {}}}))
        .collect();
    let ids = client.send_batch(batch).await;
    let replies = client.replies(&ids).await;
    assert_eq!(replies.len(), CHANGES);
    for (i, reply) in replies.iter().enumerate() {
        assert_ok(reply, "document_created_response");
        assert_eq!(reply["document_id"], format!("b-{i:05}"));
    }
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

/// A client that stops reading while its user's other device writes: once its socket
/// takes nothing for the write timeout, its session is closed (it would resume from
/// its cursor), instead of being held forever.
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout(backend: Backend) {
    let server = TestServer::start_on_with(backend, |c| c.limits.write_timeout_secs = 2).await;
    let silent = server.client("pair@example.com").await;
    let mut writer = server.client("pair@example.com").await;
    let connections = |server: &TestServer| {
        let addr = server.addr;
        async move {
            let health = common::http_request(addr, "GET", "/health", &[], b"").await.json();
            health["activeConnections"].as_u64().unwrap_or(0)
        }
    };
    assert_eq!(connections(&server).await, 2);
    assert_ok(&writer.create("doc", json!({"x": ""})).await, "document_created_response");
    let value = "v".repeat(4096);
    let started = Instant::now();
    let mut dropped = false;
    // Pushes of ~4 KB each, until the silent client's socket buffers are full and its
    // session has waited out the write timeout.
    for round in 0..40 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                json!({"type": "update_document", "patch": {"document_id": "doc",
                    "patch": [{"op": "replace", "path": "/x", "value": format!("{round}-{i}-{value}")}]}})
            })
            .collect();
        let ids = writer.send_batch(batch).await;
        for reply in writer.replies(&ids).await {
            assert_ok(&reply, "document_updated_response");
        }
        if connections(&server).await == 1 {
            dropped = true;
            break;
        }
    }
    while !dropped && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dropped = connections(&server).await == 1;
    }
    assert!(dropped, "the session of the client that stopped reading is still open after {:?}", started.elapsed());
    // The writer was never held up by it.
    assert_eq!(writer.request(json!({"type": "ping"})).await["type"], "pong");
    drop(silent);
}

/// Sequences and revisions of 2^63 and more are valid `u64`s: they read an empty page
/// (or everything below them), never a storage error, and never close the connection.
async fn sequences_beyond_two_to_the_63_read_like_any_other(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut client = server.client("big-numbers@example.com").await;
    assert_ok(&client.create("n", json!({"v": 1})).await, "document_created_response");
    for after in [1u64 << 63, u64::MAX] {
        let page = client.request(json!({"type": "get_changes_since", "last_sequence": after})).await;
        assert_eq!(page["type"], "changes", "{page}");
        assert_eq!(page["events"], json!([]), "{page}");
        assert_eq!(page["has_more"], false, "{page}");
        let history =
            client.request(json!({"type": "get_history", "document_id": "n", "before_revision": after})).await;
        assert_eq!(history["type"], "history", "{history}");
        assert_eq!(history["events"].as_array().map(Vec::len), Some(1), "{history}");
    }
    // Resuming from 2^64 - 1: authenticated, one empty `changes` page, and the connection stays.
    let (mut resumed, first) = server.client_resuming("big-numbers@example.com", u64::MAX).await;
    assert_eq!(first["type"], "auth_success", "{first}");
    let page = resumed.recv_type("changes").await;
    assert_eq!(page["events"], json!([]), "{page}");
    assert_eq!(resumed.request(json!({"type": "ping"})).await["type"], "pong");
}

/// A malformed query on the upgrade route answers 400 with the JSON error body of
/// PROTOCOL.md §9, naming the problem.
async fn a_malformed_upgrade_query_gets_the_json_error_body(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let response = server.http_get("/ws?last_sequence=abc").await;
    assert_eq!(response.status, 400);
    let body = response.json();
    assert_eq!(body["error"]["code"], "invalid_message", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("last_sequence"), "{body}");
}

/// A frame refused as a whole — nested beyond what the parser takes, or malformed after
/// its `request_id` — is answered with that `request_id`, so the client knows which
/// request failed; the connection stays open.
async fn a_refused_frame_keeps_its_request_id(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut client = server.client("frames@example.com").await;
    let deep = format!(r#"{{"type":"ping","request_id":"deep-1","x":{}{}}}"#, "[".repeat(300), "]".repeat(300));
    client.send_text(deep).await;
    let reply = client.recv().await;
    assert_eq!((reply["type"].as_str(), reply["request_id"].as_str()), (Some("error"), Some("deep-1")), "{reply}");
    assert_eq!(reply["code"], "payload_too_large", "{reply}");
    client.send_text(r#"{"request_id": 7, "type": "ping", "oops"#.to_owned()).await;
    let reply = client.recv().await;
    assert_eq!((reply["type"].as_str(), reply["request_id"].as_i64()), (Some("error"), Some(7)), "{reply}");
    assert_eq!(reply["code"], "invalid_message", "{reply}");
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
}

/// A change far behind its document costs the write path its ops times the revisions it
/// crossed; beyond the limit it is refused at once (`version_mismatch`, telling the client
/// to rebase it), the document is untouched and other writers go on. A stale change
/// within the limit is still rebased.
async fn a_change_too_far_behind_is_refused_before_it_is_rebased(backend: Backend) {
    let server = TestServer::start_on_with(backend, |c| c.limits.max_rebase_work = 10_000).await;
    let mut owner = server.client("history@example.com").await;
    assert_ok(&owner.create("hist", json!({"n": 0})).await, "document_created_response");
    for round in 0..2 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                json!({"type": "update_document", "patch": {"document_id": "hist",
                    "patch": [{"op": "replace", "path": "/n", "value": round * 100 + i}]}})
            })
            .collect();
        let ids = owner.send_batch(batch).await;
        for reply in owner.replies(&ids).await {
            assert_ok(&reply, "document_updated_response");
        }
    }
    // 200 revisions crossed × 100 ops = 20,000 steps, over the limit of 10,000.
    let ops: Vec<Value> = (0..100).map(|i| json!({"op": "add", "path": format!("/k{i}"), "value": i})).collect();
    let reply = owner.update("hist", Value::Array(ops), Some(1)).await;
    common::assert_refused(&reply, "document_updated_response", "version_mismatch");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("rebase") && message.contains("200 revisions behind"), "{reply}");
    let mut bystander = server.client("bystander@example.com").await;
    assert_ok(&bystander.create("mine", json!({})).await, "document_created_response");
    let document = owner.get("hist").await;
    assert_eq!(document["document"]["sync_revision"], 201, "{document}");
    assert_eq!(document["document"]["content"], json!({"n": 199}), "{document}");
    // 51 revisions crossed × 10 ops: rebased and applied as before.
    let ops: Vec<Value> = (0..10).map(|i| json!({"op": "add", "path": format!("/k{i}"), "value": i})).collect();
    assert_ok(&owner.update("hist", Value::Array(ops), Some(150)).await, "document_updated_response");
}

/// One user floods the write path with costly changes (each within its limits); another
/// user's change, sent once the flood is queued, is committed after a few of them — users
/// take turns, and a batch closes at `max_rebase_work` of estimated work — not after the
/// whole flood (before, it waited for all of it: 12 s in the report).
async fn a_flood_of_costly_changes_does_not_hold_up_another_user(backend: Backend) {
    // 1,000-op patches count 1,000 steps each: two to a batch.
    let server = TestServer::start_on_with(backend, |c| c.limits.max_rebase_work = 2_000).await;
    let mut flooder = server.client("flooder@example.com").await;
    let mut bystander = server.client("bystander@example.com").await;
    const FLOOD: usize = 80;
    let creates: Vec<Value> = (0..FLOOD)
        .map(|i| json!({"type": "create_document", "document": {"id": format!("f{i}"), "content": {}}}))
        .collect();
    let ids = flooder.send_batch(creates).await;
    for reply in flooder.replies(&ids).await {
        assert_ok(&reply, "document_created_response");
    }
    // One frame each (80 of them would pass the frame limit together).
    let ops: Vec<Value> = (0..1000).map(|k| json!({"op": "add", "path": format!("/k{k}"), "value": k})).collect();
    let mut ids = Vec::new();
    for i in 0..FLOOD {
        let id = flooder.next_request_id();
        flooder
            .send(json!({"type": "update_document", "request_id": id,
                "patch": {"document_id": format!("f{i}"), "base_revision": 1, "patch": ops}}))
            .await;
        ids.push(id);
    }
    // Once the flood is being committed, the other user writes.
    let first = flooder.recv_type("document_updated_response").await;
    let mine = bystander.create("mine", json!({})).await;
    assert_ok(&mine, "document_created_response");
    let mine = mine["sequence"].as_u64().unwrap();
    let mut replies = vec![first];
    replies.extend(flooder.replies(&ids[1..]).await);
    let mut after = 0;
    for reply in &replies {
        assert_ok(reply, "document_updated_response");
        after += usize::from(reply["sequence"].as_u64().unwrap() > mine);
    }
    assert!(after >= FLOOD / 2, "the other user's change waited for {} of the {FLOOD} flooding changes", FLOOD - after);
}

/// The cost of a stale update is its ops times the ops of the changes it crossed: a few
/// large changes in between count as much as many small ones. Crossing 10 revisions of
/// 100 ops with 100 ops is 100,000 steps, refused under a limit of 10,000, although its
/// 100 ops × 10 revisions (1,000) looked cheap before the history was read.
async fn a_stale_change_over_large_changes_is_refused_by_their_ops(backend: Backend) {
    let server = TestServer::start_on_with(backend, |c| c.limits.max_rebase_work = 10_000).await;
    let mut owner = server.client("large@example.com").await;
    assert_ok(&owner.create("big", json!({})).await, "document_created_response");
    for round in 0..10 {
        let ops: Vec<Value> =
            (0..100).map(|k| json!({"op": "add", "path": format!("/r{round}k{k}"), "value": k})).collect();
        assert_ok(&owner.update("big", Value::Array(ops), None).await, "document_updated_response");
    }
    let ops: Vec<Value> = (0..100).map(|k| json!({"op": "add", "path": format!("/mine{k}"), "value": k})).collect();
    let reply = owner.update("big", Value::Array(ops), Some(1)).await;
    common::assert_refused(&reply, "document_updated_response", "version_mismatch");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("100 ops") && message.contains("hold 1000") && message.contains("rebase"), "{reply}");
    // Within the limit (one revision of 100 ops crossed by 50 ops: 5,000 steps): rebased.
    let ops: Vec<Value> = (0..50).map(|k| json!({"op": "add", "path": format!("/ok{k}"), "value": k})).collect();
    assert_ok(&owner.update("big", Value::Array(ops), Some(10)).await, "document_updated_response");
}

common::backend_tests!(
    a_flood_of_costly_changes_does_not_hold_up_another_user,
    a_stale_change_over_large_changes_is_refused_by_their_ops,
    a_change_too_far_behind_is_refused_before_it_is_rebased,
    a_refused_frame_keeps_its_request_id,
    a_batch_of_ten_thousand_changes_gets_every_answer,
    a_client_that_stops_reading_is_dropped_after_the_write_timeout,
    sequences_beyond_two_to_the_63_read_like_any_other,
    a_malformed_upgrade_query_gets_the_json_error_body,
);
