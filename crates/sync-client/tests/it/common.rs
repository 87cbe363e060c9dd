//! Test kit for the client: a real `sync-server` process, engines on temporary local
//! databases, and a TCP proxy that takes one client offline while the server stays up.

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

/// `POST /events` to the server at `addr` as `email`, signed with an API key; returns the
/// status and the body.
pub(crate) fn post_events(
    addr: &str,
    key: &str,
    secret: &str,
    email: &str,
    events: &serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let body = events.to_string();
    let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
    let signature = sync_core::auth::sign(secret, timestamp, email, key, body.as_bytes());
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-Api-Key: {key}\r\nX-Email: {email}\r\nX-Timestamp: {timestamp}\r\nX-Signature: {signature}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len(),
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| anyhow::anyhow!("bad HTTP response: {response}"))?;
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

/// A TCP proxy in front of the server that can be cut (connections dropped, port closed)
/// and restored on the same port, to take one client offline while the server stays up.
pub(crate) struct Proxy {
    pub(crate) addr: std::net::SocketAddr,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port and forwards to `target`.
    pub(crate) async fn start(target: &str) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut proxy = Proxy { addr, target: target.to_owned(), task: None };
        proxy.task = Some(tokio::spawn(forward(listener, proxy.target.clone())));
        Ok(proxy)
    }

    /// Drops every forwarded connection and closes the port.
    pub(crate) async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restore(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.task = Some(tokio::spawn(forward(listener, self.target.clone())));
        Ok(())
    }
}

/// Accepts and forwards until aborted; aborting drops every forwarded connection too.
async fn forward(listener: tokio::net::TcpListener, target: String) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        connections.spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
