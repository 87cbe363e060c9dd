//! `shared`: U users in T teams; the rules let every member read and write the team's
//! collection (after `--filler-rules` rules for other users, so the list is long). Every
//! user updates a document of its own in the team's collection, awaiting each answer;
//! teammates receive each change as a push. Reports acknowledged updates/s, deliveries/s
//! (pushes received), and then the catch-up rate of a reader who may read
//! `--catchup-docs` documents of another user (and nothing else of the log).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sync_core::auth::user_id_for_email;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;

use crate::Target;
use crate::client::{BenchClient, Credentials};
use crate::report::{Latency, Report, round};

/// Parameters of the shared scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct SharedArgs {
    /// Users (one connection each).
    #[arg(long, default_value_t = 100)]
    pub(crate) users: usize,
    /// Teams the users are spread over.
    #[arg(long, default_value_t = 10)]
    pub(crate) teams: usize,
    /// Rules for other users, placed before the teams' rules.
    #[arg(long, default_value_t = 0)]
    pub(crate) filler_rules: usize,
    /// Measured seconds of writing (after the warm-up).
    #[arg(long, default_value_t = 8.0)]
    pub(crate) seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Documents of another user a fresh reader catches up on afterwards (0: skip).
    #[arg(long, default_value_t = 0)]
    pub(crate) catchup_docs: usize,
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &SharedArgs) -> anyhow::Result<Report> {
    if args.users == 0 || args.teams == 0 || args.teams > args.users {
        bail!("--users must be at least --teams, and both above 0");
    }
    let run_id = sync_core::Timestamp::now().unix_millis();
    let email = |u: usize| format!("shared{u}-{run_id}@bench.local");
    let team_of = |u: usize| format!("team{run_id}-{}", u % args.teams);
    let catch_collection = format!("catch{run_id}");
    let reader = format!("reader-{run_id}@bench.local");

    let mut rules: Vec<Value> = (0..args.filler_rules)
        .map(|i| json!({"user": format!("filler-{i}"), "item": format!("doc:filler{i}/*"), "action": "*", "allow": true}))
        .collect();
    for u in 0..args.users {
        let item = format!("doc:{}/*", team_of(u));
        rules.push(json!({"user": user_id_for_email(&email(u)), "item": item, "action": "*", "allow": true}));
    }
    rules.push(json!({"user": user_id_for_email(&reader), "item": format!("doc:{catch_collection}/*"), "action": "read", "allow": true}));
    let rule_count = rules.len();
    put_acl(&target.url, &target.credentials, &json!({ "rules": rules })).await?;

    let barrier = Arc::new(Barrier::new(args.users + 1));
    let deliveries = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for u in 0..args.users {
        let target = target.clone_for_task();
        let barrier = Arc::clone(&barrier);
        let deliveries = Arc::clone(&deliveries);
        let (email, collection) = (email(u), team_of(u));
        let doc_id = format!("s{run_id}-{u}");
        tasks.push(tokio::spawn(async move {
            let mut client = BenchClient::connect(&target.url, None, target.compression).await?;
            client.authenticate(&target.credentials, &email, None).await?;
            client
                .send(&json!({"type": "create_document", "document": {"id": doc_id, "collection": collection,
                    "content": {"title": doc_id, "counter": 0, "payload": "x".repeat(900)}}}))
                .await?;
            let created = client.recv_type("document_created_response", Duration::from_secs(60)).await?;
            if created["success"] != true {
                bail!("create refused: {created}");
            }
            let answer = memchr::memmem::Finder::new(b"\"document_updated_response\"");
            let push = memchr::memmem::Finder::new(b"\"type\":\"document_updated\"");
            barrier.wait().await;
            let start = Instant::now();
            let (mut latency, mut acks, mut revision, mut n) = (Latency::new(), 0u64, 1u64, 0u64);
            while start.elapsed() < warmup + measured {
                n += 1;
                let message = json!({"type": "update_document", "patch": {"document_id": doc_id,
                    "base_revision": revision, "patch": [{"op": "replace", "path": "/counter", "value": n}]}});
                let sent = Instant::now();
                client.send(&message).await?;
                let in_window = sent.duration_since(start) >= warmup;
                let ack: Value = loop {
                    let raw = client.recv_raw(Duration::from_secs(30)).await?;
                    if answer.find(&raw).is_some() {
                        break serde_json::from_slice(&raw).context("parsing an answer")?;
                    }
                    if in_window && push.find(&raw).is_some() {
                        deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                };
                if ack["success"] != true {
                    bail!("update refused: {ack}");
                }
                revision = ack["sync_revision"].as_u64().unwrap_or(revision);
                if in_window {
                    acks += 1;
                    latency.record(sent.elapsed());
                }
            }
            anyhow::Ok((acks, latency))
        }));
    }
    barrier.wait().await;
    let (mut acks, mut latency) = (0u64, Latency::new());
    for task in tasks {
        let (a, l) = task.await.context("writer task panicked")??;
        acks += a;
        latency.merge(&l);
    }

    let mut report = Report::new("shared", &target.backend);
    report
        .param("users", args.users)
        .param("teams", args.teams)
        .param("rules", rule_count)
        .param("seconds", args.seconds)
        .figure("acknowledged_updates_per_sec", round(acks as f64 / args.seconds))
        .figure("deliveries_per_sec", round(deliveries.load(Ordering::Relaxed) as f64 / args.seconds))
        .figure("ack_latency", latency.summary());
    if args.catchup_docs > 0 {
        let rate = catch_up(target, args.catchup_docs, &catch_collection, &reader, run_id).await?;
        report.param("catchup_docs", args.catchup_docs).figure("catchup_docs_per_sec", round(rate));
    }
    Ok(report)
}

/// Another user creates `documents` in `collection`; the reader, whom a rule lets read
/// them, pages through the whole log from 0. Returns documents/s.
async fn catch_up(
    target: &Target,
    documents: usize,
    collection: &str,
    reader: &str,
    run_id: i64,
) -> anyhow::Result<f64> {
    let mut owner = BenchClient::connect(&target.url, None, target.compression).await?;
    owner.authenticate(&target.credentials, &format!("owner-{run_id}@bench.local"), None).await?;
    let payload = "p".repeat(196);
    let mut created = 0;
    while created < documents {
        let n = 200.min(documents - created);
        let frame: Vec<_> = (created..created + n)
            .map(|i| {
                json!({"type": "create_document", "document": {"id": format!("k{run_id}-{i}"), "collection": collection,
                "content": {"title": format!("doc {i}"), "i": i, "payload": payload}}})
            })
            .collect();
        owner.send(&Value::Array(frame)).await?;
        for _ in 0..n {
            let ack = owner.recv_type("document_created_response", Duration::from_secs(60)).await?;
            if ack["success"] != true {
                bail!("preload failed: {ack}");
            }
        }
        created += n;
    }
    drop(owner);
    let start = Instant::now();
    let mut client = BenchClient::connect(&target.url, None, target.compression).await?;
    client.authenticate(&target.credentials, reader, None).await?;
    let (events, _) = client.page_changes(0, 5000).await?;
    let elapsed = start.elapsed();
    if events != documents {
        bail!("the reader caught up {events} changes; it may read {documents}");
    }
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// `PUT /acl` on the server behind `ws_url`, signed with the (admin) credentials.
async fn put_acl(ws_url: &str, credentials: &Credentials, body: &Value) -> anyhow::Result<()> {
    let host = ws_url.strip_prefix("ws://").and_then(|rest| rest.split('/').next()).context("a ws:// url")?;
    let body = body.to_string();
    let email = "bench-admin@bench.local";
    let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
    let signature = sync_core::auth::sign(&credentials.secret, timestamp, email, &credentials.api_key, body.as_bytes());
    let request = format!(
        "PUT /acl HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Api-Key: {}\r\nX-Email: {email}\r\nX-Timestamp: {timestamp}\r\nX-Signature: {signature}\r\n\r\n{body}",
        body.len(),
        credentials.api_key,
    );
    let mut stream = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    if !response.starts_with("HTTP/1.1 204") {
        bail!("PUT /acl failed (the bench needs admin credentials): {response}");
    }
    Ok(())
}
