//! The running server: start-up (store, secret key, first credential, the shared
//! [`AppState`]), the HTTP/WebSocket listener, and graceful shutdown.
//!
//! Shutdown order: stop accepting (and let HTTP connections finish), close every session
//! with 1001, let the write path commit and answer what was already queued, then close
//! the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sync_core::protocol::DecodeLimits;
use sync_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, PasswordChecks, SecretKey, issue_api_credential};
use crate::backend::AnyStore;
use crate::config::Config;
use crate::hub::Hub;
use crate::ratelimit::RateLimiter;
use crate::state::AppState;
use crate::topics::Topics;
use crate::writer::{self, WriteStats};

/// Opens the store and the secret key as configured.
pub(crate) async fn open(config: &Config) -> anyhow::Result<(AnyStore, SecretKey)> {
    let store = AnyStore::open(&config.database)
        .await
        .with_context(|| format!("cannot open the database {}", sync_store::redact_url(&config.database.url)))?;
    let secret_key = match &config.auth.secret_key {
        Some(hex_key) => SecretKey::from_hex(hex_key).context("invalid SYNC_SECRET_KEY")?,
        None => SecretKey::load_or_create(&config.secret_key_path())?,
    };
    Ok((store, secret_key))
}

/// Runs the server on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let (store, secret_key) = open(&config).await?;
    let addr = listener.local_addr().context("listener has no address")?;
    if config.auth.bootstrap_credentials && store.count_api_credentials().await? == 0 {
        let (credential, secret) = issue_api_credential(&secret_key, "default", true);
        store.create_api_credential(credential.clone()).await.context("storing the first credential")?;
        print_first_credential(&credential.api_key, &secret, addr);
    }
    let auth = Authenticator::new(
        store.clone(),
        secret_key,
        config.auth.jwt_secret.as_deref(),
        config.auth.jwt_public_key_file.as_deref(),
        PasswordChecks::from_limits(&config.limits),
    )?;
    let latest = store.latest_sequence().await.context("reading the change log")?;
    let acl = store.get_acl().await.context("reading the access rules")?;
    let topics = Topics::new(&config.topics, Arc::new(acl.clone()), config.limits.max_frame_bytes)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let topics = Arc::new(topics);
    let hub = Arc::new(Hub::new(latest, acl));
    let (writes, write_rx) = mpsc::channel(config.write.queue.max(1));
    let write_stats = Arc::new(WriteStats::default());
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(writer::run(
        write_rx,
        store.clone(),
        Arc::clone(&hub),
        Arc::clone(&config),
        Arc::clone(&write_stats),
        writer_stop.clone(),
    ));
    let state = Arc::new(AppState {
        store: store.clone(),
        hub: Arc::clone(&hub),
        topics: Arc::clone(&topics),
        auth,
        writes,
        limiter: RateLimiter::new(config.rate_limit.per_second, config.rate_limit.burst),
        connection_permits: Arc::new(Semaphore::new(config.limits.max_connections)),
        connections: AtomicUsize::new(0),
        shutdown: shutdown.clone(),
        sessions: TaskTracker::new(),
        next_session: AtomicU64::new(0),
        decode_limits: DecodeLimits { max_depth: config.limits.max_depth, max_patch_ops: config.limits.max_patch_ops },
        deflate_pool: yawc::DeflatePool::new(256),
        acl_changes: tokio::sync::Mutex::new(()),
        config: Arc::clone(&config),
    });
    if config.auth.acl_reload_secs > 0 {
        let interval = Duration::from_secs(config.auth.acl_reload_secs);
        tokio::spawn(crate::access::reload_periodically(Arc::clone(&state), interval, shutdown.clone()));
    }
    tokio::spawn(expire_topic_history(topics, shutdown.clone()));
    tracing::info!(%addr, backend = store.kind(), latest_sequence = latest, "sync-server listening");

    let router = crate::http::router(Arc::clone(&state));
    crate::accept::serve(listener, router, &config.limits, shutdown.clone()).await;

    // Sessions see the shutdown token and close with 1001; give them a moment.
    state.sessions.close();
    if tokio::time::timeout(Duration::from_secs(10), state.sessions.wait()).await.is_err() {
        tracing::warn!("some sessions did not close within 10 s");
    }
    // Commit and answer whatever is still queued, then stop the writer.
    writer_stop.cancel();
    drop(state);
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "write path ended abnormally");
    }
    tracing::info!(
        committed = write_stats.committed.load(Ordering::Relaxed),
        refused = write_stats.refused.load(Ordering::Relaxed),
        batches = write_stats.batches.load(Ordering::Relaxed),
        failed_batches = write_stats.failed_batches.load(Ordering::Relaxed),
        "sync-server stopped"
    );
    Ok(())
}

/// Drops expired topic history every second, until shutdown.
async fn expire_topic_history(topics: Arc<Topics>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => topics.expire(),
        }
    }
}

fn print_first_credential(api_key: &str, secret: &str, addr: std::net::SocketAddr) {
    let line = "=".repeat(78);
    println!(
        "{line}\n First start: created an admin API credential. The secret is shown only now;\n \
         keep it safe (it is derived, not stored, and cannot be recovered).\n\n   \
         API Key: {api_key}\n   Secret:  {secret}\n\n \
         Connect with the example client:\n   \
         SYNC_API_SECRET={secret} cargo run -p sync-client --example interactive_client -- \
         --api-key {api_key} --user-id you@example.com --server ws://{addr}/ws\n \
         or any WebSocket client at ws://{addr}/ws (docs/PROTOCOL.md, section 2).\n{line}"
    );
}
