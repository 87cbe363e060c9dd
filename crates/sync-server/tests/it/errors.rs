//! Every recoverable error path of an authenticated session — malformed frames, unknown
//! types, wrong field types, invalid ids, bad patches, every size limit and the rate
//! limit — is answered with the right code, applies nothing, and leaves the connection
//! usable (each test ends with a request that must still be answered).

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_error, assert_ok, assert_refused};
use serde_json::{Value, json};

/// Proves the connection is still open and in order after an error.
async fn still_alive(client: &mut Client) {
    let messages = client.until_pong().await;
    Client::assert_nothing(&messages, "the session after an error");
}

/// `{"a":{"a":…{}}}` nested `depth` levels deep (a depth of 1 is `{}`).
fn nested(depth: usize) -> Value {
    let mut value = json!({});
    for _ in 1..depth {
        value = json!({ "a": value });
    }
    value
}

async fn malformed_json_unknown_types_and_wrong_field_types_are_invalid_message(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("errors@example.com").await;

    for text in ["{", "not json at all", "{\"type\": \"ping\",}", "\u{0}"] {
        c.send_text(text.to_owned()).await;
        let reply = c.recv().await;
        assert_error(&reply, "invalid_message");
        still_alive(&mut c).await;
    }

    // Each of these is well-formed JSON with something wrong in it; the request id is
    // readable, so the error must echo it.
    let cases = [
        json!({"type": "no_such_message"}),
        json!({"type": 42}),
        json!({"no_type": true}),
        json!({"type": "get_document", "document_id": 5}),
        json!({"type": "get_document"}),
        json!({"type": "get_changes_since", "last_sequence": "seven"}),
        json!({"type": "get_changes_since", "last_sequence": -1}),
        json!({"type": "get_history", "document_id": "d", "limit": "ten"}),
        json!({"type": "delete_document", "document_id": ["d"]}),
        json!({"type": "create_document", "document": "not an object"}),
        json!({"type": "create_document", "document": {"id": 7, "content": {}}}),
        json!({"type": "create_document", "document": {"content": {}}, "client_change_id": 9}),
        json!({"type": "update_document", "patch": {"document_id": "d", "patch": [], "base_revision": "1"}}),
        json!({"type": "update_document", "patch": {"document_id": 1, "patch": []}}),
        json!({"type": "update_document"}),
        json!({"type": "request_sync", "document_ids": "d"}),
        json!({"type": "ack_changes"}),
        json!({"type": "authenticate", "token": "x.y.z"}),
    ];
    for case in cases {
        let reply = c.request(case.clone()).await;
        assert_error(&reply, "invalid_message");
        assert!(!reply["message"].as_str().unwrap_or("").is_empty(), "{case}: {reply}");
    }
    // A request id of the wrong type cannot be echoed, but the message is still answered.
    c.send(json!({"type": "ping", "request_id": {"nested": true}})).await;
    let reply = c.recv().await;
    assert_error(&reply, "invalid_message");
    assert!(reply.get("request_id").is_none(), "{reply}");
    // Binary frames are not part of the protocol.
    c.send_binary(b"{\"type\":\"ping\"}".to_vec()).await;
    assert_error(&c.recv().await, "invalid_message");
    // Unknown fields are ignored.
    let reply = c.request(json!({"type": "ping", "surprise": {"x": 1}})).await;
    assert_eq!(reply["type"], "pong", "{reply}");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn invalid_document_ids_and_collections_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("ids@example.com").await;

    let long_id = "x".repeat(129);
    for bad_id in ["", "has space", "slash/inside", "é", "tab\there", long_id.as_str()] {
        let reply = c.create(bad_id, json!({"n": 1})).await;
        assert_refused(&reply, "document_created_response", "invalid_message");
    }
    let long_collection = "c".repeat(65);
    for bad_collection in ["Tasks", "_reserved", "_", "with space", "dots.no", "", long_collection.as_str()] {
        let reply = c.create_in(bad_collection, "ok-id", json!({})).await;
        assert_refused(&reply, "document_created_response", "invalid_message");
    }
    // None of the refused creates left anything behind.
    let sync = c.request(json!({"type": "request_full_sync"})).await;
    assert_eq!(sync["type"], "sync_complete", "{sync}");
    assert_eq!(sync["synced_count"], 0, "{sync}");

    // The edges of the rules are accepted.
    let max_id = "A".repeat(128);
    for good_id in ["a", "a.b_c:d-E9", max_id.as_str(), "6f1c2d4e-0000-4000-8000-000000000000"] {
        assert_ok(&c.create(good_id, json!({})).await, "document_created_response");
    }
    let max_collection = "z".repeat(64);
    for (i, good) in ["a-b_1", "0", "tasks", max_collection.as_str()].into_iter().enumerate() {
        let reply = c.create_in(good, &format!("in-collection-{i}"), json!({})).await;
        assert_ok(&reply, "document_created_response");
        assert_eq!(reply["document"]["collection"], good, "{reply}");
    }
    // Without an id the server makes one.
    let reply = c.request(json!({"type": "create_document", "document": {"content": {"k": 1}}})).await;
    assert_ok(&reply, "document_created_response");
    let generated = reply["document_id"].as_str().expect("generated id");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");

    // Reads and changes of ids that cannot exist are plain misses.
    let reply = c.get("has space").await;
    assert_error(&reply, "document_not_found");
    let reply = c.update("has space", json!([]), Some(1)).await;
    assert_refused(&reply, "document_updated_response", "document_not_found");
    let reply = c.delete(&long_id).await;
    assert_refused(&reply, "document_deleted_response", "document_not_found");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn a_failing_patch_leaves_the_document_untouched(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("patches@example.com").await;
    let original = json!({"title": "T", "list": [1, 2, 3], "obj": {"k": "v"}});
    assert_ok(&c.create("d", original.clone()).await, "document_created_response");

    // Ops that apply, followed by one that does not: nothing of the patch may stick.
    let failing = [
        json!([{"op": "replace", "path": "/title", "value": "changed"}, {"op": "remove", "path": "/missing"}]),
        json!([{"op": "add", "path": "/list/-", "value": 4}, {"op": "add", "path": "/list/9", "value": 0}]),
        json!([{"op": "remove", "path": "/obj/k"}, {"op": "replace", "path": "/obj/k", "value": 1}]),
        json!([{"op": "add", "path": "/new", "value": 1}, {"op": "move", "from": "/obj", "path": "/obj/inner"}]),
        json!([{"op": "copy", "from": "/nowhere", "path": "/x"}]),
        json!([{"op": "add", "path": "/list/x", "value": 1}]),
        json!([{"op": "add", "path": "/a/b/c", "value": 1}]),
    ];
    for ops in failing {
        let reply = c.update("d", ops.clone(), Some(1)).await;
        assert_refused(&reply, "document_updated_response", "invalid_patch");
        let doc = c.get("d").await;
        assert_eq!(doc["document"]["content"], original, "after {ops}");
        assert_eq!(doc["document"]["sync_revision"], 1, "after {ops}");
    }

    // Patches that are not RFC 6902 at all are refused while decoding.
    let malformed = [
        json!([{"op": "bogus", "path": "/title"}]),
        json!([{"op": "add", "path": "title", "value": 1}]),
        json!([{"op": "add", "path": "/title"}]),
        json!([{"path": "/title", "value": 1}]),
        json!([{"op": "move", "path": "/x"}]),
        json!({"op": "add", "path": "/x", "value": 1}),
        json!("not a patch"),
    ];
    for ops in malformed {
        let reply = c.update("d", ops.clone(), Some(1)).await;
        assert_eq!(reply["type"], "error", "{ops}: {reply}");
        assert!(["invalid_patch", "invalid_message"].contains(&reply["code"].as_str().unwrap_or("")), "{ops}: {reply}");
    }
    let doc = c.get("d").await;
    assert_eq!((doc["document"]["content"].clone(), doc["document"]["sync_revision"].clone()), (original, json!(1)));

    // After all that, a good patch still applies at revision 1 → 2.
    let reply = c.update("d", json!([{"op": "replace", "path": "/title", "value": "ok"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 2, "{reply}");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn a_move_or_copy_from_nowhere_is_refused_even_onto_itself(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("moves@example.com").await;
    let original = json!({"a": 1});
    assert_ok(&c.create("d", original.clone()).await, "document_created_response");

    // RFC 6902 §4.4: the `from` location must exist, also when it equals `path`.
    for ops in [
        json!([{"op": "move", "from": "/nope", "path": "/nope"}]),
        json!([{"op": "copy", "from": "/nope", "path": "/nope"}]),
        json!([{"op": "move", "from": "/nope", "path": "/b"}]),
    ] {
        let reply = c.update("d", ops.clone(), Some(1)).await;
        assert_refused(&reply, "document_updated_response", "invalid_patch");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| m.contains("/nope")), "{ops}: {reply}");
        let doc = c.get("d").await;
        assert_eq!(doc["document"]["content"], original, "after {ops}");
        assert_eq!(doc["document"]["sync_revision"], 1, "no empty revision after {ops}");
    }
    // A move of an existing value onto itself is valid and changes nothing.
    let reply = c.update("d", json!([{"op": "move", "from": "/a", "path": "/a"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(c.content("d").await, original);
    still_alive(&mut c).await;
    server.stop().await;
}

async fn frames_over_the_limit_are_refused_and_over_the_hard_limit_close_1009(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| {
        config.limits.max_frame_bytes = 2048;
        config.limits.hard_max_frame_bytes = 8192;
    })
    .await;
    let mut c = server.client("frames@example.com").await;

    // Just under the limit: processed.
    let reply = c.create("small", json!({"text": "x".repeat(1500)})).await;
    assert_ok(&reply, "document_created_response");
    // Over the soft limit: payload_too_large, nothing applied, connection open.
    let big = json!({"type": "create_document", "request_id": "big", "document": {"id": "big", "content": {"text": "x".repeat(4000)}}});
    c.send(big).await;
    let reply = c.recv().await;
    assert_error(&reply, "payload_too_large");
    // An oversize batch frame is refused as a whole.
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"type": "create_document", "document": {"id": format!("b{i}"), "content": {"pad": "y".repeat(60)}}}))
        .collect();
    c.send(Value::Array(batch)).await;
    assert_error(&c.recv().await, "payload_too_large");
    still_alive(&mut c).await;
    assert_error(&c.get("big").await, "document_not_found");
    assert_error(&c.get("b0").await, "document_not_found");

    // Over the hard limit: the connection closes with 1009.
    c.send_text(json!({"type": "ping", "pad": "z".repeat(10_000)}).to_string()).await;
    assert_eq!(c.close_code(common::WAIT).await, Some(1009));

    // The server is fine for everyone else.
    let mut other = server.client("frames@example.com").await;
    assert_error(&other.get("big").await, "document_not_found");
    assert_eq!(other.content("small").await["text"].as_str().map(str::len), Some(1500));
    server.stop().await;
}

async fn oversize_documents_are_refused_on_create_and_on_update(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| config.limits.max_document_bytes = 1000).await;
    let mut c = server.client("docs@example.com").await;

    let reply = c.create("huge", json!({"text": "x".repeat(2000)})).await;
    assert_refused(&reply, "document_created_response", "payload_too_large");
    assert_error(&c.get("huge").await, "document_not_found");

    let content = json!({"text": "x".repeat(800)});
    assert_ok(&c.create("grows", content.clone()).await, "document_created_response");
    let reply = c.update("grows", json!([{"op": "add", "path": "/more", "value": "y".repeat(400)}]), Some(1)).await;
    assert_refused(&reply, "document_updated_response", "payload_too_large");
    let doc = c.get("grows").await;
    assert_eq!(doc["document"]["content"], content);
    assert_eq!(doc["document"]["sync_revision"], 1);
    // A change that stays under the limit still applies.
    let reply = c.update("grows", json!([{"op": "add", "path": "/more", "value": "small"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn a_tiny_patch_that_would_build_a_huge_document_is_refused_as_it_applies(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut c = server.client("doubler@example.com").await;
    let original = json!({"x": {"s": "a".repeat(1024)}});
    assert_ok(&c.create("d", original.clone()).await, "document_created_response");

    // 17 ops in 705 bytes: each copies `/x` into itself and doubles it, towards 130 MiB.
    let ops: Vec<Value> = (0..17).map(|i| json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")})).collect();
    for base in [Some(1), None] {
        let reply = c.update("d", Value::Array(ops.clone()), base).await;
        assert_refused(&reply, "document_updated_response", "payload_too_large");
        // Refused at the op that would first pass the 1 MiB limit (1036 * 2^10 bytes),
        // before building it, not after building the whole patch's result.
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(r#"op 9 (copy "/x/c9")"#), "{reply}");
        let doc = c.get("d").await;
        assert_eq!(doc["document"]["content"], original);
        assert_eq!(doc["document"]["sync_revision"], 1);
    }
    // The server still serves everyone: another user writes, and so does this one.
    let mut other = server.client("bystander@example.com").await;
    assert_ok(&other.create("other", json!({"n": 1})).await, "document_created_response");
    let reply = other.update("other", json!([{"op": "replace", "path": "/n", "value": 2}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    let reply = c.update("d", Value::Array(ops[..3].to_vec()), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn patches_over_max_patch_ops_are_refused(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| config.limits.max_patch_ops = 5).await;
    let mut c = server.client("ops@example.com").await;
    assert_ok(&c.create("d", json!({"n": 0})).await, "document_created_response");

    let op = |i: usize| json!({"op": "replace", "path": "/n", "value": i});
    let six: Vec<Value> = (1..=6).map(op).collect();
    let reply = c.update("d", Value::Array(six), Some(1)).await;
    assert_error(&reply, "payload_too_large");
    let doc = c.get("d").await;
    assert_eq!(
        (doc["document"]["content"]["n"].clone(), doc["document"]["sync_revision"].clone()),
        (json!(0), json!(1))
    );

    let five: Vec<Value> = (1..=5).map(op).collect();
    let reply = c.update("d", Value::Array(five), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(c.content("d").await, json!({"n": 5}));
    still_alive(&mut c).await;
    server.stop().await;
}

async fn json_nested_deeper_than_max_depth_is_refused(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| config.limits.max_depth = 8).await;
    let mut c = server.client("depth@example.com").await;

    // Content at the limit is fine; one level more is refused while decoding.
    assert_ok(&c.create("at-limit", nested(8)).await, "document_created_response");
    assert_error(&c.create("too-deep", nested(9)).await, "payload_too_large");
    assert_error(&c.get("too-deep").await, "document_not_found");

    // A patch value that is too deep by itself.
    assert_ok(&c.create("shallow", json!({})).await, "document_created_response");
    let reply = c.update("shallow", json!([{"op": "add", "path": "/v", "value": nested(9)}]), Some(1)).await;
    assert_error(&reply, "payload_too_large");
    // A patch whose values are shallow but that nests the document beyond the limit:
    // a document that deep could not be sent back to a client under the same limit.
    let deepest = "/a".repeat(7);
    let reply =
        c.update("at-limit", json!([{"op": "add", "path": format!("{deepest}/b"), "value": {"c": {}}}]), Some(1)).await;
    assert_refused(&reply, "document_updated_response", "payload_too_large");
    let doc = c.get("at-limit").await;
    assert_eq!((doc["document"]["content"].clone(), doc["document"]["sync_revision"].clone()), (nested(8), json!(1)));
    // A copy that duplicates a deep subtree one level down.
    let reply =
        c.update("at-limit", json!([{"op": "copy", "from": "/a", "path": "/a/a/a/a/a/a/a/copy"}]), Some(1)).await;
    assert_refused(&reply, "document_updated_response", "payload_too_large");
    assert_eq!(c.content("at-limit").await, nested(8));

    // Deeper than any parser limit: refused as a frame, the connection stays.
    let frame = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    c.send_text(frame).await;
    assert_error(&c.recv().await, "payload_too_large");
    still_alive(&mut c).await;
    server.stop().await;
}

async fn the_rate_limit_refuses_without_closing_and_recovers(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| {
        config.rate_limit.per_second = 1;
        config.rate_limit.burst = 3;
    })
    .await;
    let mut c = server.client("busy@example.com").await;
    // The burst: three messages go through.
    assert_ok(&c.create("d", json!({"n": 0})).await, "document_created_response");
    assert_eq!(c.get("d").await["type"], "sync_document");
    assert_eq!(c.get("d").await["type"], "sync_document");
    // Then reads get an error and changes a refused response; nothing is applied.
    assert_error(&c.get("d").await, "rate_limit_exceeded");
    let reply = c.create("d2", json!({})).await;
    assert_refused(&reply, "document_created_response", "rate_limit_exceeded");
    let reply = c.update("d", json!([{"op": "replace", "path": "/n", "value": 1}]), Some(1)).await;
    assert_refused(&reply, "document_updated_response", "rate_limit_exceeded");
    // The limit is per user: another session of the same user is limited too, another
    // user is not.
    let mut same_user = server.client("busy@example.com").await;
    assert_error(&same_user.get("d").await, "rate_limit_exceeded");
    let mut other = server.client("calm@example.com").await;
    assert_error(&other.get("d").await, "document_not_found");
    // Pings are never limited: the connection is alive.
    still_alive(&mut c).await;
    // After a refill the user may write again, and nothing refused earlier was applied.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let doc = c.get("d").await;
    assert_eq!(doc["document"]["content"], json!({"n": 0}), "{doc}");
    assert_eq!(doc["document"]["sync_revision"], 1, "{doc}");
    assert_error(&c.get("d2").await, "document_not_found");
    server.stop().await;
}

common::backend_tests!(
    malformed_json_unknown_types_and_wrong_field_types_are_invalid_message,
    invalid_document_ids_and_collections_are_refused,
    a_failing_patch_leaves_the_document_untouched,
    a_move_or_copy_from_nowhere_is_refused_even_onto_itself,
    frames_over_the_limit_are_refused_and_over_the_hard_limit_close_1009,
    oversize_documents_are_refused_on_create_and_on_update,
    a_tiny_patch_that_would_build_a_huge_document_is_refused_as_it_applies,
    patches_over_max_patch_ops_are_refused,
    json_nested_deeper_than_max_depth_is_refused,
    the_rate_limit_refuses_without_closing_and_recovers,
);
