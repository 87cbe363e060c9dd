//! The merge rules of PROTOCOL.md §7, end to end: two sessions of one user edit the same
//! revision, the second arrives with a stale `base_revision` (or none), and the server's
//! answer (`applied_patch`, `conflicts`, errors), the final document, and the pushes the
//! other session receives are checked.

use crate::common;

use crate::common::{Backend, Client, TestServer, assert_ok, assert_refused};
use serde_json::{Value, json};
use sync_server::Config;
use sync_server::config::CollectionSection;

/// Two sessions of one user and a document both have seen at revision 1.
struct Scene {
    server: TestServer,
    /// Commits first.
    a: Client,
    /// Commits second, against the stale base.
    b: Client,
}

impl Scene {
    async fn new(backend: Backend, doc_id: &str, content: Value) -> Self {
        Self::with(backend, doc_id, "default", content, |_| {}).await
    }

    async fn with(
        backend: Backend,
        doc_id: &str,
        collection: &str,
        content: Value,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let server = TestServer::start_on_with(backend, adjust).await;
        let mut a = server.client("merge@example.com").await;
        let mut b = server.client("merge@example.com").await;
        let created = a.create_in(collection, doc_id, content).await;
        assert_ok(&created, "document_created_response");
        assert_eq!(created["sync_revision"], 1);
        let push = b.recv_type("document_created").await;
        assert_eq!(push["document"]["sync_revision"], 1);
        Self { server, a, b }
    }

    /// A commits `ops` at base 1 (→ revision 2); B receives its push.
    async fn a_commits(&mut self, doc_id: &str, ops: Value) {
        let reply = self.a.update(doc_id, ops, Some(1)).await;
        assert_ok(&reply, "document_updated_response");
        assert_eq!(reply["sync_revision"], 2, "{reply}");
        assert_eq!(reply["conflicts"], json!([]), "{reply}");
        let push = self.b.recv_type("document_updated").await;
        assert_eq!(push["patch"]["sync_revision"], 2, "{push}");
    }
}

fn conflict_paths(reply: &Value) -> Vec<(String, String, String)> {
    reply["conflicts"]
        .as_array()
        .unwrap_or_else(|| panic!("conflicts missing: {reply}"))
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap_or_default().to_owned(),
                c["op"].as_str().unwrap_or_default().to_owned(),
                c["resolution"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn rule1_edits_to_disjoint_paths_all_survive(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"a": 1, "b": 1, "nested": {"x": 1, "y": 1}})).await;
    s.a_commits(
        "d",
        json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "replace", "path": "/nested/x", "value": 2}]),
    )
    .await;
    let ops = json!([{"op": "replace", "path": "/b", "value": 3}, {"op": "add", "path": "/nested/z", "value": 3}]);
    let reply = s.b.update("d", ops, Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 3);
    assert_eq!(reply["conflicts"], json!([]));
    assert!(reply.get("applied_patch").is_none_or(Value::is_null), "nothing needed transforming: {reply}");
    let expected = json!({"a": 2, "b": 3, "nested": {"x": 2, "y": 1, "z": 3}});
    assert_eq!(s.a.content("d").await, expected);
    // A receives B's change as a push and no conflict.
    let push = s.a.recv_type("document_updated").await;
    assert_eq!(push["patch"]["sync_revision"], 3);
    Client::assert_nothing(&s.a.until_pong().await, "A (no conflict happened)");
    s.server.stop().await;
}

async fn rule2_array_indexes_shift_over_intervening_inserts_and_removals(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"l": ["x", "y", "z"], "m": ["p", "q", "r"]})).await;
    // A inserts at the front of `l` and removes the front of `m`.
    s.a_commits("d", json!([{"op": "add", "path": "/l/0", "value": "w"}, {"op": "remove", "path": "/m/0"}])).await;
    // B, at base 1, edits y (index 1 → 2) and r (index 2 → 1).
    let ops = json!([{"op": "replace", "path": "/l/1", "value": "Y"}, {"op": "replace", "path": "/m/2", "value": "R"}]);
    let reply = s.b.update("d", ops, Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(
        reply["applied_patch"],
        json!([{"op": "replace", "path": "/l/2", "value": "Y"}, {"op": "replace", "path": "/m/1", "value": "R"}]),
        "{reply}"
    );
    assert_eq!(reply["conflicts"], json!([]));
    assert_eq!(s.b.content("d").await, json!({"l": ["w", "x", "Y", "z"], "m": ["q", "R"]}));
    s.server.stop().await;
}

async fn rule2_concurrent_inserts_at_one_index_both_survive_in_commit_order(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"l": ["a", "b"]})).await;
    s.a_commits("d", json!([{"op": "add", "path": "/l/1", "value": "from-A"}])).await;
    let reply = s.b.update("d", json!([{"op": "add", "path": "/l/1", "value": "from-B"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["applied_patch"], json!([{"op": "add", "path": "/l/2", "value": "from-B"}]), "{reply}");
    assert_eq!(s.a.content("d").await, json!({"l": ["a", "from-A", "from-B", "b"]}));
    // Appends with `-` both land too, first committed first.
    let reply = s.a.update("d", json!([{"op": "add", "path": "/l/-", "value": "A-end"}]), Some(3)).await;
    assert_ok(&reply, "document_updated_response");
    let reply = s.b.update("d", json!([{"op": "add", "path": "/l/-", "value": "B-end"}]), Some(3)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(s.b.content("d").await, json!({"l": ["a", "from-A", "from-B", "b", "A-end", "B-end"]}));
    s.server.stop().await;
}

async fn rule3_an_op_on_a_removed_target_is_dropped_and_reported(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"o": {"k": 1}, "l": [{"t": 1}, {"t": 2}], "n": 0})).await;
    s.a_commits("d", json!([{"op": "remove", "path": "/o"}, {"op": "remove", "path": "/l/0"}])).await;
    let ops = json!([
        {"op": "replace", "path": "/o/k", "value": 2},
        {"op": "replace", "path": "/l/0/t", "value": 10},
        {"op": "replace", "path": "/l/1/t", "value": 20},
        {"op": "replace", "path": "/n", "value": 5},
    ]);
    let reply = s.b.update("d", ops, Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 3);
    let conflicts = conflict_paths(&reply);
    assert_eq!(
        conflicts,
        vec![
            ("/o/k".to_owned(), "replace".to_owned(), "dropped".to_owned()),
            ("/l/0/t".to_owned(), "replace".to_owned(), "dropped".to_owned()),
        ],
        "{reply}"
    );
    for c in reply["conflicts"].as_array().unwrap() {
        assert!(["target_removed", "ancestor_replaced"].contains(&c["reason"].as_str().unwrap_or("")), "{c}");
    }
    assert_eq!(
        reply["applied_patch"],
        json!([{"op": "replace", "path": "/l/0/t", "value": 20}, {"op": "replace", "path": "/n", "value": 5}]),
        "{reply}"
    );
    assert_eq!(s.a.content("d").await, json!({"l": [{"t": 20}], "n": 5}));
    s.server.stop().await;
}

async fn rule4_same_path_last_writer_wins_by_default_and_the_loser_is_told(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"title": "original", "other": 0})).await;
    s.a_commits("d", json!([{"op": "replace", "path": "/title", "value": "from A"}])).await;
    let reply = s.b.update("d", json!([{"op": "replace", "path": "/title", "value": "from B"}]), Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 3);
    assert_eq!(conflict_paths(&reply), vec![("/title".to_owned(), "replace".to_owned(), "applied".to_owned())]);
    assert_eq!(reply["conflicts"][0]["reason"], "concurrent_write");
    let doc = s.b.get("d").await;
    assert_eq!(doc["document"]["content"], json!({"title": "from B", "other": 0}));
    assert_eq!(doc["document"]["title"], "from B", "the title mirror follows content.title");

    // A, whose write was overwritten, gets the change and a conflict_detected.
    let push = s.a.recv_type("document_updated").await;
    assert_eq!(push["patch"]["sync_revision"], 3);
    let conflict = s.a.recv().await;
    assert_eq!(conflict["type"], "conflict_detected", "{conflict}");
    assert_eq!(conflict["document_id"], "d");
    assert_eq!(conflict["resolution_strategy"], "last_writer_wins");
    assert_eq!(conflict["conflicts"][0]["path"], "/title");
    assert_eq!(conflict["conflicts"][0]["op"], "replace");
    assert_eq!(conflict["server_document"]["content"]["title"], "from B");
    assert_eq!(conflict["server_document"]["sync_revision"], 3);
    // B made the winning write and learns of the clash from its response only.
    Client::assert_nothing(&s.b.until_pong().await, "B");
    s.server.stop().await;
}

async fn rule4_same_path_server_wins_keeps_the_first_write(backend: Backend) {
    let policy = |config: &mut Config| {
        config.collections.insert("tasks".into(), CollectionSection { policy: sync_core::Policy::ServerWins });
    };
    let mut s = Scene::with(backend, "t", "tasks", json!({"title": "original", "done": false}), policy).await;
    s.a_commits("t", json!([{"op": "replace", "path": "/title", "value": "from A"}])).await;
    let ops = json!([{"op": "replace", "path": "/title", "value": "from B"}, {"op": "replace", "path": "/done", "value": true}]);
    let reply = s.b.update("t", ops, Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(conflict_paths(&reply), vec![("/title".to_owned(), "replace".to_owned(), "dropped".to_owned())]);
    assert_eq!(reply["conflicts"][0]["reason"], "concurrent_write");
    assert_eq!(reply["applied_patch"], json!([{"op": "replace", "path": "/done", "value": true}]), "{reply}");
    assert_eq!(s.a.content("t").await, json!({"title": "from A", "done": true}));

    // The default collection of the same server still uses last-writer-wins.
    let mut a = s.server.client("merge@example.com").await;
    let mut b = s.server.client("merge@example.com").await;
    assert_ok(&a.create("plain", json!({"v": 0})).await, "document_created_response");
    assert_ok(
        &a.update("plain", json!([{"op": "replace", "path": "/v", "value": 1}]), Some(1)).await,
        "document_updated_response",
    );
    let reply = b.update("plain", json!([{"op": "replace", "path": "/v", "value": 2}]), Some(1)).await;
    assert_eq!(conflict_paths(&reply), vec![("/v".to_owned(), "replace".to_owned(), "applied".to_owned())]);
    assert_eq!(b.content("plain").await, json!({"v": 2}));
    s.server.stop().await;
}

async fn rule5_an_update_of_a_deleted_document_is_refused(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"v": 1})).await;
    let reply = s.a.delete("d").await;
    assert_ok(&reply, "document_deleted_response");
    assert_eq!(reply["sync_revision"], 2);
    let push = s.b.recv_type("document_deleted").await;
    assert_eq!(push["document_id"], "d");
    for base in [Some(1), Some(2), None] {
        let reply = s.b.update("d", json!([{"op": "replace", "path": "/v", "value": 2}]), base).await;
        assert_refused(&reply, "document_updated_response", "document_deleted");
    }
    let doc = s.b.get("d").await;
    assert_eq!(doc["document"]["sync_revision"], 2);
    assert!(doc["document"]["deleted_at"].is_string(), "{doc}");
    assert_eq!(doc["document"]["content"], json!({"v": 1}), "the tombstone keeps the last content");
    // Deleting again is refused the same way.
    assert_refused(&s.b.delete("d").await, "document_deleted_response", "document_deleted");
    s.server.stop().await;
}

async fn rule6_a_failing_test_rejects_the_whole_patch(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"v": 1, "w": 0})).await;
    s.a_commits("d", json!([{"op": "replace", "path": "/v", "value": 2}])).await;
    // Evaluated against the state at apply time (v is 2 now), not the base (v was 1).
    let ops = json!([{"op": "replace", "path": "/w", "value": 9}, {"op": "test", "path": "/v", "value": 1}]);
    let reply = s.b.update("d", ops, Some(1)).await;
    assert_refused(&reply, "document_updated_response", "version_mismatch");
    let doc = s.b.get("d").await;
    assert_eq!(doc["document"]["content"], json!({"v": 2, "w": 0}));
    assert_eq!(doc["document"]["sync_revision"], 2);
    // A test of a value nobody changed still holds at apply time: the patch is rebased
    // and applied at a stale base.
    let ops = json!([{"op": "test", "path": "/w", "value": 0}, {"op": "replace", "path": "/w", "value": 9}]);
    let reply = s.b.update("d", ops, Some(1)).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(s.b.content("d").await, json!({"v": 2, "w": 9}));
    // At the current base, a failing test is a version mismatch as well.
    let reply = s.b.update("d", json!([{"op": "test", "path": "/w", "value": 0}]), Some(3)).await;
    assert_refused(&reply, "document_updated_response", "version_mismatch");
    assert_eq!(s.b.get("d").await["document"]["sync_revision"], 3);
    s.server.stop().await;
}

async fn rule7_no_base_revision_uses_the_content_hash(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"v": 1, "list": [1]})).await;
    let hash_at_1 = s.a.get("d").await["document"]["content_hash"].as_str().expect("hash").to_owned();
    assert_eq!(hash_at_1, sync_core::canonical::content_hash(&json!({"v": 1, "list": [1]})));

    // A matching hash: applied as is.
    let patch =
        json!({"document_id": "d", "patch": [{"op": "replace", "path": "/v", "value": 2}], "content_hash": hash_at_1});
    let reply = s.a.update_raw(patch).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 2);
    let hash_at_2 = reply["content_hash"].as_str().expect("hash").to_owned();
    assert_eq!(hash_at_2, sync_core::canonical::content_hash(&json!({"v": 2, "list": [1]})));

    // A stale hash, blind write that applies to the current state: applied.
    let patch =
        json!({"document_id": "d", "patch": [{"op": "add", "path": "/list/-", "value": 2}], "content_hash": hash_at_1});
    let reply = s.b.update_raw(patch).await;
    assert_ok(&reply, "document_updated_response");
    assert_eq!(reply["sync_revision"], 3);
    assert_eq!(s.b.content("d").await, json!({"v": 2, "list": [1, 2]}));

    // A stale hash, blind write that does not apply: version_mismatch, nothing applied.
    let patch = json!({"document_id": "d", "patch": [
        {"op": "replace", "path": "/v", "value": 3},
        {"op": "remove", "path": "/list/5"},
    ], "content_hash": hash_at_1});
    let reply = s.b.update_raw(patch).await;
    assert_refused(&reply, "document_updated_response", "version_mismatch");
    // No hash at all behaves as a stale one.
    let reply = s.b.update("d", json!([{"op": "remove", "path": "/gone"}]), None).await;
    assert_refused(&reply, "document_updated_response", "version_mismatch");
    let reply = s.b.update("d", json!([{"op": "replace", "path": "/v", "value": 4}]), None).await;
    assert_ok(&reply, "document_updated_response");
    let doc = s.a.get("d").await;
    assert_eq!(doc["document"]["content"], json!({"v": 4, "list": [1, 2]}));
    assert_eq!(doc["document"]["sync_revision"], 4);
    s.server.stop().await;
}

async fn a_base_revision_ahead_of_the_document_is_a_mismatch(backend: Backend) {
    let mut s = Scene::new(backend, "d", json!({"v": 1})).await;
    let reply = s.a.update("d", json!([{"op": "replace", "path": "/v", "value": 2}]), Some(7)).await;
    assert_refused(&reply, "document_updated_response", "version_mismatch");
    assert_eq!(s.a.content("d").await, json!({"v": 1}));
    s.server.stop().await;
}

async fn replicas_converge_after_many_stale_concurrent_edits(backend: Backend) {
    // Both sessions keep editing from the revision they last saw, so every second change
    // is rebased; nothing may be lost and the stored hash must match the content.
    let mut s = Scene::new(backend, "d", json!({"items": [], "count": 0})).await;
    let mut base = 1;
    for round in 0..10 {
        let a =
            s.a.update("d", json!([{"op": "add", "path": "/items/0", "value": format!("a{round}")}]), Some(base)).await;
        assert_ok(&a, "document_updated_response");
        let b = s.b
            .update("d", json!([{"op": "add", "path": "/items/0", "value": format!("b{round}")}, {"op": "replace", "path": "/count", "value": round}]), Some(base))
            .await;
        assert_ok(&b, "document_updated_response");
        base = b["sync_revision"].as_u64().expect("revision");
    }
    let content = s.a.content("d").await;
    let items = content["items"].as_array().expect("items");
    assert_eq!(items.len(), 20, "{content}");
    for round in 0..10 {
        // Within a round A committed first, so at the same index A's insert comes first.
        let a = items.iter().position(|v| v == &json!(format!("a{round}"))).expect("a survives");
        let b = items.iter().position(|v| v == &json!(format!("b{round}"))).expect("b survives");
        assert!(a < b, "round {round}: {content}");
    }
    assert_eq!(content["count"], 9);
    let hash = s.a.get("d").await["document"]["content_hash"].clone();
    assert_eq!(hash, json!(sync_core::canonical::content_hash(&content)));
    s.server.stop().await;
}

common::backend_tests!(
    rule1_edits_to_disjoint_paths_all_survive,
    rule2_array_indexes_shift_over_intervening_inserts_and_removals,
    rule2_concurrent_inserts_at_one_index_both_survive_in_commit_order,
    rule3_an_op_on_a_removed_target_is_dropped_and_reported,
    rule4_same_path_last_writer_wins_by_default_and_the_loser_is_told,
    rule4_same_path_server_wins_keeps_the_first_write,
    rule5_an_update_of_a_deleted_document_is_refused,
    rule6_a_failing_test_rejects_the_whole_patch,
    rule7_no_base_revision_uses_the_content_hash,
    a_base_revision_ahead_of_the_document_is_a_mismatch,
    replicas_converge_after_many_stale_concurrent_edits,
);
