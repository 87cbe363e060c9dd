//! `write`: W writers, each sending small patches to ~1 KB documents with
//! `base_revision` and awaiting each acknowledgement; reports acknowledged updates/s and
//! acknowledgement latency. With `--hot`, every writer patches its own field of one
//! shared document, so most updates arrive stale and are rebased by the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Barrier;

use crate::Target;
use crate::client::BenchClient;
use crate::report::{Latency, Report, round};

/// Parameters of the write scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct WriteArgs {
    /// Concurrent writers (one connection each).
    #[arg(long, default_value_t = 100)]
    pub(crate) writers: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    /// Approximate size of each document.
    #[arg(long, default_value_t = 1024)]
    pub(crate) doc_bytes: usize,
    /// All writers on one document (disjoint fields).
    #[arg(long)]
    pub(crate) hot: bool,
}

#[derive(Deserialize)]
struct Ack {
    #[serde(rename = "type")]
    kind: String,
    success: Option<bool>,
    sync_revision: Option<u64>,
    error: Option<serde_json::Value>,
}

struct WriterResult {
    latency: Latency,
    acks: u64,
    errors: u64,
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &WriteArgs) -> anyhow::Result<Report> {
    let run_id = sync_core::Timestamp::now().unix_millis();
    let hot_id = format!("hot-{run_id}");
    let hot_user = "hot-writer@bench.local";
    let payload = "x".repeat(args.doc_bytes.saturating_sub(120));
    if args.hot {
        let mut setup = BenchClient::connect(&target.url, None, target.compression).await?;
        setup.authenticate(&target.credentials, hot_user, None).await?;
        let mut content = json!({"title": "hot document", "payload": payload});
        for w in 0..args.writers {
            content[format!("w{w}")] = json!(0);
        }
        create(&mut setup, &hot_id, content).await?;
    }
    let barrier = Arc::new(Barrier::new(args.writers + 1));
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let target = target.clone_for_task();
        let barrier = Arc::clone(&barrier);
        let (doc_id, email, field) = if args.hot {
            (hot_id.clone(), hot_user.to_owned(), format!("/w{w}"))
        } else {
            (format!("w{w}-{run_id}"), format!("writer{w}@bench.local"), "/counter".to_owned())
        };
        let payload = payload.clone();
        let hot = args.hot;
        tasks.push(tokio::spawn(async move {
            let mut client = BenchClient::connect(&target.url, None, target.compression).await?;
            client.authenticate(&target.credentials, &email, None).await?;
            let mut revision = if hot {
                1
            } else {
                create(&mut client, &doc_id, json!({"title": doc_id, "payload": payload, "counter": 0})).await?
            };
            // Other writers' changes of the hot document arrive as pushes, ~99 per answer:
            // every one is read off the wire, but only an answer is parsed. Parsing them
            // all took about a quarter of the generator's CPU, which it shares with the server.
            let answer = memchr::memmem::Finder::new(b"\"document_updated_response\"");
            barrier.wait().await;
            let start = Instant::now();
            let mut result = WriterResult { latency: Latency::new(), acks: 0, errors: 0 };
            let mut n = 0u64;
            while start.elapsed() < warmup + measured {
                n += 1;
                let message = json!({"type": "update_document", "patch": {
                    "document_id": doc_id, "base_revision": revision,
                    "patch": [{"op": "replace", "path": field, "value": n}]}});
                let sent = Instant::now();
                client.send(&message).await?;
                let ack: Ack = loop {
                    let raw = client.recv_raw(Duration::from_secs(30)).await?;
                    if answer.find(&raw).is_none() {
                        continue;
                    }
                    let parsed: Ack = serde_json::from_slice(&raw).context("parsing the server's answer")?;
                    if parsed.kind == "document_updated_response" {
                        break parsed;
                    }
                };
                let in_window = sent.duration_since(start) >= warmup;
                if ack.success == Some(true) {
                    revision = ack.sync_revision.unwrap_or(revision);
                    if in_window {
                        result.acks += 1;
                        result.latency.record(sent.elapsed());
                    }
                } else {
                    result.errors += 1;
                    if result.errors == 1 {
                        eprintln!("writer {w}: update refused: {:?}", ack.error);
                    }
                }
            }
            anyhow::Ok(result)
        }));
    }
    barrier.wait().await;
    let mut latency = Latency::new();
    let (mut acks, mut errors) = (0u64, 0u64);
    for task in tasks {
        let result = task.await.context("writer task panicked")??;
        latency.merge(&result.latency);
        acks += result.acks;
        errors += result.errors;
    }
    let mut report = Report::new(if args.hot { "write-hot" } else { "write" }, &target.backend);
    report
        .param("writers", args.writers)
        .param("seconds", args.seconds)
        .param("doc_bytes", args.doc_bytes)
        .param("compression", target.compression)
        .figure("acknowledged_updates_per_sec", round(acks as f64 / args.seconds))
        .figure("acknowledged_updates", acks)
        .figure("refused_updates", errors)
        .figure("ack_latency", latency.summary());
    Ok(report)
}

/// Creates a document; returns its revision (1).
async fn create(client: &mut BenchClient, id: &str, content: serde_json::Value) -> anyhow::Result<u64> {
    client.send(&json!({"type": "create_document", "document": {"id": id, "content": content}})).await?;
    loop {
        let reply = client.recv(Duration::from_secs(30)).await?;
        if reply["type"] == "document_created_response" {
            if reply["success"] != true {
                bail!("create failed: {reply}");
            }
            return Ok(reply["sync_revision"].as_u64().unwrap_or(1));
        }
    }
}
