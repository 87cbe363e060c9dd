//! The RFC 6902 conformance suite (testdata/json-patch-tests) through the server: each
//! case's `doc` becomes a document, its `patch` is sent as an update at base revision 1,
//! and the stored document must equal `expected` — or, for an `error` case, the update
//! is refused and the document is unchanged.

use crate::common;

use crate::common::{Backend, Client, TestServer};
use serde_json::{Value, json};

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/../../testdata/json-patch-tests/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Runs every enabled case of `file`; returns how many ran.
async fn run(client: &mut Client, file: &str) -> usize {
    let cases: Vec<(usize, Value)> = cases(file)
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.get("disabled").and_then(Value::as_bool) != Some(true) && c.get("doc").is_some())
        .collect();
    let prefix = file.trim_end_matches(".json");
    let id = |i: usize| format!("{prefix}-{i}");

    // Create every case's document in one batch frame.
    let creates = cases
        .iter()
        .map(|(i, c)| json!({"type": "create_document", "document": {"id": id(*i), "content": c["doc"]}}))
        .collect();
    let ids = client.send_batch(creates).await;
    for (reply, (i, case)) in client.replies(&ids).await.iter().zip(&cases) {
        common::assert_ok(reply, "document_created_response");
        assert_eq!(reply["document"]["content"], case["doc"], "{file} #{i}: stored as sent");
    }
    // Send every patch in one batch frame (each answered on its own).
    let updates = cases
        .iter()
        .map(|(i, c)| json!({"type": "update_document", "patch": {"document_id": id(*i), "patch": c["patch"], "base_revision": 1}}))
        .collect();
    let ids = client.send_batch(updates).await;
    let replies = client.replies(&ids).await;
    // Read every document back.
    let gets = cases.iter().map(|(i, _)| json!({"type": "get_document", "document_id": id(*i)})).collect();
    let ids = client.send_batch(gets).await;
    let documents = client.replies(&ids).await;

    for ((reply, doc), (i, case)) in replies.iter().zip(&documents).zip(&cases) {
        let label = format!("{file} #{i} {}", case.get("comment").and_then(Value::as_str).unwrap_or(""));
        let doc = &doc["document"];
        if let Some(expected) = case.get("expected") {
            common::assert_ok(reply, "document_updated_response");
            assert_eq!(reply["sync_revision"], 2, "{label}: {reply}");
            assert_eq!(&doc["content"], expected, "{label}");
            assert_eq!(doc["sync_revision"], 2, "{label}");
            assert_eq!(doc["content_hash"], json!(sync_core::canonical::content_hash(expected)), "{label}");
        } else if case.get("error").is_some() {
            // Refused while decoding (an `error`) or while applying (a refused response).
            let refused = reply["type"] == "error" || reply["success"] == false;
            assert!(refused, "{label}: expected a refusal, got {reply}");
            // A failing `test` is a version mismatch (PROTOCOL.md §7 rule 6); any other
            // failure is a bad patch.
            let has_test = case["patch"].as_array().is_some_and(|ops| ops.iter().any(|op| op["op"] == "test"));
            let allowed: &[&str] = if has_test {
                &["invalid_patch", "invalid_message", "version_mismatch"]
            } else {
                &["invalid_patch", "invalid_message"]
            };
            assert!(allowed.contains(&common::error_code(reply)), "{label}: {reply}");
            assert_eq!(doc["content"], case["doc"], "{label}: a refused patch changed the document");
            assert_eq!(doc["sync_revision"], 1, "{label}");
        } else {
            common::assert_ok(reply, "document_updated_response");
        }
    }
    cases.len()
}

async fn rfc6902_conformance_cases_through_the_server(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut client = server.client("rfc6902@example.com").await;
    assert!(run(&mut client, "tests.json").await > 80);
    assert!(run(&mut client, "spec_tests.json").await > 10);
    server.stop().await;
}

common::backend_tests!(rfc6902_conformance_cases_through_the_server,);
