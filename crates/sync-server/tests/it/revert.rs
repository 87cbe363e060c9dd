//! `revert_document` (PROTOCOL.md §4): a new change whose content is the document's
//! content at an earlier revision, answered and pushed like any update, undone by its
//! reverse patch like any update; refused for a revision that does not exist, a document
//! the writer may not update (or read), a deleted document, and beyond the work limit.

use serde_json::{Value, json};
use sync_core::patch::{apply, parse_patch};

use crate::common::{self, Backend, TestServer, assert_ok, assert_refused, hmac_headers, http_request, now_secs};

async fn revert(client: &mut common::Client, id: &str, to_revision: u64, ccid: Option<&str>) -> Value {
    let mut message = json!({"type": "revert_document", "document_id": id, "to_revision": to_revision});
    if let Some(ccid) = ccid {
        message["client_change_id"] = json!(ccid);
    }
    client.request(message).await
}

/// A revert is a new revision whose content is the old one; the other device gets it as
/// a `document_updated` whose patch takes its copy there; its reverse patch undoes it.
async fn a_revert_restores_an_earlier_revision_as_a_new_change(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut laptop = server.client("undo@example.com").await;
    let mut phone = server.client("undo@example.com").await;
    assert_ok(
        &laptop.create("list", json!({"title": "groceries", "items": ["milk"]})).await,
        "document_created_response",
    );
    let steps = [
        json!([{"op": "add", "path": "/items/-", "value": "eggs"}]),
        json!([{"op": "replace", "path": "/title", "value": "shopping"}]),
        json!([{"op": "remove", "path": "/items/0"}, {"op": "add", "path": "/done", "value": true}]),
    ];
    for ops in steps {
        assert_ok(&laptop.update("list", ops, None).await, "document_updated_response");
    }
    let before = laptop.content("list").await;
    assert_eq!(before, json!({"title": "shopping", "items": ["eggs"], "done": true}));

    let reply = revert(&mut laptop, "list", 2, Some("5b7f2f86-6f7c-4a43-9a43-0c5d0f3a9f11")).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 5, "a new revision: {reply}");
    let restored = json!({"title": "groceries", "items": ["milk", "eggs"]});
    assert_eq!(laptop.content("list").await, restored);

    // The other device: its pushes, in order, end at the restored content.
    let mut copy = json!({"title": "groceries", "items": ["milk"]});
    for _ in 0..4 {
        let push = phone.recv_type("document_updated").await;
        let patch = parse_patch(push["patch"]["patch"].clone()).unwrap();
        apply(&mut copy, &patch).unwrap();
    }
    assert_eq!(copy, restored, "the pushed patch of the revert takes a copy to the old content");

    // In the history like any update: its reverse patch gives back what was reverted.
    let history = laptop.request(json!({"type": "get_history", "document_id": "list", "limit": 1})).await;
    let newest = &history["events"][0];
    assert_eq!(newest["sync_revision"], 5, "{history}");
    assert_eq!(newest["event_type"], "update", "{history}");
    let mut undone = restored.clone();
    apply(&mut undone, &parse_patch(newest["reverse_patch"].clone()).unwrap()).unwrap();
    assert_eq!(undone, before);

    // Sent again under the same client_change_id: the same answer, nothing applied twice.
    let again = revert(&mut laptop, "list", 2, Some("5b7f2f86-6f7c-4a43-9a43-0c5d0f3a9f11")).await;
    assert_ok(&again, "document_updated_response");
    assert_eq!(
        (again["sync_revision"].clone(), again["sequence"].clone()),
        (reply["sync_revision"].clone(), reply["sequence"].clone())
    );
    assert_eq!(laptop.get("list").await["document"]["sync_revision"], 5);

    // Reverting to the current revision makes a new revision with nothing changed.
    let same = revert(&mut laptop, "list", 5, None).await;
    assert_ok(&same, "document_updated_response");
    assert_eq!(laptop.content("list").await, restored);
}

/// What a revert may not do, each refused with its code and nothing changed.
async fn a_revert_is_refused_when_it_cannot_be_done(backend: Backend) {
    let server = TestServer::start_on_with(backend, |c| c.limits.max_rebase_work = 5).await;
    let mut owner = server.client("owner@example.com").await;
    let mut reader = server.client("reader@example.com").await;
    let mut stranger = server.client("stranger@example.com").await;
    assert_ok(&owner.create("doc", json!({"n": 0})).await, "document_created_response");
    for n in 1..=8 {
        assert_ok(
            &owner.update("doc", json!([{"op": "replace", "path": "/n", "value": n}]), None).await,
            "document_updated_response",
        );
    }
    for bad in [0, 10] {
        let reply = revert(&mut owner, "doc", bad, None).await;
        assert_refused(&reply, "document_updated_response", "invalid_message");
        assert!(reply["error"]["message"].as_str().unwrap().contains("latest is 9"), "{reply}");
    }
    // 7 revisions back, over the limit of 5.
    assert_refused(&revert(&mut owner, "doc", 2, None).await, "document_updated_response", "version_mismatch");
    assert_refused(&revert(&mut owner, "nothing", 1, None).await, "document_updated_response", "document_not_found");
    // Someone who may not read it cannot tell it exists; a reader may not change it.
    assert_refused(&revert(&mut stranger, "doc", 8, None).await, "document_updated_response", "document_not_found");
    let rules =
        json!({"rules": [{"user": reader.user_id.clone().unwrap(), "item": "doc:*", "action": "read", "allow": true}]});
    let body = rules.to_string();
    let headers =
        hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(http_request(server.addr, "PUT", "/acl", &headers, body.as_bytes()).await.status, 204);
    assert_refused(&revert(&mut reader, "doc", 8, None).await, "document_updated_response", "forbidden");
    assert_eq!(owner.content("doc").await, json!({"n": 8}), "nothing changed");
    // Within the limit: applied.
    assert_ok(&revert(&mut owner, "doc", 5, None).await, "document_updated_response");
    assert_eq!(owner.content("doc").await, json!({"n": 4}));
    // A deleted document is not brought back by a revert.
    assert_ok(&owner.delete("doc").await, "document_deleted_response");
    assert_refused(&revert(&mut owner, "doc", 9, None).await, "document_updated_response", "document_deleted");
}

common::backend_tests!(
    a_revert_restores_an_earlier_revision_as_a_new_change,
    a_revert_is_refused_when_it_cannot_be_done,
);
