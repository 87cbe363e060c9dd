//! HTTP on the same port as the WebSocket (PROTOCOL.md §9): health, readiness, admin
//! statistics, the WebSocket upgrade at `/ws` and `/ws/sync`, and JSON errors
//! `{"error":{"code","message"}}` everywhere, unknown routes included.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::json;
use sync_core::model::validate_client_id;
use sync_core::{ErrorCode, Timestamp};
use sync_store::Store;
use yawc::{IncomingUpgrade, Options};

use crate::accept::Unauthenticated;
use crate::auth::{AuthFailure, Principal};
use crate::authenticated::PreAuth;
use crate::state::AppState;

/// The router of every HTTP route.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/api/sync/status", get(status))
        .route("/ws", get(upgrade))
        .route("/ws/sync", get(upgrade))
        .route("/metrics", any(not_yet))
        .route("/api/sync/publish", post(crate::topics_http::publish))
        .route("/api/sync/broadcast", post(crate::topics_http::broadcast))
        .route("/events", get(crate::events::get).post(crate::events::post))
        .route("/acl", get(crate::access::get).put(crate::access::put))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// An HTTP error with the shared error vocabulary.
pub(crate) struct HttpError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl HttpError {
    /// An error with the status that goes with `code`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, code, message: message.into() }
    }

    /// An error with an explicit status.
    pub(crate) fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

/// A request body that could not be read, as the JSON error (413 when over the limit).
pub(crate) fn body_error(rejection: axum::extract::rejection::BytesRejection) -> HttpError {
    let status = rejection.status();
    let code =
        if status == StatusCode::PAYLOAD_TOO_LARGE { ErrorCode::PayloadTooLarge } else { ErrorCode::InvalidMessage };
    HttpError::with_status(status, code, rejection.body_text())
}

impl From<AuthFailure> for HttpError {
    fn from(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Unavailable => HttpError::new(ErrorCode::ServerError, "cannot check credentials now"),
            other => HttpError::new(ErrorCode::InvalidAuth, other.to_string()),
        }
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "healthy",
        "timestamp": Timestamp::now(),
        "activeConnections": state.connections.load(std::sync::atomic::Ordering::Relaxed),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "backend": state.store.kind()})).into_response(),
        Err(e) => HttpError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError,
            format!("storage is not answering: {e}"),
        )
        .into_response(),
    }
}

async fn stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, HttpError> {
    require_admin(&state, &headers, b"").await?;
    let store_stats =
        state.store.stats().await.map_err(|e| HttpError::new(ErrorCode::ServerError, format!("storage error: {e}")))?;
    Ok(Json(json!({
        "totalChanges": store_stats.total_changes,
        "activeConnections": state.connections.load(std::sync::atomic::Ordering::Relaxed),
        "activeUsers": state.hub.active_users(),
        "documents": store_stats.documents,
    })))
}

async fn status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, HttpError> {
    require_admin(&state, &headers, b"").await?;
    let (topics, subscriptions) = state.topics.counts();
    Ok(Json(json!({
        "status": "running",
        "clients": state.hub.client_count(),
        "connections": state.connections.load(std::sync::atomic::Ordering::Relaxed),
        "timestamp": Timestamp::now(),
        "topics": topics,
        "subscriptions": subscriptions,
    })))
}

async fn not_yet(method: Method, uri: Uri) -> HttpError {
    HttpError::with_status(
        StatusCode::NOT_IMPLEMENTED,
        ErrorCode::ServerError,
        format!("{method} {} is not available yet: it arrives in a later release of this server", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidMessage,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(method: Method, uri: Uri) -> HttpError {
    HttpError::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidMessage,
        format!("no route {method} {}", uri.path()),
    )
}

/// Who is calling: `Authorization: Bearer <jwt or token>`, or the HMAC headers
/// `X-Api-Key`, `X-Email`, `X-Timestamp`, `X-Signature` over the raw body.
pub(crate) async fn http_principal(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Principal, HttpError> {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(value) = header_str(header::AUTHORIZATION.as_str()) {
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
            return Err(AuthFailure::Malformed.into());
        };
        return Ok(state.auth.authenticate_bearer(token).await?);
    }
    match (header_str("x-api-key"), header_str("x-email"), header_str("x-timestamp"), header_str("x-signature")) {
        (Some(key), Some(email), Some(timestamp), Some(signature)) => {
            let timestamp: i64 = timestamp.trim().parse().map_err(|_| HttpError::from(AuthFailure::Malformed))?;
            Ok(state.auth.check_hmac(email, key, signature, timestamp, body).await?)
        }
        _ => Err(HttpError::new(ErrorCode::InvalidAuth, "missing credentials")),
    }
}

pub(crate) async fn require_admin(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Principal, HttpError> {
    let principal = http_principal(state, headers, body).await?;
    if !principal.is_admin {
        return Err(HttpError::new(ErrorCode::Forbidden, "admin credentials required"));
    }
    Ok(principal)
}

/// Query parameters accepted on the upgrade request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpgradeParams {
    /// A JWT (or bearer token) instead of the `Authorization` header.
    pub(crate) token: Option<String>,
    /// The replica id, for a session authenticated by the upgrade request.
    pub(crate) client_id: Option<String>,
    /// Resume point, for a session authenticated by the upgrade request.
    pub(crate) last_sequence: Option<u64>,
    /// The user the older JavaScript client names; never trusted without a credential,
    /// and with one it must be the credential's user.
    pub(crate) user_id: Option<String>,
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(unauthenticated): Extension<Unauthenticated>,
    headers: HeaderMap,
    params: Result<Query<UpgradeParams>, QueryRejection>,
    incoming: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    // A malformed query (`?last_sequence=abc`) gets the JSON error body too, naming what
    // was wrong, instead of axum's plain-text rejection.
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return HttpError::new(ErrorCode::InvalidMessage, rejection.body_text()).into_response();
        }
    };
    // A request that is no WebSocket upgrade gets the same JSON error body as every
    // other HTTP error, not an empty 400.
    let incoming = match incoming {
        Ok(incoming) => incoming,
        Err(status) => {
            return HttpError::with_status(status, ErrorCode::InvalidMessage, "this route expects a WebSocket upgrade")
                .into_response();
        }
    };
    let Ok(permit) = Arc::clone(&state.connection_permits).try_acquire_owned() else {
        return HttpError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError,
            "connection limit reached; retry later",
        )
        .into_response();
    };
    if state.shutdown.is_cancelled() {
        return HttpError::with_status(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ServerError, "shutting down")
            .into_response();
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned())
        .or(params.token.clone());
    if bearer.is_none() && params.user_id.is_some() {
        // The older JavaScript client's `?user_id=` alone would be a claim without proof.
        return HttpError::new(
            ErrorCode::InvalidAuth,
            "`user_id` on the URL needs a credential: `?token=<jwt>` or `Authorization: Bearer`",
        )
        .into_response();
    }
    // A `?client_id=` no replica should have is refused like a malformed `authenticate`.
    let client_id_ok = params.client_id.as_deref().is_none_or(|id| validate_client_id(id).is_ok());
    let pre_auth = match bearer {
        None => None,
        Some(_) if !client_id_ok => Some(Box::new(Err(AuthFailure::Malformed))),
        // Boxed: it is held by the session's future for as long as the connection lives.
        Some(token) => Some(Box::new(state.auth.authenticate_bearer(&token).await.and_then(|principal| {
            if params.user_id.as_ref().is_some_and(|user| *user != principal.user_id) {
                return Err(AuthFailure::Invalid);
            }
            Ok(PreAuth { principal, client_id: params.client_id.clone(), last_sequence: params.last_sequence })
        }))),
    };
    let (response, connection) = match incoming.upgrade(ws_options(&state)) {
        Ok(pair) => pair,
        Err(e) => {
            return HttpError::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("bad upgrade: {e}"),
            )
            .into_response();
        }
    };
    // Boxed, so that it is freed once the upgrade completes: what the task captures
    // stays in its future for as long as the connection lives.
    let connection = Box::pin(connection);
    let tracked = Arc::clone(&state);
    tracked.sessions.spawn(async move {
        let _permit = permit;
        // The session is built in its own statement, so that no temporary of the match
        // (the upgraded socket) stays in the task's future beside the session's.
        let session = match connection.await {
            Ok(ws) => crate::session::serve(ws, Arc::clone(&state), peer.to_string(), pre_auth, unauthenticated),
            Err(e) => {
                tracing::debug!(error = %e, %peer, "websocket upgrade did not complete");
                return;
            }
        };
        state.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        session.await;
        state.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    });
    response.into_response()
}

/// WebSocket options: frames up to the hard limit are read (larger ones close with
/// 1009), permessage-deflate without context takeover so compressors are pooled rather
/// than held per connection, small buffers for idle connections. The write buffer starts
/// empty: it grows to what a session writes at once (and is given back past the 8 KiB
/// backpressure boundary), so a session that is only told `auth_success` holds a few
/// hundred bytes instead of 2 KiB. The read buffer keeps its 2 KiB: an empty one would
/// grow by doubling, one socket read per step, for every message.
fn ws_options(state: &AppState) -> Options {
    let hard = state.config.limits.hard_max_frame_bytes + 1;
    Options::default()
        .with_limits(hard, hard)
        .with_low_latency_compression()
        .server_no_context_takeover()
        .client_no_context_takeover()
        .with_compression_threshold(512)
        .with_deflate_pool(state.deflate_pool.clone())
        .with_read_buffer_capacity(2048)
        .with_write_buffer_capacity(0)
        .with_no_delay()
}
