//! The `sync-server` command line: `serve` (default), `generate-credentials`,
//! `create-token`, `migrate`, `default-config`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sync_core::acl::{Acl, Rule};
use sync_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Level;

use crate::auth::{issue_api_credential, issue_token};
use crate::config::Config;

/// Self-hosted, real-time, offline-first JSON document sync server.
#[derive(Debug, Parser)]
#[command(name = "sync-server", version, about)]
pub(crate) struct Cli {
    /// Config file (default: ./sync-server.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://path (default sqlite://./sync.db) or postgres://….
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve(ServeArgs),
    /// Create an API key and secret; the secret is shown once.
    GenerateCredentials {
        /// A name for the credential (who or what uses it).
        #[arg(long)]
        name: String,
        /// Grant the admin HTTP routes.
        #[arg(long)]
        admin: bool,
    },
    /// Issue a bearer token for a user; the token is shown once and stored hashed.
    CreateToken {
        /// The user id the token authenticates.
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 3600, 90m, 12h, 30d (default: no expiry).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Grant the admin HTTP routes.
        #[arg(long)]
        admin: bool,
    },
    /// Show or change the access rules (a running server picks a change up within
    /// `acl_reload_secs`; `PUT /acl` changes them at once).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Print the default configuration file.
    DefaultConfig,
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Print the rules as `{"rules": [...]}`.
    Show,
    /// Replace the rules with those of a JSON file (`{"rules": [...]}` or an array; `-`
    /// reads standard input). The whole list is checked first.
    Set {
        /// The file.
        file: PathBuf,
    },
    /// Add one rule (at the end, or at `--position`).
    Add {
        /// A user id, or `*` for everyone.
        #[arg(long)]
        user: String,
        /// `doc:<collection>/<id>`, `topic:<name>`, a bare document id, each with an
        /// optional trailing `*`; or `*`.
        #[arg(long)]
        item: String,
        /// read (view), create, update (edit), delete, subscribe, publish, or `*`.
        #[arg(long)]
        action: String,
        /// Deny instead of allow.
        #[arg(long)]
        deny: bool,
        /// Where the rule goes (0 = first; default: last). The first rule that matches decides.
        #[arg(long)]
        position: Option<usize>,
    },
    /// Remove the rule at a position (as `acl show` lists them, from 0).
    Remove {
        /// The position.
        position: usize,
    },
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces).
    #[arg(long)]
    host: Option<String>,
    /// Port to bind (default 8080).
    #[arg(long)]
    port: Option<u16>,
    /// Print the colored activity log.
    #[arg(long)]
    monitoring: bool,
    /// Do not create and print a first credential on an empty database.
    #[arg(long)]
    no_bootstrap: bool,
}

/// Parses `3600`, `90s`, `15m`, `12h`, `30d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 3600, 90m, 12h, 30d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in {text:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database.url = url;
    }
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    if let Command::DefaultConfig = command {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    let mut command = command;
    if let Command::Serve(args) = &mut command {
        if let Some(host) = args.host.take() {
            config.server.host = host;
        }
        if let Some(port) = args.port {
            config.server.port = port;
        }
        config.monitoring |= args.monitoring;
        config.auth.bootstrap_credentials &= !args.no_bootstrap;
    }
    init_logging(&config.log, config.monitoring);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve(_) => serve(config).await,
            Command::GenerateCredentials { name, admin } => {
                let (api_key, secret) = generate_credentials(&config, &name, admin).await?;
                println!("API Key: {api_key}\nSecret: {secret}");
                println!("The secret is not stored and cannot be shown again.");
                Ok(())
            }
            Command::CreateToken { user, ttl, admin } => {
                let token = create_token(&config, &user, ttl, admin).await?;
                println!("Token: {token}");
                println!("Use it as {{\"type\":\"authenticate\",\"user_id\":\"{user}\",\"auth_token\":\"<token>\"}} or Authorization: Bearer <token>.");
                println!("It is stored only as an Argon2id hash and cannot be shown again.");
                Ok(())
            }
            Command::Acl { command } => acl(&config, command).await,
            Command::Migrate => {
                let (store, _) = crate::app::open(&config).await?;
                let latest = store.latest_sequence().await?;
                println!("database is up to date ({}; latest sequence {latest})", store.kind());
                Ok(())
            }
            Command::DefaultConfig => Ok(()),
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    #[cfg(unix)]
    catch_file_size_signal();
    crate::app::run(config, listener, shutdown).await
}

/// Takes SIGXFSZ instead of dying of it. A process under a file-size limit (`ulimit -f`,
/// systemd's `LimitFSIZE=`) receives SIGXFSZ when a write would pass the limit, and the
/// signal's default action ends the process, every session with it. Caught, the write
/// fails with EFBIG instead: the store answers it like a full disk (the transaction is
/// rolled back, its changes are answered `server_error` and never acknowledged), while
/// reads, the other sessions and the health routes go on, and writes succeed again once
/// the limit is raised. Once caught, the signal stays caught for the process's life.
#[cfg(unix)]
fn catch_file_size_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    tracing::debug!("SIGXFSZ: a write passed the file-size limit");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGXFSZ; a file-size limit would end the process"),
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn signal_shutdown(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

/// Creates an API credential in the configured database; returns key and secret.
pub async fn generate_credentials(config: &Config, name: &str, admin: bool) -> anyhow::Result<(String, String)> {
    let (store, secret_key) = crate::app::open(config).await?;
    let (credential, secret) = issue_api_credential(&secret_key, name, admin);
    store.create_api_credential(credential.clone()).await.context("storing the credential")?;
    Ok((credential.api_key, secret))
}

/// Issues a bearer token in the configured database; returns the token.
pub async fn create_token(config: &Config, user: &str, ttl: Option<Duration>, admin: bool) -> anyhow::Result<String> {
    if user.trim().is_empty() {
        anyhow::bail!("--user must not be empty");
    }
    let (store, _) = crate::app::open(config).await?;
    let (token, record) = issue_token(user, ttl, admin)?;
    store.ensure_user(user.to_owned(), None).await?;
    store.create_token(record).await.context("storing the token")?;
    Ok(token)
}

/// `acl show|set|add|remove` against the configured database.
async fn acl(config: &Config, command: AclCommand) -> anyhow::Result<()> {
    let (store, _) = crate::app::open(config).await?;
    let current = store.get_acl().await.context("reading the access rules")?;
    let next = match command {
        AclCommand::Show => {
            println!("{}", serde_json::to_string_pretty(&current.to_json())?);
            return Ok(());
        }
        AclCommand::Set { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            Acl::from_json(&value).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        }
        AclCommand::Add { user, item, action, deny, position } => {
            let rule = Rule::parse(&user, &item, &action, !deny).map_err(|e| anyhow::anyhow!(e))?;
            let mut rules = current.rules().to_vec();
            let at = position.unwrap_or(rules.len());
            if at > rules.len() {
                anyhow::bail!("--position {at} is past the end (there are {} rules)", rules.len());
            }
            rules.insert(at, rule);
            Acl::new(rules).map_err(|e| anyhow::anyhow!(e))?
        }
        AclCommand::Remove { position } => {
            let mut rules = current.rules().to_vec();
            if position >= rules.len() {
                anyhow::bail!("there is no rule {position} (there are {} rules)", rules.len());
            }
            rules.remove(position);
            Acl::new(rules).map_err(|e| anyhow::anyhow!(e))?
        }
    };
    store.set_acl(next.clone()).await.context("storing the access rules")?;
    println!("{} rules stored:\n{}", next.rules().len(), serde_json::to_string_pretty(&next.to_json())?);
    Ok(())
}

/// Logs go to stderr, filtered by `log` (`RUST_LOG` syntax); with `monitoring`, the
/// activity log (`monitor.rs`) goes to stdout, and only there.
fn init_logging(filter: &str, monitoring: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, filter::Targets};

    let quiet_activity = format!("{}=off", crate::monitor::TARGET);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = match quiet_activity.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let activity = monitoring
        .then(|| crate::monitor::layer().with_filter(Targets::new().with_target(crate::monitor::TARGET, Level::INFO)));
    let _ = tracing_subscriber::registry().with(logs).with(activity).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn cli_parses() {
        Cli::try_parse_from(["sync-server"]).unwrap();
        Cli::try_parse_from(["sync-server", "serve", "--port", "9000", "--monitoring"]).unwrap();
        Cli::try_parse_from(["sync-server", "generate-credentials", "--name", "app", "--admin"]).unwrap();
        Cli::try_parse_from(["sync-server", "create-token", "--user", "u1", "--ttl", "1h"]).unwrap();
        Cli::try_parse_from(["sync-server", "--database-url", "sqlite://x.db", "migrate"]).unwrap();
        Cli::try_parse_from(["sync-server", "acl", "show"]).unwrap();
        Cli::try_parse_from(["sync-server", "acl", "set", "rules.json"]).unwrap();
        Cli::try_parse_from(["sync-server", "acl", "add", "--user", "*", "--item", "doc:t/*", "--action", "view"])
            .unwrap();
        Cli::try_parse_from(["sync-server", "acl", "remove", "0"]).unwrap();
        assert!(Cli::try_parse_from(["sync-server", "generate-credentials"]).is_err());
    }
}
