//! The HTTP routes on the WebSocket's port (PROTOCOL.md §9): `/health`, `/ready`, the
//! admin routes `/stats` and `/api/sync/status` (401 without credentials, 403 for a
//! non-admin key, 200 for an admin key via the HMAC headers), JSON errors for unknown
//! routes, and 501 JSON errors for routes not built yet (`/metrics`).

use crate::common;

use crate::common::{Backend, TestServer, assert_ok, hmac_headers, http_request, now_secs};
use serde_json::{Value, json};

#[track_caller]
fn assert_json_error(response: &common::HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert!(response.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{response:?}");
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn health_and_ready(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let health = server.http_get("/health").await;
    assert_eq!(health.status, 200, "{health:?}");
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.contains('T')), "RFC 3339: {body}");
    assert_eq!(body["activeConnections"], 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    // Open connections are counted (authenticated or not).
    let _a = server.client("health@example.com").await;
    let mut b = server.connect().await;
    // A round trip on b proves the server has taken the connection in.
    b.send(common::hmac_auth(&server.api_key, &server.secret, "health@example.com", None, None)).await;
    assert_eq!(b.recv().await["type"], "auth_success");
    let body = server.http_get("/health").await.json();
    assert_eq!(body["activeConnections"], 2, "{body}");

    let ready = server.http_get("/ready").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["status"], "ready");
    server.stop().await;
}

async fn admin_routes_require_admin_credentials(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut user = server.client("someone@example.com").await;
    assert_ok(&user.create("d1", json!({})).await, "document_created_response");
    assert_ok(&user.create("d2", json!({})).await, "document_created_response");

    for path in ["/stats", "/api/sync/status"] {
        // No credentials.
        assert_json_error(&server.http_get(path).await, 401, "invalid_auth");
        // A valid key without admin rights.
        let response = server.http_get_signed(path, &server.api_key, &server.secret, "someone@example.com").await;
        assert_json_error(&response, 403, "forbidden");
        // Admin key, wrong signature / expired timestamp / wrong secret.
        let mut headers = hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), b"");
        headers[3].1 = "00".repeat(32);
        let response = request(&server, path, &headers).await;
        assert_json_error(&response, 401, "invalid_auth");
        let headers =
            hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs() - 1000, b"");
        assert_json_error(&request(&server, path, &headers).await, 401, "invalid_auth");
        let headers = hmac_headers(&server.admin_key, &server.secret, "admin@example.com", now_secs(), b"");
        assert_json_error(&request(&server, path, &headers).await, 401, "invalid_auth");
        // Signed over a body the request does not have.
        let headers = hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), b"{}");
        assert_json_error(&request(&server, path, &headers).await, 401, "invalid_auth");
        // A bearer value that is no token.
        let response = http_request(server.addr, "GET", path, &[("Authorization", "Bearer nonsense")], b"").await;
        assert_json_error(&response, 401, "invalid_auth");
    }

    let stats = server.http_get_signed("/stats", &server.admin_key, &server.admin_secret, "admin@example.com").await;
    assert_eq!(stats.status, 200, "{stats:?}");
    let body = stats.json();
    assert_eq!(body["totalChanges"], 2, "{body}");
    assert_eq!(body["documents"], 2, "{body}");
    assert_eq!(body["activeConnections"], 1, "{body}");
    assert_eq!(body["activeUsers"], json!([user.user_id.clone().unwrap()]), "{body}");

    let status =
        server.http_get_signed("/api/sync/status", &server.admin_key, &server.admin_secret, "admin@example.com").await;
    assert_eq!(status.status, 200, "{status:?}");
    let body = status.json();
    assert_eq!(body["status"], "running");
    assert_eq!(body["clients"], 1, "{body}");
    assert_eq!(body["connections"], 1, "{body}");
    assert!(body["timestamp"].is_string(), "{body}");

    // An admin bearer token works as well.
    let token = sync_server::create_token(&server.config, "ops", None, true).await.expect("token");
    let auth = format!("Bearer {token}");
    let response = http_request(server.addr, "GET", "/stats", &[("Authorization", auth.as_str())], b"").await;
    assert_eq!(response.status, 200, "{response:?}");
    let token = sync_server::create_token(&server.config, "not-ops", None, false).await.expect("token");
    let auth = format!("Bearer {token}");
    let response = http_request(server.addr, "GET", "/stats", &[("Authorization", auth.as_str())], b"").await;
    assert_json_error(&response, 403, "forbidden");
    server.stop().await;
}

async fn an_admin_jwt_opens_no_admin_route_before_its_nbf(backend: Backend) {
    const SECRET: &str = "http-test-jwt-secret";
    let server = TestServer::start_on_with(backend, |config| config.auth.jwt_secret = Some(SECRET.to_owned())).await;
    let bearer = |claims: Value| {
        let token = common::jwt(&json!({"alg": "HS256", "typ": "JWT"}), &claims, Some(SECRET.as_bytes()));
        format!("Bearer {token}")
    };
    let (now, exp) = (now_secs(), now_secs() + 7200);
    let early = bearer(json!({"sub": "ops", "admin": true, "exp": exp, "nbf": now + 3600}));
    let valid = bearer(json!({"sub": "ops", "admin": true, "exp": exp, "nbf": now - 60}));
    for path in ["/stats", "/api/sync/status"] {
        let response = http_request(server.addr, "GET", path, &[("Authorization", early.as_str())], b"").await;
        assert_json_error(&response, 401, "invalid_auth");
        let response = http_request(server.addr, "GET", path, &[("Authorization", valid.as_str())], b"").await;
        assert_eq!(response.status, 200, "{response:?}");
    }
    server.stop().await;
}

async fn request(server: &TestServer, path: &str, headers: &[(&'static str, String)]) -> common::HttpResponse {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_request(server.addr, "GET", path, &headers, b"").await
}

async fn unknown_and_unbuilt_routes_answer_with_json_errors(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    for (method, path) in [("GET", "/nope"), ("POST", "/health/extra"), ("GET", "/api/sync"), ("DELETE", "/")] {
        let response = http_request(server.addr, method, path, &[], b"").await;
        assert_eq!(response.status, 404, "{method} {path}: {response:?}");
        let body: Value = response.json();
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(path)), "{body}");
    }
    for (method, path) in [("GET", "/metrics")] {
        let response = http_request(server.addr, method, path, &[], b"").await;
        assert_eq!(response.status, 501, "{method} {path}: {response:?}");
        let body = response.json();
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    // A known route with the wrong method: still a JSON error.
    for (method, path) in [
        ("POST", "/health"),
        ("DELETE", "/stats"),
        ("PUT", "/ready"),
        ("POST", "/acl"),
        ("GET", "/api/sync/publish"),
        ("GET", "/api/sync/broadcast"),
    ] {
        let response = http_request(server.addr, method, path, &[], b"").await;
        assert_eq!(response.status, 405, "{method} {path}: {response:?}");
        assert!(response.json()["error"]["code"].is_string(), "{method} {path}: {response:?}");
    }
    // A plain GET of the WebSocket route without an upgrade is refused, not a crash.
    let response = server.http_get("/ws").await;
    assert!((400..500).contains(&response.status), "{response:?}");
    assert!(response.json()["error"]["code"].is_string(), "{response:?}");
    // And the server still serves.
    assert_eq!(server.http_get("/health").await.status, 200);
    server.stop().await;
}

common::backend_tests!(
    health_and_ready,
    admin_routes_require_admin_credentials,
    an_admin_jwt_opens_no_admin_route_before_its_nbf,
    unknown_and_unbuilt_routes_answer_with_json_errors,
);
