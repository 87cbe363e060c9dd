//! The event-log HTTP API (PROTOCOL.md §9): a diff history pushed twice records nothing
//! twice, events are checked one by one against the rules (refused ones reported, the
//! rest applied), malformed pushes change nothing, and application events reach the
//! document's other readers over the WebSocket.

use serde_json::{Value, json};
use sync_core::auth::user_id_for_email;

use crate::common::{self, Backend, HttpResponse, TestServer, WAIT, assert_ok, hmac_headers, http_request, now_secs};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

async fn signed(server: &TestServer, method: &str, path: &str, email: &str, body: &[u8]) -> HttpResponse {
    let headers = hmac_headers(&server.api_key, &server.secret, email, now_secs(), body);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_request(server.addr, method, path, &headers, body).await
}

async fn push(server: &TestServer, email: &str, events: &Value) -> HttpResponse {
    signed(server, "POST", "/events", email, events.to_string().as_bytes()).await
}

async fn events_of(server: &TestServer, email: &str, query: &str) -> Vec<Value> {
    let reply = signed(server, "GET", &format!("/events{query}"), email, b"").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json().as_array().cloned().expect("an array of events")
}

async fn put_acl(server: &TestServer, rules: Value) {
    let body = json!({ "rules": rules }).to_string();
    let headers =
        hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = http_request(server.addr, "PUT", "/acl", &headers, body.as_bytes()).await;
    assert_eq!(reply.status, 204, "{reply:?}");
}

fn statuses(reply: &Value) -> Vec<&str> {
    reply["results"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect()
}

async fn a_diff_history_pushed_twice_is_recorded_once(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let history = json!([
        {"uuid": "e1", "timestamp": 1_700_000_000_000_i64, "userUuid": user_id_for_email(ALICE), "itemUuid": "item123",
         "action": "create", "payload": {"title": "Dishes", "done": false}, "collection": "chores"},
        {"uuid": "e2", "itemUuid": "item123", "action": "update", "payload": {"done": true, "by": "alice"}},
        {"uuid": "e3", "itemUuid": "item123", "action": "rated", "payload": {"stars": 5}},
        {"uuid": "e4", "itemUuid": "item456", "action": "create", "payload": {"title": "Laundry"}},
        {"uuid": "e5", "itemUuid": "item456", "action": "delete"},
    ]);
    let first = push(&server, ALICE, &history).await;
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json();
    assert_eq!(statuses(&first), ["applied"; 5], "{first}");
    let again = push(&server, ALICE, &history).await.json();
    assert_eq!(statuses(&again), ["duplicate"; 5], "{again}");
    for (a, b) in first["results"].as_array().unwrap().iter().zip(again["results"].as_array().unwrap()) {
        assert_eq!(a["sequence"], b["sequence"], "a duplicate names the original's sequence");
    }

    let events = events_of(&server, ALICE, "").await;
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e["uuid"].as_str().unwrap(), e["itemUuid"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("e1", "item123", "create"),
            ("e2", "item123", "update"),
            ("e3", "item123", "rated"),
            ("e4", "item456", "create"),
            ("e5", "item456", "delete")
        ],
        "each event once, in order"
    );
    assert_eq!(events[0]["payload"], json!({"title": "Dishes", "done": false}));
    assert_eq!(events[0]["userUuid"], json!(user_id_for_email(ALICE)));
    assert_eq!(events[0]["collection"], "chores");
    assert_eq!(events[2]["payload"], json!({"stars": 5}), "an application event keeps its payload");
    assert!(events.windows(2).all(|w| w[0]["sequence"].as_u64() < w[1]["sequence"].as_u64()));
    // The merge and the application event: content merged, then unchanged at a new revision.
    let mut alice = server.client(ALICE).await;
    let doc = alice.get("item123").await;
    assert_eq!(doc["document"]["content"], json!({"title": "Dishes", "done": true, "by": "alice"}));
    assert_eq!(doc["document"]["sync_revision"], 3);
    // Paging by sequence and by time.
    let after = events[2]["sequence"].as_u64().unwrap();
    assert_eq!(events_of(&server, ALICE, &format!("?fromSequence={after}")).await.len(), 2);
    assert_eq!(events_of(&server, ALICE, "?limit=2").await.len(), 2);
    assert!(events_of(&server, ALICE, "?fromTimestamp=4102444800000").await.is_empty(), "nothing after 2100");
    assert_eq!(events_of(&server, ALICE, "?fromTimestamp=2020-01-01T00:00:00Z").await.len(), 5);
    // POST with fromSequence answers what came after too.
    let reply = signed(&server, "POST", "/events?fromSequence=0", ALICE, b"[]").await.json();
    assert_eq!(reply["events"].as_array().unwrap().len(), 5, "{reply}");
    // Bob sees none of it.
    assert!(events_of(&server, BOB, "").await.is_empty());
}

async fn events_are_checked_one_by_one_against_the_rules(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let bob_id = user_id_for_email(BOB);
    let mine = json!([
        {"uuid": "a1", "itemUuid": "shared-1", "action": "create", "payload": {"n": 1}, "collection": "team"},
        {"uuid": "a2", "itemUuid": "private-1", "action": "create", "payload": {"n": 1}, "collection": "private"},
    ]);
    assert_eq!(statuses(&push(&server, ALICE, &mine).await.json()), ["applied", "applied"]);
    put_acl(&server, json!([{"user": bob_id, "item": "doc:team/*", "action": "view", "allow": true}])).await;
    let attempts = json!([
        {"uuid": "b1", "itemUuid": "shared-1", "action": "update", "payload": {"n": 2}},
        {"uuid": "b2", "itemUuid": "private-1", "action": "update", "payload": {"n": 2}},
        {"uuid": "b3", "itemUuid": "bobs-own", "action": "create", "payload": {"mine": true}},
        {"uuid": "b4", "userUuid": user_id_for_email(ALICE), "itemUuid": "bobs-own", "action": "note", "payload": 1},
        {"uuid": "b5", "itemUuid": "shared-1", "action": "comment", "payload": "nice"},
    ]);
    let reply = push(&server, BOB, &attempts).await.json();
    assert_eq!(statuses(&reply), ["refused", "refused", "applied", "refused", "refused"], "{reply}");
    let results = reply["results"].as_array().unwrap();
    assert_eq!(results[0]["error"]["code"], "forbidden", "readable, not writable");
    assert_eq!(results[1]["error"]["code"], "document_not_found", "not readable: as if missing");
    assert_eq!(results[3]["error"]["code"], "forbidden", "nobody records events in another's name");
    assert_eq!(results[4]["error"]["code"], "forbidden", "an application event needs update rights");
    // Bob reads the shared document's events and his own, nothing private.
    let seen: Vec<String> =
        events_of(&server, BOB, "").await.iter().map(|e| e["uuid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, ["a1", "b3"]);
}

async fn application_events_reach_the_other_readers_over_the_websocket(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let bob_id = user_id_for_email(BOB);
    put_acl(&server, json!([{"user": bob_id, "item": "chore-*", "action": "read", "allow": true}])).await;
    let mut alice_device = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let mut carol = server.client("carol@example.com").await;
    let create = json!([{"uuid": "c1", "itemUuid": "chore-1", "action": "create", "payload": {"title": "Bins"}}]);
    assert_eq!(statuses(&push(&server, ALICE, &create).await.json()), ["applied"]);
    assert_eq!(
        bob.find(|m| m["type"] == "document_created", WAIT).await.expect("bob gets the create")["document"]["id"],
        "chore-1"
    );
    let done =
        json!([{"uuid": "c2", "itemUuid": "chore-1", "action": "done", "payload": {"by": "alice", "minutes": 12}}]);
    assert_eq!(statuses(&push(&server, ALICE, &done).await.json()), ["applied"]);
    for (who, client) in [("bob", &mut bob), ("alice's device", &mut alice_device)] {
        let event = client
            .find(|m| m["type"] == "document_event", WAIT)
            .await
            .unwrap_or_else(|| panic!("{who} gets the event"));
        assert_eq!(event["document_id"], "chore-1");
        assert_eq!(event["action"], "done");
        assert_eq!(event["payload"], json!({"by": "alice", "minutes": 12}));
        assert_eq!(event["sync_revision"], 2);
        assert_eq!(event["client_change_id"], "c2");
    }
    let nothing = carol.until_pong().await;
    assert!(nothing.is_empty(), "carol may not read chore-1: {nothing:?}");
    // The content did not change; the revision did.
    let doc = alice_device.get("chore-1").await;
    assert_eq!(doc["document"]["content"], json!({"title": "Bins"}));
    assert_eq!(doc["document"]["sync_revision"], 2);
    // A stale WebSocket update still rebases across it.
    let reply = alice_device.update("chore-1", json!([{"op": "add", "path": "/late", "value": true}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(alice_device.get("chore-1").await["document"]["content"], json!({"title": "Bins", "late": true}));
}

async fn malformed_pushes_change_nothing(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    for (body, needle) in [
        (json!({"uuid": "x"}), "array"),
        (
            json!([{"uuid": "x1", "action": "create", "payload": {}}, {"uuid": "x2", "action": "create"}]),
            "events[0]: missing field `itemUuid`",
        ),
        (
            json!([{"uuid": "x1", "itemUuid": "i", "action": "create", "payload": {}}, {"uuid": "x2", "itemUuid": "i", "action": "update", "payload": [1]}]),
            "events[1].payload",
        ),
        (json!([{"uuid": "x1", "itemUuid": "i", "action": "create"}]), "needs the content"),
        (json!([{"uuid": "x1", "itemUuid": "bad id", "action": "create", "payload": {}}]), "events[0].itemUuid"),
        (json!([{"uuid": "x1", "itemUuid": "i", "action": "", "payload": {}}]), "events[0].action"),
        (
            json!([{"uuid": "x1", "itemUuid": "i", "action": "create", "payload": {}}, {"uuid": "x1", "itemUuid": "j", "action": "create", "payload": {}}]),
            "the same as events[0]",
        ),
        (json!([{"uuid": 7, "itemUuid": "i", "action": "create", "payload": {}}]), "events[0].uuid"),
        (
            json!([{"uuid": "x1", "itemUuid": "i", "action": "create", "payload": {}, "timestamp": "yesterday"}]),
            "timestamp",
        ),
    ] {
        let reply = push(&server, ALICE, &body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let reply = signed(&server, "POST", "/events", ALICE, b"[{").await;
    assert_eq!(reply.status, 400);
    let big = json!([{"uuid": "big", "itemUuid": "i", "action": "create", "payload": {"s": "x".repeat(2 << 20)}}]);
    assert_eq!(push(&server, ALICE, &big).await.status, 413);
    let many: Vec<Value> =
        (0..1001).map(|i| json!({"uuid": format!("m{i}"), "itemUuid": "i", "action": "n"})).collect();
    assert_eq!(push(&server, ALICE, &json!(many)).await.status, 400);
    assert!(events_of(&server, ALICE, "").await.is_empty(), "nothing half-applied");
    assert_eq!(server.http_get("/events").await.status, 401);
    assert_eq!(signed(&server, "GET", "/events?fromSequence=abc", ALICE, b"").await.status, 400);
}

common::backend_tests!(
    a_diff_history_pushed_twice_is_recorded_once,
    events_are_checked_one_by_one_against_the_rules,
    application_events_reach_the_other_readers_over_the_websocket,
    malformed_pushes_change_nothing,
);
