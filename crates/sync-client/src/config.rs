//! Engine configuration: every option explicit, with a builder, and the rule by which
//! the four-argument `SyncEngine::new` reads its third argument.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sync_core::Policy;

use crate::error::{Result, SyncError};

/// How the engine authenticates.
#[derive(Clone)]
pub enum Auth {
    /// HMAC API credentials; the user is the email.
    ApiKey {
        /// `rpa_…`.
        key: String,
        /// `rps_…`.
        secret: String,
    },
    /// A bearer token from `sync-server create-token` (`sts_…`); the user is the user id.
    Token(String),
    /// A JWT whose `sub` is the user.
    Jwt(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey { key, .. } => f
                .debug_struct("ApiKey")
                .field("key", &sync_core::protocol::mask(key))
                .field("secret", &"<redacted>")
                .finish(),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Jwt(_) => f.write_str("Jwt(<redacted>)"),
        }
    }
}

impl Auth {
    /// The rule of the four-argument constructor: a credential starting with `rpa_` is an
    /// API key whose secret comes from `SYNC_API_SECRET`; `sts_` is a bearer token;
    /// anything else is a JWT.
    pub fn from_credential(credential: &str, secret_from_env: Option<String>) -> Result<Auth> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(SyncError::Config("the API key or token is empty".into()));
        }
        if credential.starts_with(sync_core::auth::API_KEY_PREFIX) {
            let secret = secret_from_env.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                SyncError::Config(
                    "an API key (rpa_…) needs its secret: set SYNC_API_SECRET, or use SyncConfig with api_key(key, secret)"
                        .into(),
                )
            })?;
            return Ok(Auth::ApiKey { key: credential.to_owned(), secret: secret.trim().to_owned() });
        }
        if credential.starts_with("sts_") {
            return Ok(Auth::Token(credential.to_owned()));
        }
        Ok(Auth::Jwt(credential.to_owned()))
    }
}

/// Everything an engine needs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Local database: `sqlite:path?mode=rwc`, `sqlite://path`, or a plain path (created when missing).
    pub database: String,
    /// Server WebSocket URL, e.g. `ws://localhost:8080/ws`.
    pub server_url: String,
    /// The user: an email for API keys, the user id for tokens.
    pub user: String,
    /// How to authenticate.
    pub auth: Auth,
    /// Local rebase policy per collection (should match the server's configuration).
    pub collection_policies: BTreeMap<String, Policy>,
    /// Local rebase policy of other collections.
    pub default_policy: Policy,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long shutdown (and dropping the engine) keeps trying to push the outbox.
    pub shutdown_grace: Duration,
    /// Most catch-up changes stored in one local transaction (the server sends pages of
    /// its own size; a larger one is stored in several transactions).
    pub catch_up_page: u32,
    /// Most events kept for `process_events` before the oldest are dropped.
    pub event_queue: usize,
    /// Most events a topic subscription keeps for the application before the oldest are
    /// dropped (the next one it receives is then a `Gap::Dropped` saying how many).
    pub topic_buffer: usize,
    /// Partial sync: when set, only documents of these collections are caught up,
    /// pushed and shared to this replica (sent on `authenticate`, which the server's
    /// catch-up and pushes follow); `None` syncs every collection. Local writes to other
    /// collections still go to the server. Widening the list makes the next connection
    /// catch up again from the start, so that the documents of the added collections
    /// arrive; documents of collections taken off the list stay as they were locally.
    pub collections: Option<Vec<String>>,
    /// `wss://` only: a PEM file of CA certificates to trust besides the public web roots
    /// (a private CA, a self-signed server certificate). Read at every connection, so a
    /// renewed file needs no restart.
    pub tls_ca_file: Option<PathBuf>,
}

impl SyncConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        database: impl Into<String>,
        server_url: impl Into<String>,
        user: impl Into<String>,
        auth: Auth,
    ) -> Self {
        Self {
            database: database.into(),
            server_url: server_url.into(),
            user: user.into(),
            auth,
            collection_policies: BTreeMap::new(),
            default_policy: Policy::LastWriterWins,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(3),
            catch_up_page: 1000,
            event_queue: 100_000,
            topic_buffer: 10_000,
            collections: None,
            tls_ca_file: None,
        }
    }

    /// A builder.
    pub fn builder() -> SyncConfigBuilder {
        SyncConfigBuilder::default()
    }

    /// The local rebase policy of a collection.
    pub fn policy_for(&self, collection: &str) -> Policy {
        self.collection_policies.get(collection).copied().unwrap_or(self.default_policy)
    }

    /// Whether this replica syncs `collection` (always, without partial sync).
    pub fn syncs(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|names| names.iter().any(|name| name == collection))
    }

    /// Checks [`SyncConfig::collections`]: 1 to 100 valid collection names
    /// (`[a-z0-9_-]{1,64}`). Duplicates are dropped and the names sorted, so the list
    /// compares equal however it was written.
    pub(crate) fn check_collections(&mut self) -> Result<()> {
        let Some(names) = &mut self.collections else { return Ok(()) };
        if names.is_empty() {
            return Err(SyncError::Config(
                "collections is empty: name at least one collection, or leave it unset to sync them all".into(),
            ));
        }
        if names.len() > sync_core::protocol::MAX_SYNC_COLLECTIONS {
            return Err(SyncError::Config(format!(
                "collections names {} collections; the server accepts at most {}",
                names.len(),
                sync_core::protocol::MAX_SYNC_COLLECTIONS
            )));
        }
        for name in names.iter() {
            sync_core::model::validate_collection(name)
                .map_err(|e| SyncError::Config(format!("collections: {name:?}: {e}")))?;
        }
        names.sort();
        names.dedup();
        Ok(())
    }
}

/// Builds a [`SyncConfig`] option by option.
#[derive(Default)]
pub struct SyncConfigBuilder {
    database: Option<String>,
    server_url: Option<String>,
    user: Option<String>,
    auth: Option<Auth>,
    policies: BTreeMap<String, Policy>,
    default_policy: Option<Policy>,
    backoff: Option<(Duration, Duration)>,
    grace: Option<Duration>,
    catch_up_page: Option<u32>,
    topic_buffer: Option<usize>,
    collections: Option<Vec<String>>,
    tls_ca_file: Option<PathBuf>,
}

impl SyncConfigBuilder {
    /// Local database URL or path.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }
    /// Server WebSocket URL.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server_url = Some(url.into());
        self
    }
    /// The user's email (API keys) or user id (tokens).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    /// Authenticate with an API key and its secret.
    pub fn api_key(mut self, key: impl Into<String>, secret: impl Into<String>) -> Self {
        self.auth = Some(Auth::ApiKey { key: key.into(), secret: secret.into() });
        self
    }
    /// Authenticate with a bearer token (`sts_…`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Token(token.into()));
        self
    }
    /// Authenticate with a JWT.
    pub fn jwt(mut self, jwt: impl Into<String>) -> Self {
        self.auth = Some(Auth::Jwt(jwt.into()));
        self
    }
    /// The local rebase policy of a collection.
    pub fn collection_policy(mut self, collection: impl Into<String>, policy: Policy) -> Self {
        self.policies.insert(collection.into(), policy);
        self
    }
    /// The local rebase policy of collections not named.
    pub fn default_policy(mut self, policy: Policy) -> Self {
        self.default_policy = Some(policy);
        self
    }
    /// Reconnect delays: first and longest.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some((initial, max));
        self
    }
    /// How long shutdown keeps trying to push the outbox.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }
    /// Most catch-up changes stored in one local transaction (1–5,000).
    pub fn catch_up_page(mut self, size: u32) -> Self {
        self.catch_up_page = Some(size);
        self
    }

    /// Most events a topic subscription keeps before dropping the oldest (at least 1;
    /// see [`SyncConfig::topic_buffer`]).
    pub fn topic_buffer(mut self, events: usize) -> Self {
        self.topic_buffer = Some(events);
        self
    }

    /// Partial sync: only these collections (see [`SyncConfig::collections`]).
    pub fn collections<I, S>(mut self, collections: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.collections = Some(collections.into_iter().map(Into::into).collect());
        self
    }

    /// Trust the CA certificates of this PEM file for `wss://` (see
    /// [`SyncConfig::tls_ca_file`]).
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// The configuration, or what is missing or invalid.
    pub fn build(self) -> Result<SyncConfig> {
        let missing = |what: &str| SyncError::Config(format!("{what} is required"));
        let mut config = SyncConfig::new(
            self.database.ok_or_else(|| missing("database"))?,
            self.server_url.ok_or_else(|| missing("server"))?,
            self.user.ok_or_else(|| missing("user"))?,
            self.auth.ok_or_else(|| missing("api key or token"))?,
        );
        config.collection_policies = self.policies;
        if let Some(policy) = self.default_policy {
            config.default_policy = policy;
        }
        if let Some((initial, max)) = self.backoff {
            if initial.is_zero() || max < initial {
                return Err(SyncError::Config("backoff needs 0 < initial <= max".into()));
            }
            config.backoff_initial = initial;
            config.backoff_max = max;
        }
        if let Some(grace) = self.grace {
            config.shutdown_grace = grace;
        }
        if let Some(page) = self.catch_up_page {
            config.catch_up_page = page.clamp(1, 5000);
        }
        if let Some(events) = self.topic_buffer {
            config.topic_buffer = events.max(1);
        }
        config.collections = self.collections;
        config.tls_ca_file = self.tls_ca_file;
        config.check_collections()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_argument_rule() {
        assert!(matches!(
            Auth::from_credential("rpa_abc", Some("rps_x".into())).unwrap(),
            Auth::ApiKey { ref secret, .. } if secret == "rps_x"
        ));
        let err = Auth::from_credential("rpa_abc", None).unwrap_err();
        assert!(err.to_string().contains("SYNC_API_SECRET"), "{err}");
        assert!(matches!(Auth::from_credential("sts_1_2", None).unwrap(), Auth::Token(_)));
        assert!(matches!(Auth::from_credential("a.b.c", None).unwrap(), Auth::Jwt(_)));
        assert!(Auth::from_credential("  ", None).is_err());
    }

    #[test]
    fn builder_requires_essentials_and_redacts() {
        assert!(SyncConfig::builder().database("x.db").build().is_err());
        let config = SyncConfig::builder()
            .database("x.db")
            .server("ws://localhost:8080/ws")
            .user("me@example.com")
            .api_key("rpa_k", "rps_secret")
            .collection_policy("tasks", Policy::ServerWins)
            .build()
            .unwrap();
        assert_eq!(config.policy_for("tasks"), Policy::ServerWins);
        assert!(!format!("{config:?}").contains("rps_secret"));
        assert!(config.syncs("anything"), "without partial sync every collection syncs");
    }

    #[test]
    fn partial_sync_names_are_checked_and_normalised() {
        let builder = || SyncConfig::builder().database("x.db").server("ws://h/ws").user("u").token("sts_t");
        let config = builder().collections(["team", "notes", "team"]).build().unwrap();
        assert_eq!(config.collections.as_deref(), Some(&["notes".to_owned(), "team".to_owned()][..]));
        assert!(config.syncs("team") && config.syncs("notes"));
        assert!(!config.syncs("tasks"));
        for (bad, needle) in [(vec![], "empty"), (vec!["Team"], "\"Team\""), (vec!["a/b"], "\"a/b\"")] {
            let err = builder().collections(bad).build().unwrap_err();
            assert!(matches!(err, SyncError::Config(_)) && err.to_string().contains(needle), "{err}");
        }
        let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
        assert!(builder().collections(many).build().unwrap_err().to_string().contains("at most 100"));
    }
}
