//! Authentication over the WebSocket: messages before `authenticate`, the HMAC replay
//! window and forged signatures, unknown API keys, bearer tokens from `create-token`,
//! HS256 JWTs (in `authenticate` and in the upgrade's `?token=`), and the auth timeout.
//! Every refusal is an `auth_error` followed by close code 4001, and says no more than
//! "invalid credentials", "expired" or "malformed".

use crate::common;

use std::time::Duration;

use crate::common::{Backend, Client, TestServer, WAIT, hmac_auth, jwt, now_secs};
use serde_json::{Value, json};

const JWT_SECRET: &str = "integration-test-jwt-secret";

/// Sends `message` as the first message and expects `auth_error` then close 4001;
/// returns the reason.
async fn refused(server: &TestServer, message: Value) -> String {
    let mut client = server.connect().await;
    client.send(message.clone()).await;
    expect_refusal(&mut client, &message.to_string(), CREDENTIAL_REASONS).await
}

/// The only reasons a credential check may give (PROTOCOL.md §2).
const CREDENTIAL_REASONS: &[&str] = &["invalid credentials", "expired", "malformed"];

/// Reasons for a message that is no `authenticate` at all: nothing about credentials.
const BEFORE_AUTH_REASONS: &[&str] = &["invalid credentials", "expired", "malformed", "authentication required"];

async fn expect_refusal(client: &mut Client, what: &str, reasons: &[&str]) -> String {
    let reply = client.recv().await;
    assert_eq!(reply["type"], "auth_error", "{what}: {reply}");
    let reason = reply["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reasons.contains(&reason.as_str()), "{what}: {reply}");
    assert_eq!(client.close_code(WAIT).await, Some(4001), "{what}");
    reason
}

/// An HMAC `authenticate` with the signature made over `timestamp`.
fn hmac_at(server: &TestServer, email: &str, timestamp: i64) -> Value {
    let signature = sync_core::auth::sign(&server.secret, timestamp, email, &server.api_key, b"");
    json!({"type": "authenticate", "email": email, "api_key": server.api_key, "signature": signature, "timestamp": timestamp})
}

fn hs256(claims: Value, key: &str) -> String {
    jwt(&json!({"alg": "HS256", "typ": "JWT"}), &claims, Some(key.as_bytes()))
}

async fn jwt_server(backend: Backend) -> TestServer {
    TestServer::start_on_with(backend, |config| config.auth.jwt_secret = Some(JWT_SECRET.to_owned())).await
}

#[test]
fn base64url_matches_rfc_4648_vectors() {
    let vectors = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")];
    for (input, output) in vectors {
        assert_eq!(common::base64url(input.as_bytes()), output);
    }
    assert_eq!(common::base64url(&[0xfb, 0xff]), "-_8");
}

async fn anything_before_authenticate_is_refused_and_closed(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let before = [
        json!({"type": "ping"}),
        json!({"type": "get_document", "document_id": "d"}),
        json!({"type": "create_document", "document": {"id": "d", "content": {}}}),
        json!({"type": "no_such_type"}),
        json!([{"type": "ping"}]),
    ];
    for message in before {
        let mut client = server.connect().await;
        client.send(message.clone()).await;
        expect_refusal(&mut client, &message.to_string(), BEFORE_AUTH_REASONS).await;
    }
    // Frames that are not even messages.
    let mut client = server.connect().await;
    client.send_text("{ not json".into()).await;
    expect_refusal(&mut client, "malformed JSON", BEFORE_AUTH_REASONS).await;
    let mut client = server.connect().await;
    client.send_binary(b"\x00\x01".to_vec()).await;
    expect_refusal(&mut client, "binary frame", BEFORE_AUTH_REASONS).await;
    // An authenticate without any credential fields.
    refused(&server, json!({"type": "authenticate", "email": "x@example.com"})).await;
    // Nothing was created by the create sent before authenticating.
    let mut c = server.client("x@example.com").await;
    common::assert_error(&c.get("d").await, "document_not_found");
    server.stop().await;
}

async fn hmac_replay_window_forged_signatures_and_unknown_keys(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let email = "hmac@example.com";
    let now = now_secs();

    // Inside the ±300 s window (with a margin for the clock moving during the test).
    for offset in [-290, 0, 290] {
        let mut client = server.connect().await;
        client.send(hmac_at(&server, email, now + offset)).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "auth_success", "offset {offset}: {reply}");
        assert_eq!(reply["user_id"], sync_core::auth::user_id_for_email(email));
        assert_eq!(reply["protocol_version"], 1);
    }
    // Outside the window, correctly signed: expired.
    for offset in [-310, 310, -86_400] {
        let reason = refused(&server, hmac_at(&server, email, now + offset)).await;
        assert_eq!(reason, "expired", "offset {offset}");
    }

    // A signature made with another secret.
    let forged = sync_core::auth::sign("rps_not_the_secret", now, email, &server.api_key, b"");
    let message = json!({"type": "authenticate", "email": email, "api_key": server.api_key, "signature": forged, "timestamp": now});
    assert_eq!(refused(&server, message).await, "invalid credentials");
    // A genuine signature replayed for another email or another timestamp.
    let mut message = hmac_auth(&server.api_key, &server.secret, email, None, None);
    message["email"] = json!("someone-else@example.com");
    assert_eq!(refused(&server, message).await, "invalid credentials");
    let mut message = hmac_auth(&server.api_key, &server.secret, email, None, None);
    message["timestamp"] = json!(now - 1);
    assert_eq!(refused(&server, message).await, "invalid credentials");
    // A signature that is not hex, or truncated.
    let mut message = hmac_auth(&server.api_key, &server.secret, email, None, None);
    message["signature"] = json!("zz");
    refused(&server, message).await;
    let mut message = hmac_auth(&server.api_key, &server.secret, email, None, None);
    let truncated = message["signature"].as_str().unwrap()[..32].to_owned();
    message["signature"] = json!(truncated);
    assert_eq!(refused(&server, message).await, "invalid credentials");

    // An API key the server never issued, signed with its would-be secret.
    let unknown = sync_core::auth::generate_api_key();
    let message = hmac_auth(&unknown, &server.secret, email, None, None);
    assert_eq!(refused(&server, message).await, "invalid credentials");
    // Another server's key and secret pair.
    let (other_key, other_secret) = (sync_core::auth::generate_api_key(), sync_core::auth::generate_api_secret());
    refused(&server, hmac_auth(&other_key, &other_secret, email, None, None)).await;
    // Not shaped like an API key.
    assert_eq!(refused(&server, hmac_auth("rpa_short", &server.secret, email, None, None)).await, "malformed");

    // The server still works for good credentials, and the admin key works too.
    let mut client = server.client(email).await;
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
    let mut admin = server.connect().await;
    let reply = admin.authenticate(&server.admin_key, &server.admin_secret, "admin@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    server.stop().await;
}

async fn client_id_is_echoed_or_generated(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut client = server.connect().await;
    let id = "4b1d7c3e-1111-4222-8333-944455566677";
    let reply = client.authenticate(&server.api_key, &server.secret, "ids@example.com", Some(id), None).await;
    assert_eq!(reply["client_id"], id, "{reply}");
    let mut other = server.connect().await;
    let reply = other.authenticate(&server.api_key, &server.secret, "ids@example.com", None, None).await;
    let generated = reply["client_id"].as_str().expect("client_id");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{reply}");
    assert_ne!(reply["session_id"], json!(null));
    server.stop().await;
}

async fn a_client_id_no_replica_should_have_is_refused(backend: Backend) {
    let server = jwt_server(backend).await;
    let token = hs256(json!({"sub": "ids-user", "exp": now_secs() + 600}), JWT_SECRET);
    // Too long (it would be copied into every vector clock), or with U+0000 (no store can
    // keep it, so every write would fail after a successful authentication).
    for client_id in ["x".repeat(200_000), "phone\u{0}".to_owned(), "two words".to_owned()] {
        let mut message = hmac_auth(&server.api_key, &server.secret, "ids@example.com", None, None);
        message["client_id"] = json!(client_id);
        assert_eq!(refused(&server, message).await, "malformed");
        let message = json!({"type": "authenticate", "token": token, "client_id": client_id});
        assert_eq!(refused(&server, message).await, "malformed");
    }
    // On the upgrade request too.
    let mut client = Client::connect(&format!("{}?token={token}&client_id=phone%00", server.ws_url())).await;
    expect_refusal(&mut client, "?client_id=phone%00", &["malformed"]).await;
    let (_client, first) = server.connect_with_token(&format!("{token}&client_id=android:9774d56d682e549c")).await;
    assert_eq!(first["type"], "auth_success", "{first}");
    assert_eq!(first["client_id"], "android:9774d56d682e549c");
    server.stop().await;
}

async fn bearer_tokens_from_create_token(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let user = "token-user-1";
    let token = sync_server::create_token(&server.config, user, None, false).await.expect("create token");
    assert!(token.starts_with("sts_"), "{token}");

    let bearer = |user_id: &str, token: &str| json!({"type": "authenticate", "user_id": user_id, "auth_token": token});
    let mut client = server.connect().await;
    client.send(bearer(user, &token)).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    assert_eq!(reply["user_id"], user);
    // The session works: the user can write and read.
    common::assert_ok(&client.create("mine", json!({"n": 1})).await, "document_created_response");
    assert_eq!(client.content("mine").await, json!({"n": 1}));

    // The right token for another user id.
    assert_eq!(refused(&server, bearer("someone-else", &token)).await, "invalid credentials");
    // A token with its secret part changed, and tokens that are not tokens.
    let mut tampered = token.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(refused(&server, bearer(user, &tampered)).await, "invalid credentials");
    refused(&server, bearer(user, "sts_")).await;
    refused(&server, bearer(user, "not-a-token")).await;

    // An expired token: issued with a 1 s lifetime, used after it ran out.
    let short = sync_server::create_token(&server.config, "token-user-2", Some(Duration::from_secs(1)), false)
        .await
        .expect("create token");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(refused(&server, bearer("token-user-2", &short)).await, "expired");

    // The good token still works after all the failures (and from the cache).
    let mut again = server.connect().await;
    again.send(bearer(user, &token)).await;
    assert_eq!(again.recv().await["type"], "auth_success");
    assert_eq!(again.content("mine").await, json!({"n": 1}));
    server.stop().await;
}

async fn hs256_jwts_in_authenticate(backend: Backend) {
    let server = jwt_server(backend).await;
    let exp = now_secs() + 600;
    let auth = |token: String| json!({"type": "authenticate", "token": token});

    let good = hs256(json!({"sub": "jwt-user", "exp": exp}), JWT_SECRET);
    let mut client = server.connect().await;
    client.send(auth(good)).await;
    let reply = client.recv().await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    assert_eq!(reply["user_id"], "jwt-user");
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");

    // `alg: none` with no signature, and with the signature of the real key attached.
    let claims = json!({"sub": "jwt-user", "exp": exp});
    let unsigned = jwt(&json!({"alg": "none", "typ": "JWT"}), &claims, None);
    refused(&server, auth(unsigned)).await;
    let none_with_sig = jwt(&json!({"alg": "none", "typ": "JWT"}), &claims, Some(JWT_SECRET.as_bytes()));
    refused(&server, auth(none_with_sig)).await;
    // Signed with another key.
    assert_eq!(refused(&server, auth(hs256(claims.clone(), "some-other-secret"))).await, "invalid credentials");
    // Missing `exp`, missing `sub`, and expired.
    refused(&server, auth(hs256(json!({"sub": "jwt-user"}), JWT_SECRET))).await;
    refused(&server, auth(hs256(json!({"exp": exp}), JWT_SECRET))).await;
    let expired = hs256(json!({"sub": "jwt-user", "exp": now_secs() - 3600}), JWT_SECRET);
    assert_eq!(refused(&server, auth(expired)).await, "expired");
    // A good token with its claims swapped after signing.
    let good = hs256(json!({"sub": "jwt-user", "exp": exp}), JWT_SECRET);
    let parts: Vec<&str> = good.split('.').collect();
    let swapped_claims = common::base64url(json!({"sub": "admin", "exp": exp}).to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], swapped_claims, parts[2]);
    assert_eq!(refused(&server, auth(tampered)).await, "invalid credentials");
    // Not a JWT at all.
    refused(&server, auth("just-a-string".into())).await;
    server.stop().await;
}

async fn a_jwt_is_not_accepted_before_its_nbf(backend: Backend) {
    let server = jwt_server(backend).await;
    let auth = |claims: Value| json!({"type": "authenticate", "token": hs256(claims, JWT_SECRET)});
    let (now, exp) = (now_secs(), now_secs() + 7200);
    // An hour ahead: not valid yet (RFC 7519 §4.1.5), in `authenticate` and in the query.
    let early = json!({"sub": "nbf-user", "exp": exp, "nbf": now + 3600});
    assert_eq!(refused(&server, auth(early.clone())).await, "invalid credentials");
    let (mut client, first) = server.connect_with_token(&hs256(early, JWT_SECRET)).await;
    assert_eq!(first["type"], "auth_error", "{first}");
    assert_eq!(client.close_code(WAIT).await, Some(4001));
    // In the past, or ahead by less than the leeway (30 s, as for `exp`): accepted.
    for nbf in [now - 60, now + 5] {
        let mut client = server.connect().await;
        client.send(auth(json!({"sub": "nbf-user", "exp": exp, "nbf": nbf}))).await;
        assert_eq!(client.recv().await["type"], "auth_success", "nbf {nbf}");
    }
    server.stop().await;
}

async fn jwt_without_a_configured_secret_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let token = hs256(json!({"sub": "u", "exp": now_secs() + 600}), JWT_SECRET);
    assert_eq!(refused(&server, json!({"type": "authenticate", "token": token})).await, "invalid credentials");
    server.stop().await;
}

async fn jwt_in_the_upgrade_query_authenticates_before_any_message(backend: Backend) {
    let server = jwt_server(backend).await;
    let token = hs256(json!({"sub": "query-user", "exp": now_secs() + 600}), JWT_SECRET);
    let (mut client, first) = server.connect_with_token(&token).await;
    assert_eq!(first["type"], "auth_success", "{first}");
    assert_eq!(first["user_id"], "query-user");
    assert_eq!(first["protocol_version"], 1);
    common::assert_ok(&client.create("q", json!({"via": "query"})).await, "document_created_response");
    // A second session of the same user, over `authenticate`, sees the document.
    let mut second = server.connect().await;
    second.send(json!({"type": "authenticate", "token": token})).await;
    assert_eq!(second.recv().await["type"], "auth_success");
    assert_eq!(second.content("q").await, json!({"via": "query"}));
    // An `authenticate` on an already authenticated session is an error, not a re-login.
    let reply = client.request(json!({"type": "authenticate", "token": token})).await;
    common::assert_error(&reply, "invalid_message");
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");

    // A bad token in the query: auth_error, then 4001.
    let bad = hs256(json!({"sub": "query-user", "exp": now_secs() + 600}), "wrong-key");
    let (mut client, first) = server.connect_with_token(&bad).await;
    assert_eq!(first["type"], "auth_error", "{first}");
    assert_eq!(client.close_code(WAIT).await, Some(4001));
    let unsigned = jwt(&json!({"alg": "none"}), &json!({"sub": "query-user", "exp": now_secs() + 600}), None);
    let (mut client, first) = server.connect_with_token(&unsigned).await;
    assert_eq!(first["type"], "auth_error", "{first}");
    assert_eq!(client.close_code(WAIT).await, Some(4001));
    server.stop().await;
}

async fn a_silent_connection_is_closed_after_the_auth_timeout(backend: Backend) {
    let server = TestServer::start_on_with(backend, |config| config.limits.auth_timeout_secs = 1).await;
    let mut client = server.connect().await;
    assert_eq!(client.close_code(Duration::from_secs(5)).await, Some(4001));
    server.stop().await;
}

common::backend_tests!(
    anything_before_authenticate_is_refused_and_closed,
    hmac_replay_window_forged_signatures_and_unknown_keys,
    client_id_is_echoed_or_generated,
    a_client_id_no_replica_should_have_is_refused,
    bearer_tokens_from_create_token,
    hs256_jwts_in_authenticate,
    a_jwt_is_not_accepted_before_its_nbf,
    jwt_without_a_configured_secret_is_refused,
    jwt_in_the_upgrade_query_authenticates_before_any_message,
    a_silent_connection_is_closed_after_the_auth_timeout,
);
