//! `client-write`: the latency of local writes (create and merge-update of ~1 KB
//! documents) in the client engine, which return once the local transaction commits.
//! Runs offline, so nothing but the local database is measured.

use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{SyncConfig, SyncEngine};

use crate::report::{Latency, Report, round};

/// Parameters of the client-write scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ClientWriteArgs {
    /// Local writes to make.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) writes: usize,
    /// Documents they are spread over.
    #[arg(long, default_value_t = 200)]
    pub(crate) documents: usize,
}

/// Runs the scenario.
pub(crate) async fn run(args: &ClientWriteArgs) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let config = SyncConfig::builder()
        .database(format!("sqlite:{}?mode=rwc", dir.path().join("local.db").display()))
        .server("ws://127.0.0.1:9/ws")
        .user("local@bench.local")
        .api_key("rpa_local", "rps_local")
        .shutdown_grace(Duration::from_millis(0))
        .build()?;
    let engine = SyncEngine::with_config(config)?;
    let payload = "x".repeat(900);
    let mut ids = Vec::with_capacity(args.documents);
    let (mut creates, mut updates) = (Latency::new(), Latency::new());
    let start = Instant::now();
    for i in 0..args.writes {
        if ids.len() < args.documents {
            let t = Instant::now();
            let doc = engine.create_document(json!({"title": format!("doc {i}"), "payload": payload, "n": 0})).await?;
            creates.record(t.elapsed());
            ids.push(doc.id);
        } else {
            let id = &ids[i % ids.len()];
            let t = Instant::now();
            engine.update_document(id, json!({"n": i})).await?;
            updates.record(t.elapsed());
        }
    }
    let elapsed = start.elapsed();
    engine.shutdown().await?;
    let mut report = Report::new("client-write", "local");
    report
        .param("writes", args.writes)
        .param("documents", args.documents)
        .figure("writes_per_sec", round(args.writes as f64 / elapsed.as_secs_f64()))
        .figure("create_latency", creates.summary())
        .figure("update_latency", updates.summary());
    Ok(report)
}
