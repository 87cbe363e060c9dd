//! Offline-first behaviour against a real server process that stops and starts:
//! offline create/edit/delete, an engine started before its server, a restart with a
//! non-empty outbox, a server restart mid-sync, a remote delete while offline, conflicts,
//! and bad input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sync_client::events::EventType;
use sync_client::{SyncEngine, SyncError};

use crate::common;

const WAIT: Duration = Duration::from_secs(20);

/// An event as recorded: type, document id, boolean data, content.
type Seen = (EventType, Option<String>, bool, Option<String>);

/// Collects every event of an engine.
fn recorder(engine: &SyncEngine) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    engine
        .event_dispatcher()
        .register_callback(
            move |t, id, _, content, _, _, flag, _| {
                log.lock().unwrap().push((t, id.map(str::to_owned), flag, content.map(str::to_owned)))
            },
            std::ptr::null_mut(),
            None,
        )
        .unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_started_before_the_server_connects_later() -> anyhow::Result<()> {
    let mut server = sync_testkit::ServerProcess::prepare_sqlite(&[])?;
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    let doc = a.create_document(json!({"title": "written offline"})).await?;
    assert!(!a.is_connected());
    assert_eq!(a.pending_count()?, 1);
    assert!(a.wait_for_sync(Duration::from_millis(300)).await.is_err(), "cannot be in sync without a server");
    server.spawn()?;
    a.wait_for_sync(WAIT).await?;
    assert!(a.is_connected());
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    b.wait_for_sync(WAIT).await?;
    assert_eq!(b.get_document(&doc.id).await?.content, json!({"title": "written offline"}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_create_edit_delete_then_reconnect() -> anyhow::Result<()> {
    let mut server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    a.wait_for_sync(WAIT).await?;
    server.kill();
    common::eventually(WAIT, "a notices the server is gone", || async { !a.is_connected() }).await;

    let gone = a.create_document(json!({"title": "temporary"})).await?;
    a.update_document(&gone.id, json!({"title": "still temporary"})).await?;
    a.delete_document(&gone.id).await?;
    let kept = a.create_document(json!({"title": "kept", "n": 0, "tags": []})).await?;
    for i in 1..=25 {
        a.update_document(&kept.id, json!({"n": i})).await?;
        a.patch_document(&kept.id, json!([{"op": "add", "path": "/tags/-", "value": format!("t{i}")}])).await?;
    }
    assert!(a.pending_count()? > 0);
    assert!(matches!(a.get_document(&gone.id).await, Err(SyncError::NotFound(_))));

    server.spawn()?;
    a.wait_for_sync(WAIT).await?;
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    b.wait_for_sync(WAIT).await?;
    let seen = b.get_document(&kept.id).await?;
    assert_eq!(seen.content["n"], 25);
    assert_eq!(seen.content["tags"].as_array().map(Vec::len), Some(25));
    assert_eq!(seen.content, a.get_document(&kept.id).await?.content);
    assert!(matches!(b.get_document(&gone.id).await, Err(SyncError::NotFound(_))), "deleted offline stays deleted");
    assert_eq!(b.count_documents().await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_non_empty_outbox_sends_it_later() -> anyhow::Result<()> {
    let mut server = sync_testkit::ServerProcess::prepare_sqlite(&[])?;
    let dir = tempfile::tempdir()?;
    let config = common::config(&server.ws_url(), &server.api_key, &server.secret, dir.path(), "a", "me@example.com");
    let ids = {
        let a = SyncEngine::with_config(config.clone())?;
        let mut ids = Vec::new();
        for i in 0..10 {
            ids.push(a.create_document(json!({"title": format!("doc {i}"), "i": i})).await?.id);
        }
        a.update_document(&ids[0], json!({"edited": true})).await?;
        // Server down: shutdown tries for its grace period, then keeps the outbox.
        a.shutdown().await?;
        ids
    };
    let reopened = SyncEngine::with_config(config)?;
    assert_eq!(reopened.pending_count()?, 11, "the outbox survived the restart");
    assert_eq!(reopened.get_document(&ids[0]).await?.content["edited"], true);
    server.spawn()?;
    reopened.wait_for_sync(WAIT).await?;
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    b.wait_for_sync(WAIT).await?;
    assert_eq!(b.count_documents().await?, 10);
    assert_eq!(b.get_document(&ids[0]).await?.content, json!({"title": "doc 0", "i": 0, "edited": true}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_sync_loses_nothing() -> anyhow::Result<()> {
    let mut server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    a.wait_for_sync(WAIT).await?;
    let doc = a.create_document(json!({"title": "counter"})).await?;
    let mut extra = Vec::new();
    for i in 0..200 {
        a.update_document(&doc.id, json!({format!("k{i}"): i})).await?;
        if i % 20 == 0 {
            extra.push(a.create_document(json!({"title": format!("extra {i}")})).await?.id);
        }
        if i == 100 {
            server.restart()?;
        }
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    a.wait_for_sync(WAIT).await?;
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    b.wait_for_sync(WAIT).await?;
    let seen = b.get_document(&doc.id).await?;
    for i in 0..200 {
        assert_eq!(seen.content[format!("k{i}")], i, "update {i} arrived exactly once and intact");
    }
    assert_eq!(seen.content, a.get_document(&doc.id).await?.content);
    for id in extra {
        b.get_document(&id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_delete_while_offline_arrives_as_a_delete() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    let b_config = common::config(&server.ws_url(), &server.api_key, &server.secret, dir.path(), "b", "me@example.com");
    let b = SyncEngine::with_config(b_config.clone())?;
    let doc = a.create_document(json!({"title": "to delete"})).await?;
    let keep = a.create_document(json!({"title": "to keep"})).await?;
    a.wait_for_sync(WAIT).await?;
    common::eventually(WAIT, "b has both", || async { b.count_documents().await.unwrap_or(0) == 2 }).await;
    b.shutdown().await?; // b goes offline

    a.delete_document(&doc.id).await?;
    a.update_document(&keep.id, json!({"touched": true})).await?;
    a.wait_for_sync(WAIT).await?;

    let b = SyncEngine::with_config(b_config)?;
    let events = recorder(&b);
    b.wait_for_sync(WAIT).await?;
    assert!(matches!(b.get_document(&doc.id).await, Err(SyncError::NotFound(_))));
    assert_eq!(b.get_document(&keep.id).await?.content["touched"], true);
    b.event_dispatcher().process_events()?;
    let events = events.lock().unwrap();
    assert!(
        events.iter().any(|(t, id, remote, _)| *t == EventType::DocumentDeleted
            && id.as_deref() == Some(doc.id.as_str())
            && *remote),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_offline_edits_converge_and_raise_conflicts() -> anyhow::Result<()> {
    let mut server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    let doc = a.create_document(json!({"title": "task", "status": "pending", "notes": []})).await?;
    a.wait_for_sync(WAIT).await?;
    common::eventually(WAIT, "b has the task", || async { b.get_document(&doc.id).await.is_ok() }).await;
    let (events_a, events_b) = (recorder(&a), recorder(&b));

    server.kill();
    common::eventually(WAIT, "both offline", || async { !a.is_connected() && !b.is_connected() }).await;
    a.update_document(&doc.id, json!({"status": "started", "by_a": true})).await?;
    b.update_document(&doc.id, json!({"status": "completed", "by_b": true})).await?;
    a.patch_document(&doc.id, json!([{"op": "add", "path": "/notes/-", "value": "a"}])).await?;
    b.patch_document(&doc.id, json!([{"op": "add", "path": "/notes/-", "value": "b"}])).await?;
    server.spawn()?;
    a.wait_for_sync(WAIT).await?;
    b.wait_for_sync(WAIT).await?;
    common::eventually(WAIT, "both equal", || async {
        match (a.get_document(&doc.id).await, b.get_document(&doc.id).await) {
            (Ok(x), Ok(y)) => x.content == y.content,
            _ => false,
        }
    })
    .await;
    let end = a.get_document(&doc.id).await?.content;
    assert_eq!((end["by_a"].clone(), end["by_b"].clone()), (json!(true), json!(true)), "disjoint edits both survive");
    assert!(end["status"] == "started" || end["status"] == "completed");
    let notes = end["notes"].as_array().unwrap();
    assert!(notes.contains(&json!("a")) && notes.contains(&json!("b")), "both inserts survive: {notes:?}");

    a.event_dispatcher().process_events()?;
    b.event_dispatcher().process_events()?;
    let conflicts: Vec<_> = events_a
        .lock()
        .unwrap()
        .iter()
        .chain(events_b.lock().unwrap().iter())
        .filter(|(t, ..)| *t == EventType::ConflictDetected)
        .cloned()
        .collect();
    assert!(!conflicts.is_empty(), "the clash on /status is reported");
    assert!(conflicts.iter().any(|(_, id, _, content)| id.as_deref() == Some(doc.id.as_str())
        && content.as_deref().is_some_and(|c| c.contains("/status"))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_writes_nothing() -> anyhow::Result<()> {
    let server = sync_testkit::ServerProcess::prepare_sqlite(&[])?;
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    let doc = a.create_document(json!({"title": "x", "n": 1})).await?;
    let before = (a.count_documents().await?, a.pending_count()?);

    assert!(matches!(a.update_document("no-such-id", json!({"a": 1})).await, Err(SyncError::NotFound(_))));
    assert!(matches!(a.delete_document("no-such-id").await, Err(SyncError::NotFound(_))));
    assert!(matches!(a.get_document("no-such-id").await, Err(SyncError::NotFound(_))));
    assert!(matches!(a.create_document_with_id("bad id/with slash", json!({})).await, Err(SyncError::InvalidInput(_))));
    assert!(matches!(a.create_document_with_id(&doc.id, json!({})).await, Err(SyncError::InvalidInput(_))));
    assert!(matches!(a.patch_document(&doc.id, json!({"op": "add"})).await, Err(SyncError::InvalidInput(_))));
    let err = a.patch_document(&doc.id, json!([{"op": "remove", "path": "/missing"}])).await.unwrap_err();
    assert!(matches!(err, SyncError::InvalidInput(_)) && err.to_string().contains("op 0"), "{err}");
    assert!(matches!(a.create_document_in("Bad Collection", json!({})).await, Err(SyncError::InvalidInput(_))));

    assert_eq!((a.count_documents().await?, a.pending_count()?), before);
    assert_eq!(a.get_document(&doc.id).await?.content, json!({"title": "x", "n": 1}));
    Ok(())
}
