//! The event-log HTTP API (PROTOCOL.md §9): `GET /events` reads the change log as the
//! event-log system's events, `POST /events` records a client's diff history.
//!
//! An event is `{uuid, timestamp, userUuid, itemUuid, action, payload, sequence}`; the
//! item is a document. `create`, `update` (an RFC 7396 merge) and `delete` change it
//! through the write path like any change; any other action is an application event:
//! recorded in the log with its payload, pushed to the document's readers
//! (`document_event`), the content unchanged. A push is idempotent by `uuid` (stored as
//! the change's `client_change_id`), and every event goes through the access rules.
//!
//! Costs are bounded before the work: the body by `limits.max_frame_bytes`, a push by
//! [`MAX_EVENTS`] events, a read by its `limit` and by [`SCAN_PAGES`] pages of the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sync_core::model::{DEFAULT_COLLECTION, validate_client_id, validate_collection, validate_document_id};
use sync_core::protocol::{CreateDocument, DeleteDocument, NewDocument, RequestId};
use sync_core::{ChangeEvent, ChangeKind, ErrorCode, Timestamp};
use sync_store::{ReadScope, Store};
use tokio_util::sync::CancellationToken;

use crate::http::{HttpError, body_error, http_principal};
use crate::hub::SessionLink;
use crate::queue;
use crate::state::AppState;
use crate::writer::{AppEvent, Merge, WriteOp, WriteRequest};

/// Most events one `POST /events` may carry.
pub(crate) const MAX_EVENTS: usize = 1000;
/// Events a read answers when it names no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 5000;
/// Pages of the log one read scans at most (a `fromTimestamp` far ahead of
/// `fromSequence` stops there; `X-Events-Reached` says where to go on from).
const SCAN_PAGES: usize = 20;
/// The replica id the write path records for changes made through this API.
const CLIENT_ID: &str = "events-api";
/// Longest action name.
const MAX_ACTION_LEN: usize = 64;

/// The query of both routes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Only events at or after this time (Unix milliseconds, or RFC 3339).
    from_timestamp: Option<String>,
    /// Only events with a sequence above this.
    from_sequence: Option<u64>,
    /// At most this many events (default 1,000, at most 5,000).
    limit: Option<usize>,
}

/// `GET /events`: what the caller may read, oldest first.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(query) = query.map_err(|r| HttpError::new(ErrorCode::InvalidMessage, r.body_text()))?;
    let principal = http_principal(&state, &headers, b"").await?;
    let window = Window::of(&query)?;
    let (events, reached) = read(&state, &principal.user_id, &window).await?;
    Ok(with_reached(Json(Value::Array(events)).into_response(), reached))
}

/// `POST /events`: records an array of events; answers what became of each, and the
/// events after `fromSequence` (when given) as `GET` would.
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let Query(query) = query.map_err(|r| HttpError::new(ErrorCode::InvalidMessage, r.body_text()))?;
    let body = body.map_err(body_error)?;
    if body.len() > state.config.limits.max_frame_bytes {
        return Err(HttpError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is {} bytes; the limit is {}", body.len(), state.config.limits.max_frame_bytes),
        ));
    }
    let principal = http_principal(&state, &headers, &body).await?;
    let window = Window::of(&query)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| HttpError::new(ErrorCode::InvalidMessage, format!("the body is not JSON: {e}")))?;
    let incoming = parse_events(&value, state.config.limits.max_depth)
        .map_err(|message| HttpError::new(ErrorCode::InvalidMessage, message))?;
    let results = record(&state, &principal.user_id, incoming).await?;
    let (events, reached) = match query.from_sequence {
        Some(_) => read(&state, &principal.user_id, &window).await?,
        None => (Vec::new(), 0),
    };
    let response = Json(json!({"results": results, "events": events})).into_response();
    Ok(if query.from_sequence.is_some() { with_reached(response, reached) } else { response })
}

fn with_reached(mut response: Response, reached: u64) -> Response {
    response.headers_mut().insert("x-events-reached", HeaderValue::from(reached));
    response
}

/// Which events a read returns.
struct Window {
    after: u64,
    from: Option<Timestamp>,
    limit: usize,
}

impl Window {
    fn of(query: &EventsQuery) -> Result<Window, HttpError> {
        let from = match query.from_timestamp.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(match text.parse::<i64>() {
                Ok(ms) => Timestamp::from_unix_millis(ms),
                Err(_) => Timestamp::parse(text).map_err(|_| {
                    HttpError::new(
                        ErrorCode::InvalidMessage,
                        format!("fromTimestamp {text:?}: expected Unix milliseconds or an RFC 3339 time"),
                    )
                })?,
            }),
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        Ok(Window { after: query.from_sequence.unwrap_or(0), from, limit })
    }
}

/// The events of the log `user` may read in `window`, and the sequence the scan reached
/// (every readable event at or below it that matches was returned).
async fn read(state: &AppState, user: &str, window: &Window) -> Result<(Vec<Value>, u64), HttpError> {
    let scope = ReadScope { view: Arc::new(state.hub.acl().read_view(user)) };
    let (mut events, mut after) = (Vec::new(), window.after);
    for _ in 0..SCAN_PAGES {
        let page = state
            .store
            .changes_since(scope.clone(), after, window.limit - events.len(), None)
            .await
            .map_err(|e| HttpError::new(ErrorCode::ServerError, format!("storage error: {e}")))?;
        after = after.max(page.reached);
        let from = window.from;
        events.extend(page.events.iter().filter(|e| from.is_none_or(|t| e.created_at >= t)).map(log_event));
        if !page.has_more || events.len() >= window.limit {
            break;
        }
    }
    Ok((events, after))
}

/// A change as the event-log system's event.
fn log_event(event: &ChangeEvent) -> Value {
    let payload = match event.event_type {
        ChangeKind::Delete => Value::Null,
        _ => event.forward_patch.clone().unwrap_or(Value::Null),
    };
    json!({
        "uuid": event.client_change_id.as_deref().unwrap_or(&event.event_id),
        "timestamp": event.created_at,
        "userUuid": event.user_id,
        "itemUuid": event.document_id,
        "action": event.event_type.as_str(),
        "payload": payload,
        "sequence": event.sequence,
        "collection": event.collection,
        "revision": event.sync_revision,
    })
}

/// One event of a push, checked.
#[derive(Debug)]
struct Incoming {
    uuid: String,
    /// The author it names (`userUuid`), when it names one.
    author: Option<String>,
    op: WriteOp,
}

/// Checks a whole push before anything is recorded: the first problem, naming the event
/// and the field, refuses it all.
fn parse_events(value: &Value, max_depth: usize) -> Result<Vec<Incoming>, String> {
    let Value::Array(list) = value else { return Err("expected an array of events".into()) };
    if list.len() > MAX_EVENTS {
        return Err(format!("{} events; at most {MAX_EVENTS} may be pushed at once", list.len()));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut events = Vec::with_capacity(list.len());
    for (i, event) in list.iter().enumerate() {
        let Value::Object(map) = event else { return Err(format!("events[{i}]: expected an object")) };
        let text = |field: &str| -> Result<Option<&str>, String> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("events[{i}].{field}: expected a string")),
            }
        };
        let required = |field: &str| text(field)?.ok_or_else(|| format!("events[{i}]: missing field `{field}`"));
        let uuid = required("uuid")?;
        validate_client_id(uuid).map_err(|_| format!("events[{i}].uuid: use 1-128 printable ASCII characters"))?;
        if let Some(first) = seen.insert(uuid, i) {
            return Err(format!("events[{i}].uuid: the same as events[{first}]"));
        }
        let item = required("itemUuid")?;
        validate_document_id(item).map_err(|e| format!("events[{i}].itemUuid: {e}"))?;
        let action = required("action")?;
        let collection = text("collection")?;
        if let Some(name) = collection {
            validate_collection(name).map_err(|e| format!("events[{i}].collection: {e}"))?;
        }
        let payload = map.get("payload").cloned().unwrap_or(Value::Null);
        if depth(&payload) > max_depth {
            return Err(format!("events[{i}].payload: nested deeper than {max_depth}"));
        }
        let change_id = Some(uuid.to_owned());
        let document_id = item.to_owned();
        let op = match action {
            "create" => {
                if payload.is_null() {
                    return Err(format!("events[{i}].payload: a create needs the content"));
                }
                let collection = Some(collection.unwrap_or(DEFAULT_COLLECTION).to_owned());
                let document = NewDocument { id: Some(document_id), collection, title: None, content: payload };
                WriteOp::Create(CreateDocument { document, client_change_id: change_id })
            }
            "update" => {
                if !payload.is_object() {
                    return Err(format!("events[{i}].payload: an update is an RFC 7396 merge: a JSON object"));
                }
                WriteOp::Merge(Merge { document_id, merge: payload, client_change_id: change_id })
            }
            "delete" => {
                WriteOp::Delete(DeleteDocument { document_id, base_revision: None, client_change_id: change_id })
            }
            other => {
                if other.is_empty() || other.len() > MAX_ACTION_LEN || !other.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "events[{i}].action: use create, update, delete, or a name of 1-{MAX_ACTION_LEN} printable ASCII characters"
                    ));
                }
                WriteOp::Event(AppEvent { document_id, action: other.to_owned(), payload, client_change_id: change_id })
            }
        };
        // The time an event says it happened is the client's; the log keeps the commit time.
        match map.get("timestamp") {
            None | Some(Value::Null | Value::Number(_)) => {}
            Some(Value::String(s)) if s.parse::<i64>().is_ok() || Timestamp::parse(s).is_ok() => {}
            Some(_) => return Err(format!("events[{i}].timestamp: expected Unix milliseconds or an RFC 3339 time")),
        }
        events.push(Incoming { uuid: uuid.to_owned(), author: text("userUuid")?.map(str::to_owned), op });
    }
    Ok(events)
}

/// The deepest nesting of a value (iteratively: a hostile payload cannot overflow the stack).
fn depth(value: &Value) -> usize {
    let (mut deepest, mut stack) = (0, vec![(value, 1usize)]);
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// Records a checked push as `user`: what became of each event, in order.
async fn record(state: &AppState, user: &str, incoming: Vec<Incoming>) -> Result<Vec<Value>, HttpError> {
    let storage = |e: sync_store::StoreError| HttpError::new(ErrorCode::ServerError, format!("storage error: {e}"));
    // Events already in the log, by their author: a retried push records nothing twice.
    let mut by_author: HashMap<String, Vec<String>> = HashMap::new();
    for event in &incoming {
        let author = event.author.clone().unwrap_or_else(|| user.to_owned());
        by_author.entry(author).or_default().push(event.uuid.clone());
    }
    let mut recorded: HashMap<(String, String), ChangeEvent> = HashMap::new();
    for (author, uuids) in by_author {
        for event in state.store.find_client_changes(author.clone(), uuids).await.map_err(storage)? {
            let uuid = event.client_change_id.clone().unwrap_or_default();
            recorded.insert((author.clone(), uuid), event);
        }
    }
    let mut results: Vec<Option<Value>> = vec![None; incoming.len()];
    let (tx, mut rx) = queue::channel(incoming.len().max(1));
    let link = SessionLink { id: state.session_id(), tx, kill: CancellationToken::new() };
    let mut waiting = 0;
    for (i, event) in incoming.into_iter().enumerate() {
        let author = event.author.as_deref().unwrap_or(user);
        if let Some(original) = recorded.get(&(author.to_owned(), event.uuid.clone())) {
            results[i] = Some(json!({"uuid": event.uuid, "status": "duplicate", "sequence": original.sequence}));
            continue;
        }
        if author != user {
            let error = json!({"code": ErrorCode::Forbidden, "message": format!("an event of user {author:?} cannot be recorded by {user:?}")});
            results[i] = Some(json!({"uuid": event.uuid, "status": "refused", "error": error}));
            continue;
        }
        if !state.limiter.allow(user) {
            metrics::counter!(crate::metrics::RATE_LIMITED, "path" => "events").increment(1);
            let error = json!({"code": ErrorCode::RateLimitExceeded, "message": "too many changes; retry later"});
            results[i] = Some(json!({"uuid": event.uuid, "status": "refused", "error": error}));
            continue;
        }
        let request = WriteRequest {
            op: event.op,
            user_id: user.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            reply_to: link.clone(),
            request_id: Some(RequestId::Int(i as i64)),
            queued: std::time::Instant::now(),
        };
        state.writes.send(request).await.map_err(|_| {
            HttpError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServerError,
                "the server is shutting down",
            )
        })?;
        results[i] = Some(json!({"uuid": event.uuid}));
        waiting += 1;
    }
    drop(link);
    // Every answer comes back on the private queue; the write path answers each change.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while waiting > 0 {
        let Ok(Some(outbound)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return Err(HttpError::new(ErrorCode::ServerError, "the write path did not answer in time"));
        };
        let Ok(answer) = serde_json::from_slice::<Map<String, Value>>(&outbound.frame) else { continue };
        let Some(index) = answer.get("request_id").and_then(Value::as_u64).map(|i| i as usize) else { continue };
        let Some(Some(Value::Object(result))) = results.get_mut(index) else { continue };
        if answer.get("success") == Some(&Value::Bool(true)) {
            result.insert("status".into(), json!("applied"));
            result.insert("sequence".into(), answer.get("sequence").cloned().unwrap_or(Value::Null));
            result.insert("revision".into(), answer.get("sync_revision").cloned().unwrap_or(Value::Null));
        } else {
            result.insert("status".into(), json!("refused"));
            result.insert("error".into(), answer.get("error").cloned().unwrap_or(Value::Null));
        }
        waiting -= 1;
    }
    Ok(results.into_iter().flatten().collect())
}
