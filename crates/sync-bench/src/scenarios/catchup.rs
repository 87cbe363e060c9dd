//! `catchup`: preload D documents, then a fresh replica catches up from sequence 0 —
//! through the raw protocol (`get_changes_since` pages) and through the real client
//! engine (into its local SQLite) — and reports documents/s and bytes on the wire.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::Target;
use crate::client::BenchClient;
use crate::report::{Report, round};

/// Parameters of the catch-up scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct CatchupArgs {
    /// Documents to preload.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) documents: usize,
    /// Approximate size of each document.
    #[arg(long, default_value_t = 256)]
    pub(crate) doc_bytes: usize,
    /// Page size of `get_changes_since`.
    #[arg(long, default_value_t = 5000)]
    pub(crate) page: u32,
    /// `raw`, `engine` or `both`.
    #[arg(long, default_value = "both")]
    pub(crate) mode: String,
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &CatchupArgs) -> anyhow::Result<Report> {
    let run_id = sync_core::Timestamp::now().unix_millis();
    let user = format!("catchup-{run_id}@bench.local");
    let payload = "p".repeat(args.doc_bytes.saturating_sub(60));
    let preload_start = Instant::now();
    let mut writer = BenchClient::connect(&target.url, None, target.compression).await?;
    writer.authenticate(&target.credentials, &user, None).await?;
    let batch = 200;
    let mut created = 0;
    while created < args.documents {
        let n = batch.min(args.documents - created);
        let frame: Vec<_> = (created..created + n)
            .map(|i| {
                json!({"type": "create_document", "document": {"id": format!("c{run_id}-{i}"),
                "content": {"title": format!("doc {i}"), "i": i, "payload": payload}}})
            })
            .collect();
        writer.send(&serde_json::Value::Array(frame)).await?;
        for _ in 0..n {
            let ack = writer.recv_type("document_created_response", Duration::from_secs(60)).await?;
            if ack["success"] != true {
                bail!("preload failed: {ack}");
            }
        }
        created += n;
    }
    let preload = preload_start.elapsed();
    drop(writer);

    let mut report = Report::new("catchup", &target.backend);
    report
        .param("documents", args.documents)
        .param("doc_bytes", args.doc_bytes)
        .param("page", args.page)
        .param("compression", target.compression)
        .figure("preload_docs_per_sec", round(args.documents as f64 / preload.as_secs_f64()));

    if args.mode == "raw" || args.mode == "both" {
        let start = Instant::now();
        let mut client = BenchClient::connect(&target.url, None, target.compression).await?;
        client.authenticate(&target.credentials, &user, None).await?;
        let (events, bytes) = client.page_changes(0, args.page).await?;
        let elapsed = start.elapsed();
        if events != args.documents {
            bail!("raw catch-up returned {events} events for {} documents", args.documents);
        }
        report
            .figure("raw_docs_per_sec", round(events as f64 / elapsed.as_secs_f64()))
            .figure("raw_seconds", round(elapsed.as_secs_f64()))
            .figure("raw_bytes_received", bytes);
    }

    if args.mode == "engine" || args.mode == "both" {
        let dir = tempfile::tempdir()?;
        let config = sync_client::SyncConfig::builder()
            .database(format!("sqlite:{}?mode=rwc", dir.path().join("catchup.db").display()))
            .server(target.url.clone())
            .user(user.clone())
            .api_key(target.credentials.api_key.clone(), target.credentials.secret.clone())
            .catch_up_page(args.page)
            .build()?;
        let start = Instant::now();
        let engine = sync_client::SyncEngine::with_config(config)?;
        engine.wait_for_sync(Duration::from_secs(600)).await?;
        let elapsed = start.elapsed();
        let count = engine.count_documents().await?;
        if count as usize != args.documents {
            bail!("the engine caught up {count} documents of {}", args.documents);
        }
        report
            .figure("engine_docs_per_sec", round(count as f64 / elapsed.as_secs_f64()))
            .figure("engine_seconds", round(elapsed.as_secs_f64()));
        engine.shutdown().await?;
    }
    Ok(report)
}
