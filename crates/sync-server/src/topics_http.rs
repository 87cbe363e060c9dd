//! The admin REST side of topics (PROTOCOL.md §9): `POST /api/sync/publish` with
//! `{topic, data}` or `{user_id, data}` (that user's personal topic), and
//! `POST /api/sync/broadcast` with `{data}`, each answered `{"delivered": N}`.
//!
//! Guarantees: the body is bounded by `limits.max_frame_bytes` (413) and checked whole
//! before anything is delivered (400 naming the field); only admin credentials publish
//! (401 without credentials, 403 without admin rights); the message goes through the
//! same fan-out as a WebSocket publish, from the server (`from: null`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde_json::{Map, Value, json};
use sync_core::protocol::json_depth;
use sync_core::topic::{self, BROADCAST};
use sync_core::{ErrorCode, Timestamp};

use crate::http::{HttpError, body_error, require_admin};
use crate::monitor::activity;
use crate::state::AppState;
use crate::topics::TopicMessage;

/// `POST /api/sync/publish`.
pub(crate) async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let mut body = admin_body(&state, &headers, body).await?;
    let topic = match (body.remove("topic"), body.remove("user_id")) {
        (Some(_), Some(_)) => return Err(invalid("give `topic` or `user_id`, not both")),
        (Some(Value::String(name)), None) => {
            topic::validate_name(&name).map_err(|e| invalid(format!("field `topic`: {e}")))?;
            name
        }
        (Some(_), None) => return Err(invalid("field `topic`: expected a string")),
        (None, Some(Value::String(user))) if !user.is_empty() => {
            let name = topic::personal_topic(&user);
            topic::validate_name(&name).map_err(|e| invalid(format!("field `user_id`: {e}")))?;
            name
        }
        (None, Some(_)) => return Err(invalid("field `user_id`: expected a user id (a non-empty string)")),
        (None, None) => return Err(invalid("missing field `topic` (or `user_id`, for a user's personal topic)")),
    };
    let data = take_data(&state, &mut body)?;
    send(&state, topic, data)
}

/// `POST /api/sync/broadcast`.
pub(crate) async fn broadcast(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let mut body = admin_body(&state, &headers, body).await?;
    let data = take_data(&state, &mut body)?;
    send(&state, BROADCAST.to_owned(), data)
}

/// The body of an admin call as a JSON object: bounded, authenticated (the HMAC
/// signature covers the body), parsed.
async fn admin_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, HttpError> {
    let body = body.map_err(body_error)?;
    let limit = state.config.limits.max_frame_bytes;
    if body.len() > limit {
        return Err(HttpError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {} bytes; the limit is {limit}", body.len()),
        ));
    }
    require_admin(state, headers, &body).await?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the body must be a JSON object")),
        Err(e) if e.to_string().contains("recursion limit") => {
            Err(HttpError::new(ErrorCode::PayloadTooLarge, "field `data`: JSON nesting is deeper than the limit"))
        }
        Err(e) => Err(invalid(format!("the body is not JSON: {e}"))),
    }
}

fn take_data(state: &AppState, body: &mut Map<String, Value>) -> Result<Value, HttpError> {
    let data = body.remove("data").ok_or_else(|| invalid("missing field `data`"))?;
    let (depth, limit) = (json_depth(&data), state.config.limits.max_depth);
    if depth > limit {
        return Err(HttpError::new(
            ErrorCode::PayloadTooLarge,
            format!("field `data`: nests {depth} levels deep; the limit is {limit}"),
        ));
    }
    Ok(data)
}

fn send(state: &AppState, topic: String, data: Value) -> Result<Json<Value>, HttpError> {
    let message = TopicMessage { topic, data, from: None, timestamp: Timestamp::now(), skip_session: None };
    let delivered = state.topics.deliver(&message).map_err(|why| HttpError::new(ErrorCode::PayloadTooLarge, why))?;
    activity!("PUBLISH", "admin published on {}: queued for {} sessions", message.topic, delivered.sessions);
    let mut answer = json!({ "delivered": delivered.sessions });
    if let Some(offset) = delivered.offset {
        answer["offset"] = json!(offset);
    }
    Ok(Json(answer))
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::InvalidMessage, message)
}
