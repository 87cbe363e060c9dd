//! `connections`: open C idle, authenticated connections (spread over several 127.0.0.x
//! source addresses past the ephemeral-port limit), report the connect rate and the
//! spawned server's resident memory per connection (from /proc).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Semaphore;

use crate::Target;
use crate::client::BenchClient;
use crate::report::{Report, round};

/// Parameters of the connections scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Seconds to hold them open after the last one is up.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) hold: f64,
    /// Server process id to read memory from (default: the spawned server).
    #[arg(long)]
    pub(crate) pid: Option<u32>,
}

/// Resident memory of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &ConnectionsArgs) -> anyhow::Result<Report> {
    let pid = args.pid.or(target.server_pid);
    let before = pid.map(rss_kib).transpose()?;
    let spread = crate::source_addresses(args.connections);
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (target, limit) = (target.clone_for_task(), Arc::clone(&limit));
        let local = spread.get(i % spread.len().max(1)).copied();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            let mut client = BenchClient::connect(&target.url, local, target.compression).await?;
            client.authenticate(&target.credentials, &format!("conn{i}@bench.local"), None).await?;
            anyhow::Ok(client)
        }));
    }
    let mut held = Vec::with_capacity(args.connections);
    let mut failures = 0usize;
    for task in tasks {
        match task.await.context("connect task panicked")? {
            Ok(client) => held.push(client),
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("a connection failed: {e:#}");
                }
            }
        }
    }
    let elapsed = start.elapsed();
    if held.is_empty() {
        bail!("no connection could be opened");
    }
    // Let the server settle (session tasks parked, buffers shrunk) before measuring.
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let after = pid.map(rss_kib).transpose()?;
    let mut report = Report::new("connections", &target.backend);
    report
        .param("connections", args.connections)
        .param("concurrency", args.concurrency)
        .param("source_addresses", spread.len().max(1))
        .figure("held", held.len())
        .figure("failed", failures)
        .figure("connect_and_auth_per_sec", round(held.len() as f64 / elapsed.as_secs_f64()))
        .figure("seconds_to_connect_all", round(elapsed.as_secs_f64()));
    if let (Some(before), Some(after)) = (before, after) {
        report
            .figure("server_rss_before_kib", before)
            .figure("server_rss_after_kib", after)
            .figure("server_kib_per_connection", round((after.saturating_sub(before)) as f64 / held.len() as f64));
    }
    drop(held);
    Ok(report)
}
