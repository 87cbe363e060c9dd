//! Smoke test: one create, update, push and read back through a real server.

use crate::common;

use crate::common::{Backend, TestServer};
use serde_json::json;

async fn create_update_push_and_read_back(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut a = server.client("alice@example.com").await;
    let mut b = server.client("alice@example.com").await;
    let created = a.create("doc1", json!({"title": "Groceries", "items": []})).await;
    assert_eq!(created["type"], "document_created_response", "{created}");
    assert_eq!(created["success"], true, "{created}");
    let push = b.recv_type("document_created").await;
    assert_eq!(push["document"]["id"], "doc1");
    let updated = a.update("doc1", json!([{"op": "add", "path": "/items/-", "value": "milk"}]), Some(1)).await;
    assert_eq!(updated["success"], true, "{updated}");
    assert_eq!(updated["sync_revision"], 2);
    let push = b.recv_type("document_updated").await;
    assert_eq!(push["patch"]["sync_revision"], 2);
    let doc = b.get("doc1").await;
    assert_eq!(doc["document"]["content"], json!({"title": "Groceries", "items": ["milk"]}));
    server.stop().await;
}

common::backend_tests!(create_update_push_and_read_back,);
