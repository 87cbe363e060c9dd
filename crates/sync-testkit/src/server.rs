//! A private `sync-server` process: started on a free port with its own database and
//! secret key, with one API credential created through the real CLI, killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The hex secret key private servers use (fixed so that tests can derive secrets).
pub const SECRET_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c2b7e151628aed2a6abf7158809cf4f3c";

/// Finds the `sync-server` binary: `$SYNC_SERVER_BIN`, or next to the running executable
/// (also one directory up, where test binaries in `deps/` find it). Under `cargo test`
/// of another package the binary may not be built yet: then it is built with the same
/// `cargo` (and profile) that runs the tests.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SYNC_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    if let Some(found) = find_next_to(&exe) {
        return Ok(found);
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = find_next_to(&exe) {
            return Ok(found);
        }
        let release = exe.components().any(|c| c.as_os_str() == "release");
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", "sync-server", "--bin", "sync-server"]);
        if release {
            command.arg("--release");
        }
        let status = command.status().context("building sync-server")?;
        if !status.success() {
            bail!("building sync-server failed");
        }
        if let Some(found) = find_next_to(&exe) {
            return Ok(found);
        }
    }
    bail!(
        "sync-server binary not found next to {}; build it (cargo build -p sync-server) or set SYNC_SERVER_BIN",
        exe.display()
    )
}

fn find_next_to(exe: &Path) -> Option<PathBuf> {
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        let d = dir?;
        let candidate = d.join("sync-server");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A running private server process.
pub struct ServerProcess {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The database URL it uses.
    pub database_url: String,
    /// API key of the credential created at start.
    pub api_key: String,
    /// Its secret.
    pub secret: String,
    dir: Option<tempfile::TempDir>,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts a server on an SQLite file in a new temporary directory.
    pub fn start_sqlite(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let url = format!("sqlite://{}", dir.path().join("sync.db").display());
        Self::start(&url, Some(dir), env)
    }

    /// Prepares a server on an SQLite file (credentials created, port chosen) without
    /// starting it, for tests of clients that start before their server.
    pub fn prepare_sqlite(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let url = format!("sqlite://{}", dir.path().join("sync.db").display());
        let mut server = Self::prepare(&url, Some(dir), env)?;
        server.addr = format!("127.0.0.1:{}", free_port()?);
        Ok(server)
    }

    /// Starts a server on `database_url` (its directory, if any, is removed on drop).
    pub fn start(database_url: &str, dir: Option<tempfile::TempDir>, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut server = Self::prepare(database_url, dir, env)?;
        server.spawn()?;
        Ok(server)
    }

    fn prepare(database_url: &str, dir: Option<tempfile::TempDir>, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let binary = server_binary()?;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let output = command(&binary, database_url, &env)
            .args(["generate-credentials", "--name", "testkit", "--admin"])
            .output()
            .with_context(|| format!("running {} generate-credentials", binary.display()))?;
        if !output.status.success() {
            bail!("generate-credentials failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |label: &str| {
            text.lines().find_map(|l| l.strip_prefix(label).map(|v| v.trim().to_owned())).context("credential output")
        };
        let (api_key, secret) = (field("API Key:")?, field("Secret:")?);
        Ok(Self {
            child: None,
            addr: String::new(),
            database_url: database_url.to_owned(),
            api_key,
            secret,
            dir,
            binary,
            env,
        })
    }

    /// Starts the (prepared or stopped) server process, on the port it had if any.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let port = match self.addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) {
            Some(port) => port,
            None => free_port()?,
        };
        self.addr = format!("127.0.0.1:{port}");
        let child = command(&self.binary, &self.database_url, &self.env)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SYNC_TESTKIT_SERVER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the server accepts connections and `/ready` answers 200.
    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("sync-server exited during start-up with {status}");
            }
            let ready = if self.tls() {
                // A TLS port answers plain HTTP with a 400 that says so: it is serving.
                http_get(&self.addr, "/ready").is_ok_and(|(status, body)| status == 400 && body.contains("TLS"))
            } else {
                http_get(&self.addr, "/ready").is_ok_and(|(status, _)| status == 200)
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("sync-server did not become ready within {limit:?}")
    }

    /// `ws://127.0.0.1:<port>/ws` (`wss://localhost:<port>/ws` when the server was given
    /// a TLS certificate with `SYNC_TLS_CERT_FILE`).
    pub fn ws_url(&self) -> String {
        if self.tls() {
            let port = self.addr.rsplit_once(':').map_or("", |(_, p)| p);
            return format!("wss://localhost:{port}/ws");
        }
        format!("ws://{}/ws", self.addr)
    }

    /// Whether the server serves TLS (its environment names a certificate).
    pub fn tls(&self) -> bool {
        self.env.iter().any(|(k, _)| k == "SYNC_TLS_CERT_FILE")
    }

    /// The process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the server again on the same database and port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The directory holding the database, when the kit created it.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn command(binary: &Path, database_url: &str, env: &[(String, String)]) -> Command {
    let mut command = Command::new(binary);
    command
        .env("DATABASE_URL", database_url)
        .env("SYNC_SECRET_KEY", SECRET_KEY)
        .env("SYNC_BOOTSTRAP_CREDENTIALS", "false")
        .env("RUST_LOG", std::env::var("SYNC_TESTKIT_LOG").unwrap_or_else(|_| "warn".into()));
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// A minimal blocking HTTP/1.1 GET; returns the status and body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad HTTP response")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
