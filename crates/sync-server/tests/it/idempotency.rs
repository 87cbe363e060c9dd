//! Idempotency by `client_change_id`: a create, update or delete resent with the same id
//! — later, from another session, after a reconnect, or twice in one batch frame — is
//! answered with the original result and applied once.

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_ok};
use serde_json::{Value, json};

fn create(id: &str, content: Value, ccid: &str) -> Value {
    json!({"type": "create_document", "document": {"id": id, "content": content}, "client_change_id": ccid})
}

fn update(id: &str, ops: Value, base: u64, ccid: &str) -> Value {
    json!({"type": "update_document", "patch": {"document_id": id, "patch": ops, "base_revision": base, "client_change_id": ccid}})
}

fn delete(id: &str, ccid: &str) -> Value {
    json!({"type": "delete_document", "document_id": id, "client_change_id": ccid})
}

/// The fields of a response that must repeat exactly.
fn outcome(reply: &Value) -> (Value, Value, Value, Value, Value) {
    (
        reply["type"].clone(),
        reply["document_id"].clone(),
        reply["success"].clone(),
        reply["sync_revision"].clone(),
        reply["sequence"].clone(),
    )
}

const CREATE_ID: &str = "6a0f4c2e-0000-4000-8000-000000000001";
const UPDATE_ID: &str = "6a0f4c2e-0000-4000-8000-000000000002";
const DELETE_ID: &str = "6a0f4c2e-0000-4000-8000-000000000003";

async fn resent_changes_are_answered_with_the_original_result_and_applied_once(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("idem@example.com").await;
    let mut watcher = server.client("idem@example.com").await;

    let first = c.request(create("d", json!({"n": 0}), CREATE_ID)).await;
    assert_ok(&first, "document_created_response");
    let again = c.request(create("d", json!({"n": 0}), CREATE_ID)).await;
    assert_ok(&again, "document_created_response");
    assert_eq!(outcome(&again), outcome(&first), "{again}");
    assert_eq!(again["document"]["content"], json!({"n": 0}));
    // Even with a different body, the id decides: the original result, nothing new.
    let different = c.request(create("d", json!({"n": 99}), CREATE_ID)).await;
    assert_eq!(outcome(&different), outcome(&first), "{different}");

    let ops = json!([{"op": "add", "path": "/n", "value": 1}]);
    let first = c.request(update("d", ops.clone(), 1, UPDATE_ID)).await;
    assert_ok(&first, "document_updated_response");
    assert_eq!(first["sync_revision"], 2);
    for _ in 0..3 {
        let again = c.request(update("d", ops.clone(), 1, UPDATE_ID)).await;
        assert_ok(&again, "document_updated_response");
        assert_eq!(outcome(&again), outcome(&first), "{again}");
        assert_eq!(again["content_hash"], first["content_hash"], "{again}");
    }
    let doc = c.get("d").await;
    assert_eq!(doc["document"]["sync_revision"], 2, "applied once");
    assert_eq!(doc["document"]["content"], json!({"n": 1}));

    let first = c.request(delete("d", DELETE_ID)).await;
    assert_ok(&first, "document_deleted_response");
    let again = c.request(delete("d", DELETE_ID)).await;
    assert_ok(&again, "document_deleted_response");
    assert_eq!(outcome(&again), outcome(&first), "a repeated delete is not `document_deleted`: {again}");
    // Without an id, a second delete is a new request and is refused.
    common::assert_refused(&c.delete("d").await, "document_deleted_response", "document_deleted");
    assert_eq!(c.get("d").await["document"]["sync_revision"], 3);

    // The other session saw each change once.
    let pushes = watcher.until_pong().await;
    let kinds: Vec<&str> = pushes.iter().map(|m| m["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, ["document_created", "document_updated", "document_deleted"], "{pushes:?}");
    let history = c.request(json!({"type": "get_history", "document_id": "d"})).await;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(3), "{history}");
    server.stop().await;
}

async fn repeats_within_one_batch_frame_are_applied_once(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("batch-idem@example.com").await;
    let mut watcher = server.client("batch-idem@example.com").await;
    let ops = json!([{"op": "add", "path": "/list/-", "value": "x"}]);
    let ids = c
        .send_batch(vec![
            create("b", json!({"list": []}), CREATE_ID),
            create("b", json!({"list": []}), CREATE_ID),
            update("b", ops.clone(), 1, UPDATE_ID),
            update("b", ops.clone(), 1, UPDATE_ID),
            update("b", ops.clone(), 1, UPDATE_ID),
            delete("b", DELETE_ID),
            delete("b", DELETE_ID),
        ])
        .await;
    let replies = c.replies(&ids).await;
    for reply in &replies {
        assert_eq!(reply["success"], true, "{reply}");
    }
    assert_eq!(outcome(&replies[0]), outcome(&replies[1]));
    assert_eq!(outcome(&replies[2]), outcome(&replies[3]));
    assert_eq!(outcome(&replies[2]), outcome(&replies[4]));
    assert_eq!(outcome(&replies[5]), outcome(&replies[6]));
    let revisions: Vec<&Value> = [0, 2, 5].iter().map(|&i| &replies[i]["sync_revision"]).collect();
    assert_eq!(revisions, [&json!(1), &json!(2), &json!(3)]);
    let doc = c.get("b").await;
    assert_eq!(doc["document"]["content"], json!({"list": ["x"]}), "the append happened once");
    assert_eq!(doc["document"]["sync_revision"], 3);
    assert_eq!(watcher.until_pong().await.len(), 3, "one push per applied change");
    server.stop().await;
}

async fn a_resend_after_reconnecting_gets_the_original_result(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("reconnect@example.com").await;
    assert_ok(&c.create("r", json!({"n": 0})).await, "document_created_response");
    let ops = json!([{"op": "replace", "path": "/n", "value": 5}]);
    let first = c.request(update("r", ops.clone(), 1, UPDATE_ID)).await;
    assert_ok(&first, "document_updated_response");
    // Someone else changes the document in between.
    assert_ok(
        &c.update("r", json!([{"op": "add", "path": "/m", "value": 1}]), Some(2)).await,
        "document_updated_response",
    );
    drop(c);

    // A new connection (a client that never saw its answer) resends the same change.
    let mut again = server.client("reconnect@example.com").await;
    let reply = again.request(update("r", ops, 1, UPDATE_ID)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(outcome(&reply), outcome(&first));
    let doc = again.get("r").await;
    assert_eq!(doc["document"]["sync_revision"], 3);
    assert_eq!(doc["document"]["content"], json!({"n": 5, "m": 1}));

    // The same id from another user is that user's own change: ids are per user.
    let mut other = server.client("someone-else@example.com").await;
    let reply = other.request(create("r2", json!({}), UPDATE_ID)).await;
    assert_ok(&reply, "document_created_response");
    assert_eq!(reply["document_id"], "r2");
    Client::assert_nothing(&other.until_pong().await, "the other user");
    server.stop().await;
}

async fn a_refused_change_can_be_retried_with_its_id(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("retry@example.com").await;
    assert_ok(&c.create("t", json!({"v": 1})).await, "document_created_response");
    // Refused (the test fails): nothing is recorded under the id…
    let ops = json!([{"op": "test", "path": "/v", "value": 2}, {"op": "replace", "path": "/v", "value": 3}]);
    let reply = c.request(update("t", ops, 1, UPDATE_ID)).await;
    common::assert_refused(&reply, "document_updated_response", "version_mismatch");
    // …so a corrected retry with the same id is applied.
    let ops = json!([{"op": "test", "path": "/v", "value": 1}, {"op": "replace", "path": "/v", "value": 3}]);
    let reply = c.request(update("t", ops, 1, UPDATE_ID)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(c.content("t").await, json!({"v": 3}));
    server.stop().await;
}

common::backend_tests!(
    resent_changes_are_answered_with_the_original_result_and_applied_once,
    repeats_within_one_batch_frame_are_applied_once,
    a_resend_after_reconnecting_gets_the_original_result,
    a_refused_change_can_be_retried_with_its_id,
);
