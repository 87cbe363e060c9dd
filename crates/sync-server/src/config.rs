//! Server configuration: defaults ← `sync-server.toml` ← environment ← command-line flags.
//!
//! `Debug` never shows secrets (JWT secret, server secret key, database password).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sync_core::Policy;
use sync_store::{DatabaseUrl, redact_url};

/// Everything the server needs to run.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen.
    pub server: ServerSection,
    /// Where documents live.
    pub database: DatabaseSection,
    /// Credentials and tokens.
    pub auth: AuthSection,
    /// Sizes, counts and timeouts.
    pub limits: Limits,
    /// Per-user token bucket.
    pub rate_limit: RateLimit,
    /// The write path.
    pub write: WriteSection,
    /// Topics (publish/subscribe): which keep their last messages for recovery.
    pub topics: TopicsSection,
    /// Merge policy per collection; `default_policy` for the rest.
    pub collections: BTreeMap<String, CollectionSection>,
    /// Merge policy of collections not listed in `collections`.
    pub default_policy: Policy,
    /// Colored activity log on stdout.
    pub monitoring: bool,
    /// Log filter (`RUST_LOG` syntax).
    pub log: String,
}

/// `[server]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
}

/// `[database]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://./sync.db`, a plain path, or `postgres://…`.
    pub url: String,
    /// PostgreSQL: most connections this process opens (`SYNC_DB_POOL_SIZE`). One is the
    /// write path's; the others serve reads. Every server process sharing a database
    /// opens its own pool, so the sum must stay below the server's `max_connections`.
    /// Ignored for SQLite, which has its own fixed set of connections.
    pub pool_size: u32,
}

/// `[auth]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// File holding the server secret key from which API secrets are derived (created on
    /// first start). Default: `sync.key` next to an SQLite database, else `./sync.key`.
    pub secret_key_file: Option<PathBuf>,
    /// The server secret key itself (hex), instead of a file (`SYNC_SECRET_KEY`). Every
    /// server process sharing a database must use the same key.
    pub secret_key: Option<String>,
    /// HS256 secret for JWTs (`JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 / ES256 / EdDSA JWTs (`JWT_PUBLIC_KEY_FILE`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// On first start with no credentials, create an admin API credential and print it once.
    pub bootstrap_credentials: bool,
    /// Seconds between checks of the stored access rules for a change made elsewhere (the
    /// `acl` command, another server process); 0 never checks. `PUT /acl` on this
    /// process takes effect at once regardless.
    pub acl_reload_secs: u64,
}

/// `[limits]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame processed; a larger one gets `payload_too_large`.
    pub max_frame_bytes: usize,
    /// A frame this large closes the connection with 1009.
    pub hard_max_frame_bytes: usize,
    /// Largest document content (serialized).
    pub max_document_bytes: usize,
    /// Most operations in one patch.
    pub max_patch_ops: usize,
    /// Deepest JSON nesting in content and patch values.
    pub max_depth: usize,
    /// Most simultaneous WebSocket connections.
    pub max_connections: usize,
    /// Most TCP connections open at once that are not an authenticated WebSocket session
    /// (plain HTTP connections, upgrades in progress, sessions not yet authenticated). A
    /// new connection beyond it closes the oldest of them, so a flood of idle sockets
    /// can neither exhaust the server's file descriptors nor lock out a fresh client.
    pub max_unauthenticated: usize,
    /// Seconds a connection may take to send a request's head (the request line and the
    /// headers), counted from the connection's start or the end of its previous request;
    /// a slower one is closed (at least 1).
    pub header_read_timeout_secs: u64,
    /// Messages queued for one session before it counts as too slow and is disconnected.
    pub session_queue: usize,
    /// Seconds a connection may stay unauthenticated.
    pub auth_timeout_secs: u64,
    /// Seconds between server pings.
    pub ping_interval_secs: u64,
    /// Seconds without any frame from the client before the connection is closed.
    pub idle_timeout_secs: u64,
    /// Most work a stale update may cost the write path: its ops times the revisions it
    /// crossed. Beyond it the update is refused (`version_mismatch`) and the client
    /// rebases it itself.
    pub max_rebase_work: u64,
    /// Seconds a write to a client's socket may wait for the client to read before the
    /// session is closed as too slow (it resumes from its cursor).
    pub write_timeout_secs: u64,
    /// Most topic subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Largest `get_changes_since` page.
    pub max_page: usize,
    /// Largest `changes` message in bytes: a page that would be larger is cut short.
    pub max_page_bytes: usize,
    /// Bearer-token secrets checked against their Argon2 hash at once, each holding
    /// Argon2's memory cost (19 MiB) while it runs; 0 (the default) is one per CPU core.
    pub password_checks: usize,
    /// Checks that may wait for one of those; beyond them a check is refused at once
    /// (`auth_error` `server error`), so a flood of wrong secrets costs neither memory
    /// nor the CPU other users need.
    pub password_check_queue: usize,
}

/// `[rate_limit]`: a token bucket per user, shared by all their sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Messages per second refilled (0 disables the limit).
    pub per_second: u32,
    /// Bucket size: the burst allowed above the rate.
    pub burst: u32,
}

/// `[write]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteSection {
    /// Most changes committed in one transaction.
    pub max_batch: usize,
    /// Documents kept in the hot-document cache.
    pub cache_documents: usize,
    /// Requests waiting for the write path before senders are held back.
    pub queue: usize,
    /// Batches decided ahead while earlier ones commit (1 = no pipelining).
    pub pipeline: usize,
}

/// `[topics]`: which topics keep their last messages in memory, so a subscriber that
/// reconnects can recover what it missed (PROTOCOL.md §4.1).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsSection {
    /// Topics whose names match a rule's pattern keep its number of messages for its
    /// number of seconds; the first matching rule decides (`SYNC_TOPICS_HISTORY`, as
    /// `pattern:messages:seconds` entries separated by spaces).
    pub history: Vec<HistoryRule>,
    /// Most topics holding history at once (`SYNC_TOPICS_MAX_HISTORY_TOPICS`): a topic
    /// that would be one more keeps none (its messages carry no offset) until others'
    /// messages expire.
    pub max_history_topics: usize,
}

/// One `[[topics.history]]` rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    /// A topic name or a pattern (`chat.>`, `team.*.events`).
    pub pattern: String,
    /// Most messages held per topic (at least 1).
    pub messages: usize,
    /// Seconds a message is held (at least 1).
    pub seconds: u64,
}

impl HistoryRule {
    /// Reads `pattern:messages:seconds` (the pattern may itself hold `:`).
    fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.rsplitn(3, ':');
        let (seconds, messages, pattern) = (parts.next(), parts.next(), parts.next());
        let (Some(seconds), Some(messages), Some(pattern)) = (seconds, messages, pattern) else {
            return Err(format!("{entry:?}: expected pattern:messages:seconds"));
        };
        fn number<T: std::str::FromStr>(entry: &str, text: &str, what: &str) -> Result<T, String> {
            text.parse().map_err(|_| format!("{entry:?}: {what} must be a whole number, not {text:?}"))
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            messages: number(entry, messages, "messages")?,
            seconds: number(entry, seconds, "seconds")?,
        })
    }
}

/// `[collections.<name>]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSection {
    /// How concurrent writes to one path are resolved.
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSection::default(),
            database: DatabaseSection::default(),
            auth: AuthSection::default(),
            limits: Limits::default(),
            rate_limit: RateLimit::default(),
            write: WriteSection::default(),
            topics: TopicsSection::default(),
            collections: BTreeMap::new(),
            default_policy: Policy::LastWriterWins,
            monitoring: false,
            log: "info".to_owned(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self { host: "127.0.0.1".to_owned(), port: 8080 }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self { url: "sqlite://./sync.db".to_owned(), pool_size: 10 }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            secret_key_file: None,
            secret_key: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            bootstrap_credentials: true,
            acl_reload_secs: 2,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            hard_max_frame_bytes: 16 << 20,
            max_document_bytes: 1 << 20,
            max_patch_ops: 1000,
            max_depth: 64,
            max_connections: 100_000,
            max_unauthenticated: 1024,
            header_read_timeout_secs: 10,
            session_queue: 1024,
            auth_timeout_secs: 10,
            ping_interval_secs: 30,
            idle_timeout_secs: 60,
            write_timeout_secs: 30,
            max_rebase_work: 100_000,
            max_subscriptions: 1000,
            max_page: 5000,
            max_page_bytes: 4 << 20,
            password_checks: 0,
            password_check_queue: 64,
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 10_000, burst: 20_000 }
    }
}

impl Default for TopicsSection {
    fn default() -> Self {
        Self { history: Vec::new(), max_history_topics: 10_000 }
    }
}

impl Default for WriteSection {
    fn default() -> Self {
        Self { max_batch: 1024, cache_documents: 10_000, queue: 16_384, pipeline: 3 }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid environment variable {name}={value:?}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        message: String,
    },
}

impl Config {
    /// Loads the config file (when `path` is given it must exist; otherwise
    /// `./sync-server.toml` is read if present), then applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => {
                let default = Path::new("sync-server.toml");
                if default.exists() { Self::from_file(default)? } else { Self::default() }
            }
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Parses a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// The default configuration as a commented TOML file (`sync-server default-config`).
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Self::default()).unwrap_or_default();
        format!(
            "# sync-server configuration. Precedence: defaults < this file < environment < flags.\n\
             # Environment: DATABASE_URL, SYNC_DB_POOL_SIZE, HOST, PORT, JWT_SECRET, JWT_PUBLIC_KEY_FILE,\n\
             # SYNC_SECRET_KEY, SYNC_SECRET_KEY_FILE, MONITORING, RUST_LOG, SYNC_MAX_CONNECTIONS,\n\
             # SYNC_MAX_UNAUTHENTICATED, SYNC_HEADER_READ_TIMEOUT_SECS,\n\
             # SYNC_RATE_LIMIT_PER_SECOND, SYNC_RATE_LIMIT_BURST, SYNC_MAX_FRAME_BYTES, SYNC_MAX_DOCUMENT_BYTES,\n\
             # SYNC_PASSWORD_CHECKS, SYNC_PASSWORD_CHECK_QUEUE, SYNC_BOOTSTRAP_CREDENTIALS,\n\
             # SYNC_MAX_SUBSCRIPTIONS, SYNC_TOPICS_MAX_HISTORY_TOPICS,\n\
             # SYNC_TOPICS_HISTORY (\"chat.>:100:3600 news.*:20:600\": pattern:messages:seconds).\n\
             # Topic history: [[topics.history]] pattern = \"chat.>\" messages = 100 seconds = 3600\n\
             # Per-collection merge policy: [collections.tasks] policy = \"server_wins\"\n\n{body}"
        )
    }

    /// Applies environment variables (read through `get`, so tests need not touch the
    /// process environment).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError> {
            value.trim().parse().map_err(|_| ConfigError::Env { name, value, message: "not a valid number".into() })
        }
        fn flag(name: &'static str, value: String) -> Result<bool, ConfigError> {
            match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(ConfigError::Env { name, value, message: "expected true or false".into() }),
            }
        }
        if let Some(v) = get("DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("SYNC_DB_POOL_SIZE") {
            self.database.pool_size = parse("SYNC_DB_POOL_SIZE", v)?;
        }
        if let Some(v) = get("HOST") {
            self.server.host = v;
        }
        if let Some(v) = get("PORT") {
            self.server.port = parse("PORT", v)?;
        }
        if let Some(v) = get("JWT_SECRET") {
            self.auth.jwt_secret = Some(v);
        }
        if let Some(v) = get("JWT_PUBLIC_KEY_FILE") {
            self.auth.jwt_public_key_file = Some(v.into());
        }
        if let Some(v) = get("SYNC_SECRET_KEY") {
            self.auth.secret_key = Some(v);
        }
        if let Some(v) = get("SYNC_SECRET_KEY_FILE") {
            self.auth.secret_key_file = Some(v.into());
        }
        if let Some(v) = get("SYNC_BOOTSTRAP_CREDENTIALS") {
            self.auth.bootstrap_credentials = flag("SYNC_BOOTSTRAP_CREDENTIALS", v)?;
        }
        if let Some(v) = get("MONITORING") {
            self.monitoring = flag("MONITORING", v)?;
        }
        if let Some(v) = get("RUST_LOG") {
            self.log = v;
        }
        if let Some(v) = get("SYNC_MAX_CONNECTIONS") {
            self.limits.max_connections = parse("SYNC_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = get("SYNC_MAX_UNAUTHENTICATED") {
            self.limits.max_unauthenticated = parse("SYNC_MAX_UNAUTHENTICATED", v)?;
        }
        if let Some(v) = get("SYNC_HEADER_READ_TIMEOUT_SECS") {
            self.limits.header_read_timeout_secs = parse("SYNC_HEADER_READ_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("SYNC_MAX_FRAME_BYTES") {
            self.limits.max_frame_bytes = parse("SYNC_MAX_FRAME_BYTES", v)?;
        }
        if let Some(v) = get("SYNC_PASSWORD_CHECKS") {
            self.limits.password_checks = parse("SYNC_PASSWORD_CHECKS", v)?;
        }
        if let Some(v) = get("SYNC_PASSWORD_CHECK_QUEUE") {
            self.limits.password_check_queue = parse("SYNC_PASSWORD_CHECK_QUEUE", v)?;
        }
        if let Some(v) = get("SYNC_MAX_DOCUMENT_BYTES") {
            self.limits.max_document_bytes = parse("SYNC_MAX_DOCUMENT_BYTES", v)?;
        }
        if let Some(v) = get("SYNC_MAX_SUBSCRIPTIONS") {
            self.limits.max_subscriptions = parse("SYNC_MAX_SUBSCRIPTIONS", v)?;
        }
        if let Some(v) = get("SYNC_TOPICS_MAX_HISTORY_TOPICS") {
            self.topics.max_history_topics = parse("SYNC_TOPICS_MAX_HISTORY_TOPICS", v)?;
        }
        if let Some(v) = get("SYNC_TOPICS_HISTORY") {
            let rules: Result<Vec<HistoryRule>, String> = v.split_whitespace().map(HistoryRule::parse).collect();
            self.topics.history =
                rules.map_err(|message| ConfigError::Env { name: "SYNC_TOPICS_HISTORY", value: v.clone(), message })?;
        }
        if let Some(v) = get("SYNC_RATE_LIMIT_PER_SECOND") {
            self.rate_limit.per_second = parse("SYNC_RATE_LIMIT_PER_SECOND", v)?;
        }
        if let Some(v) = get("SYNC_RATE_LIMIT_BURST") {
            self.rate_limit.burst = parse("SYNC_RATE_LIMIT_BURST", v)?;
        }
        Ok(())
    }

    /// The merge policy of a collection.
    pub fn policy_for(&self, collection: &str) -> Policy {
        self.collections.get(collection).map_or(self.default_policy, |c| c.policy)
    }

    /// Where the server secret key file lives.
    pub fn secret_key_path(&self) -> PathBuf {
        if let Some(path) = &self.auth.secret_key_file {
            return path.clone();
        }
        match DatabaseUrl::parse(&self.database.url) {
            Ok(DatabaseUrl::Sqlite(db)) => db.with_extension("key"),
            _ => PathBuf::from("sync.key"),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("database", &self.database)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .field("rate_limit", &self.rate_limit)
            .field("write", &self.write)
            .field("topics", &self.topics)
            .field("collections", &self.collections)
            .field("default_policy", &self.default_policy)
            .field("monitoring", &self.monitoring)
            .field("log", &self.log)
            .finish()
    }
}

impl fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthSection")
            .field("secret_key_file", &self.secret_key_file)
            .field("secret_key", &redacted(&self.secret_key))
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("bootstrap_credentials", &self.bootstrap_credentials)
            .field("acl_reload_secs", &self.acl_reload_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_file_then_env() {
        let mut config: Config = toml::from_str(
            "[server]\nport = 9000\nhost = \"0.0.0.0\"\n[collections.tasks]\npolicy = \"server_wins\"\n",
        )
        .unwrap();
        assert_eq!(config.server.port, 9000);
        config
            .apply_env(|name| match name {
                "PORT" => Some("9100".into()),
                "MONITORING" => Some("true".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!((config.server.host.as_str(), config.server.port, config.monitoring), ("0.0.0.0", 9100, true));
        assert_eq!(config.policy_for("tasks"), Policy::ServerWins);
        assert_eq!(config.policy_for("notes"), Policy::LastWriterWins);
    }

    #[test]
    fn pool_size_from_file_and_env() {
        let mut config: Config = toml::from_str("[database]\nurl = \"postgres://db/sync\"\npool_size = 4\n").unwrap();
        assert_eq!(config.database.pool_size, 4);
        config.apply_env(|name| (name == "SYNC_DB_POOL_SIZE").then(|| "32".into())).unwrap();
        assert_eq!(config.database.pool_size, 32);
        let err = config.apply_env(|name| (name == "SYNC_DB_POOL_SIZE").then(|| "many".into())).unwrap_err();
        assert!(err.to_string().contains("SYNC_DB_POOL_SIZE"), "{err}");
        assert_eq!(Config::default().database.pool_size, 10);
    }

    #[test]
    fn topic_history_from_file_and_env() {
        let mut config: Config = toml::from_str(
            "[topics]\nmax_history_topics = 5\n[[topics.history]]\npattern = \"chat.>\"\nmessages = 100\nseconds = 3600\n",
        )
        .unwrap();
        assert_eq!(config.topics.history, [HistoryRule { pattern: "chat.>".into(), messages: 100, seconds: 3600 }]);
        assert_eq!(config.topics.max_history_topics, 5);
        config
            .apply_env(|name| match name {
                "SYNC_TOPICS_HISTORY" => Some(" a:b.*:10:60  news.>:1:5 ".into()),
                "SYNC_MAX_SUBSCRIPTIONS" => Some("7".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            config.topics.history,
            [
                HistoryRule { pattern: "a:b.*".into(), messages: 10, seconds: 60 },
                HistoryRule { pattern: "news.>".into(), messages: 1, seconds: 5 },
            ]
        );
        assert_eq!(config.limits.max_subscriptions, 7);
        let err = config.apply_env(|name| (name == "SYNC_TOPICS_HISTORY").then(|| "chat.>:many:5".into())).unwrap_err();
        assert!(err.to_string().contains("messages must be a whole number"), "{err}");
        assert_eq!(Config::default().limits.max_subscriptions, 1000);
    }

    #[test]
    fn bad_env_is_a_clear_error() {
        let err = Config::default().apply_env(|n| (n == "PORT").then(|| "eighty".into())).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("[server]\nprot = 1\n").is_err());
    }

    #[test]
    fn default_toml_parses_back() {
        let text = Config::default_toml();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed.server.port, 8080);
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.auth.jwt_secret = Some("hunter2".into());
        config.database.url = "postgres://sync:p4ss@db/sync".into();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("p4ss"), "{shown}");
        assert!(shown.contains("postgres://sync:****@db/sync"));
    }

    // The URL cases this test had live with `DatabaseUrl` in sync-store.
    #[test]
    fn the_secret_key_lives_next_to_an_sqlite_database() {
        assert_eq!(Config::default().secret_key_path(), PathBuf::from("./sync.key"));
        let mut config = Config::default();
        config.database.url = "sqlite:/var/lib/sync.db?mode=rwc".into();
        assert_eq!(config.secret_key_path(), PathBuf::from("/var/lib/sync.key"));
        config.database.url = "postgres://db/sync".into();
        assert_eq!(config.secret_key_path(), PathBuf::from("sync.key"));
    }
}
