//! The API as documented, against a real server process.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sync_client::events::EventType;

use crate::common;

/// Runs `examples/quickstart.rs` — the documented calls, four-argument `new` with the
/// secret in `SYNC_API_SECRET` — as its own process against a live server.
#[test]
fn documented_example_runs_as_written() {
    let server = common::server();
    let dir = tempfile::tempdir().unwrap();
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|debug| debug.join("examples").join("quickstart"))
        .unwrap();
    if !example.is_file() {
        // `cargo test -p sync-client` builds examples; a run of `--test it` alone does not.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "sync-client", "--example", "quickstart"])
            .status()
            .unwrap();
        assert!(status.success(), "building the quickstart example failed");
    }
    let db = format!("sqlite:{}?mode=rwc", dir.path().join("client.db").display());
    let output = Command::new(&example)
        .args([&db, &server.ws_url(), &server.api_key, "user@example.com"])
        .env("SYNC_API_SECRET", &server.secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "quickstart failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("New document: My Document"), "{stdout}");
    assert!(stdout.contains(r#""status":"completed""#) && stdout.contains(r#""title":"My Document""#), "{stdout}");
    assert!(stdout.contains("pending 0"), "{stdout}");

    // Without the secret the four-argument constructor refuses clearly.
    let output = Command::new(&example)
        .args([&db, &server.ws_url(), &server.api_key, "user@example.com"])
        .env_remove("SYNC_API_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("SYNC_API_SECRET"));
}

/// Two engines of one user converge, and remote changes raise events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_converge_and_see_each_others_changes() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "me@example.com");
    let b = common::engine(&server, dir.path(), "b", "me@example.com");
    a.wait_for_sync(Duration::from_secs(10)).await?;
    b.wait_for_sync(Duration::from_secs(10)).await?;
    let doc = a.create_document(json!({"title": "shared", "items": ["x"], "n": 0})).await?;
    common::eventually(Duration::from_secs(10), "b sees the document", || {
        let b = &b;
        let id = doc.id.clone();
        async move { b.get_document(&id).await.is_ok() }
    })
    .await;
    // Concurrent edits: disjoint fields and list inserts.
    a.update_document(&doc.id, json!({"n": 1})).await?;
    b.patch_document(&doc.id, json!([{"op": "add", "path": "/items/0", "value": "from-b"}])).await?;
    b.update_document(&doc.id, json!({"owner": "b"})).await?;
    a.patch_document(&doc.id, json!([{"op": "add", "path": "/items/-", "value": "from-a"}])).await?;
    a.wait_for_sync(Duration::from_secs(10)).await?;
    b.wait_for_sync(Duration::from_secs(10)).await?;
    common::eventually(Duration::from_secs(10), "both replicas equal", || {
        let (a, b, id) = (&a, &b, doc.id.clone());
        async move {
            let (x, y) = (a.get_document(&id).await, b.get_document(&id).await);
            matches!((x, y), (Ok(x), Ok(y)) if x.content == y.content && x.pending == 0 && y.pending == 0)
        }
    })
    .await;
    let final_doc = a.get_document(&doc.id).await?;
    assert_eq!(final_doc.content["n"], 1);
    assert_eq!(final_doc.content["owner"], "b");
    let items = final_doc.content["items"].as_array().unwrap();
    assert!(items.contains(&json!("from-a")) && items.contains(&json!("from-b")) && items.contains(&json!("x")));

    // Remote changes raised document events on b.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    b.event_dispatcher().register_callback(
        move |t, _, _, _, _, _, remote, _| log.lock().unwrap().push((t, remote)),
        std::ptr::null_mut(),
        None,
    )?;
    b.event_dispatcher().process_events()?;
    let seen = seen.lock().unwrap();
    assert!(seen.contains(&(EventType::DocumentCreated, true)), "{seen:?}");
    assert!(seen.contains(&(EventType::DocumentUpdated, true)), "{seen:?}");
    Ok(())
}

/// A fresh replica catches up over many `get_changes_since` pages: it ends with the
/// same documents and cursor as the writer, raises one event per remote change, and
/// after a restart does not apply any of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_catches_up_over_many_pages() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let a = common::engine(&server, dir.path(), "a", "pages@example.com");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(a.create_document(json!({"title": format!("doc {i}"), "i": i})).await?.id);
    }
    a.update_document(&ids[0], json!({"title": "doc 0 renamed"})).await?;
    a.delete_document(&ids[1]).await?;
    a.wait_for_sync(Duration::from_secs(10)).await?;

    let url = server.ws_url();
    let mut config = common::config(&url, &server.api_key, &server.secret, dir.path(), "b", "pages@example.com");
    config.catch_up_page = 2;
    let b = sync_client::SyncEngine::with_config(config.clone())?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    b.event_dispatcher().register_callback(
        move |t, id, title, content, _, _, remote, _| {
            if matches!(t, EventType::DocumentCreated | EventType::DocumentUpdated | EventType::DocumentDeleted) {
                let content = content.map(|c| serde_json::from_str::<serde_json::Value>(c).unwrap());
                log.lock().unwrap().push((t, id.unwrap().to_owned(), title.map(str::to_owned), content, remote));
            }
        },
        std::ptr::null_mut(),
        None,
    )?;
    b.wait_for_sync(Duration::from_secs(10)).await?;
    assert_eq!(b.list_documents(None).await?, a.list_documents(None).await?);
    assert_eq!(b.count_documents().await?, 6);
    assert_eq!(b.last_synced_sequence(), 9, "seven creates, an update and a delete");
    assert_eq!(b.get_document(&ids[0]).await?.content, json!({"title": "doc 0 renamed", "i": 0}));

    b.event_dispatcher().process_events()?;
    let events = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(events.len(), 9, "{events:?}");
    // Documents are pushed in parallel, so the log orders them by arrival at the server;
    // each document's own changes keep their order.
    let mut expected: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let title = format!("doc {i}");
            (EventType::DocumentCreated, id.clone(), Some(title.clone()), Some(json!({"title": title, "i": i})), true)
        })
        .collect();
    let renamed = Some(json!({"title": "doc 0 renamed", "i": 0}));
    expected.push((EventType::DocumentUpdated, ids[0].clone(), Some("doc 0 renamed".into()), renamed, true));
    expected.push((EventType::DocumentDeleted, ids[1].clone(), None, None, true));
    for (id, later) in [(&ids[0], EventType::DocumentUpdated), (&ids[1], EventType::DocumentDeleted)] {
        let of_doc: Vec<EventType> = events.iter().filter(|e| &e.1 == id).map(|e| e.0).collect();
        assert_eq!(of_doc, vec![EventType::DocumentCreated, later]);
    }
    let key = |e: &(EventType, String, _, _, bool)| (e.1.clone(), e.0 as i32);
    let mut events = events;
    events.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(events, expected);

    // The cursor was stored with the documents: a restart applies nothing again.
    b.shutdown().await?;
    let b = sync_client::SyncEngine::with_config(config)?;
    let log = std::sync::Arc::clone(&seen);
    b.event_dispatcher().register_callback(
        move |t, id, _, _, _, _, _, _| {
            log.lock().unwrap().push((t, id.unwrap_or_default().to_owned(), None, None, false))
        },
        std::ptr::null_mut(),
        Some(EventType::DocumentCreated),
    )?;
    b.wait_for_sync(Duration::from_secs(10)).await?;
    assert_eq!(b.last_synced_sequence(), 9);
    assert_eq!(b.count_documents().await?, 6);
    b.event_dispatcher().process_events()?;
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
    Ok(())
}
