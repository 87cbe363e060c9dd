//! Test kit for the client: a real `sync-server` process and engines on temporary
//! local databases.

use std::time::Duration;

use sync_client::{SyncConfig, SyncEngine};
use sync_testkit::ServerProcess;

/// A private server process (SQLite).
pub(crate) fn server() -> ServerProcess {
    ServerProcess::start_sqlite(&[]).expect("starting sync-server")
}

/// An engine for `email` on a fresh local database in `dir`, pointed at `server` (which
/// may not be listening yet).
pub(crate) fn engine(server: &ServerProcess, dir: &std::path::Path, name: &str, email: &str) -> SyncEngine {
    SyncEngine::with_config(config(&server.ws_url(), &server.api_key, &server.secret, dir, name, email))
        .expect("engine")
}

/// The configuration of [`engine`], with short backoff for tests.
pub(crate) fn config(url: &str, key: &str, secret: &str, dir: &std::path::Path, name: &str, email: &str) -> SyncConfig {
    SyncConfig::builder()
        .database(format!("sqlite:{}?mode=rwc", dir.join(format!("{name}.db")).display()))
        .server(url)
        .user(email)
        .api_key(key, secret)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .shutdown_grace(Duration::from_secs(3))
        .build()
        .expect("config")
}

/// Waits until `check` holds, polling; fails the test after `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
