//! Authentication: HMAC API credentials, bearer tokens and JWTs (PROTOCOL.md §2), for
//! the WebSocket `authenticate` message, the upgrade request, and HTTP requests.
//!
//! Guarantees:
//! - API secrets are never stored: each is derived from the server secret key and the API
//!   key (`rps_` + hex HMAC-SHA256(key, "api-secret:" + api_key)), so a database dump
//!   alone does not reveal them;
//! - bearer tokens are stored as Argon2id hashes only; a verified token is cached by its
//!   SHA-256 so the slow hash runs once per token, not once per connection, and so is a
//!   secret that failed, so a retry storm with it does not hash again;
//! - at most [`PasswordChecks::concurrent`] Argon2 checks run at once and at most
//!   [`PasswordChecks::queue`] more wait; any more is refused at once without hashing,
//!   so a flood of wrong secrets holds at most `concurrent` times Argon2's memory cost;
//! - failures say only `invalid credentials`, `expired` or `malformed`, or `server error`
//!   when the server cannot check now.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::{Output, PasswordHash};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sync_core::auth::{timestamp_in_window, user_id_for_email, verify_signature};
use sync_core::protocol::Credentials;
use sync_store::{ApiCredential, Store, TokenRecord};
use tokio::sync::Semaphore;

use crate::backend::AnyStore;

/// Prefix of bearer tokens issued by `sync-server create-token`.
pub(crate) const TOKEN_PREFIX: &str = "sts_";

/// Who a connection or request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) user_id: String,
    /// Whether the admin routes are open to it.
    pub(crate) is_admin: bool,
}

/// Why authentication failed; the `Display` text is what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthFailure {
    /// Wrong key, signature, token or user.
    #[error("invalid credentials")]
    Invalid,
    /// A timestamp outside the replay window, or an expired token.
    #[error("expired")]
    Expired,
    /// Not shaped like any accepted credential.
    #[error("malformed")]
    Malformed,
    /// The server could not check now (storage down, or too many password checks
    /// waiting); not the client's fault, and worth retrying later.
    #[error("server error")]
    Unavailable,
}

/// The server secret key from which API secrets are derived.
#[derive(Clone)]
pub(crate) struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Parses a 64-hex-digit key.
    pub(crate) fn from_hex(hex_key: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(hex_key.trim()).map_err(|e| anyhow::anyhow!("secret key is not hex: {e}"))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("secret key must be 32 bytes (64 hex digits)"))?;
        Ok(Self(key))
    }

    /// Reads the key file, creating it with a new random key (mode 0600) when missing.
    pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_hex(&text).map_err(|e| anyhow::anyhow!("invalid secret key file {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = sync_core::auth::generate_token();
                write_private(path, &format!("{key}\n"))
                    .map_err(|e| anyhow::anyhow!("cannot create secret key file {}: {e}", path.display()))?;
                tracing::info!(path = %path.display(), "created the server secret key file; back it up with the database");
                Self::from_hex(&key)
            }
            Err(e) => Err(anyhow::anyhow!("cannot read secret key file {}: {e}", path.display())),
        }
    }

    /// The secret of an API key.
    pub(crate) fn api_secret(&self, api_key: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(b"api-secret:");
        mac.update(api_key.as_bytes());
        format!("{}{}", sync_core::auth::API_SECRET_PREFIX, hex::encode(mac.finalize().into_bytes()))
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// How JWTs are checked.
struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    admin: bool,
}

struct CachedToken {
    principal: Principal,
    expires_at: Option<i64>,
    checked: Instant,
}

/// How many password-hash (Argon2) checks of bearer tokens may run and wait. Each check
/// holds Argon2's memory cost (19 MiB with the parameters `create-token` uses) and tens
/// of milliseconds of a core, so these bound what a flood of wrong secrets can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PasswordChecks {
    /// Checks that run at once, each on a thread of the blocking pool.
    pub(crate) concurrent: usize,
    /// Checks that may wait for one of those; a check beyond them is refused at once,
    /// without hashing, as `server error`.
    pub(crate) queue: usize,
}

impl PasswordChecks {
    /// The limits of `[limits]`: `password_checks` (0: one per CPU core) and
    /// `password_check_queue`.
    pub(crate) fn from_limits(limits: &crate::config::Limits) -> Self {
        let concurrent = match limits.password_checks {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Self { concurrent, queue: limits.password_check_queue }
    }
}

/// Checks credentials against the store, with caches for the slow or repeated parts.
pub(crate) struct Authenticator {
    store: AnyStore,
    secret_key: SecretKey,
    jwt: Option<JwtVerifier>,
    /// SHA-256 of a verified bearer token → who it is.
    tokens: Mutex<HashMap<[u8; 32], CachedToken>>,
    /// SHA-256 of a bearer token whose secret failed its Argon2 check → when. A secret
    /// that failed once fails again (the record cannot come to match it), so retries
    /// within [`CACHE_TTL`] are refused without hashing.
    failed_tokens: Mutex<HashMap<[u8; 32], Instant>>,
    /// Permits to run an Argon2 check: [`PasswordChecks::concurrent`].
    hash_slots: Arc<Semaphore>,
    /// Permits to run or wait for a check: concurrent plus queue. Taken without waiting,
    /// so a check that finds none is refused at once.
    hash_admission: Arc<Semaphore>,
    /// Argon2's working memory, one buffer per running check, kept between checks: a
    /// check allocates nothing, so what the checks hold is the running checks' buffers
    /// however many checks come, whatever the allocator keeps of freed memory.
    hash_memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// Argon2 checks run so far (for tests and diagnostics).
    hashes_run: AtomicU64,
    /// API credentials by key (they change only through the CLI; re-read after a minute).
    credentials: Mutex<HashMap<String, (Option<ApiCredential>, Instant)>>,
    /// Users already recorded in the store.
    known_users: Mutex<HashSet<String>>,
}

const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most entries a token cache holds before it is cleared: a flood of distinct tokens
/// costs at most this many digests of memory.
const MAX_CACHED_TOKENS: usize = 100_000;

impl Authenticator {
    /// Builds the authenticator; fails on an unreadable or invalid JWT public key.
    pub(crate) fn new(
        store: AnyStore,
        secret_key: SecretKey,
        jwt_secret: Option<&str>,
        jwt_public_key_file: Option<&Path>,
        password_checks: PasswordChecks,
    ) -> anyhow::Result<Self> {
        let jwt = match (jwt_secret, jwt_public_key_file) {
            (_, Some(path)) => Some(jwt_from_pem(path)?),
            (Some(secret), None) => {
                let mut validation = Validation::new(Algorithm::HS256);
                configure(&mut validation);
                Some(JwtVerifier { key: DecodingKey::from_secret(secret.as_bytes()), validation })
            }
            (None, None) => None,
        };
        Ok(Self {
            store,
            secret_key,
            jwt,
            tokens: Mutex::new(HashMap::new()),
            failed_tokens: Mutex::new(HashMap::new()),
            hash_slots: Arc::new(Semaphore::new(password_checks.concurrent.max(1))),
            hash_admission: Arc::new(Semaphore::new(password_checks.concurrent.max(1) + password_checks.queue)),
            hash_memory: Arc::new(Mutex::new(Vec::new())),
            hashes_run: AtomicU64::new(0),
            credentials: Mutex::new(HashMap::new()),
            known_users: Mutex::new(HashSet::new()),
        })
    }

    /// How many Argon2 checks have run.
    #[cfg(test)]
    fn password_checks_run(&self) -> u64 {
        self.hashes_run.load(Ordering::Relaxed)
    }

    /// Checks `authenticate` credentials.
    pub(crate) async fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthFailure> {
        match credentials {
            Credentials::Hmac { email, api_key, signature, timestamp } => {
                self.check_hmac(email, api_key, signature, *timestamp, b"").await
            }
            Credentials::Bearer { user_id, auth_token } => {
                let principal = self.check_token(auth_token).await?;
                if principal.user_id != *user_id {
                    return Err(AuthFailure::Invalid);
                }
                Ok(principal)
            }
            Credentials::Jwt { token } => self.check_jwt(token),
        }
    }

    /// Checks an `Authorization: Bearer` value: a JWT or a token from `create-token`.
    pub(crate) async fn authenticate_bearer(&self, value: &str) -> Result<Principal, AuthFailure> {
        if value.starts_with(TOKEN_PREFIX) { self.check_token(value).await } else { self.check_jwt(value) }
    }

    /// Checks HMAC credentials; `body` is the signed body part (empty on the WebSocket).
    pub(crate) async fn check_hmac(
        &self,
        email: &str,
        api_key: &str,
        signature: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<Principal, AuthFailure> {
        if email.trim().is_empty() || !sync_core::auth::is_api_key(api_key) {
            return Err(AuthFailure::Malformed);
        }
        if !timestamp_in_window(timestamp, now_secs()) {
            return Err(AuthFailure::Expired);
        }
        let credential = self.credential(api_key).await?.ok_or(AuthFailure::Invalid)?;
        if credential.revoked_at.is_some() {
            return Err(AuthFailure::Invalid);
        }
        let secret = self.secret_key.api_secret(api_key);
        if !verify_signature(&secret, timestamp, email, api_key, body, signature) {
            return Err(AuthFailure::Invalid);
        }
        let user_id = user_id_for_email(email);
        self.remember_user(&user_id, Some(email.trim().to_lowercase())).await?;
        Ok(Principal { user_id, is_admin: credential.is_admin })
    }

    async fn credential(&self, api_key: &str) -> Result<Option<ApiCredential>, AuthFailure> {
        if let Some((cached, at)) = lock(&self.credentials).get(api_key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(cached.clone());
        }
        let found = self.store.get_api_credential(api_key.to_owned()).await.map_err(|e| {
            tracing::warn!(error = %e, "api credential lookup failed");
            AuthFailure::Unavailable
        })?;
        let mut cache = lock(&self.credentials);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(api_key.to_owned(), (found.clone(), Instant::now()));
        Ok(found)
    }

    async fn remember_user(&self, user_id: &str, email: Option<String>) -> Result<(), AuthFailure> {
        if lock(&self.known_users).contains(user_id) {
            return Ok(());
        }
        self.store.ensure_user(user_id.to_owned(), email).await.map_err(|e| {
            tracing::warn!(error = %e, "recording user failed");
            AuthFailure::Unavailable
        })?;
        lock(&self.known_users).insert(user_id.to_owned());
        Ok(())
    }

    /// Checks a bearer token `sts_<id>_<secret>`.
    pub(crate) async fn check_token(&self, token: &str) -> Result<Principal, AuthFailure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_millis();
        if let Some(cached) = lock(&self.tokens).get(&digest)
            && cached.checked.elapsed() < CACHE_TTL
        {
            return match cached.expires_at {
                Some(at) if at <= now => Err(AuthFailure::Expired),
                _ => Ok(cached.principal.clone()),
            };
        }
        if lock(&self.failed_tokens).get(&digest).is_some_and(|at| at.elapsed() < CACHE_TTL) {
            return Err(AuthFailure::Invalid);
        }
        let (id, secret) = split_token(token).ok_or(AuthFailure::Malformed)?;
        let record = self
            .store
            .get_token(id.to_owned())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "token lookup failed");
                AuthFailure::Unavailable
            })?
            .ok_or(AuthFailure::Invalid)?;
        let verified = self.verify_secret(record.hash.clone(), secret.to_owned()).await?;
        if !verified {
            let mut failed = lock(&self.failed_tokens);
            if failed.len() >= MAX_CACHED_TOKENS {
                failed.clear();
            }
            failed.insert(digest, Instant::now());
            return Err(AuthFailure::Invalid);
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthFailure::Expired);
        }
        let principal = Principal { user_id: record.user_id.clone(), is_admin: record.is_admin };
        self.remember_user(&principal.user_id, None).await?;
        let mut cache = lock(&self.tokens);
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.clear();
        }
        cache.insert(
            digest,
            CachedToken { principal: principal.clone(), expires_at: record.expires_at, checked: Instant::now() },
        );
        Ok(principal)
    }

    /// Checks `secret` against an Argon2 `hash` on the blocking pool, within the limits
    /// of [`PasswordChecks`]: refused at once (`Unavailable`) when as many checks as the
    /// queue holds are already waiting.
    async fn verify_secret(&self, hash: String, secret: String) -> Result<bool, AuthFailure> {
        let Ok(admitted) = Arc::clone(&self.hash_admission).try_acquire_owned() else {
            tracing::warn!("too many password checks waiting: refused a bearer token without checking it");
            return Err(AuthFailure::Unavailable);
        };
        let slot = Arc::clone(&self.hash_slots).acquire_owned().await.map_err(|_| AuthFailure::Unavailable)?;
        self.hashes_run.fetch_add(1, Ordering::Relaxed);
        // Argon2 takes tens of milliseconds of CPU: keep it off the async workers. The
        // permits go with the check, so that it counts until it ends even when the
        // connection that asked for it is gone.
        let memory = Arc::clone(&self.hash_memory);
        let verified = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, slot);
            // At most one buffer per slot exists: one is taken only with a slot.
            let mut blocks = lock(&memory).pop().unwrap_or_default();
            let verified = verify_argon2(secret.as_bytes(), &hash, &mut blocks);
            lock(&memory).push(blocks);
            verified
        })
        .await
        .unwrap_or(false);
        Ok(verified)
    }

    /// Checks a JWT: signature with the configured key, `exp` required and `nbf` honoured
    /// (both with [`JWT_LEEWAY_SECS`]), `sub` the user.
    pub(crate) fn check_jwt(&self, token: &str) -> Result<Principal, AuthFailure> {
        let Some(jwt) = &self.jwt else { return Err(AuthFailure::Invalid) };
        if token.split('.').count() != 3 {
            return Err(AuthFailure::Malformed);
        }
        match jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation) {
            Ok(data) if !data.claims.sub.is_empty() => {
                Ok(Principal { user_id: data.claims.sub, is_admin: data.claims.admin })
            }
            Ok(_) => Err(AuthFailure::Invalid),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::Expired,
                // Not valid yet (`nbf` ahead): the credentials are not good now.
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthFailure::Invalid,
                jsonwebtoken::errors::ErrorKind::InvalidToken | jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    AuthFailure::Malformed
                }
                _ => AuthFailure::Invalid,
            }),
        }
    }
}

/// Seconds of clock difference allowed between the token's issuer and this server, on
/// `exp` and on `nbf` alike (PROTOCOL.md §2).
pub(crate) const JWT_LEEWAY_SECS: u64 = 30;

fn configure(validation: &mut Validation) {
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_exp = true;
    // RFC 7519 §4.1.5: a token must not be accepted before its `nbf` (when it has one).
    validation.validate_nbf = true;
    validation.leeway = JWT_LEEWAY_SECS;
    validation.validate_aud = false;
}

fn jwt_from_pem(path: &Path) -> anyhow::Result<JwtVerifier> {
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read JWT public key {}: {e}", path.display()))?;
    // The PEM label alone cannot tell RSA from EC from Ed25519 in SPKI form, so try each.
    type ParsePem = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    let attempts: [(Algorithm, ParsePem); 3] = [
        (Algorithm::EdDSA, DecodingKey::from_ed_pem),
        (Algorithm::ES256, DecodingKey::from_ec_pem),
        (Algorithm::RS256, DecodingKey::from_rsa_pem),
    ];
    for (algorithm, parse) in attempts {
        if let Ok(key) = parse(&pem) {
            let mut validation = Validation::new(algorithm);
            configure(&mut validation);
            return Ok(JwtVerifier { key, validation });
        }
    }
    Err(anyhow::anyhow!("{} is not an RSA, EC P-256 or Ed25519 public key in PEM form", path.display()))
}

/// Most Argon2 memory a stored hash may ask for (64 MiB): tokens are hashed with the
/// default 19 MiB; a hash asking for more is not checked rather than allowed to make
/// every check's buffer that large.
const MAX_ARGON2_BLOCKS: usize = 64 * 1024;

/// Whether `secret` matches the Argon2 hash `phc` (PHC string form), computed in `blocks`
/// (grown to what the hash's parameters need and kept by the caller), as
/// `PasswordVerifier::verify_password` computes it: the parameters, salt and output
/// length of the hash, and a constant-time comparison.
fn verify_argon2(secret: &[u8], phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Argon2Algorithm::try_from(hash.algorithm.as_str()), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let needed = params.block_count();
    if needed > MAX_ARGON2_BLOCKS {
        tracing::warn!(blocks = needed, "a token hash asks for more Argon2 memory than allowed; not checked");
        return false;
    }
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let mut computed = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2.hash_password_into_with_memory(secret, salt, &mut computed, &mut blocks[..needed]).is_err() {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&computed).is_ok_and(|computed| computed == *expected)
}

/// Splits `sts_<id>_<secret>`.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Issues a bearer token for `user_id`: returns the token to show once and the record to
/// store (with only the Argon2id hash of the secret part).
pub(crate) fn issue_token(
    user_id: &str,
    ttl: Option<Duration>,
    is_admin: bool,
) -> anyhow::Result<(String, TokenRecord)> {
    let id = sync_core::auth::generate_token()[..16].to_owned();
    let secret = sync_core::auth::generate_token();
    let hash = Argon2::default()
        .hash_password(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the token failed: {e}"))?
        .to_string();
    let now = now_millis();
    let record = TokenRecord {
        id: id.clone(),
        user_id: user_id.to_owned(),
        hash,
        is_admin,
        created_at: now,
        expires_at: ttl.map(|ttl| now + ttl.as_millis() as i64),
    };
    Ok((format!("{TOKEN_PREFIX}{id}_{secret}"), record))
}

/// Creates an API credential: returns the record to store and the secret to show once.
pub(crate) fn issue_api_credential(secret_key: &SecretKey, name: &str, is_admin: bool) -> (ApiCredential, String) {
    let api_key = sync_core::auth::generate_api_key();
    let secret = secret_key.api_secret(&api_key);
    let credential =
        ApiCredential { api_key, name: name.to_owned(), is_admin, created_at: now_millis(), revoked_at: None };
    (credential, secret)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these caches cannot leave it inconsistent: recover.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Unix milliseconds now.
pub(crate) fn now_millis() -> i64 {
    sync_core::Timestamp::now().unix_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_secrets_are_derived_and_stable() {
        let key = SecretKey::from_hex(&"ab".repeat(32)).unwrap();
        let a = key.api_secret("rpa_1");
        assert!(sync_core::auth::is_api_secret(&a), "{a}");
        assert_eq!(a, key.api_secret("rpa_1"));
        assert_ne!(a, key.api_secret("rpa_2"));
        let other = SecretKey::from_hex(&"cd".repeat(32)).unwrap();
        assert_ne!(a, other.api_secret("rpa_1"));
        assert!(SecretKey::from_hex("xyz").is_err());
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
    }

    /// An authenticator on a fresh SQLite store holding one token for `u1`; returns it,
    /// the token, and the directory to keep alive.
    async fn with_token(checks: PasswordChecks) -> (Authenticator, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::config::DatabaseSection {
            url: format!("sqlite://{}", dir.path().join("auth.db").display()),
            pool_size: 1,
        };
        let store = AnyStore::open(&database).await.unwrap();
        let (token, record) = issue_token("u1", None, false).unwrap();
        store.create_token(record).await.unwrap();
        let auth =
            Authenticator::new(store, SecretKey::from_hex(&"ab".repeat(32)).unwrap(), None, None, checks).unwrap();
        (auth, token, dir)
    }

    /// `token` with its secret part replaced by `n` in hex.
    fn wrong_secret(token: &str, n: usize) -> String {
        let (id, _) = token.rsplit_once('_').unwrap();
        format!("{id}_{n:064x}")
    }

    #[tokio::test]
    async fn a_secret_that_failed_is_not_hashed_again() {
        let (auth, token, _dir) = with_token(PasswordChecks { concurrent: 1, queue: 0 }).await;
        let wrong = wrong_secret(&token, 1);
        for _ in 0..5 {
            assert_eq!(auth.check_token(&wrong).await, Err(AuthFailure::Invalid));
        }
        assert_eq!(auth.password_checks_run(), 1, "retries of one wrong secret hash once");
        assert_eq!(auth.check_token(&wrong_secret(&token, 2)).await, Err(AuthFailure::Invalid));
        assert_eq!(auth.password_checks_run(), 2, "another wrong secret is checked");
        // The right secret is unaffected, and cached once verified.
        for _ in 0..3 {
            assert_eq!(auth.check_token(&token).await.map(|p| p.user_id), Ok("u1".to_owned()));
        }
        assert_eq!(auth.password_checks_run(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_beyond_the_queue_are_refused_without_hashing() {
        let checks = PasswordChecks { concurrent: 2, queue: 3 };
        let (auth, token, _dir) = with_token(checks).await;
        let auth = Arc::new(auth);
        // Both running slots are taken, so the 5 admitted checks wait and every other
        // one must be refused: what is refused does not depend on how fast hashes are.
        let slots = Arc::clone(&auth.hash_slots).acquire_many_owned(2).await.unwrap();
        let mut attempts: Vec<_> = (0..40)
            .map(|n| {
                let (auth, token) = (Arc::clone(&auth), wrong_secret(&token, n));
                tokio::spawn(async move { auth.check_token(&token).await })
            })
            .collect();
        // Waits for the 35 refusals; more admitted checks would never finish, so a
        // deadline turns that into a failure instead of a hang.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut refused = 0;
        while refused < 35 {
            assert!(Instant::now() < deadline, "only {refused} checks were refused");
            let Some(done) = attempts.iter().position(|a| a.is_finished()) else {
                tokio::task::yield_now().await;
                continue;
            };
            assert_eq!(attempts.swap_remove(done).await.unwrap(), Err(AuthFailure::Unavailable));
            refused += 1;
        }
        assert_eq!((attempts.len(), auth.password_checks_run()), (5, 0), "nothing hashed while the slots are held");
        drop(slots);
        for attempt in attempts {
            assert_eq!(attempt.await.unwrap(), Err(AuthFailure::Invalid));
        }
        assert_eq!(auth.password_checks_run(), 5);
    }

    #[test]
    fn password_checks_default_to_one_per_core() {
        let mut limits = crate::config::Limits::default();
        let checks = PasswordChecks::from_limits(&limits);
        assert_eq!(checks.concurrent, std::thread::available_parallelism().map_or(1, usize::from));
        assert_eq!(checks.queue, 64);
        limits.password_checks = 3;
        assert_eq!(PasswordChecks::from_limits(&limits).concurrent, 3);
    }

    #[test]
    fn tokens_split_and_hash() {
        let (token, record) = issue_token("u1", None, false).unwrap();
        let (id, secret) = split_token(&token).unwrap();
        assert_eq!(id, record.id);
        assert!(!record.hash.contains(secret), "only the hash is stored");
        let mut blocks = Vec::new();
        assert!(verify_argon2(secret.as_bytes(), &record.hash, &mut blocks));
        assert!(!verify_argon2(b"not the secret", &record.hash, &mut blocks));
        assert_eq!(blocks.len(), Params::DEFAULT_M_COST as usize, "the buffer is what the hash asks for");
        // The same as the crate's own verifier, on a hash with other parameters too.
        use argon2::password_hash::PasswordVerifier;
        let small = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, Params::new(64, 3, 1, Some(32)).unwrap());
        let phc = small.hash_password(b"pw").unwrap().to_string();
        assert!(verify_argon2(b"pw", &phc, &mut blocks));
        assert!(!verify_argon2(b"px", &phc, &mut blocks));
        assert!(Argon2::default().verify_password(b"pw", &PasswordHash::new(&phc).unwrap()).is_ok());
        assert!(!verify_argon2(
            b"pw",
            "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            &mut blocks
        ));
        assert!(split_token("sts_nounderscore").is_none());
        assert!(split_token("abc").is_none());
        assert!(!format!("{record:?}").contains(&record.hash));
    }
}
