//! Exactly-once, gap-free delivery: a session that resumes with `last_sequence: N` while
//! another session keeps writing receives every change after N once, in increasing
//! sequence — first as `changes` pages, then as live pushes; a session without
//! `last_sequence` gets live pushes from `auth_success.latest_sequence` on. Also
//! `get_changes_since` paging (`limit`, `latest_sequence`, `has_more`) and that it is a
//! pure query.

use crate::common;

use std::time::Duration;

use crate::common::{Backend, Client, TestServer, assert_ok};
use serde_json::{Value, json};
use tokio::sync::watch;

const EMAIL: &str = "resume@example.com";

/// Writes `count` changes as fast as the server takes them (batches of `per_frame`
/// updates to a few documents), publishing the newest acknowledged sequence.
async fn write_load(mut writer: Client, count: usize, per_frame: usize, newest: watch::Sender<u64>) -> u64 {
    let mut written = 0;
    let mut last = 0;
    while written < count {
        let n = per_frame.min(count - written);
        let frame: Vec<Value> = (0..n)
            .map(|k| {
                let i = written + k;
                json!({"type": "update_document", "patch": {"document_id": format!("w{}", i % 3), "patch": [{"op": "replace", "path": "/n", "value": i}]}})
            })
            .collect();
        let ids = writer.send_batch(frame).await;
        for reply in writer.replies(&ids).await {
            assert_ok(&reply, "document_updated_response");
            last = last.max(reply["sequence"].as_u64().expect("sequence"));
        }
        written += n;
        newest.send_replace(last);
    }
    last
}

/// Reads what a session receives until it has seen everything up to the writer's final
/// sequence (`start` is the position the session starts after); returns the sequences in
/// arrival order and whether each came from a `changes` page.
async fn collect_until(
    client: &mut Client,
    start: u64,
    newest: &watch::Receiver<u64>,
    done: &watch::Receiver<bool>,
) -> Vec<(u64, bool)> {
    let mut seen = Vec::new();
    let mut quiet_since = tokio::time::Instant::now();
    loop {
        let reached = seen.last().map_or(start, |(s, _)| *s);
        if *done.borrow() && reached >= *newest.borrow() {
            return seen;
        }
        // Short polls, so the end of the load is noticed while nothing arrives.
        let Some(message) = client.try_recv(Duration::from_millis(100)).await else {
            assert!(
                quiet_since.elapsed() < common::WAIT,
                "the session went quiet or closed after {} messages (last {:?}; writer at {}, done {})",
                seen.len(),
                seen.last(),
                *newest.borrow(),
                *done.borrow()
            );
            continue;
        };
        quiet_since = tokio::time::Instant::now();
        match message["type"].as_str().unwrap_or_default() {
            "changes" => {
                assert!(message.get("request_id").is_none(), "catch-up pages are unrequested: {message}");
                for event in message["events"].as_array().expect("events") {
                    seen.push((event["sequence"].as_u64().expect("sequence"), true));
                }
            }
            "document_created" | "document_updated" | "document_deleted" => {
                seen.push((message["sequence"].as_u64().expect("sequence"), false));
            }
            other => panic!("unexpected {other}: {message}"),
        }
    }
}

#[track_caller]
fn assert_exactly_once(label: &str, seen: &[(u64, bool)], after: u64, until: u64) {
    let sequences: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    let expected: Vec<u64> = (after + 1..=until).collect();
    if sequences != expected {
        let mut dupes = sequences.clone();
        dupes.sort_unstable();
        dupes.dedup();
        panic!(
            "{label}: expected {}..={until} once each, got {} messages ({} distinct); first differences: {:?}",
            after + 1,
            sequences.len(),
            dupes.len(),
            sequences.iter().zip(&expected).enumerate().find(|(_, (a, b))| a != b)
        );
    }
    // All `changes` pages come before the first live push.
    if let Some(first_live) = seen.iter().position(|(_, page)| !page) {
        assert!(seen[first_live..].iter().all(|(_, page)| !page), "{label}: a catch-up page after a live push");
    }
}

async fn resuming_during_concurrent_writes_delivers_every_change_exactly_once(backend: Backend) {
    // Small catch-up pages, so a resume spans several pages while writes continue.
    let server = TestServer::start_on_with(backend, |config| config.limits.max_page = 7).await;
    let mut setup = server.client(EMAIL).await;
    for i in 0..3 {
        assert_ok(&setup.create(&format!("w{i}"), json!({"n": 0})).await, "document_created_response");
    }
    for i in 0..40 {
        assert_ok(
            &setup.update(&format!("w{}", i % 3), json!([{"op": "replace", "path": "/n", "value": i}]), None).await,
            "document_updated_response",
        );
    }
    let before_load = setup.request(json!({"type": "get_changes_since", "last_sequence": 0, "limit": 1}))
        .await["events"][0]["sequence"]
        .as_u64()
        .expect("first sequence");
    assert_eq!(before_load, 1);

    let (newest_tx, newest_rx) = watch::channel(0u64);
    let (done_tx, done_rx) = watch::channel(false);
    let writer = server.client(EMAIL).await;
    let load = tokio::spawn(async move {
        let last = write_load(writer, 600, 4, newest_tx).await;
        done_tx.send_replace(true);
        last
    });

    // Readers resume from different points while the load runs: from the start, from the
    // middle of the old changes, and from wherever the writer currently is.
    let mut readers = Vec::new();
    for r in 0..24u64 {
        let after = match r % 3 {
            0 => 0,
            1 => 20,
            _ => *newest_rx.borrow(),
        };
        let (client, auth) = server.client_resuming(EMAIL, after).await;
        assert!(auth["latest_sequence"].as_u64().expect("latest") >= after);
        let (until, done) = (newest_rx.clone(), done_rx.clone());
        readers.push(tokio::spawn(async move {
            let mut client = client;
            let seen = collect_until(&mut client, after, &until, &done).await;
            (after, seen)
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = tokio::time::timeout(Duration::from_secs(60), load).await.expect("load finishes").expect("load task");
    for (r, reader) in readers.into_iter().enumerate() {
        let (after, seen) =
            tokio::time::timeout(Duration::from_secs(30), reader).await.expect("reader").expect("reader task");
        assert_exactly_once(&format!("reader {r} resumed after {after}"), &seen, after, last);
    }
    server.stop().await;
}

async fn without_last_sequence_live_pushes_start_right_after_latest_sequence(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut setup = server.client(EMAIL).await;
    for i in 0..3 {
        assert_ok(&setup.create(&format!("w{i}"), json!({"n": 0})).await, "document_created_response");
    }
    // Sessions that connect while changes are being delivered: each must receive every
    // push after the latest_sequence it was told, once, and none at or below it.
    let (newest_tx, newest_rx) = watch::channel(0u64);
    let (done_tx, done_rx) = watch::channel(false);
    let writer = server.client(EMAIL).await;
    let load = tokio::spawn(async move {
        let last = write_load(writer, 500, 1, newest_tx).await;
        done_tx.send_replace(true);
        last
    });
    let mut readers = Vec::new();
    for _ in 0..15 {
        let mut client = server.connect().await;
        let auth = client.authenticate(&server.api_key, &server.secret, EMAIL, None, None).await;
        let latest = auth["latest_sequence"].as_u64().expect("latest_sequence");
        let (until, done) = (newest_rx.clone(), done_rx.clone());
        readers.push(tokio::spawn(async move {
            let seen = collect_until(&mut client, latest, &until, &done).await;
            (latest, seen)
        }));
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    let last = tokio::time::timeout(Duration::from_secs(60), load).await.expect("load").expect("load task");
    for (r, reader) in readers.into_iter().enumerate() {
        let (latest, seen) =
            tokio::time::timeout(Duration::from_secs(30), reader).await.expect("reader").expect("task");
        assert!(seen.iter().all(|(_, page)| !page), "no catch-up without last_sequence");
        assert_exactly_once(&format!("reader {r} told latest_sequence {latest}"), &seen, latest, last);
    }

    // With nothing else going on, the next change is exactly latest_sequence + 1.
    let mut reader = server.connect().await;
    let auth = reader.authenticate(&server.api_key, &server.secret, EMAIL, None, None).await;
    let latest = auth["latest_sequence"].as_u64().expect("latest_sequence");
    assert_eq!(latest, last);
    let reply = setup.update("w0", json!([{"op": "replace", "path": "/n", "value": -1}]), None).await;
    assert_eq!(reply["sequence"], latest + 1);
    let push = reader.recv_type("document_updated").await;
    assert_eq!(push["sequence"], latest + 1);
    server.stop().await;
}

async fn get_changes_since_pages_and_is_a_pure_query(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut a = server.client(EMAIL).await;
    let mut other = server.client(EMAIL).await;
    assert_ok(&a.create("d", json!({"n": 0})).await, "document_created_response");
    for i in 1..=9 {
        assert_ok(
            &a.update("d", json!([{"op": "replace", "path": "/n", "value": i}]), Some(i)).await,
            "document_updated_response",
        );
    }
    assert_ok(&a.delete("d").await, "document_deleted_response");
    assert_eq!(other.until_pong().await.len(), 11, "the other session got 11 pushes");

    // Pages of 4: 1-4, 5-8, 9-11.
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = a.request(json!({"type": "get_changes_since", "last_sequence": after, "limit": 4})).await;
        assert_eq!(page["type"], "changes");
        let seqs: Vec<u64> =
            page["events"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
        pages.push((seqs.clone(), page["latest_sequence"].as_u64().unwrap(), page["has_more"].as_bool().unwrap()));
        after = page["latest_sequence"].as_u64().unwrap();
        if page["has_more"] == false {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(pages, vec![(vec![1, 2, 3, 4], 4, true), (vec![5, 6, 7, 8], 8, true), (vec![9, 10, 11], 11, false)],);
    // A page exactly at the end says there is no more.
    let page = a.request(json!({"type": "get_changes_since", "last_sequence": 7, "limit": 4})).await;
    assert_eq!(
        (page["events"].as_array().unwrap().len(), page["latest_sequence"].clone(), page["has_more"].clone()),
        (4, json!(11), json!(false))
    );
    // Past the end: empty, and the position stays.
    let page = a.request(json!({"type": "get_changes_since", "last_sequence": 11})).await;
    assert_eq!(
        (page["events"].clone(), page["latest_sequence"].clone(), page["has_more"].clone()),
        (json!([]), json!(11), json!(false))
    );
    // The events say what happened.
    let all = a.all_changes_since(0, 100).await;
    let kinds: Vec<&str> = all.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"create"));
    assert_eq!(kinds.last(), Some(&"delete"));
    assert_eq!(all[0]["forward_patch"], json!({"n": 0}));
    assert!(all[0]["reverse_patch"].is_null());
    assert_eq!(all[10]["reverse_patch"], json!({"n": 9}));
    assert!(all[10]["forward_patch"].is_null());
    assert_eq!(all[3]["forward_patch"], json!([{"op": "replace", "path": "/n", "value": 3}]));
    assert_eq!(all[3]["reverse_patch"], json!([{"op": "replace", "path": "/n", "value": 2}]));
    // A limit of 0 is read as the smallest page, not as "everything".
    let page = a.request(json!({"type": "get_changes_since", "last_sequence": 0, "limit": 0})).await;
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");

    // Pure: querying pushed nothing to anyone, and live pushes continue as before.
    Client::assert_nothing(&a.until_pong().await, "the querying session");
    Client::assert_nothing(&other.until_pong().await, "the other session");
    assert_ok(&a.create("e", json!({})).await, "document_created_response");
    let push = other.recv_type("document_created").await;
    assert_eq!(push["sequence"], 12);
    // And a querying session still gets live pushes after its query.
    assert_ok(&other.create("f", json!({})).await, "document_created_response");
    assert_eq!(a.recv_type("document_created").await["sequence"], 13);
    server.stop().await;
}

async fn resume_from_the_latest_position_sends_one_empty_page(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut a = server.client(EMAIL).await;
    assert_ok(&a.create("d", json!({})).await, "document_created_response");
    let (mut resumed, auth) = server.client_resuming(EMAIL, 1).await;
    assert_eq!(auth["latest_sequence"], 1);
    let page = resumed.recv().await;
    assert_eq!(page["type"], "changes", "{page}");
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["has_more"], false);
    assert_eq!(page["latest_sequence"], 1);
    Client::assert_nothing(&resumed.until_pong().await, "the resumed session");
    server.stop().await;
}

common::backend_tests!(
    resuming_during_concurrent_writes_delivers_every_change_exactly_once,
    without_last_sequence_live_pushes_start_right_after_latest_sequence,
    get_changes_since_pages_and_is_a_pure_query,
    resume_from_the_latest_position_sends_one_empty_page,
);
