//! `sync-bench`: a load generator that speaks the real protocol over real sockets, on
//! loopback only, every run bounded in count and time.
//!
//! `sync-bench <scenario> [--server ws://… --api-key … --secret … | --spawn sqlite|postgres [--servers N]]
//! [--json FILE]`

#![forbid(unsafe_code)]

mod calibrate;
mod client;
mod report;
mod scenarios;
mod spawn;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// Start a private server (sqlite, or postgres with a private PostgreSQL) for the run
    /// and remove it afterwards.
    #[arg(long, global = true, value_name = "BACKEND")]
    spawn: Option<String>,
    /// With --spawn postgres: server processes sharing the database; connections are
    /// spread over them in turn.
    #[arg(long, global = true, default_value_t = 1)]
    servers: usize,
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
    /// One writer, many subscribers of the same user; deliveries/s and delivery latency.
    Fanout(scenarios::fanout::FanoutArgs),
    /// Many idle authenticated connections; connect rate and server memory per connection.
    Connections(scenarios::connections::ConnectionsArgs),
    /// Preload documents, then catch up from sequence 0 (raw protocol and client engine).
    Catchup(scenarios::catchup::CatchupArgs),
    /// A client with queued offline changes reconnects; drain time.
    Offline(scenarios::offline::OfflineArgs),
    /// Users in teams sharing documents by rules; write rate, deliveries/s, catch-up of a reader of others.
    Shared(scenarios::shared::SharedArgs),
    /// Topics: T topics × S subscribers, P publishers; deliveries/s and publish-to-receive
    /// latency, closed loop or at a fixed rate.
    Topics(scenarios::topics::TopicsArgs),
    /// Local write latency of the client engine (no server involved).
    ClientWrite(scenarios::client_write::ClientWriteArgs),
    /// kill -9 / restart cycles of a private SQLite server under write load; fails on
    /// any acknowledged change lost or any gap in the log (`scripts/soak.sh`).
    Soak(scenarios::soak::SoakArgs),
}

/// Where the load goes.
pub(crate) struct Target {
    /// The server measured (the first of `urls`).
    url: String,
    /// Every server to spread connections over (`--servers`), `url` first.
    urls: Vec<String>,
    credentials: Credentials,
    backend: String,
    compression: bool,
    /// The spawned server's process id, to read its memory.
    server_pid: Option<u32>,
    /// Which server the next task connects to.
    next_url: AtomicUsize,
    /// What `--spawn` started, stopped and removed when the run ends.
    _spawned: Option<Spawned>,
}

/// Processes started for the run.
#[expect(dead_code, reason = "held only so that dropping it stops the processes")]
enum Spawned {
    Sqlite(ServerProcess),
    Postgres(spawn::PostgresCluster),
}

impl Target {
    fn new(urls: Vec<String>, credentials: Credentials, backend: String, cli: &Cli) -> anyhow::Result<Self> {
        let url = urls.first().context("no server to target")?.clone();
        Ok(Self {
            url,
            urls,
            credentials,
            backend,
            compression: cli.compression,
            server_pid: None,
            next_url: AtomicUsize::new(0),
            _spawned: None,
        })
    }

    /// A copy for a task (the spawned server stays owned by the original); with several
    /// servers, successive tasks connect to each in turn.
    fn clone_for_task(&self) -> TaskTarget {
        let turn = self.next_url.fetch_add(1, Ordering::Relaxed) % self.urls.len();
        TaskTarget {
            url: self.urls[turn].clone(),
            credentials: self.credentials.clone(),
            compression: self.compression,
        }
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
    raise_open_file_limit();
    let host_speed = calibrate::host_speed();
    let mut report = match &cli.scenario {
        Scenario::ClientWrite(args) => scenarios::client_write::run(args).await?,
        Scenario::Soak(args) => {
            // The soak kills and restarts its server, so it must own it.
            if cli.server.is_some() || cli.spawn.as_deref().is_some_and(|b| b != "sqlite") {
                bail!("soak runs its own SQLite server; it takes neither --server nor --spawn postgres");
            }
            let server = ServerProcess::start_sqlite(&SPAWN_ENV)?;
            scenarios::soak::run(server, "sqlite", args).await?
        }
        scenario => {
            let target = target(&cli)?;
            match scenario {
                Scenario::Write(args) => scenarios::write::run(&target, args).await?,
                Scenario::Fanout(args) => scenarios::fanout::run(&target, args).await?,
                Scenario::Connections(args) => scenarios::connections::run(&target, args).await?,
                Scenario::Catchup(args) => scenarios::catchup::run(&target, args).await?,
                Scenario::Offline(args) => scenarios::offline::run(&target, args).await?,
                Scenario::Shared(args) => scenarios::shared::run(&target, args).await?,
                Scenario::Topics(args) => scenarios::topics::run(&target, args).await?,
                Scenario::ClientWrite(_) | Scenario::Soak(_) => unreachable!("handled above"),
            }
        }
    };
    report.host_speed = Some(host_speed);
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

/// Environment of spawned servers: no rate limit, no connection limit below the run's.
const SPAWN_ENV: [(&str, &str); 2] = [("SYNC_RATE_LIMIT_PER_SECOND", "0"), ("SYNC_MAX_CONNECTIONS", "1000000")];

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
            Target::new(vec![url.clone()], Credentials { api_key, secret }, "external".into(), cli)
        }
        (None, Some("sqlite")) | (None, None) => {
            let server = ServerProcess::start_sqlite(&SPAWN_ENV)?;
            let credentials = Credentials { api_key: server.api_key.clone(), secret: server.secret.clone() };
            let mut target = Target::new(vec![server.ws_url()], credentials, "sqlite".into(), cli)?;
            target.server_pid = server.pid();
            target._spawned = Some(Spawned::Sqlite(server));
            Ok(target)
        }
        (None, Some("postgres")) => {
            // Starting PostgreSQL and creating the database are async; this function is
            // not, and runs on a multi-threaded runtime, where blocking in place is allowed.
            let start = spawn::PostgresCluster::start(cli.servers, &SPAWN_ENV);
            let cluster = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(start))?;
            let first = cluster.servers.first().context("no server started")?;
            let credentials = Credentials { api_key: first.api_key.clone(), secret: first.secret.clone() };
            let backend = match cluster.servers.len() {
                1 => "postgres".to_owned(),
                n => format!("postgres x{n}"),
            };
            let urls = cluster.servers.iter().map(ServerProcess::ws_url).collect();
            let mut target = Target::new(urls, credentials, backend, cli)?;
            target.server_pid = first.pid();
            target._spawned = Some(Spawned::Postgres(cluster));
            Ok(target)
        }
        (None, Some(other)) => bail!("unknown backend {other:?} for --spawn (sqlite, postgres)"),
        (Some(_), Some(_)) => bail!("use either --server or --spawn"),
    }
}

/// Raises this process's open-file limit to its hard limit (spawned servers inherit it),
/// so tens of thousands of connections fit.
fn raise_open_file_limit() {
    // As root the hard limit itself can go up (to fs.nr_open); otherwise raise the soft
    // limit to the hard one.
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, 1 << 20, 1 << 20)
        .or_else(|_| rlimit::setrlimit(rlimit::Resource::NOFILE, 200_000, 200_000));
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 100_000 => eprintln!("note: open-file limit is {limit}; large connection counts may fail"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot raise the open-file limit: {e}"),
    }
}

/// Source addresses to spread `connections` client sockets over: one 127.0.0.x per
/// 20,000 connections, past the ~28,000 ephemeral ports of one address.
pub(crate) fn source_addresses(connections: usize) -> Vec<std::net::IpAddr> {
    let count = connections.div_ceil(20_000).max(1);
    if count == 1 {
        return Vec::new();
    }
    (1..=count).map(|i| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i as u8))).collect()
}
