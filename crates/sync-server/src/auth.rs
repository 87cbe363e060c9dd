//! Authentication: HMAC API credentials, bearer tokens and JWTs (PROTOCOL.md §2), for
//! the WebSocket `authenticate` message, the upgrade request, and HTTP requests.
//!
//! Guarantees:
//! - API secrets are never stored: each is derived from the server secret key and the API
//!   key (`rps_` + hex HMAC-SHA256(key, "api-secret:" + api_key)), so a database dump
//!   alone does not reveal them;
//! - bearer tokens are stored as Argon2id hashes only; a verified token is cached by its
//!   SHA-256 so the slow hash runs once per token, not once per connection;
//! - failures say only `invalid credentials`, `expired` or `malformed`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sync_core::auth::{timestamp_in_window, user_id_for_email, verify_signature};
use sync_core::protocol::Credentials;
use sync_store::{ApiCredential, Store, TokenRecord};

use crate::backend::AnyStore;

/// Prefix of bearer tokens issued by `sync-server create-token`.
pub const TOKEN_PREFIX: &str = "sts_";

/// Who a connection or request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user id.
    pub user_id: String,
    /// Whether the admin routes are open to it.
    pub is_admin: bool,
}

/// Why authentication failed; the `Display` text is what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// Wrong key, signature, token or user.
    #[error("invalid credentials")]
    Invalid,
    /// A timestamp outside the replay window, or an expired token.
    #[error("expired")]
    Expired,
    /// Not shaped like any accepted credential.
    #[error("malformed")]
    Malformed,
    /// The server could not check (storage down); not the client's fault.
    #[error("server error")]
    Unavailable,
}

/// The server secret key from which API secrets are derived.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Parses a 64-hex-digit key.
    pub fn from_hex(hex_key: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(hex_key.trim()).map_err(|e| anyhow::anyhow!("secret key is not hex: {e}"))?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow::anyhow!("secret key must be 32 bytes (64 hex digits)"))?;
        Ok(Self(key))
    }

    /// Reads the key file, creating it with a new random key (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
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
    pub fn api_secret(&self, api_key: &str) -> String {
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

/// Checks credentials against the store, with caches for the slow or repeated parts.
pub struct Authenticator {
    store: AnyStore,
    secret_key: SecretKey,
    jwt: Option<JwtVerifier>,
    /// SHA-256 of a verified bearer token → who it is.
    tokens: Mutex<HashMap<[u8; 32], CachedToken>>,
    /// API credentials by key (they change only through the CLI; re-read after a minute).
    credentials: Mutex<HashMap<String, (Option<ApiCredential>, Instant)>>,
    /// Users already recorded in the store.
    known_users: Mutex<HashSet<String>>,
}

const CACHE_TTL: Duration = Duration::from_secs(60);

impl Authenticator {
    /// Builds the authenticator; fails on an unreadable or invalid JWT public key.
    pub fn new(
        store: AnyStore,
        secret_key: SecretKey,
        jwt_secret: Option<&str>,
        jwt_public_key_file: Option<&Path>,
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
            credentials: Mutex::new(HashMap::new()),
            known_users: Mutex::new(HashSet::new()),
        })
    }

    /// The server secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }

    /// Checks `authenticate` credentials.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthFailure> {
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
    pub async fn authenticate_bearer(&self, value: &str) -> Result<Principal, AuthFailure> {
        if value.starts_with(TOKEN_PREFIX) { self.check_token(value).await } else { self.check_jwt(value) }
    }

    /// Checks HMAC credentials; `body` is the signed body part (empty on the WebSocket).
    pub async fn check_hmac(
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
    pub async fn check_token(&self, token: &str) -> Result<Principal, AuthFailure> {
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
        let hash = record.hash.clone();
        let secret = secret.to_owned();
        // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false);
        if !verified {
            return Err(AuthFailure::Invalid);
        }
        if record.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthFailure::Expired);
        }
        let principal = Principal { user_id: record.user_id.clone(), is_admin: record.is_admin };
        self.remember_user(&principal.user_id, None).await?;
        let mut cache = lock(&self.tokens);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            digest,
            CachedToken { principal: principal.clone(), expires_at: record.expires_at, checked: Instant::now() },
        );
        Ok(principal)
    }

    /// Checks a JWT: signature with the configured key, `exp` required and `nbf` honoured
    /// (both with [`JWT_LEEWAY_SECS`]), `sub` the user.
    pub fn check_jwt(&self, token: &str) -> Result<Principal, AuthFailure> {
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
pub const JWT_LEEWAY_SECS: u64 = 30;

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

/// Splits `sts_<id>_<secret>`.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Issues a bearer token for `user_id`: returns the token to show once and the record to
/// store (with only the Argon2id hash of the secret part).
pub fn issue_token(user_id: &str, ttl: Option<Duration>, is_admin: bool) -> anyhow::Result<(String, TokenRecord)> {
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
pub fn issue_api_credential(secret_key: &SecretKey, name: &str, is_admin: bool) -> (ApiCredential, String) {
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
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
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

    #[test]
    fn tokens_split_and_hash() {
        let (token, record) = issue_token("u1", None, false).unwrap();
        let (id, secret) = split_token(&token).unwrap();
        assert_eq!(id, record.id);
        assert!(!record.hash.contains(secret), "only the hash is stored");
        let parsed = PasswordHash::new(&record.hash).unwrap();
        assert!(Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok());
        assert!(split_token("sts_nounderscore").is_none());
        assert!(split_token("abc").is_none());
        assert!(!format!("{record:?}").contains(&record.hash));
    }
}
