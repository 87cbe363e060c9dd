//! The wire protocol: message types, frames (one message or a batch), `request_id` echo,
//! and decoding with errors that say which field was wrong and what was expected.
//!
//! Client frames are decoded by hand around serde (first to a `Value`, then each message
//! by its `type`), because the protocol accepts the seed-era shapes next to the current
//! ones and answers every malformed message with a precise `invalid_message`.

mod client;
mod server;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub use client::*;
pub use server::*;

use crate::error::ErrorCode;
use crate::model::{validate_client_id, validate_collection};
use crate::patch::parse_patch;

/// `request_id`: a string or an integer chosen by the client, echoed in direct replies.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

/// A client message with its optional `request_id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientEnvelope {
    /// The message.
    #[serde(flatten)]
    pub message: ClientMessage,
    /// Echoed in every direct reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

impl ClientEnvelope {
    /// A message without a request id.
    pub fn new(message: ClientMessage) -> Self {
        Self { message, request_id: None }
    }

    /// A message with a request id.
    pub fn with_id(message: ClientMessage, request_id: RequestId) -> Self {
        Self { message, request_id: Some(request_id) }
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Every field serializes to JSON without failure (strings, numbers, Values).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A server message with the `request_id` of the request it answers, if any.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerEnvelope {
    /// The message.
    #[serde(flatten)]
    pub message: ServerMessage,
    /// The request id being answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

impl ServerEnvelope {
    /// A push or an unsolicited message.
    pub fn new(message: ServerMessage) -> Self {
        Self { message, request_id: None }
    }

    /// A reply echoing `request_id`.
    pub fn reply(message: ServerMessage, request_id: Option<RequestId>) -> Self {
        Self { message, request_id }
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for ServerEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(deserializer)?;
        let request_id = match value.as_object_mut().and_then(|m| m.remove("request_id")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(RequestId::deserialize(v).map_err(serde::de::Error::custom)?),
        };
        let message = ServerMessage::deserialize(value).map_err(serde::de::Error::custom)?;
        Ok(Self { message, request_id })
    }
}

/// Decodes a server frame (one message or a JSON array of them).
pub fn decode_server_frame(text: &str) -> Result<Vec<ServerEnvelope>, serde_json::Error> {
    match serde_json::from_str::<Value>(text)? {
        Value::Array(items) => items.into_iter().map(ServerEnvelope::deserialize).collect(),
        one => Ok(vec![ServerEnvelope::deserialize(one)?]),
    }
}

/// Encodes several server messages as one batch frame.
pub fn encode_batch<T: Serialize>(messages: &[T]) -> String {
    serde_json::to_string(messages).unwrap_or_default()
}

/// Why a client message could not be decoded; answered with an `error` message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The request id, when it could be read, so the error can echo it.
    pub request_id: Option<RequestId>,
    /// `invalid_message`, `invalid_patch` or `payload_too_large`.
    pub code: ErrorCode,
    /// What was wrong: which field, and what was expected.
    pub message: String,
    /// The message type, when it could be read.
    pub message_type: Option<String>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { request_id: None, code, message: message.into(), message_type: None }
    }
}

/// Limits checked while decoding.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Deepest nesting of arrays and objects allowed in document content and patch values.
    pub max_depth: usize,
    /// Most operations allowed in one patch.
    pub max_patch_ops: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_depth: 64, max_patch_ops: 1000 }
    }
}

/// Nesting depth of a value: 0 for a scalar, 1 for `[]` or `{}`, and so on.
pub fn json_depth(value: &Value) -> usize {
    // An explicit stack: content may be nested deeper than is safe to recurse on.
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => {
                max = max.max(depth + 1);
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(map) => {
                max = max.max(depth + 1);
                stack.extend(map.values().map(|i| (i, depth + 1)));
            }
            _ => max = max.max(depth),
        }
    }
    max
}

/// Decodes a client frame: one message object, or a JSON array of them (a batch).
///
/// The outer `Err` is a frame that is not JSON at all (or nests beyond what the parser
/// allows); each inner `Err` is one message of the batch that could not be decoded, to
/// be answered on its own while the rest are processed. The outer `Err` carries the
/// frame's top-level `request_id` when it can still be read ([`top_level_request_id`]),
/// so that the refusal is answered like any other reply.
pub fn decode_client_frame(
    text: &str,
    limits: &DecodeLimits,
) -> Result<Vec<Result<ClientEnvelope, DecodeError>>, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let refused = if e.to_string().contains("recursion limit") {
            DecodeError::new(ErrorCode::PayloadTooLarge, "JSON nesting is deeper than the limit")
        } else {
            DecodeError::new(ErrorCode::InvalidMessage, format!("malformed JSON: {e}"))
        };
        DecodeError { request_id: top_level_request_id(text), ..refused }
    })?;
    Ok(match value {
        Value::Array(items) => items.into_iter().map(|v| decode_client_message(v, limits)).collect(),
        one => vec![decode_client_message(one, limits)],
    })
}

/// The `request_id` member of a frame that is one JSON object, read without parsing the
/// frame: for a frame the parser refused (nested too deep, or malformed after the id).
///
/// A single forward pass with a depth counter, no recursion and no allocation beyond the
/// id itself, so it is safe on any input, however deep. It reads members of the
/// top-level object until the text stops making sense and keeps the last `request_id`
/// that is a string or an integer (`None` for any other value), as decoding does when the
/// frame parses; values are skipped by counting brackets outside strings. `None` for a
/// batch (an array) and for anything that does not start as an object.
pub fn top_level_request_id(text: &str) -> Option<RequestId> {
    let bytes = text.as_bytes();
    let mut i = skip_whitespace(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    loop {
        i = skip_whitespace(bytes, i + 1);
        if bytes.get(i) != Some(&b'"') {
            return found;
        }
        let Some(key_end) = string_end(bytes, i) else { return found };
        let key = &text[i..key_end];
        i = skip_whitespace(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return found;
        }
        i = skip_whitespace(bytes, i + 1);
        let Some(value_end) = value_end(bytes, i) else { return found };
        let is_request_id = key == "\"request_id\""
            || (key.contains('\\') && serde_json::from_str::<String>(key).is_ok_and(|k| k == "request_id"));
        if is_request_id {
            found = request_id_token(&text[i..value_end]);
        }
        i = skip_whitespace(bytes, value_end);
        if bytes.get(i) != Some(&b',') {
            return found;
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index just past the value that starts at `start`: a string, a container (its
/// brackets counted, strings inside skipped), or a scalar up to the next delimiter.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let (mut depth, mut i) = (0usize, start);
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

/// A `request_id` value as decoding accepts it: a string or an integer.
fn request_id_token(token: &str) -> Option<RequestId> {
    if token.starts_with(['{', '[']) {
        return None;
    }
    match serde_json::from_str::<Value>(token).ok()? {
        Value::String(s) => Some(RequestId::Str(s)),
        Value::Number(n) => n.as_i64().map(RequestId::Int),
        _ => None,
    }
}

/// Decodes one client message from its JSON value.
pub fn decode_client_message(value: Value, limits: &DecodeLimits) -> Result<ClientEnvelope, DecodeError> {
    let Value::Object(mut map) = value else {
        return Err(DecodeError::new(ErrorCode::InvalidMessage, "a message must be a JSON object"));
    };
    let request_id = match map.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(RequestId::Str(s)),
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().map(RequestId::Int),
        Some(_) => {
            return Err(DecodeError::new(ErrorCode::InvalidMessage, "`request_id` must be a string or an integer"));
        }
    };
    let message_type = match map.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(DecodeError {
                request_id,
                ..DecodeError::new(ErrorCode::InvalidMessage, "`type` must be a string")
            });
        }
        None => {
            return Err(DecodeError { request_id, ..DecodeError::new(ErrorCode::InvalidMessage, "missing `type`") });
        }
    };
    match decode_body(&message_type, map, limits) {
        Ok(message) => Ok(ClientEnvelope { message, request_id }),
        Err((code, message)) => Err(DecodeError { request_id, code, message, message_type: Some(message_type) }),
    }
}

type BodyError = (ErrorCode, String);

fn decode_body(
    message_type: &str,
    mut map: Map<String, Value>,
    limits: &DecodeLimits,
) -> Result<ClientMessage, BodyError> {
    let message = match message_type {
        // `auth {token}` is the topic server's JavaScript client's shape.
        "authenticate" | "auth" => ClientMessage::Authenticate(decode_authenticate(&map)?),
        "create_document" => {
            // Seed-era shape: the document's fields at the top level.
            let document = match map.remove("document") {
                Some(document) => document,
                None if map.contains_key("content") || map.contains_key("title") => {
                    let mut doc = Map::new();
                    for key in ["id", "collection", "title", "content"] {
                        if let Some(v) = map.remove(key) {
                            doc.insert(key.to_owned(), v);
                        }
                    }
                    Value::Object(doc)
                }
                None => return Err(invalid("missing field `document`")),
            };
            let document: NewDocument = typed(document, "document.")?;
            check_depth(&document.content, limits, "document.content")?;
            let client_change_id = optional_string(&map, "client_change_id")?;
            ClientMessage::CreateDocument(CreateDocument { document, client_change_id })
        }
        "update_document" => {
            let top_level_change_id = optional_string(&map, "client_change_id")?;
            let patch_value = match map.remove("patch") {
                // Seed-era shape: `{document_id, patch: [ops]}` at the top level.
                Some(Value::Array(ops)) => {
                    let mut inner = map;
                    inner.insert("patch".to_owned(), Value::Array(ops));
                    Value::Object(inner)
                }
                Some(other) => other,
                None => return Err(invalid("missing field `patch`")),
            };
            let mut patch = decode_patch_object(patch_value, limits)?;
            if patch.client_change_id.is_none() {
                patch.client_change_id = top_level_change_id;
            }
            ClientMessage::UpdateDocument(UpdateDocument { patch })
        }
        "delete_document" => ClientMessage::DeleteDocument(typed(Value::Object(map), "")?),
        "revert_document" => ClientMessage::RevertDocument(typed(Value::Object(map), "")?),
        "get_changes_since" => ClientMessage::GetChangesSince(typed(Value::Object(map), "")?),
        "ack_changes" => ClientMessage::AckChanges(typed(Value::Object(map), "")?),
        "request_sync" => ClientMessage::RequestSync(typed(Value::Object(map), "")?),
        "request_full_sync" => ClientMessage::RequestFullSync(typed(Value::Object(map), "")?),
        "get_document" => ClientMessage::GetDocument(typed(Value::Object(map), "")?),
        "get_history" => ClientMessage::GetHistory(typed(Value::Object(map), "")?),
        "subscribe" => ClientMessage::Subscribe(typed(Value::Object(map), "")?),
        "connect" => {
            let connect: Connect = typed(Value::Object(map), "")?;
            check_depth(&connect.data, limits, "data")?;
            ClientMessage::Connect(connect)
        }
        "unsubscribe" => ClientMessage::Unsubscribe(typed(Value::Object(map), "")?),
        "publish" | "sync" => {
            let publish: Publish = typed(Value::Object(map), "")?;
            check_depth(&publish.data, limits, "data")?;
            ClientMessage::Publish(publish)
        }
        "ping" => ClientMessage::Ping,
        other => return Err(invalid(format!("unknown message type `{other}`"))),
    };
    Ok(message)
}

fn decode_patch_object(value: Value, limits: &DecodeLimits) -> Result<DocumentPatch, BodyError> {
    let Value::Object(mut map) = value else {
        return Err(invalid("field `patch`: expected an object with `document_id` and `patch`"));
    };
    // The ops get their own parser, whose errors name the failing op.
    let ops = match map.remove("patch") {
        Some(ops) => ops,
        None => return Err(invalid("field `patch`: missing field `patch` (the RFC 6902 operations)")),
    };
    if let Value::Array(items) = &ops {
        if items.len() > limits.max_patch_ops {
            return Err((
                ErrorCode::PayloadTooLarge,
                format!("patch has {} operations; the limit is {}", items.len(), limits.max_patch_ops),
            ));
        }
        for (i, op) in items.iter().enumerate() {
            if let Some(v) = op.get("value") {
                check_depth(v, limits, &format!("patch.patch[{i}].value"))?;
            }
        }
    }
    let ops = parse_patch(ops).map_err(|e| (ErrorCode::InvalidPatch, e.to_string()))?;
    map.insert("patch".to_owned(), Value::Array(Vec::new()));
    let mut patch: DocumentPatch = typed(Value::Object(map), "patch.")?;
    patch.patch = ops;
    Ok(patch)
}

fn decode_authenticate(map: &Map<String, Value>) -> Result<Authenticate, BodyError> {
    let credentials = if map.contains_key("token") {
        Credentials::Jwt { token: required_string(map, "token")? }
    } else if map.contains_key("api_key") || map.contains_key("signature") {
        let timestamp = match map.get("timestamp") {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| invalid("field `timestamp`: expected Unix seconds"))?,
            // Seed-era clients send the timestamp as a string of digits.
            Some(Value::String(s)) => {
                s.trim().parse().map_err(|_| invalid("field `timestamp`: expected Unix seconds"))?
            }
            Some(_) => return Err(invalid("field `timestamp`: expected Unix seconds")),
            None => return Err(invalid("missing field `timestamp`")),
        };
        Credentials::Hmac {
            email: required_string(map, "email")?,
            api_key: required_string(map, "api_key")?,
            signature: required_string(map, "signature")?,
            timestamp,
        }
    } else if map.contains_key("auth_token") {
        Credentials::Bearer {
            user_id: required_string(map, "user_id")?,
            auth_token: required_string(map, "auth_token")?,
        }
    } else {
        return Err(invalid(
            "authenticate needs `token` (JWT), or `email`, `api_key`, `signature` and `timestamp` (API key), \
             or `user_id` and `auth_token` (bearer token)",
        ));
    };
    let last_sequence = match map.get("last_sequence") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| invalid("field `last_sequence`: expected a non-negative integer"))?),
    };
    let client_id = optional_string(map, "client_id")?;
    if let Some(id) = &client_id {
        validate_client_id(id).map_err(|e| invalid(format!("field `client_id`: {e}")))?;
    }
    let collections = match map.get("collections") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            if items.len() > MAX_SYNC_COLLECTIONS {
                return Err(invalid(format!("field `collections`: at most {MAX_SYNC_COLLECTIONS} collections")));
            }
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                let name = item.as_str().ok_or_else(|| invalid("field `collections`: expected an array of names"))?;
                validate_collection(name).map_err(|e| invalid(format!("field `collections`: {e}")))?;
                names.push(name.to_owned());
            }
            Some(names)
        }
        Some(_) => return Err(invalid("field `collections`: expected an array of names")),
    };
    Ok(Authenticate { credentials, client_id, last_sequence, collections })
}

/// Most collections a session may limit its sync to.
pub const MAX_SYNC_COLLECTIONS: usize = 100;

fn invalid(message: impl Into<String>) -> BodyError {
    (ErrorCode::InvalidMessage, message.into())
}

fn required_string(map: &Map<String, Value>, field: &str) -> Result<String, BodyError> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("field `{field}`: expected a string"))),
        None => Err(invalid(format!("missing field `{field}`"))),
    }
}

fn optional_string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, BodyError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("field `{field}`: expected a string"))),
    }
}

fn check_depth(value: &Value, limits: &DecodeLimits, field: &str) -> Result<(), BodyError> {
    let depth = json_depth(value);
    if depth > limits.max_depth {
        return Err((
            ErrorCode::PayloadTooLarge,
            format!("`{field}` nests {depth} levels deep; the limit is {}", limits.max_depth),
        ));
    }
    Ok(())
}

/// Deserializes a message body, reporting the path of the offending field.
fn typed<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            if prefix.is_empty() {
                invalid(inner)
            } else {
                invalid(format!("field `{}`: {inner}", prefix.trim_end_matches('.')))
            }
        } else {
            invalid(format!("field `{prefix}{path}`: {inner}"))
        }
    })
}
