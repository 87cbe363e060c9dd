//! The SQLite file's disk full, made real with a file-size limit on the server process
//! (`prlimit --fsize`, RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk,
//! once the server takes SIGXFSZ instead of dying of it). Changes that cannot be stored
//! are answered `server_error` at once — no hang, no success, no closed connection —
//! while reads, other sessions and `/health` go on; when the limit is raised on the
//! running process, writes succeed again without a restart (the refused changes, resent
//! with their `client_change_id`, apply once); and after a SIGKILL and a restart
//! without the limit, every acknowledged change is in a gap-free log.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{self, Client, ServerBinary, assert_ok, error_code};

/// Bytes any file of the server may reach: the WAL reaches it after a few hundred changes.
const LIMIT_BYTES: u64 = 2 << 20;
/// Writers, each to its own document.
const WRITERS: usize = 2;
/// Refusals each writer collects before it stops writing into the full disk.
const REFUSALS: usize = 5;
/// Changes each writer may make before the limit must have been reached.
const MOST_CHANGES: u64 = 20_000;
/// How long one answer may take: a guard against a hang, not a judgement of speed.
const ANSWER: Duration = Duration::from_secs(15);

/// An update of `/n` to `k`, with a kilobyte of padding so the disk fills fast.
fn change(doc: &str, k: u64) -> Value {
    let pad = format!("{k:08}").repeat(128);
    json!({"type": "update_document", "patch": {
        "document_id": doc,
        "patch": [{"op": "replace", "path": "/n", "value": k}, {"op": "replace", "path": "/pad", "value": pad}],
        "client_change_id": change_id(doc, k),
    }})
}

fn change_id(doc: &str, k: u64) -> String {
    format!("{doc}-{k}")
}

/// What became of one writer's changes.
#[derive(Default)]
struct Writes {
    /// (k, sequence, revision) of each acknowledged change.
    acked: Vec<(u64, u64, u64)>,
    /// The changes answered `server_error`.
    refused: Vec<u64>,
    /// The next k to write.
    next: u64,
}

impl Writes {
    /// Sends change `k` and records the answer; `true` when it was acknowledged.
    async fn send(&mut self, client: &mut Client, doc: &str, k: u64) -> bool {
        let reply = client.try_request(change(doc, k), ANSWER).await;
        let reply = reply
            .unwrap_or_else(|| panic!("{doc}: change {k} got no answer (the connection ended, or {ANSWER:?} passed)"));
        if reply["success"] == true {
            assert_ok(&reply, "document_updated_response");
            let sequence = reply["sequence"].as_u64().expect("sequence");
            let revision = reply["sync_revision"].as_u64().expect("revision");
            self.acked.push((k, sequence, revision));
            true
        } else {
            // The only acceptable refusal of a valid change: "could not store it".
            assert_eq!(error_code(&reply), "server_error", "{doc}: {reply}");
            assert!(reply.get("sequence").is_none_or(Value::is_null), "a refusal carries no sequence: {reply}");
            self.refused.push(k);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_loses_nothing_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::test_config(dir.path());
    let url = config.database.url.clone();
    let (api_key, secret) = sync_server::generate_credentials(&config, "disk", false).await.expect("credentials");
    // A soft limit, under an unlimited hard one, so that it can be raised on the running
    // process without privileges.
    let fsize = format!("--fsize={LIMIT_BYTES}:unlimited");
    let mut server = ServerBinary::start_wrapped(dir.path(), &url, &["prlimit", &fsize, "--"]).await;
    let connect = |email: &'static str| {
        let (url, api_key, secret) = (server.ws_url(), api_key.clone(), secret.clone());
        async move {
            let mut client = Client::connect(&url).await;
            let reply = client.authenticate(&api_key, &secret, email, None, None).await;
            assert_eq!(reply["type"], "auth_success", "{reply}");
            client
        }
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = connect("disk@example.com").await;
        let doc = format!("disk-{w}");
        assert_ok(&client.create(&doc, json!({"n": 0, "pad": ""})).await, "document_created_response");
        writers.push((doc, client, Writes { next: 1, ..Writes::default() }));
    }
    let mut reader = connect("disk@example.com").await;
    let mut bystander = connect("bystander@example.com").await;

    // Write until the disk is full, the writers taking turns, until each has its refusals.
    while writers.iter().any(|(_, _, writes)| writes.refused.len() < REFUSALS) {
        for (doc, client, writes) in &mut writers {
            assert!(writes.next <= MOST_CHANGES, "{doc}: {MOST_CHANGES} changes and the limit was never reached");
            writes.send(client, doc, writes.next).await;
            writes.next += 1;
        }
    }

    let counts: Vec<(usize, usize)> = writers.iter().map(|(_, _, w)| (w.acked.len(), w.refused.len())).collect();
    eprintln!("{LIMIT_BYTES} bytes: (acknowledged, refused) per writer before space returned: {counts:?}");

    // Full, the server still reads, answers and keeps every connection.
    for (doc, _, writes) in &writers {
        let &(k, _, revision) = writes.acked.last().expect("some changes fit before the disk was full");
        let document = reader.get(doc).await;
        assert_eq!(document["type"], "sync_document", "{document}");
        assert!(document["document"]["sync_revision"].as_u64() >= Some(revision), "{document}");
        assert!(document["document"]["content"]["n"].as_u64() >= Some(k), "{document}");
    }
    assert_eq!(bystander.request(json!({"type": "ping"})).await["type"], "pong");
    let health = common::http_request(server.addr, "GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200, "/health answers with the disk full");

    // Space returns: the limit is lifted on the running process, and writes succeed
    // again without a restart — first the refused changes, resent as they were.
    let raised = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .expect("run prlimit");
    assert!(raised.success(), "prlimit --pid failed: {raised}");
    for (doc, client, writes) in &mut writers {
        let refused = std::mem::take(&mut writes.refused);
        for &k in &refused {
            assert!(writes.send(client, doc, k).await, "{doc}: change {k} refused again with space back");
        }
        for _ in 0..20 {
            assert!(writes.send(client, doc, writes.next).await, "{doc}: a new change refused with space back");
            writes.next += 1;
        }
    }

    // Killed and restarted without the limit: every acknowledged change is there, once,
    // in a gap-free log.
    server.kill();
    drop((reader, bystander));
    let server = ServerBinary::start(dir.path(), &url).await;
    let mut client = Client::connect(&server.ws_url()).await;
    let reply = client.authenticate(&api_key, &secret, "disk@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    let events = client.all_changes_since(0, 500).await;
    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().expect("sequence")).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>(), "the log is gap-free from 1");
    let by_change: HashMap<&str, Vec<&Value>> = events.iter().fold(HashMap::new(), |mut map, event| {
        if let Some(id) = event["client_change_id"].as_str() {
            map.entry(id).or_default().push(event);
        }
        map
    });
    for (doc, _, writes) in &writers {
        for &(k, sequence, revision) in &writes.acked {
            let id = change_id(doc, k);
            let found = by_change.get(id.as_str()).map(Vec::as_slice).unwrap_or_default();
            assert_eq!(found.len(), 1, "{doc}: acknowledged change {k} is in the log once: {found:?}");
            let event = found[0];
            assert_eq!(event["sequence"], sequence, "{event}");
            assert_eq!(event["sync_revision"], revision, "{event}");
            assert_eq!(event["document_id"], doc.as_str(), "{event}");
            assert_eq!(event["forward_patch"][0]["value"], k, "{event}");
        }
        let revisions: Vec<u64> = events
            .iter()
            .filter(|e| e["document_id"] == doc.as_str())
            .map(|e| e["sync_revision"].as_u64().unwrap())
            .collect();
        assert_eq!(revisions, (1..=revisions.len() as u64).collect::<Vec<_>>(), "{doc}: revisions are gap-free");
        assert_eq!(client.content(doc).await["n"], writes.next - 1, "{doc}: the last change wins");
    }
}
