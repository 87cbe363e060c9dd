//! Credential helpers shared by server and clients: HMAC request signing and
//! constant-time verification, API key/secret generation, and user ids from emails.
//!
//! The signed message is `"{timestamp}.{email}.{api_key}.{body}"`: on the WebSocket the
//! body is empty, over HTTP it is the raw request body. The HMAC key is the secret
//! string's UTF-8 bytes, `rps_` prefix included.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "rpa_";
/// Prefix of API secrets.
pub const API_SECRET_PREFIX: &str = "rps_";
/// Seconds a signed timestamp may differ from server time (the replay window).
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

/// The namespace under which user ids are derived from emails (UUIDv5). Fixed forever:
/// changing it would give every HMAC user a new id.
pub const USER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7c0f_5e2a_9b3d_4f61_a8e4_1d2c_3b4a_5f60);

fn mac_for(secret: &str, timestamp: i64, email: &str, api_key: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(email.as_bytes());
    mac.update(b".");
    mac.update(api_key.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Lowercase hex HMAC-SHA256 of `"{timestamp}.{email}.{api_key}.{body}"` under `secret`.
pub fn sign(secret: &str, timestamp: i64, email: &str, api_key: &str, body: &[u8]) -> String {
    hex::encode(mac_for(secret, timestamp, email, api_key, body).finalize().into_bytes())
}

/// Verifies a hex signature in constant time (with respect to the signature bytes).
pub fn verify_signature(
    secret: &str,
    timestamp: i64,
    email: &str,
    api_key: &str,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let Ok(given) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    mac_for(secret, timestamp, email, api_key, body).verify_slice(&given).is_ok()
}

/// Whether a signed timestamp is inside the replay window around `now` (both Unix seconds).
pub fn timestamp_in_window(timestamp: i64, now: i64) -> bool {
    (timestamp - now).abs() <= SIGNATURE_WINDOW_SECS
}

fn random_hex_32() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not something a caller can handle.
    getrandom::fill(&mut bytes).expect("operating system random source unavailable");
    hex::encode(bytes)
}

/// A new API key: `rpa_` + 64 hex digits.
pub fn generate_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_hex_32())
}

/// A new API secret: `rps_` + 64 hex digits.
pub fn generate_api_secret() -> String {
    format!("{API_SECRET_PREFIX}{}", random_hex_32())
}

/// A new opaque random token (64 hex digits), for bearer tokens and session ids.
pub fn generate_token() -> String {
    random_hex_32()
}

/// Whether a string looks like an API key (`rpa_` + 64 lowercase hex digits).
pub fn is_api_key(s: &str) -> bool {
    s.strip_prefix(API_KEY_PREFIX).is_some_and(is_hex64)
}

/// Whether a string looks like an API secret.
pub fn is_api_secret(s: &str) -> bool {
    s.strip_prefix(API_SECRET_PREFIX).is_some_and(is_hex64)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The user id of an HMAC user: UUIDv5 of the lowercased, trimmed email.
pub fn user_id_for_email(email: &str) -> String {
    Uuid::new_v5(&USER_ID_NAMESPACE, email.trim().to_lowercase().as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_independent_hmac() {
        // HMAC-SHA256(key="rps_k", msg="1700000000.a@b.c.rpa_x.") computed with Python's hmac module.
        let sig = sign("rps_k", 1_700_000_000, "a@b.c", "rpa_x", b"");
        assert_eq!(sig, "a92380c20d629654ff15694c5ff93bee81fbfff561a47a6930e7469888df316d");
        assert!(verify_signature("rps_k", 1_700_000_000, "a@b.c", "rpa_x", b"", &sig));
        assert!(!verify_signature("rps_k", 1_700_000_001, "a@b.c", "rpa_x", b"", &sig));
        assert!(!verify_signature("rps_other", 1_700_000_000, "a@b.c", "rpa_x", b"", &sig));
        assert!(!verify_signature("rps_k", 1_700_000_000, "a@b.c", "rpa_x", b"body", &sig));
        assert!(!verify_signature("rps_k", 1_700_000_000, "a@b.c", "rpa_x", b"", "zz"));
        assert!(!verify_signature("rps_k", 1_700_000_000, "a@b.c", "rpa_x", b"", &sig[..62]));
    }

    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let key = generate_api_key();
        let secret = generate_api_secret();
        assert!(is_api_key(&key), "{key}");
        assert!(is_api_secret(&secret), "{secret}");
        assert_ne!(generate_api_key(), key);
        assert!(!is_api_key("rpa_XYZ"));
    }

    #[test]
    fn user_ids_are_stable_and_case_insensitive() {
        let a = user_id_for_email("User@Example.com");
        assert_eq!(a, user_id_for_email(" user@example.com "));
        assert_ne!(a, user_id_for_email("other@example.com"));
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
    }

    #[test]
    fn replay_window() {
        assert!(timestamp_in_window(1000, 1300));
        assert!(!timestamp_in_window(1000, 1301));
        assert!(timestamp_in_window(1300, 1000));
    }
}
