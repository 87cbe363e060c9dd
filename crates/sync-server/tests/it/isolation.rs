//! User isolation: another user can neither read, change, delete, list nor replay a
//! user's documents, learns nothing from a colliding id beyond `document_exists`, and
//! never receives the user's pushes — live, through catch-up, or through a full sync.

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_error, assert_ok, assert_refused};
use serde_json::{Value, json};

const SECRET_TEXT: &str = "alice's private note";

fn leaks(message: &Value) -> bool {
    message.to_string().contains(SECRET_TEXT)
}

async fn another_user_cannot_reach_a_users_documents(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client("alice@example.com").await;
    let mut alice2 = server.client("alice@example.com").await;
    let mut bob = server.client("bob@example.com").await;

    let created = alice.create("private", json!({"note": SECRET_TEXT})).await;
    assert_ok(&created, "document_created_response");
    assert_ok(
        &alice.update("private", json!([{"op": "add", "path": "/more", "value": SECRET_TEXT}]), Some(1)).await,
        "document_updated_response",
    );

    // Reads.
    for reply in [
        bob.get("private").await,
        bob.request(json!({"type": "get_document", "document_id": "private", "at_revision": 1})).await,
        bob.request(json!({"type": "get_history", "document_id": "private"})).await,
    ] {
        assert_error(&reply, "document_not_found");
        assert!(!leaks(&reply), "{reply}");
    }
    let changes = bob.request(json!({"type": "get_changes_since", "last_sequence": 0})).await;
    assert_eq!(changes["type"], "changes");
    assert_eq!(changes["events"], json!([]), "{changes}");
    assert_eq!(changes["has_more"], false);
    let ids = bob.send_batch(vec![json!({"type": "request_sync", "document_ids": ["private"]})]).await;
    let not_found = bob.recv().await;
    assert_error(&not_found, "document_not_found");
    assert_eq!(not_found["request_id"], json!(ids[0]));
    let complete = bob.recv().await;
    assert_eq!(complete["type"], "sync_complete", "{complete}");
    assert_eq!(complete["synced_count"], 0);
    let full = bob.request(json!({"type": "request_full_sync"})).await;
    assert_eq!(full["type"], "sync_complete", "bob has no documents, so nothing precedes sync_complete: {full}");
    assert_eq!(full["synced_count"], 0);

    // Changes.
    let reply = bob.update("private", json!([{"op": "replace", "path": "/note", "value": "pwned"}]), Some(2)).await;
    assert_refused(&reply, "document_updated_response", "document_not_found");
    let reply = bob.update("private", json!([{"op": "replace", "path": "/note", "value": "pwned"}]), None).await;
    assert_refused(&reply, "document_updated_response", "document_not_found");
    let reply = bob.delete("private").await;
    assert_refused(&reply, "document_deleted_response", "document_not_found");
    // Creating under the same id: refused, and nothing of alice's document is revealed.
    let reply = bob.create("private", json!({"note": "bob's"})).await;
    assert_refused(&reply, "document_created_response", "document_exists");
    assert!(reply.get("document").is_none_or(Value::is_null), "{reply}");
    assert!(!leaks(&reply), "{reply}");
    assert!(!reply.to_string().contains(alice.user_id.as_deref().unwrap()), "{reply}");

    // Alice's document is exactly as she left it, and she saw no push from bob.
    let doc = alice.get("private").await;
    assert_eq!(doc["document"]["content"], json!({"note": SECRET_TEXT, "more": SECRET_TEXT}));
    assert_eq!(doc["document"]["sync_revision"], 2);
    let history = alice.request(json!({"type": "get_history", "document_id": "private"})).await;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(2), "{history}");
    let pushed = alice.until_pong().await;
    Client::assert_nothing(&pushed, "alice");
    // Her other session saw her own changes only.
    let pushed = alice2.until_pong().await;
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    assert!(pushed.iter().all(|m| m["type"] == "document_created" || m["type"] == "document_updated"));
    // And bob saw nothing at all.
    Client::assert_nothing(&bob.until_pong().await, "bob");
    server.stop().await;
}

async fn catch_up_and_full_sync_only_return_the_users_own_changes(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut alice = server.client("alice@example.com").await;
    let mut bob = server.client("bob@example.com").await;
    for i in 0..5 {
        assert_ok(&alice.create(&format!("a{i}"), json!({"note": SECRET_TEXT})).await, "document_created_response");
        assert_ok(&bob.create(&format!("b{i}"), json!({"mine": i})).await, "document_created_response");
    }
    assert_ok(&alice.delete("a0").await, "document_deleted_response");

    // Bob resumes from 0: his five creates only.
    let (mut resumed, _) = server.client_resuming("bob@example.com", 0).await;
    let mut events = Vec::new();
    loop {
        let page = resumed.recv().await;
        assert_eq!(page["type"], "changes", "{page}");
        assert!(!leaks(&page), "{page}");
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        if page["has_more"] == false {
            break;
        }
    }
    let ids: Vec<&str> = events.iter().map(|e| e["document_id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, ["b0", "b1", "b2", "b3", "b4"]);
    let bob_id = bob.user_id.clone().expect("user id");
    assert!(events.iter().all(|e| e["user_id"] == json!(bob_id)));

    // A full sync of bob's: five documents, none of alice's (nor her tombstone).
    let ids = bob.send_batch(vec![json!({"type": "request_full_sync"})]).await;
    let mut docs = Vec::new();
    loop {
        let message = bob.recv().await;
        assert!(!leaks(&message), "{message}");
        assert_eq!(message["request_id"], json!(ids[0]), "{message}");
        if message["type"] == "sync_complete" {
            assert_eq!(message["synced_count"], 5);
            break;
        }
        docs.push(message["document"]["id"].as_str().unwrap_or_default().to_owned());
    }
    docs.sort();
    assert_eq!(docs, ["b0", "b1", "b2", "b3", "b4"]);
    // Paging get_changes_since with a tiny page never shows alice's changes either.
    let events = bob.all_changes_since(0, 2).await;
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|e| !leaks(e)));
    server.stop().await;
}

common::backend_tests!(
    another_user_cannot_reach_a_users_documents,
    catch_up_and_full_sync_only_return_the_users_own_changes,
);
