//! A private PostgreSQL for tests and benchmarks: `initdb` and `postgres` on a free port
//! of 127.0.0.1, in a temporary directory, removed afterwards — or the server named by
//! `SYNC_TEST_PG_URL`.
//!
//! - The binaries are found on `PATH` (`initdb`, with `postgres` and `pg_isready` beside
//!   it) or in the newest `/usr/lib/postgresql/*/bin`.
//! - `initdb` refuses to run as root. Under root (CI, containers) the server runs as the
//!   `postgres` user when it exists, else as `nobody`, in a directory handed to that user.
//! - A process-wide server ([`PgServer::shared`]) is started once per test binary; each
//!   test takes a fresh database from it ([`PgServer::create_database`]). Statics are
//!   never dropped, so every private server has a guardian shell process that stops it
//!   and removes its directory once the process that started it is gone, however it ended.
//! - When no PostgreSQL can be had, [`PgServer::shared`] says so on stderr (past the test
//!   harness's capture) and returns `None`, so the PostgreSQL variants of tests pass
//!   without running; with `SYNC_REQUIRE_POSTGRES=1` (set by `.ci/run`) it panics
//!   instead, so CI always runs them.
//!
//! Tests run PostgreSQL with `fsync=off` unless asked otherwise ([`PgSettings::durable`]):
//! the tests kill and restart processes, never the machine, and for those the operating
//! system's page cache keeps every committed change. Benchmarks run with the defaults.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::server::free_port;

/// Set to a `postgres://` URL to use that server instead of a private one. Tests create
/// databases named `sync_test_*` on it and leave them there.
pub const PG_URL_VAR: &str = "SYNC_TEST_PG_URL";
/// Set to `1` to make a missing PostgreSQL a test failure instead of a skip.
pub const REQUIRE_VAR: &str = "SYNC_REQUIRE_POSTGRES";

/// How the private server is configured.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// Keep PostgreSQL's `fsync=on` (for benchmarks); tests turn it off.
    pub durable: bool,
    /// `max_connections`.
    pub max_connections: u32,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self { durable: false, max_connections: 200 }
    }
}

impl PgSettings {
    /// The settings benchmarks use: PostgreSQL's own defaults for durability.
    pub fn durable() -> Self {
        Self { durable: true, ..Self::default() }
    }
}

/// A PostgreSQL server to create test databases on.
pub struct PgServer {
    /// `postgres://user[:password]@host:port` — without a database.
    base_url: String,
    /// Query parameters of an external URL (`?sslmode=…`), kept on every database URL.
    query: String,
    /// The private server, when this kit started it.
    private: Option<Private>,
}

/// What a private server needs to be stopped, restarted and removed.
struct Private {
    /// Holds the data directory; removed on drop.
    dir: tempfile::TempDir,
    /// The directory of `postgres`, `initdb`, `pg_isready`.
    bin: PathBuf,
    port: u16,
    /// The user the server runs as, when this process is root.
    user: Option<(u32, u32)>,
    settings: PgSettings,
    /// The running `postgres` process, if any.
    postmaster: Mutex<Option<Child>>,
    /// Stops the server and removes `dir` once this process is gone.
    guardian: Child,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer").field("private", &self.private.is_some()).finish_non_exhaustive()
    }
}

impl PgServer {
    /// The server the tests of this process share: `SYNC_TEST_PG_URL` when set, else a
    /// private server started on first use. `None` when neither is available (after
    /// saying so loudly); panics instead when `SYNC_REQUIRE_POSTGRES=1`.
    pub fn shared() -> Option<&'static PgServer> {
        static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let server = match std::env::var(PG_URL_VAR) {
                    Ok(url) if !url.trim().is_empty() => Self::external(&url),
                    _ => Self::start_private(PgSettings::default()),
                };
                server.map_err(|e| unavailable(&format!("{e:#}"))).ok()
            })
            .as_ref()
    }

    /// A private server of its own (for tests that stop or restart it), or `None` when
    /// PostgreSQL binaries are missing (said loudly; a panic under
    /// `SYNC_REQUIRE_POSTGRES=1`).
    pub fn private_or_skip(settings: PgSettings) -> Option<PgServer> {
        Self::start_private(settings).map_err(|e| unavailable(&format!("{e:#}"))).ok()
    }

    /// Whether a private server could be started here (the binaries are found). `false`
    /// after saying so loudly; panics instead under `SYNC_REQUIRE_POSTGRES=1`. For tests
    /// that start PostgreSQL through another program (the benchmark's `--spawn postgres`).
    pub fn binaries_available() -> bool {
        find_binaries().map_err(|e| unavailable(&format!("{e:#}"))).is_ok()
    }

    /// Uses an existing server.
    pub fn external(url: &str) -> anyhow::Result<PgServer> {
        let (without_query, query) = url.split_once('?').map_or((url, ""), |(u, q)| (u, q));
        let scheme_end = without_query.find("://").context("SYNC_TEST_PG_URL is not a URL")? + 3;
        let base = match without_query[scheme_end..].find('/') {
            Some(slash) => &without_query[..scheme_end + slash],
            None => without_query,
        };
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        Ok(PgServer { base_url: base.to_owned(), query, private: None })
    }

    /// Starts a private server: `initdb` in a new temporary directory, then `postgres`
    /// on a free port of 127.0.0.1.
    pub fn start_private(settings: PgSettings) -> anyhow::Result<PgServer> {
        let bin = find_binaries()?;
        let user = if running_as_root()? { Some(server_user()?) } else { None };
        let dir =
            tempfile::Builder::new().prefix("sync-test-pg-").tempdir().context("creating a temporary directory")?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("handing {} to uid {uid}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user);
        let output = initdb.output().with_context(|| format!("running {}", bin.join("initdb").display()))?;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        let guardian = spawn_guardian(&data, dir.path())?;
        let port = free_port()?;
        let private = Private { dir, bin, port, user, settings, postmaster: Mutex::new(None), guardian };
        private.start()?;
        Ok(PgServer {
            base_url: format!("postgres://postgres@127.0.0.1:{port}"),
            query: String::new(),
            private: Some(private),
        })
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}{}", self.base_url, self.query)
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn create_database(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("sync_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut conn =
            sqlx::PgConnection::connect(&self.url("postgres")).await.context("connecting to the test PostgreSQL")?;
        // The name is made here of digits and letters only: no quoting problem.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = conn.close().await;
        Ok(self.url(&name))
    }

    /// Whether this kit started the server (and so may stop and restart it).
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// Stops the server the way a crash would (immediate shutdown: no checkpoint, the
    /// next start recovers from the WAL) and waits until it is gone.
    pub fn stop_immediately(&self) -> anyhow::Result<()> {
        self.private()?.stop("-QUIT")
    }

    /// Stops the server with a fast shutdown (sessions are ended, then a checkpoint).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.private()?.stop("-INT")
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start(&self) -> anyhow::Result<()> {
        self.private()?.start()
    }

    fn private(&self) -> anyhow::Result<&Private> {
        self.private.as_ref().context("this PostgreSQL was not started by the test kit")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(private) = &mut self.private {
            let _ = private.stop("-QUIT");
            let _ = private.guardian.kill();
            let _ = private.guardian.wait();
        }
    }
}

impl Private {
    fn start(&self) -> anyhow::Result<()> {
        let mut postmaster = self.postmaster.lock().unwrap_or_else(PoisonError::into_inner);
        if postmaster.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the PostgreSQL log")?;
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", &format!("max_connections={}", self.settings.max_connections)])
            .args(["-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic"]);
        if !self.settings.durable {
            command.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        command.current_dir(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        as_user(&mut command, self.user);
        let mut child = command.spawn().with_context(|| format!("starting {}", self.bin.join("postgres").display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("postgres exited during start-up with {status}: {}", self.log_tail());
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("postgres did not accept connections within 60 s: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *postmaster = Some(child);
        Ok(())
    }

    /// Sends `signal` to the postmaster (`-INT` fast, `-QUIT` immediate) and waits.
    fn stop(&self, signal: &str) -> anyhow::Result<()> {
        let mut postmaster = self.postmaster.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut child) = postmaster.take() else {
            return Ok(());
        };
        let sent = Command::new("kill").args([signal, &child.id().to_string()]).status();
        if !sent.is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("postgres did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The end of the server log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Reports that PostgreSQL is unavailable: on stderr, bypassing the test harness's
/// output capture so that a run cannot hide it; a panic under `SYNC_REQUIRE_POSTGRES=1`.
fn unavailable(reason: &str) {
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1") {
        panic!("PostgreSQL is required ({REQUIRE_VAR}=1) but not available: {reason}");
    }
    let line = "!".repeat(78);
    let message = format!(
        "\n{line}\n!! PostgreSQL tests are SKIPPED in this test binary: {reason}\n\
         !! Install PostgreSQL 14+ (initdb on PATH or in /usr/lib/postgresql/*/bin) or set {PG_URL_VAR}.\n\
         !! CI sets {REQUIRE_VAR}=1, which turns this into a failure.\n{line}\n"
    );
    let _ = std::io::stderr().lock().write_all(message.as_bytes());
}

/// The directory holding `initdb`, `postgres` and `pg_isready`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| ["initdb", "postgres", "pg_isready"].iter().all(|b| dir.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if complete(&dir) {
                return Ok(dir);
            }
        }
    }
    // Debian and Ubuntu keep the binaries of each major version apart; take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
                .filter(|(_, bin): &(u32, PathBuf)| complete(bin))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no PostgreSQL binaries (initdb, postgres, pg_isready) found")
}

/// Whether this process runs as root (effective uid 0).
fn running_as_root() -> anyhow::Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    Ok(effective == "0")
}

/// The unprivileged user a root process runs PostgreSQL as: `postgres`, else `nobody`.
fn server_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == name {
                Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    find("postgres").or_else(|| find("nobody")).context("neither a postgres nor a nobody user exists to run PostgreSQL")
}

/// Runs `command` as `user` (uid, gid) when given; the standard library drops the
/// supplementary groups of root before switching.
fn as_user(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

/// Starts the guardian: a shell that waits for this process to end, then stops the
/// server whose data directory is `data` (immediate shutdown) and removes `dir`.
fn spawn_guardian(data: &Path, dir: &Path) -> anyhow::Result<Child> {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
        if [ -n "$pid" ]; then
            kill -QUIT "$pid" 2>/dev/null
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -rf "$3"
    "#;
    Command::new("sh")
        .args(["-c", SCRIPT, "sync-test-pg-guardian", &std::process::id().to_string()])
        .arg(data)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the PostgreSQL guardian")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_urls_keep_credentials_and_parameters() {
        let server = PgServer::external("postgres://u:p@db.example:6432/app?sslmode=require").expect("url");
        assert_eq!(server.url("t1"), "postgres://u:p@db.example:6432/t1?sslmode=require");
        let server = PgServer::external("postgresql://localhost").expect("url");
        assert_eq!(server.url("t2"), "postgresql://localhost/t2");
    }
}
