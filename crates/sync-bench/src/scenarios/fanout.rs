//! `fanout`: one writer at a set rate, S subscribers (sessions of the writer's user) that
//! all receive every change; deliveries/s and write-to-delivery latency on one clock
//! (the writer puts its send time, on the bench's monotonic clock, into each change).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};

use crate::Target;
use crate::client::BenchClient;
use crate::report::{Latency, Report, round};

/// Parameters of the fanout scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Subscribers (one connection each).
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Changes per second the writer sends.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "type")]
    kind: String,
    patch: Option<PushPatch>,
}

#[derive(Deserialize)]
struct PushPatch {
    patch: Vec<PushOp>,
}

#[derive(Deserialize)]
struct PushOp {
    value: Option<u64>,
}

/// Counts the writer's answers: 1 for an update accepted, 0 for anything else it may get;
/// a refused update fails the run (the rate would no longer be the one asked for).
fn check_answer(raw: &[u8]) -> anyhow::Result<usize> {
    let answer: serde_json::Value = serde_json::from_slice(raw).context("parsing the writer's answer")?;
    if answer["type"] != "document_updated_response" {
        return Ok(0);
    }
    if answer["success"] != true {
        anyhow::bail!("the writer's update was refused: {}", answer["error"]);
    }
    Ok(1)
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &FanoutArgs) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let run_id = sync_core::Timestamp::now().unix_millis();
    let user = "fanout@bench.local";
    let doc_id = format!("fanout-{run_id}");
    let mut writer = BenchClient::connect(&target.url, None, target.compression).await?;
    writer.authenticate(&target.credentials, user, None).await?;
    writer
        .send(&json!({"type": "create_document", "document": {"id": doc_id, "content": {"title": "fanout", "t": 0}}}))
        .await?;
    writer.recv_type("document_created_response", Duration::from_secs(30)).await?;

    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.seconds);
    let ready = Arc::new(Barrier::new(args.subscribers + 1));
    // When the writer starts, in micros of the bench clock; set before the barrier opens.
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let connecting = Arc::new(Semaphore::new(256));
    let spread = crate::source_addresses(args.subscribers);
    let mut tasks = Vec::with_capacity(args.subscribers);
    for s in 0..args.subscribers {
        let (target, ready, done, connecting, started) = (
            target.clone_for_task(),
            Arc::clone(&ready),
            Arc::clone(&done),
            Arc::clone(&connecting),
            Arc::clone(&started),
        );
        let local = spread.get(s % spread.len().max(1)).copied();
        tasks.push(tokio::spawn(async move {
            let client = async {
                let _permit = connecting.acquire().await;
                let mut client = BenchClient::connect(&target.url, local, target.compression).await?;
                client.authenticate(&target.credentials, user, None).await?;
                anyhow::Ok(client)
            }
            .await;
            ready.wait().await;
            let mut client = client?;
            // Raw samples, merged into one histogram at the end: a histogram per subscriber
            // is ~180 KB, 1.8 GB for 10,000 of them, which the generator then spends its
            // time paging through instead of receiving.
            let mut latency: Vec<u64> = Vec::new();
            let mut deliveries = 0u64;
            // The measurement window, in send times on the bench clock.
            let start = started.load(Ordering::Acquire);
            let window = (start + warmup.as_micros() as u64, start + (warmup + measured).as_micros() as u64);
            loop {
                let raw = match client.recv_raw(Duration::from_millis(500)).await {
                    Ok(raw) => raw,
                    Err(_) if done.load(Ordering::Acquire) => break,
                    Err(e) if e.to_string().contains("timed out") => continue,
                    Err(e) => return Err(e),
                };
                let push: Push = serde_json::from_slice(&raw).context("parsing a push")?;
                if push.kind != "document_updated" {
                    continue;
                }
                let Some(sent) = push.patch.and_then(|p| p.patch.first().and_then(|op| op.value)) else { continue };
                if sent >= window.0 && sent < window.1 {
                    deliveries += 1;
                    let now = epoch.elapsed().as_micros() as u64;
                    latency.push(now.saturating_sub(sent));
                }
            }
            anyhow::Ok((deliveries, latency))
        }));
    }
    let start = epoch.elapsed();
    started.store(start.as_micros() as u64, Ordering::Release);
    ready.wait().await;
    // Open loop: a change every tick whether or not earlier ones are answered yet, so the
    // rate is the one asked for and a slow server shows as latency, not as a lower rate.
    // The writer is the document's only writer, so each accepted change moves it one
    // revision on, and the next change's base is known without waiting for the answer.
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut ticker = tokio::time::interval(interval);
    let end = start + warmup + measured;
    let (mut sent_in_window, mut revision, mut unanswered) = (0u64, 1u64, 0usize);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let t = epoch.elapsed();
                // The tick may come after the window closed: such a change would count as
                // sent but not as delivered.
                if t >= end {
                    break;
                }
                let offset = t.as_micros() as u64;
                writer
                    .send(&json!({"type": "update_document", "patch": {"document_id": doc_id,
                        "base_revision": revision, "patch": [{"op": "replace", "path": "/t", "value": offset}]}}))
                    .await?;
                revision += 1;
                unanswered += 1;
                if t - start >= warmup {
                    sent_in_window += 1;
                }
            }
            raw = writer.recv_raw(Duration::from_secs(30)), if unanswered > 0 => {
                unanswered -= check_answer(&raw?)?;
            }
        }
    }
    while unanswered > 0 {
        unanswered -= check_answer(&writer.recv_raw(Duration::from_secs(30)).await?)?;
    }
    // Let the last pushes arrive, then stop the subscribers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Release);
    let (mut deliveries, mut latency, mut failed) = (0u64, Latency::new(), 0usize);
    for task in tasks {
        match task.await.context("subscriber panicked")? {
            Ok((d, l)) => {
                deliveries += d;
                for micros in l {
                    latency.record(Duration::from_micros(micros));
                }
            }
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a subscriber failed: {e:#}");
                }
            }
        }
    }
    let expected = sent_in_window * (args.subscribers - failed) as u64;
    let mut report = Report::new("fanout", &target.backend);
    report
        .param("subscribers", args.subscribers)
        .param("rate_per_sec", args.rate)
        .param("seconds", args.seconds)
        .param("compression", target.compression)
        .figure("changes_sent", sent_in_window)
        .figure("deliveries", deliveries)
        .figure("deliveries_expected", expected)
        .figure("deliveries_per_sec", round(deliveries as f64 / args.seconds))
        .figure("failed_subscribers", failed)
        .figure("delivery_latency", latency.summary());
    Ok(report)
}
