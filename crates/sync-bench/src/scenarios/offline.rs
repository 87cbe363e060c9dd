//! `offline`: a client engine with N queued offline changes reconnects; reports the time
//! until the server has acknowledged all of them.

use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{SyncConfig, SyncEngine};

use crate::Target;
use crate::report::{Report, round};

/// Parameters of the offline scenario.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct OfflineArgs {
    /// Documents created offline.
    #[arg(long, default_value_t = 1000)]
    pub(crate) documents: usize,
    /// Offline edits per document after its creation.
    #[arg(long, default_value_t = 4)]
    pub(crate) edits: usize,
}

/// Runs the scenario.
pub(crate) async fn run(target: &Target, args: &OfflineArgs) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite:{}?mode=rwc", dir.path().join("offline.db").display());
    let user = format!("offline-{}@bench.local", sync_core::Timestamp::now().unix_millis());
    let config = |server: &str| -> anyhow::Result<SyncConfig> {
        Ok(SyncConfig::builder()
            .database(db.clone())
            .server(server)
            .user(user.clone())
            .api_key(target.credentials.api_key.clone(), target.credentials.secret.clone())
            .shutdown_grace(Duration::from_millis(0))
            .build()?)
    };
    // Offline: nothing listens on port 9 of loopback.
    let offline = SyncEngine::with_config(config("ws://127.0.0.1:9/ws")?)?;
    for i in 0..args.documents {
        let doc = offline.create_document(json!({"title": format!("offline {i}"), "n": 0})).await?;
        for e in 1..=args.edits {
            offline.update_document(&doc.id, json!({"n": e})).await?;
        }
    }
    let queued = offline.pending_count()?;
    offline.shutdown().await?;

    let start = Instant::now();
    let online = SyncEngine::with_config(config(&target.url)?)?;
    online.wait_for_sync(Duration::from_secs(600)).await?;
    let drain = start.elapsed();
    online.shutdown().await?;
    let mut report = Report::new("offline", &target.backend);
    report
        .param("documents", args.documents)
        .param("edits_per_document", args.edits)
        .figure("queued_changes", queued)
        .figure("drain_seconds", round(drain.as_secs_f64()))
        .figure("changes_drained_per_sec", round(queued as f64 / drain.as_secs_f64()));
    Ok(report)
}
