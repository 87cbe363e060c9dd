//! `sync-bench`: a load generator that speaks the real protocol over real sockets, on
//! loopback only, every run bounded in count and time.
//!
//! `sync-bench <scenario> [--server ws://… --api-key … --secret … | --spawn sqlite] [--json FILE]`

#![forbid(unsafe_code)]

mod client;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use client::Credentials;
use sync_testkit::ServerProcess;

/// Measure the sync server the way users load it.
#[derive(Debug, Parser)]
#[command(name = "sync-bench", version, about)]
struct Cli {
    /// An already running server (loopback only), e.g. ws://127.0.0.1:8080/ws.
    #[arg(long, global = true, conflicts_with = "spawn")]
    server: Option<String>,
    /// API key for --server.
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// API secret for --server.
    #[arg(long, global = true, env = "SYNC_API_SECRET")]
    secret: Option<String>,
    /// Start a private server (sqlite) for the run and remove it afterwards.
    #[arg(long, global = true, value_name = "BACKEND")]
    spawn: Option<String>,
    /// Negotiate permessage-deflate.
    #[arg(long, global = true)]
    compression: bool,
    /// Append one JSON object per scenario to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Writers sending patches with base_revision; acknowledged updates/s and latency.
    Write(scenarios::write::WriteArgs),
}

/// Where the load goes.
pub(crate) struct Target {
    url: String,
    credentials: Credentials,
    backend: String,
    compression: bool,
    _server: Option<std::sync::Arc<ServerProcess>>,
}

impl Target {
    /// A copy for a task (the spawned server stays owned by the original).
    fn clone_for_task(&self) -> TaskTarget {
        TaskTarget { url: self.url.clone(), credentials: self.credentials.clone(), compression: self.compression }
    }
}

/// What a load task needs to reach the server.
pub(crate) struct TaskTarget {
    url: String,
    credentials: Credentials,
    compression: bool,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = target(&cli)?;
    let report = match &cli.scenario {
        Scenario::Write(args) => scenarios::write::run(&target, args).await?,
    };
    report.print();
    if let Some(path) = &cli.json {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", report.to_json())?;
    }
    Ok(())
}

fn target(cli: &Cli) -> anyhow::Result<Target> {
    match (&cli.server, cli.spawn.as_deref()) {
        (Some(url), None) => {
            let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or("");
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                bail!("sync-bench only targets loopback servers (got {url})");
            }
            let (Some(api_key), Some(secret)) = (cli.api_key.clone(), cli.secret.clone()) else {
                bail!("--server needs --api-key and --secret (or SYNC_API_SECRET)");
            };
            Ok(Target {
                url: url.clone(),
                credentials: Credentials { api_key, secret },
                backend: "external".into(),
                compression: cli.compression,
                _server: None,
            })
        }
        (None, Some("sqlite")) | (None, None) => {
            let server = ServerProcess::start_sqlite(&[
                ("SYNC_RATE_LIMIT_PER_SECOND", "0"),
                ("SYNC_MAX_CONNECTIONS", "1000000"),
            ])?;
            Ok(Target {
                url: server.ws_url(),
                credentials: Credentials { api_key: server.api_key.clone(), secret: server.secret.clone() },
                backend: "sqlite".into(),
                compression: cli.compression,
                _server: Some(std::sync::Arc::new(server)),
            })
        }
        (None, Some(other)) => bail!("unknown backend {other:?} for --spawn (sqlite)"),
        (Some(_), Some(_)) => bail!("use either --server or --spawn"),
    }
}
