//! Changing the access rules: `GET /acl` and `PUT /acl` (admin), and the one way rules
//! are put in force — stored first, then handed to the hub, which tells every session
//! whose view changed (see `hub` and `handlers/access.rs`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sync_core::ErrorCode;
use sync_core::acl::Acl;
use sync_store::Store;
use tokio_util::sync::CancellationToken;

use crate::http::{HttpError, body_error, require_admin};
use crate::monitor::activity;
use crate::state::AppState;

/// Stores `acl` and puts it in force on every session. Replacements are serialised, so
/// the store and the hub always end with the same list.
pub(crate) async fn replace_rules(state: &AppState, acl: Acl) -> Result<usize, sync_store::StoreError> {
    let _one_at_a_time = state.acl_changes.lock().await;
    let count = acl.rules().len();
    state.store.set_acl(acl.clone()).await?;
    let (sessions, subscriptions) = put_in_force(state, acl);
    activity!(
        "ACL",
        "access rules replaced: {count} rules; {sessions} sessions see a change; {subscriptions} topic \
         subscriptions ended"
    );
    Ok(sessions)
}

/// Puts `acl` in force on documents (the hub) and topics. Returns how many sessions see
/// a change of what they may read, and how many topic subscriptions the rules ended.
fn put_in_force(state: &AppState, acl: Acl) -> (usize, usize) {
    let subscriptions = state.topics.set_acl(Arc::new(acl.clone()));
    (state.hub.set_acl(acl), subscriptions)
}

/// Puts in force, every `interval`, the rules stored by someone else (the `acl` command,
/// another server process sharing the database), until `stop`.
pub(crate) async fn reload_periodically(state: Arc<AppState>, interval: std::time::Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Read under the lock: a `PUT /acl` cannot store a newer list between the read
        // and the comparison, which would put the older one back in force.
        let _one_at_a_time = state.acl_changes.lock().await;
        let stored = match state.store.get_acl().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the access rules; keeping those in force");
                continue;
            }
        };
        if *state.hub.acl() != stored {
            let count = stored.rules().len();
            let (sessions, subscriptions) = put_in_force(&state, stored);
            activity!(
                "ACL",
                "access rules reloaded from the database: {count} rules; {sessions} sessions see a change; \
                 {subscriptions} topic subscriptions ended"
            );
        }
    }
}

/// `GET /acl`: `{"rules": [...]}`, actions by their canonical names.
pub(crate) async fn get(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, HttpError> {
    require_admin(&state, &headers, b"").await?;
    Ok(Json(state.hub.acl().to_json()).into_response())
}

/// `PUT /acl` with `{"rules": [...]}` (or a bare array): the whole list is checked
/// first; 400 names the first bad rule and what is wrong, and changes nothing; 204 once
/// the new list is stored and in force.
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body.map_err(body_error)?;
    require_admin(&state, &headers, &body).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| HttpError::new(ErrorCode::InvalidMessage, format!("the body is not JSON: {e}")))?;
    let acl = Acl::from_json(&value).map_err(|e| HttpError::new(ErrorCode::InvalidMessage, e.message))?;
    replace_rules(&state, acl)
        .await
        .map_err(|e| HttpError::new(ErrorCode::ServerError, format!("storing the rules failed: {e}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
