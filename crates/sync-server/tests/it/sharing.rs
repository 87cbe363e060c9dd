//! Sharing by access rules (PROTOCOL.md §8): `GET`/`PUT /acl`, a reader granted access
//! receiving the document and then every change without reconnecting, a writer granted
//! update merging with the owner, revocation stopping pushes and excluding the document
//! from every read, and rules that almost match leaking nothing.

use serde_json::{Value, json};
use sync_core::auth::user_id_for_email;

use crate::common::{
    self, Backend, Client, HttpResponse, TestServer, WAIT, assert_error, assert_ok, assert_refused, hmac_headers,
    http_request, now_secs,
};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

async fn put_acl(server: &TestServer, rules: &Value) -> HttpResponse {
    let body = rules.to_string();
    let headers =
        hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_request(server.addr, "PUT", "/acl", &headers, body.as_bytes()).await
}

async fn get_acl(server: &TestServer) -> Value {
    let reply = server.http_get_signed("/acl", &server.admin_key, &server.admin_secret, "admin@example.com").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn rule(user: &str, item: &str, action: &str, allow: bool) -> Value {
    json!({"user": user, "item": item, "action": action, "allow": allow})
}

/// Waits for the next message of `kind`, keeping the others for later reads.
async fn next_of(client: &mut Client, kind: &str) -> Value {
    client.find(|m| m["type"] == kind, WAIT).await.unwrap_or_else(|| panic!("no {kind} arrived within {WAIT:?}"))
}

async fn the_rules_are_data_checked_whole_and_admin_only(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    assert_eq!(get_acl(&server).await, json!({"rules": []}));

    // A bad list changes nothing and names the rule and the problem.
    let good = rule("*", "item123", "view", true);
    for (rules, needle) in [
        (json!({"rules": [good, rule("*", "doc:x*y", "read", true)]}), "rule 1"),
        (json!({"rules": [rule("*", "*", "fly", true)]}), "unknown action"),
        (json!({"rules": [{"user": "*", "item": "*", "action": "read"}]}), "allow"),
        (json!({"rules": "all"}), "array"),
        (json!(42), "expected"),
    ] {
        let reply = put_acl(&server, &rules).await;
        assert_eq!(reply.status, 400, "{rules}: {reply:?}");
        let body = reply.json();
        assert_eq!(body["error"]["code"], "invalid_message");
        assert!(body["error"]["message"].as_str().unwrap().contains(needle), "{rules}: {body}");
    }
    let body = b"{not json";
    let headers = hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = http_request(server.addr, "PUT", "/acl", &headers, body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(get_acl(&server).await, json!({"rules": []}), "nothing half-applied");

    // Admin only, both ways.
    let body = json!({"rules": []}).to_string();
    let headers = hmac_headers(&server.api_key, &server.secret, ALICE, now_secs(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(http_request(server.addr, "PUT", "/acl", &headers, body.as_bytes()).await.status, 403);
    assert_eq!(server.http_get_signed("/acl", &server.api_key, &server.secret, ALICE).await.status, 403);
    assert_eq!(server.http_get("/acl").await.status, 401);

    // The event-log system's rules work unchanged; GET answers canonical actions.
    let reply = put_acl(&server, &json!([good, rule("bob", "doc:tasks/*", "edit", false)])).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(
        get_acl(&server).await,
        json!({"rules": [rule("*", "item123", "read", true), rule("bob", "doc:tasks/*", "update", false)]})
    );
}

async fn a_granted_reader_gets_the_document_and_then_every_change(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(
        &alice.create_in("team", "list1", json!({"title": "Groceries", "items": ["milk"]})).await,
        "document_created_response",
    );
    assert_ok(&alice.create_in("private", "diary", json!({"note": "secret"})).await, "document_created_response");
    assert_error(&bob.get("list1").await, "document_not_found");

    assert_eq!(put_acl(&server, &json!([rule(&bob_id, "doc:team/*", "read", true)])).await.status, 204);
    let shared = next_of(&mut bob, "document_shared").await;
    assert_eq!(shared["document"]["id"], "list1", "{shared}");
    assert_eq!(shared["document"]["content"]["items"], json!(["milk"]));
    assert_eq!(shared["document"]["sync_revision"], 1);

    // Every later change reaches the reader, live.
    let reply = alice.update("list1", json!([{"op": "add", "path": "/items/-", "value": "eggs"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    let push = next_of(&mut bob, "document_updated").await;
    assert_eq!(push["patch"]["document_id"], "list1", "{push}");
    assert_eq!(bob.get("list1").await["document"]["content"]["items"], json!(["milk", "eggs"]));
    // Reading is not writing.
    let reply = bob.update("list1", json!([{"op": "add", "path": "/items/-", "value": "x"}]), Some(2)).await;
    assert_refused(&reply, "document_updated_response", "forbidden");
    assert_refused(&bob.delete("list1").await, "document_deleted_response", "forbidden");
    // The change feed and history show the shared document, and nothing else of alice's.
    let changes = bob.all_changes_since(0, 100).await;
    let ids: Vec<&str> = changes.iter().map(|e| e["document_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["list1", "list1"], "{changes:?}");
    assert_eq!(bob.request(json!({"type": "get_history", "document_id": "list1"})).await["type"], "history");
    assert_error(&bob.get("diary").await, "document_not_found");
    bob.send(json!({"type": "request_full_sync", "request_id": "full"})).await;
    let synced = next_of(&mut bob, "sync_document").await;
    assert_eq!((&synced["document"]["id"], &synced["request_id"]), (&json!("list1"), &json!("full")), "{synced}");
    let complete = next_of(&mut bob, "sync_complete").await;
    assert_eq!(complete["synced_count"], 1, "only the shared document: {complete}");
    // The owner's other device still gets its pushes; nothing else reached bob.
    let other = alice.until_pong().await;
    Client::assert_nothing(&other, "alice (the writer)");
}

async fn a_granted_writer_merges_with_the_owner_and_both_converge(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(&alice.create_in("team", "plan", json!({"a": 1, "b": 1})).await, "document_created_response");
    let rules = json!([rule(&bob_id, "doc:team/*", "read", true), rule(&bob_id, "doc:team/*", "update", true)]);
    assert_eq!(put_acl(&server, &rules).await.status, 204);
    next_of(&mut bob, "document_shared").await;

    // Both edit revision 1 concurrently: the second is rebased over the first.
    let a = alice.update("plan", json!([{"op": "replace", "path": "/a", "value": 2}]), Some(1)).await;
    let b = bob.update("plan", json!([{"op": "replace", "path": "/b", "value": 3}]), Some(1)).await;
    assert_ok(&a, "document_updated_response");
    assert_ok(&b, "document_updated_response");
    let (from_alice, from_bob) = (alice.get("plan").await, bob.get("plan").await);
    assert_eq!(from_alice["document"]["content"], json!({"a": 2, "b": 3}));
    assert_eq!(from_alice["document"], from_bob["document"], "both read the same state");
    assert_eq!(from_alice["document"]["user_id"], json!(user_id_for_email(ALICE)), "the owner stays alice");
    // Each got the other's change pushed.
    assert_eq!(next_of(&mut alice, "document_updated").await["patch"]["document_id"], "plan");
    assert_eq!(next_of(&mut bob, "document_updated").await["patch"]["document_id"], "plan");
    // Creating in someone else's name is not a thing: bob's create is bob's.
    assert_ok(&bob.create_in("team", "bobs", json!({})).await, "document_created_response");
    assert_eq!(alice.get("bobs").await["type"], "error", "no rule lets alice read bob's documents");
}

async fn revoking_stops_pushes_and_every_read(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(&alice.create_in("team", "list1", json!({"n": 1})).await, "document_created_response");
    assert_eq!(put_acl(&server, &json!([rule(&bob_id, "doc:team/*", "*", true)])).await.status, 204);
    next_of(&mut bob, "document_shared").await;

    assert_eq!(put_acl(&server, &json!([])).await.status, 204);
    let revoked = next_of(&mut bob, "access_revoked").await;
    assert_eq!(revoked["document_ids"], json!(["list1"]), "{revoked}");
    assert_ok(
        &alice.update("list1", json!([{"op": "replace", "path": "/n", "value": 2}]), Some(1)).await,
        "document_updated_response",
    );
    let after = bob.until_pong().await;
    Client::assert_nothing(&after, "bob after revocation");
    assert_error(&bob.get("list1").await, "document_not_found");
    assert_refused(
        &bob.update("list1", json!([{"op": "replace", "path": "/n", "value": 9}]), Some(2)).await,
        "document_updated_response",
        "document_not_found",
    );
    // Catch-up after a reconnect excludes it too.
    let (mut again, _) = server.client_resuming(BOB, 0).await;
    let pushed = again.until_pong().await;
    assert!(pushed.iter().all(|m| !m.to_string().contains("list1")), "{pushed:?}");
    assert!(again.all_changes_since(0, 100).await.is_empty());
}

/// Rules that almost match the documents: nothing reaches bob by any message or route.
async fn rules_that_almost_match_leak_nothing(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let bob_id = user_id_for_email(BOB);
    // The deny comes first: it shadows `task-*` for the secrets collections.
    let rules = json!([
        rule(&bob_id, "doc:secret*", "*", false),
        rule(&bob_id, "doc:team/*", "*", true),
        rule(&bob_id, "task-*", "*", true),
        rule(&bob_id, "doc:notes/n1", "read", true),
        rule(&bob_id, "topic:*", "*", true),
    ]);
    assert_eq!(put_acl(&server, &rules).await.status, 204);
    let mut bob = server.client(BOB).await;
    // team2 is not team; task is not task-*; n10 is not n1; nothing matches secrets.
    for (collection, id) in
        [("team2", "t2"), ("tasks", "task"), ("notes", "n10"), ("secrets", "task-9"), ("teams", "x")]
    {
        assert_ok(&alice.create_in(collection, id, json!({"leak": "LEAK"})).await, "document_created_response");
        assert_ok(
            &alice.update(id, json!([{"op": "replace", "path": "/leak", "value": "LEAK2"}]), Some(1)).await,
            "document_updated_response",
        );
    }
    let leaked = |m: &Value| m.to_string().contains("LEAK");
    let pushed = bob.until_pong().await;
    assert!(!pushed.iter().any(leaked), "{pushed:?}");
    for id in ["t2", "task", "n10", "task-9", "x"] {
        for reply in [
            bob.get(id).await,
            bob.request(json!({"type": "get_document", "document_id": id, "at_revision": 1})).await,
            bob.request(json!({"type": "get_history", "document_id": id})).await,
        ] {
            assert_error(&reply, "document_not_found");
        }
    }
    assert!(bob.all_changes_since(0, 100).await.is_empty());
    bob.send(json!({"type": "request_sync", "document_ids": ["t2", "task", "n10", "task-9", "x"]})).await;
    let mut answers = Vec::new();
    loop {
        let answer = bob.recv().await;
        let done = answer["type"] == "sync_complete";
        answers.push(answer);
        if done {
            break;
        }
    }
    assert!(!answers.iter().any(leaked), "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a["type"] == "error").count(), 5, "{answers:?}");
    let full = bob.request(json!({"type": "request_full_sync"})).await;
    assert_eq!(full["synced_count"], 0, "{full}");
    let (mut resumed, _) = server.client_resuming(BOB, 0).await;
    let caught_up = resumed.until_pong().await;
    assert!(!caught_up.iter().any(leaked), "{caught_up:?}");
    // The near misses' neighbours are shared, to show the rules do work.
    assert_ok(&alice.create_in("team", "t1", json!({"ok": true})).await, "document_created_response");
    assert_eq!(next_of(&mut bob, "document_created").await["document"]["id"], "t1");
}

/// What a resuming session is sent up to and including its last catch-up page.
async fn through_catch_up(client: &mut Client) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let message = client.recv().await;
        let last = message["type"] == "changes" && message["has_more"] == false;
        messages.push(message);
        if last {
            return messages;
        }
    }
}

fn kinds(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["type"].as_str().unwrap_or("?")).collect()
}

/// A document shared while the reader was offline, all of whose changes are older than
/// the reader's cursor, arrives as `document_shared` when it resumes, before its
/// catch-up; nothing else of the owner's does; and a later resume, with the rules
/// unchanged since, is not sent it again.
async fn a_document_granted_while_offline_arrives_on_resume(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(&alice.create_in("team", "list1", json!({"items": ["milk"]})).await, "document_created_response");
    assert_ok(&alice.create_in("private", "diary", json!({"note": "SECRET"})).await, "document_created_response");
    // Bob was last here when the log was at 2, and saw none of it.
    let (bob, welcome) = server.client_resuming(BOB, 0).await;
    let cursor = welcome["latest_sequence"].as_u64().unwrap();
    assert_eq!(cursor, 2);
    assert_eq!(welcome.get("access_reconcile"), None, "{welcome}");
    drop(bob);

    assert_eq!(put_acl(&server, &json!([rule(&bob_id, "doc:team/*", "read", true)])).await.status, 204);
    let (mut bob, welcome) = server.client_resuming(BOB, cursor).await;
    assert_eq!(welcome.get("access_reconcile"), None, "the history reaches the cursor: {welcome}");
    let caught_up = through_catch_up(&mut bob).await;
    assert_eq!(kinds(&caught_up), ["document_shared", "changes"], "{caught_up:?}");
    assert_eq!(caught_up[0]["document"]["id"], "list1");
    assert_eq!(caught_up[0]["document"]["content"], json!({"items": ["milk"]}));
    assert_eq!(caught_up[1]["events"], json!([]), "every change is older than the cursor");
    assert!(!caught_up.iter().any(|m| m.to_string().contains("SECRET")), "{caught_up:?}");
    // Later changes are pushed live.
    let reply = alice.update("list1", json!([{"op": "add", "path": "/items/-", "value": "eggs"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(next_of(&mut bob, "document_updated").await["patch"]["document_id"], "list1");
    let sequence = reply["sequence"].as_u64().unwrap();
    drop(bob);

    // Resuming after that change: the rules did not change since, nothing is resent.
    let (mut bob, _) = server.client_resuming(BOB, sequence).await;
    let caught_up = through_catch_up(&mut bob).await;
    assert_eq!(kinds(&caught_up), ["changes"], "{caught_up:?}");
}

/// A document whose access was revoked while the reader was offline is named in
/// `access_revoked` when it resumes, and none of its changes made meanwhile reach it.
async fn a_document_revoked_while_offline_is_named_on_resume(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(&alice.create_in("team", "list1", json!({"n": 1})).await, "document_created_response");
    assert_ok(&alice.create_in("team", "list2", json!({"n": 1})).await, "document_created_response");
    assert_eq!(put_acl(&server, &json!([rule(&bob_id, "doc:team/*", "read", true)])).await.status, 204);
    // The log moves past the grant, so bob's cursor is after it: nothing is shared again.
    assert_ok(&alice.create_in("private", "diary", json!({"note": "SECRET"})).await, "document_created_response");
    let (mut bob, welcome) = server.client_resuming(BOB, 0).await;
    let caught_up = through_catch_up(&mut bob).await;
    assert_eq!(caught_up.last().unwrap()["events"].as_array().unwrap().len(), 2, "{caught_up:?}");
    let cursor = welcome["latest_sequence"].as_u64().unwrap();
    assert_eq!(cursor, 3);
    drop(bob);

    // Only list2 stays shared; list1 changes meanwhile.
    assert_eq!(put_acl(&server, &json!([rule(&bob_id, "doc:team/list2", "read", true)])).await.status, 204);
    assert_ok(
        &alice.update("list1", json!([{"op": "replace", "path": "/n", "value": "LEAK"}]), Some(1)).await,
        "document_updated_response",
    );
    assert_ok(
        &alice.update("list2", json!([{"op": "replace", "path": "/n", "value": 2}]), Some(1)).await,
        "document_updated_response",
    );
    let (mut bob, _) = server.client_resuming(BOB, cursor).await;
    let caught_up = through_catch_up(&mut bob).await;
    assert_eq!(kinds(&caught_up), ["access_revoked", "changes"], "{caught_up:?}");
    assert_eq!(caught_up[0]["document_ids"], json!(["list1"]));
    let events = caught_up[1]["events"].as_array().unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["document_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["list2"], "list2's change, nothing of list1: {events:?}");
    assert!(!caught_up.iter().any(|m| m.to_string().contains("LEAK")), "{caught_up:?}");
    assert!(!caught_up.iter().any(|m| m.to_string().contains("SECRET")), "{caught_up:?}");
    let after = bob.until_pong().await;
    Client::assert_nothing(&after, "bob after resuming");
}

/// A cursor older than the history of rules kept: the session is told to reconcile
/// (`auth_success.access_reconcile`), and the oldest list kept stands for the rules it
/// went by.
async fn a_cursor_older_than_the_rules_history_asks_the_client_to_reconcile(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client(ALICE).await;
    let bob_id = user_id_for_email(BOB);
    assert_ok(&alice.create_in("team", "list1", json!({"n": 1})).await, "document_created_response");
    let shared = json!([rule(&bob_id, "doc:team/*", "read", true)]);
    assert_eq!(put_acl(&server, &shared).await.status, 204);
    assert_ok(&alice.create_in("team", "list2", json!({"n": 1})).await, "document_created_response");
    let cursor = 2;
    // More lists than the history keeps, all stored after the cursor; the oldest kept
    // still shares team, the newest shares nothing.
    for _ in 0..sync_store::ACL_HISTORY_VERSIONS {
        assert_eq!(put_acl(&server, &shared).await.status, 204);
    }
    assert_eq!(put_acl(&server, &json!([])).await.status, 204);
    let (mut bob, welcome) = server.client_resuming(BOB, cursor).await;
    assert_eq!(welcome["access_reconcile"], true, "{welcome}");
    let caught_up = through_catch_up(&mut bob).await;
    assert_eq!(kinds(&caught_up), ["access_revoked", "changes"], "{caught_up:?}");
    assert_eq!(caught_up[0]["document_ids"], json!(["list1", "list2"]));
    assert_eq!(caught_up[1]["events"], json!([]));
}

common::backend_tests!(
    a_document_granted_while_offline_arrives_on_resume,
    a_document_revoked_while_offline_is_named_on_resume,
    a_cursor_older_than_the_rules_history_asks_the_client_to_reconcile,
    the_rules_are_data_checked_whole_and_admin_only,
    a_granted_reader_gets_the_document_and_then_every_change,
    a_granted_writer_merges_with_the_owner_and_both_converge,
    revoking_stops_pushes_and_every_read,
    rules_that_almost_match_leak_nothing,
);
