//! `topics`: publish/subscribe (PROTOCOL.md §4.1). T topics with S subscribers each (one
//! connection per subscriber, T × S in all) and P publishing connections; deliveries/s
//! and publish-to-receive latency on one clock (each message carries its send time on the
//! bench's monotonic clock in `data.t`).
//!
//! Two ways to drive it:
//! - `--rate R` (open loop): publishes at R / S per second, so that R deliveries/s are
//!   due, whether or not earlier ones have arrived; a slow server shows as latency (and,
//!   past its queues, as disconnected subscribers), never as a lower rate asked for;
//! - `--rate 0` (closed loop, the default): as fast as deliveries arrive, keeping at
//!   most `--window` deliveries sent but not yet received, so the figure is what the
//!   server and the subscribers sustain together without overflowing any queue.
//!
//! The two shapes of issue 14: `--topics 1 --subscribers 10000` (one topic, fanned out
//! to 10,000 sessions) and `--topics 1000 --subscribers 10`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};

use crate::Target;
use crate::client::BenchClient;
use crate::report::{Latency, Report, round};

/// Parameters of the topics scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct TopicsArgs {
    /// Topics (`bench.<run>.<k>`).
    #[arg(long, default_value_t = 1)]
    pub(crate) topics: usize,
    /// Subscribers of each topic (one connection each).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) subscribers: usize,
    /// Deliveries per second to publish for (open loop); 0 = closed loop, as fast as
    /// they arrive (see `--window`).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Closed loop: most deliveries published but not yet received (100,000: ten
    /// messages per subscriber of a 10,000-subscriber topic, far below the server's
    /// queue of 1,024 per session).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) window: u64,
    /// Publishing connections; the topics are shared out among them.
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
}

/// The send time in a delivery: the digits after `"t":` (`data` is `{"t":…,"k":…}`; no
/// other member of a `data` message is named `t`). Scanning for it costs a fraction of
/// parsing the message, and the generator shares the machine with the server.
fn sent_at(raw: &[u8]) -> Option<u64> {
    let start = memchr::memmem::find(raw, b"\"t\":")? + 4;
    let digits = raw[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&raw[start..start + digits]).ok()?.parse().ok()
}

/// What one subscriber measured.
struct Received {
    /// Deliveries of messages sent within the measured window.
    in_window: u64,
    /// Their latencies in microseconds (merged once at the end: a histogram per
    /// subscriber would be ~180 KB, 1.8 GB for 10,000).
    latency: Vec<u64>,
}

/// Shared between the publishers and the subscribers.
struct Progress {
    /// Deliveries published (messages × subscribers of their topic).
    published: AtomicU64,
    /// Deliveries received by all subscribers.
    received: AtomicU64,
    /// The run is over: subscribers stop at their next quiet moment.
    done: AtomicBool,
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &TopicsArgs) -> anyhow::Result<Report> {
    if args.topics == 0 || args.subscribers == 0 || args.publishers == 0 {
        bail!("--topics, --subscribers and --publishers must be at least 1");
    }
    let epoch = Instant::now();
    let run_id = sync_core::Timestamp::now().unix_millis();
    let topic = move |k: usize| format!("bench.{run_id}.{k}");
    let connections = args.topics * args.subscribers;
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.seconds);
    let progress =
        Arc::new(Progress { published: AtomicU64::new(0), received: AtomicU64::new(0), done: AtomicBool::new(false) });
    // When publishing starts, in micros of the bench clock: set once every connection is
    // up (`ready`), read once the second barrier (`go`) opens, so neither the warm-up nor
    // the measured window includes the set-up.
    let started = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(connections + args.publishers + 1));
    let go = Arc::new(Barrier::new(connections + args.publishers + 1));
    let connecting = Arc::new(Semaphore::new(256));
    let spread = crate::source_addresses(connections + args.publishers);

    let setup = Instant::now();
    let mut subscribers = Vec::with_capacity(connections);
    for i in 0..connections {
        let (target, ready, go, connecting, started, progress) = (
            target.clone_for_task(),
            Arc::clone(&ready),
            Arc::clone(&go),
            Arc::clone(&connecting),
            Arc::clone(&started),
            Arc::clone(&progress),
        );
        let name = topic(i % args.topics);
        let local = spread.get(i % spread.len().max(1)).copied();
        subscribers.push(tokio::spawn(async move {
            let client = async {
                let _permit = connecting.acquire().await;
                let mut client = BenchClient::connect(&target.url, local, target.compression).await?;
                client.authenticate(&target.credentials, "topics-sub@bench.local", None).await?;
                client.send(&json!({"type": "subscribe", "topic": name})).await?;
                let answer = client.recv(Duration::from_secs(30)).await?;
                if answer["type"] != "subscribed" {
                    bail!("subscribing to {name}: {answer}");
                }
                anyhow::Ok(client)
            }
            .await;
            ready.wait().await;
            go.wait().await;
            let mut client = client?;
            let start = started.load(Ordering::Acquire);
            let window = (start + warmup.as_micros() as u64, start + (warmup + measured).as_micros() as u64);
            let mut received = Received { in_window: 0, latency: Vec::new() };
            loop {
                let raw = match client.recv_raw(Duration::from_millis(500)).await {
                    Ok(raw) => raw,
                    Err(_) if progress.done.load(Ordering::Acquire) => break,
                    Err(e) if e.to_string().contains("timed out") => continue,
                    Err(e) => return Err(e),
                };
                let Some(sent) = sent_at(&raw) else { continue };
                progress.received.fetch_add(1, Ordering::Relaxed);
                if sent >= window.0 && sent < window.1 {
                    received.in_window += 1;
                    received.latency.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
                }
            }
            anyhow::Ok(received)
        }));
    }

    let mut publishers = Vec::with_capacity(args.publishers);
    for p in 0..args.publishers {
        let (target, ready, go, started, progress, args) = (
            target.clone_for_task(),
            Arc::clone(&ready),
            Arc::clone(&go),
            Arc::clone(&started),
            Arc::clone(&progress),
            args.clone(),
        );
        let names: Vec<String> = (p..args.topics).step_by(args.publishers).map(topic).collect();
        let local = spread.get((connections + p) % spread.len().max(1)).copied();
        publishers.push(tokio::spawn(async move {
            let client = async {
                let mut client = BenchClient::connect(&target.url, local, target.compression).await?;
                client.authenticate(&target.credentials, "topics-pub@bench.local", None).await?;
                anyhow::Ok(client)
            }
            .await;
            // Every task reaches both barriers, failed or not, so none waits forever.
            ready.wait().await;
            go.wait().await;
            let client = client?;
            publish(client, &names, &args, epoch, &started, &progress).await
        }));
    }

    ready.wait().await;
    let setup_seconds = setup.elapsed().as_secs_f64();
    started.store(epoch.elapsed().as_micros() as u64, Ordering::Release);
    go.wait().await;

    let mut sent = Published::default();
    let mut failed_publishers = 0;
    for publisher in publishers {
        match publisher.await.context("publisher panicked")? {
            Ok(p) => sent.add(&p),
            Err(e) => {
                failed_publishers += 1;
                eprintln!("a publisher failed: {e:#}");
            }
        }
    }
    // Let what is still on its way arrive (bounded), then stop the subscribers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.received.load(Ordering::Relaxed) < progress.published.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.done.store(true, Ordering::Release);
    let (mut deliveries, mut latency, mut failed) = (0u64, Latency::new(), 0usize);
    for subscriber in subscribers {
        match subscriber.await.context("subscriber panicked")? {
            Ok(received) => {
                deliveries += received.in_window;
                for micros in received.latency {
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
    if failed_publishers > 0 {
        bail!("{failed_publishers} publisher(s) failed");
    }
    let mut report = Report::new("topics", &target.backend);
    report
        .param("topics", args.topics)
        .param("subscribers_per_topic", args.subscribers)
        .param("publishers", args.publishers)
        .param("mode", if args.rate > 0.0 { "open loop" } else { "closed loop" })
        .param("rate_deliveries_per_sec", args.rate)
        .param("window_deliveries", args.window)
        .param("seconds", args.seconds)
        .param("compression", target.compression)
        .figure("connections", connections + args.publishers)
        .figure("setup_seconds", round(setup_seconds))
        .figure("publishes", sent.in_window)
        .figure("publishes_refused", sent.refused)
        .figure("deliveries", deliveries)
        .figure("deliveries_expected", sent.in_window * args.subscribers as u64)
        .figure("deliveries_server_queued", sent.delivered_in_window)
        .figure("deliveries_per_sec", round(deliveries as f64 / args.seconds))
        .figure("failed_subscribers", failed)
        .figure("delivery_latency", latency.summary());
    Ok(report)
}

/// What one publisher sent.
#[derive(Default)]
struct Published {
    /// Publishes sent within the measured window.
    in_window: u64,
    /// The sessions the server said it queued those for (`published.delivered`).
    delivered_in_window: u64,
    /// Publishes the server refused (any time).
    refused: u64,
}

impl Published {
    fn add(&mut self, other: &Published) {
        self.in_window += other.in_window;
        self.delivered_in_window += other.delivered_in_window;
        self.refused += other.refused;
    }
}

/// One publisher: round-robin over its topics, at its share of `--rate` (open loop) or
/// within its share of `--window` (closed loop), every millisecond, reading the answers
/// in between.
async fn publish(
    mut client: BenchClient,
    names: &[String],
    args: &TopicsArgs,
    epoch: Instant,
    started: &AtomicU64,
    progress: &Progress,
) -> anyhow::Result<Published> {
    let mut out = Published::default();
    if names.is_empty() {
        return Ok(out);
    }
    let start = Duration::from_micros(started.load(Ordering::Acquire));
    let warmup = Duration::from_secs_f64(args.warmup);
    let end = start + warmup + Duration::from_secs_f64(args.seconds);
    let per_topic = args.subscribers as u64;
    // Open loop: this publisher's messages per second.
    let rate = args.rate / per_topic as f64 / args.publishers as f64;
    let window = (args.window / args.publishers as u64).max(per_topic);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Answers owed, and whether each was sent within the measured window, in order.
    let mut owed = std::collections::VecDeque::new();
    let (mut sent, mut next_topic) = (0u64, 0usize);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = epoch.elapsed();
                if now >= end {
                    break;
                }
                let due = if args.rate > 0.0 {
                    (((now - start).as_secs_f64() * rate) as u64).saturating_sub(sent)
                } else {
                    let in_flight = progress.published.load(Ordering::Relaxed)
                        .saturating_sub(progress.received.load(Ordering::Relaxed));
                    window.saturating_sub(in_flight) / per_topic
                };
                let measured = now - start >= warmup;
                let t = now.as_micros() as u64;
                for _ in 0..due.min(10_000) {
                    let name = &names[next_topic];
                    next_topic = (next_topic + 1) % names.len();
                    batch.push(format!(
                        r#"{{"type":"publish","topic":"{name}","data":{{"t":{t},"k":{sent}}}}}"#
                    ));
                    owed.push_back(measured);
                    sent += 1;
                }
                if !batch.is_empty() {
                    progress.published.fetch_add(batch.len() as u64 * per_topic, Ordering::Relaxed);
                    client.send_texts(batch.drain(..)).await?;
                }
            }
            raw = client.recv_raw(Duration::from_secs(30)), if !owed.is_empty() => {
                answer(&raw?, &mut owed, &mut out)?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !owed.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        answer(&client.recv_raw(wait).await?, &mut owed, &mut out)?;
    }
    Ok(out)
}

/// Counts one answer to a publish (in order: the server answers a session's messages in
/// the order they came).
fn answer(raw: &[u8], owed: &mut std::collections::VecDeque<bool>, out: &mut Published) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "type")]
        kind: String,
        delivered: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(raw).context("parsing a publish answer")?;
    let measured = match answer.kind.as_str() {
        "published" | "error" => owed.pop_front().unwrap_or(false),
        _ => return Ok(()),
    };
    match (answer.kind.as_str(), measured) {
        ("published", true) => {
            out.in_window += 1;
            out.delivered_in_window += answer.delivered.unwrap_or(0);
        }
        ("published", false) => {}
        _ => out.refused += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_from_the_data() {
        let raw = br#"{"type":"data","topic":"bench.1.0","data":{"t":123456,"k":7},"from":"u","user_id":"u","timestamp":"2026-01-01T00:00:00.000Z"}"#;
        assert_eq!(sent_at(raw), Some(123_456));
        assert_eq!(sent_at(br#"{"type":"published","topic":"x","delivered":3}"#), None);
    }
}
