//! The C ABI of the engine (`sdk/include/sync_client.h` is generated from this file by
//! cbindgen). This module holds the workspace's only `unsafe` code.
//!
//! Guarantees of every exported function:
//! - it never unwinds across the ABI: a panic becomes `ErrorUnknown` (or NULL/false);
//! - NULL pointers, invalid UTF-8 and invalid JSON are refused with `ErrorInvalidInput`,
//!   and the reason is kept for `sync_last_error()` on the calling thread;
//! - strings it returns are owned by the caller and freed with `sync_string_free`.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::config::{Auth, SyncConfig};
use crate::engine::SyncEngine;
use crate::error::SyncError;
use crate::events::EventType;
use crate::local::{DocStatus, Document};

/// An engine handle for C. Opaque: create with `sync_engine_create`, free with
/// `sync_engine_destroy`.
pub struct CSyncEngine {
    /// Topic subscriptions made through the C ABI, with their callbacks (dropped before
    /// the engine).
    topics: Mutex<CTopics>,
    engine: SyncEngine,
}

/// The result of every fallible call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CSyncResult {
    /// The call succeeded.
    Success = 0,
    /// A NULL pointer, invalid UTF-8, invalid JSON, an invalid id or patch.
    ErrorInvalidInput = -1,
    /// The server could not be reached or refused the connection.
    ErrorConnection = -2,
    /// The local database failed.
    ErrorDatabase = -3,
    /// JSON could not be encoded or decoded.
    ErrorSerialization = -4,
    /// No such document.
    ErrorNotFound = -5,
    // --- topics (issue 14) ---
    /// The server refused a topic request: `forbidden`, `rate_limit_exceeded`,
    /// `payload_too_large`, … (`sync_last_error()` names the code).
    ErrorRefused = -6,
    /// Publishing needs a live connection (topic messages are not queued).
    ErrorNotConnected = -7,
    // --- end topics ---
    /// Anything else (including a caught panic).
    ErrorUnknown = -99,
}

/// Event types, numbered as `EventType` in Rust.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEventType {
    /// A document was created.
    SYNC_EVENT_DOCUMENT_CREATED = 0,
    /// A document was changed.
    SYNC_EVENT_DOCUMENT_UPDATED = 1,
    /// A document was deleted.
    SYNC_EVENT_DOCUMENT_DELETED = 2,
    /// Catching up started.
    SYNC_EVENT_SYNC_STARTED = 3,
    /// Caught up; `numeric_data` is the number of documents synced.
    SYNC_EVENT_SYNC_COMPLETED = 4,
    /// Something failed; `error` says what.
    SYNC_EVENT_SYNC_ERROR = 5,
    /// A concurrent edit was resolved; `content` lists the conflicts as JSON.
    SYNC_EVENT_CONFLICT_DETECTED = 6,
    /// The connection was lost.
    SYNC_EVENT_CONNECTION_LOST = 7,
    /// A connection attempt started.
    SYNC_EVENT_CONNECTION_ATTEMPTED = 8,
    /// Connected and authenticated.
    SYNC_EVENT_CONNECTION_SUCCEEDED = 9,
    /// Another user's document is now readable (the server's access rules): its state
    /// was stored; `content` and `title` are its view. `owner` in
    /// `sync_engine_get_document` names its owner.
    SYNC_EVENT_DOCUMENT_SHARED = 10,
    /// The document is no longer readable: its local copy was removed with
    /// `numeric_data` local changes not yet sent; `title` is the last one shown.
    SYNC_EVENT_ACCESS_REVOKED = 11,
    /// An application event was recorded on the document (`POST /events` with an action
    /// other than create, update or delete): `action` names it, `content` is its payload
    /// as JSON, `author` the user who recorded it, `numeric_data` the revision it made.
    /// The document's content did not change.
    SYNC_EVENT_APPLICATION_EVENT = 12,
}

impl From<EventType> for SyncEventType {
    fn from(t: EventType) -> Self {
        match t {
            EventType::DocumentCreated => SyncEventType::SYNC_EVENT_DOCUMENT_CREATED,
            EventType::DocumentUpdated => SyncEventType::SYNC_EVENT_DOCUMENT_UPDATED,
            EventType::DocumentDeleted => SyncEventType::SYNC_EVENT_DOCUMENT_DELETED,
            EventType::SyncStarted => SyncEventType::SYNC_EVENT_SYNC_STARTED,
            EventType::SyncCompleted => SyncEventType::SYNC_EVENT_SYNC_COMPLETED,
            EventType::SyncError => SyncEventType::SYNC_EVENT_SYNC_ERROR,
            EventType::ConflictDetected => SyncEventType::SYNC_EVENT_CONFLICT_DETECTED,
            EventType::ConnectionLost => SyncEventType::SYNC_EVENT_CONNECTION_LOST,
            EventType::ConnectionAttempted => SyncEventType::SYNC_EVENT_CONNECTION_ATTEMPTED,
            EventType::ConnectionSucceeded => SyncEventType::SYNC_EVENT_CONNECTION_SUCCEEDED,
            EventType::DocumentShared => SyncEventType::SYNC_EVENT_DOCUMENT_SHARED,
            EventType::AccessRevoked => SyncEventType::SYNC_EVENT_ACCESS_REVOKED,
            EventType::ApplicationEvent => SyncEventType::SYNC_EVENT_APPLICATION_EVENT,
        }
    }
}

/// One event, valid only during the callback (copy what you keep).
#[repr(C)]
pub struct SyncEventData {
    /// What happened.
    pub event_type: SyncEventType,
    /// The document concerned, or NULL.
    pub document_id: *const c_char,
    /// Its title, or NULL.
    pub title: *const c_char,
    /// Its content as JSON (for conflicts: the conflicts), or NULL.
    pub content: *const c_char,
    /// The error message, or NULL.
    pub error: *const c_char,
    /// A count (documents synced, connection attempt number, local changes dropped with
    /// a revoked document).
    pub numeric_data: u64,
    /// Document events: the change came from another replica. Conflicts: the local edit won.
    pub boolean_data: bool,
    /// `SYNC_EVENT_APPLICATION_EVENT`: the action (`"rated"`, …); otherwise NULL.
    pub action: *const c_char,
    /// `SYNC_EVENT_APPLICATION_EVENT`: the user who recorded it; otherwise NULL.
    pub author: *const c_char,
}

/// A callback run by `sync_engine_process_events` on the calling thread.
pub type SyncEventCallback = Option<extern "C" fn(event: *const SyncEventData, context: *mut c_void)>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

fn code(err: &SyncError) -> CSyncResult {
    match err {
        SyncError::InvalidInput(_) | SyncError::Config(_) => CSyncResult::ErrorInvalidInput,
        SyncError::NotFound(_) => CSyncResult::ErrorNotFound,
        SyncError::Database(_) | SyncError::DatabaseFile { .. } | SyncError::CorruptRow { .. } => {
            CSyncResult::ErrorDatabase
        }
        SyncError::Serialization(_) | SyncError::ServerMessage(_) | SyncError::ServerText(_) => {
            CSyncResult::ErrorSerialization
        }
        SyncError::Connection(_) | SyncError::WebSocket { .. } | SyncError::Timeout(_) => CSyncResult::ErrorConnection,
        SyncError::Server { .. } => CSyncResult::ErrorRefused,
        SyncError::Thread { .. } | SyncError::Shutdown => CSyncResult::ErrorUnknown,
        SyncError::NotConnected(_) => CSyncResult::ErrorNotConnected,
    }
}

/// Runs `body`, turning errors and panics into result codes with `sync_last_error` set.
fn guard(body: impl FnOnce() -> Result<(), SyncError>) -> CSyncResult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            CSyncResult::Success
        }
        Ok(Err(err)) => {
            set_last_error(&err.to_string());
            code(&err)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error: {what}"));
            CSyncResult::ErrorUnknown
        }
    }
}

/// Reads a required C string argument.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the call.
unsafe fn text<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, SyncError> {
    if ptr.is_null() {
        return Err(SyncError::InvalidInput(format!("{name} is NULL")));
    }
    // SAFETY: the caller promises a valid NUL-terminated string.
    let cstr = unsafe { CStr::from_ptr(ptr) };
    cstr.to_str().map_err(|_| SyncError::InvalidInput(format!("{name} is not valid UTF-8")))
}

/// Reads a required JSON argument.
///
/// # Safety
/// As [`text`].
unsafe fn json_arg(ptr: *const c_char, name: &str) -> Result<Value, SyncError> {
    // SAFETY: forwarded contract.
    let text = unsafe { text(ptr, name) }?;
    serde_json::from_str(text).map_err(|e| SyncError::InvalidInput(format!("{name} is not valid JSON: {e}")))
}

/// The engine behind a handle.
///
/// # Safety
/// `engine` must be NULL or a live handle from `sync_engine_create`.
unsafe fn engine<'a>(engine: *mut CSyncEngine) -> Result<&'a SyncEngine, SyncError> {
    if engine.is_null() {
        return Err(SyncError::InvalidInput("engine is NULL".into()));
    }
    // SAFETY: the caller promises a live handle; the engine is used through `&` only.
    Ok(unsafe { &(*engine).engine })
}

/// Writes a new C string to `out`.
///
/// # Safety
/// `out` must be NULL (refused) or valid for one pointer write.
unsafe fn give_string(out: *mut *mut c_char, value: String) -> Result<(), SyncError> {
    if out.is_null() {
        return Err(SyncError::InvalidInput("output pointer is NULL".into()));
    }
    // `value` is JSON written by serde_json, which escapes U+0000, so it holds no NUL byte;
    // should one ever get in, the caller gets an error rather than a cut string.
    let cstring = CString::new(value)
        .map_err(|e| SyncError::Serialization(<serde_json::Error as serde::ser::Error>::custom(e)))?;
    // SAFETY: the caller promises `out` is writable.
    unsafe { *out = cstring.into_raw() };
    Ok(())
}

fn document_json(doc: &Document) -> Value {
    json!({
        "id": doc.id,
        "collection": doc.collection,
        "title": doc.title,
        "content": doc.content,
        "sync_revision": doc.revision,
        "status": match doc.status {
            DocStatus::Synced => "synced",
            DocStatus::Pending => "pending",
            DocStatus::Conflict => "conflict",
        },
        "pending": doc.pending,
        "owner": doc.owner,
    })
}

/// Creates an engine: local database (URL or path, created when missing), server URL,
/// the user's email (or user id for tokens), and an API key with its secret — or, with
/// `api_secret` NULL, a bearer token or JWT in `api_key`. Returns NULL on failure (see
/// `sync_last_error`). The engine connects in the background and works offline.
///
/// # Safety
/// The string arguments must be NULL or NUL-terminated strings valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_create(
    database_url: *const c_char,
    server_url: *const c_char,
    email: *const c_char,
    api_key: *const c_char,
    api_secret: *const c_char,
) -> *mut CSyncEngine {
    // SAFETY: the caller's contract, forwarded; NULL options are the defaults.
    unsafe { sync_engine_create_with_options(database_url, server_url, email, api_key, api_secret, std::ptr::null()) }
}

/// Like `sync_engine_create`, with more options as a JSON object in `options_json`
/// (NULL or `{}` for the defaults). Known members:
/// - `"collections"`: an array of 1–100 collection names: partial sync, only documents
///   of these collections are caught up, pushed and shared to this engine; `null` syncs
///   every collection.
/// - `"tls_ca_file"`: the path of a PEM file of CA certificates to trust for `wss://`
///   besides the public web roots (a private CA, a self-signed server certificate).
///
/// An unknown member, or a value of the wrong shape, is refused: NULL is returned and
/// `sync_last_error` names it.
///
/// # Safety
/// The string arguments must be NULL (`api_secret`, `options_json`) or NUL-terminated
/// strings valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_create_with_options(
    database_url: *const c_char,
    server_url: *const c_char,
    email: *const c_char,
    api_key: *const c_char,
    api_secret: *const c_char,
    options_json: *const c_char,
) -> *mut CSyncEngine {
    let mut created = None;
    let result = guard(|| {
        // SAFETY: the caller's contract on every string argument.
        let (database, server, user, key) = unsafe {
            (
                text(database_url, "database_url")?,
                text(server_url, "server_url")?,
                text(email, "email")?,
                text(api_key, "api_key")?,
            )
        };
        let auth = if api_secret.is_null() {
            Auth::from_credential(key, None)?
        } else {
            // SAFETY: as above.
            let secret = unsafe { text(api_secret, "api_secret") }?;
            Auth::ApiKey { key: key.to_owned(), secret: secret.to_owned() }
        };
        let mut config = SyncConfig::new(database, server, user, auth);
        if !options_json.is_null() {
            // SAFETY: the caller's contract on `options_json`.
            apply_options(&mut config, unsafe { json_arg(options_json, "options_json") }?)?;
        }
        let engine = SyncEngine::with_config(config)?;
        created = Some(Box::new(CSyncEngine { topics: Mutex::new(CTopics::default()), engine }));
        Ok(())
    });
    match (result, created) {
        (CSyncResult::Success, Some(engine)) => Box::into_raw(engine),
        _ => std::ptr::null_mut(),
    }
}

/// Sets the options of `sync_engine_create_with_options` on `config`.
fn apply_options(config: &mut SyncConfig, options: Value) -> Result<(), SyncError> {
    let Value::Object(options) = options else {
        return Err(SyncError::InvalidInput("options_json is not a JSON object".into()));
    };
    for (name, value) in options {
        match name.as_str() {
            "collections" => {
                config.collections = match value {
                    Value::Null => None,
                    Value::Array(items) => Some(
                        items
                            .into_iter()
                            .map(|item| match item {
                                Value::String(name) => Ok(name),
                                other => Err(SyncError::InvalidInput(format!(
                                    "options_json: collections: {other} is not a collection name"
                                ))),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    other => {
                        return Err(SyncError::InvalidInput(format!(
                            "options_json: collections must be an array of names or null, not {other}"
                        )));
                    }
                };
            }
            "tls_ca_file" => {
                config.tls_ca_file = match value {
                    Value::Null => None,
                    Value::String(path) if !path.is_empty() => Some(path.into()),
                    other => {
                        return Err(SyncError::InvalidInput(format!(
                            "options_json: tls_ca_file must be the path of a PEM file, not {other}"
                        )));
                    }
                };
            }
            other => return Err(SyncError::InvalidInput(format!("options_json: unknown option {other:?}"))),
        }
    }
    Ok(())
}

/// Destroys an engine: first pushes the outbox for the engine's grace period (3 s),
/// connecting if needed, as the Rust shutdown does. NULL is a no-op.
///
/// # Safety
/// `engine` must be NULL or a handle from `sync_engine_create` not destroyed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_destroy(engine: *mut CSyncEngine) {
    if engine.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller hands back ownership of a live handle.
        drop(unsafe { Box::from_raw(engine) });
    }));
}

/// The library version, e.g. "0.1.0"; free with `sync_string_free`.
#[unsafe(no_mangle)]
pub extern "C" fn sync_get_version() -> *mut c_char {
    CString::new(env!("CARGO_PKG_VERSION")).map(CString::into_raw).unwrap_or(std::ptr::null_mut())
}

/// Frees a string returned by this library. NULL is a no-op.
///
/// # Safety
/// `s` must be NULL or a string returned by this library, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the caller hands back a string created by `CString::into_raw`.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The last error of a call on this thread ("" when the last call succeeded). Valid
/// until the next call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn sync_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Creates a document from a JSON object; writes its id (36 characters + NUL) to
/// `out_document_id`, which must have room for at least 37 bytes.
///
/// # Safety
/// `engine` a live handle; `content_json` a NUL-terminated string; `out_document_id`
/// writable for 37 bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_create_document(
    engine: *mut CSyncEngine,
    content_json: *const c_char,
    out_document_id: *mut c_char,
) -> CSyncResult {
    guard(|| {
        if out_document_id.is_null() {
            return Err(SyncError::InvalidInput("out_document_id is NULL".into()));
        }
        // SAFETY: the caller's contract.
        let (engine, content) = unsafe { (self::engine(engine)?, json_arg(content_json, "content_json")?) };
        let doc = engine.create_now(None, sync_core::model::DEFAULT_COLLECTION, content)?;
        let id = doc.id.as_bytes();
        if id.len() > 36 {
            return Err(SyncError::InvalidInput("generated id longer than 36 bytes".into()));
        }
        // SAFETY: the caller promises 37 writable bytes; `id` is at most 36 plus the NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(id.as_ptr(), out_document_id.cast::<u8>(), id.len());
            *out_document_id.add(id.len()) = 0;
        }
        Ok(())
    })
}

/// Creates a document with a chosen id (1–128 chars of `[A-Za-z0-9._:-]`).
///
/// # Safety
/// `engine` a live handle; `id` and `content_json` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_create_document_with_id(
    engine: *mut CSyncEngine,
    id: *const c_char,
    content_json: *const c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, id, content) =
            unsafe { (self::engine(engine)?, text(id, "id")?, json_arg(content_json, "content_json")?) };
        engine.create_now(Some(id), sync_core::model::DEFAULT_COLLECTION, content).map(drop)
    })
}

/// Merges a JSON object into a document's content (RFC 7396: `null` removes a member).
///
/// # Safety
/// `engine` a live handle; `document_id` and `content_json` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_update_document(
    engine: *mut CSyncEngine,
    document_id: *const c_char,
    content_json: *const c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, id, partial) = unsafe {
            (self::engine(engine)?, text(document_id, "document_id")?, json_arg(content_json, "content_json")?)
        };
        engine.update_now(id, partial).map(drop)
    })
}

/// Applies an RFC 6902 patch (a JSON array of operations) to a document.
///
/// # Safety
/// `engine` a live handle; `document_id` and `json_patch` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_patch_document(
    engine: *mut CSyncEngine,
    document_id: *const c_char,
    json_patch: *const c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, id, patch) =
            unsafe { (self::engine(engine)?, text(document_id, "document_id")?, json_arg(json_patch, "json_patch")?) };
        engine.patch_now(id, patch).map(drop)
    })
}

/// Deletes a document.
///
/// # Safety
/// `engine` a live handle; `document_id` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_delete_document(
    engine: *mut CSyncEngine,
    document_id: *const c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, id) = unsafe { (self::engine(engine)?, text(document_id, "document_id")?) };
        engine.delete_now(id)
    })
}

/// Writes a document as JSON (`{id, collection, title, content, sync_revision, status,
/// pending, owner}`) to `*out_json`; free it with `sync_string_free`. `owner` is the
/// owner's user id (null until the server has said): another user's for a document
/// shared with this one (compare with `sync_engine_get_user_id`).
///
/// # Safety
/// `engine` a live handle; `document_id` a NUL-terminated string; `out_json` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_get_document(
    engine: *mut CSyncEngine,
    document_id: *const c_char,
    out_json: *mut *mut c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, id) = unsafe { (self::engine(engine)?, text(document_id, "document_id")?) };
        let doc = engine.get_now(id)?;
        // SAFETY: the caller's contract on `out_json`.
        unsafe { give_string(out_json, document_json(&doc).to_string()) }
    })
}

/// Writes every document as a JSON array to `*out_json_array`; free with `sync_string_free`.
///
/// # Safety
/// `engine` a live handle; `out_json_array` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_get_all_documents(
    engine: *mut CSyncEngine,
    out_json_array: *mut *mut c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let docs: Vec<Value> = engine.list_now(None)?.iter().map(document_json).collect();
        // SAFETY: the caller's contract on `out_json_array`.
        unsafe { give_string(out_json_array, Value::Array(docs).to_string()) }
    })
}

/// Writes the number of documents to `*out_count`.
///
/// # Safety
/// `engine` a live handle; `out_count` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_count_documents(engine: *mut CSyncEngine, out_count: *mut u64) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let count = engine.count_now()?;
        // SAFETY: the caller's contract on `out_count`.
        unsafe { write(out_count, count) }
    })
}

/// Writes the number of local changes waiting for the server to `*out_count`.
///
/// # Safety
/// `engine` a live handle; `out_count` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_count_pending_sync(engine: *mut CSyncEngine, out_count: *mut u64) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let count = engine.pending_count()?;
        // SAFETY: the caller's contract on `out_count`.
        unsafe { write(out_count, count) }
    })
}

/// Writes `value` through an output pointer, refusing NULL.
///
/// # Safety
/// `out` must be NULL or valid for one write of `T`.
unsafe fn write<T>(out: *mut T, value: T) -> Result<(), SyncError> {
    if out.is_null() {
        return Err(SyncError::InvalidInput("output pointer is NULL".into()));
    }
    // SAFETY: non-NULL, and the caller promised it is writable.
    unsafe { out.write(value) };
    Ok(())
}

/// Whether the engine is connected and authenticated (false for NULL).
///
/// # Safety
/// `engine` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_is_connected(engine: *mut CSyncEngine) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract.
        unsafe { self::engine(engine) }.is_ok_and(SyncEngine::is_connected)
    }))
    .unwrap_or(false)
}

/// Writes the user id the server knows this user as (for API keys, derived from the
/// email) to `*out_user_id`; free it with `sync_string_free`. Writes NULL until the
/// engine has connected once (the id is kept in the local database after that).
///
/// # Safety
/// `engine` a live handle; `out_user_id` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_get_user_id(
    engine: *mut CSyncEngine,
    out_user_id: *mut *mut c_char,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        match engine.user_id() {
            // SAFETY: the caller's contract on `out_user_id`.
            Some(user_id) => unsafe { give_string(out_user_id, user_id) },
            // SAFETY: as above.
            None => unsafe { write(out_user_id, std::ptr::null_mut()) },
        }
    })
}

/// Registers a callback for every event (`event_filter` -1) or one type (0–11). Callbacks
/// run only inside `sync_engine_process_events`, on the calling thread, for local and
/// remote changes alike; `context` is passed back untouched.
///
/// # Safety
/// `engine` a live handle; `callback` a function safe to call from the thread that calls
/// `sync_engine_process_events`, with `context`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_register_event_callback(
    engine: *mut CSyncEngine,
    callback: SyncEventCallback,
    context: *mut c_void,
    event_filter: i32,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let Some(callback) = callback else { return Err(SyncError::InvalidInput("callback is NULL".into())) };
        let filter = match event_filter {
            -1 => None,
            n => Some(EventType::from_i32(n).ok_or_else(|| {
                let last = EventType::ALL.len() - 1;
                SyncError::InvalidInput(format!("event_filter {n} is not -1 or an event type 0-{last}"))
            })?),
        };
        engine.event_dispatcher().register_event_callback(
            move |event, context| {
                let owned = |s: &Option<String>| s.as_deref().and_then(|s| CString::new(s.replace('\0', "\\0")).ok());
                let (document_id, title, content, error, action, author) = (
                    owned(&event.document_id),
                    owned(&event.title),
                    owned(&event.content),
                    owned(&event.error),
                    owned(&event.action),
                    owned(&event.author),
                );
                let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
                let data = SyncEventData {
                    event_type: event.event_type.into(),
                    document_id: ptr(&document_id),
                    title: ptr(&title),
                    content: ptr(&content),
                    error: ptr(&error),
                    numeric_data: event.numeric_data,
                    boolean_data: event.boolean_data,
                    action: ptr(&action),
                    author: ptr(&author),
                };
                // The strings live until the end of this closure, after the call returns.
                callback(&data, context);
            },
            context,
            filter,
        )
    })
}

/// Runs the registered callbacks for every queued event on this thread, then the topic
/// callbacks (`sync_engine_subscribe`) for every message waiting; writes how many
/// callbacks ran to `*out_processed_count` (which may be NULL).
///
/// # Safety
/// `engine` a live handle; `out_processed_count` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_process_events(
    engine: *mut CSyncEngine,
    out_processed_count: *mut u32,
) -> CSyncResult {
    let handle = engine;
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let processed = engine.event_dispatcher().process_events()?;
        // SAFETY: the caller's contract, checked non-NULL just above.
        let processed = processed + dispatch_topics(unsafe { &*handle });
        if !out_processed_count.is_null() {
            // SAFETY: the caller's contract on `out_processed_count`.
            unsafe { write(out_processed_count, u32::try_from(processed).unwrap_or(u32::MAX)) }?;
        }
        Ok(())
    })
}

// --- topics (issue 14) ---
//
// Topic subscriptions with C callbacks: each holds a Rust `Subscription` whose queue
// `sync_engine_process_events` drains on the calling thread, so callbacks run where the
// document callbacks run. A callback is never called after `sync_engine_unsubscribe` of
// its subscription returned (also when a callback unsubscribes during processing).

/// What a topic callback is told.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncTopicEventKind {
    /// A message: `topic`, `data`, `from`, `timestamp`, and `offset`/`epoch` on a topic
    /// with history.
    SYNC_TOPIC_MESSAGE = 0,
    /// Messages may be missing here: `missed` were dropped because events were not
    /// processed fast enough, or (`missed` 0) the connection was lost and the
    /// subscription was renewed without recovering what was published meanwhile.
    SYNC_TOPIC_GAP = 1,
    /// The server refused to renew the subscription after a reconnect; `error` says why.
    /// No more callbacks come for it (it stays registered until unsubscribed).
    SYNC_TOPIC_REFUSED = 2,
}

/// One topic event, valid only during the callback (copy what you keep).
#[repr(C)]
pub struct SyncTopicEvent {
    /// What happened.
    pub kind: SyncTopicEventKind,
    /// The subscription's id (from `sync_engine_subscribe`).
    pub subscription_id: u64,
    /// The name or pattern subscribed to (`user.<id>` for the personal topic).
    pub subscription: *const c_char,
    /// Messages: the topic it was published on; NULL otherwise.
    pub topic: *const c_char,
    /// Messages: what was published, as JSON; NULL otherwise.
    pub data: *const c_char,
    /// Messages: the publishing user's id; NULL when the server published it.
    pub from: *const c_char,
    /// Messages: when the server received it (RFC 3339); NULL otherwise.
    pub timestamp: *const c_char,
    /// Messages on a topic with history: its offset (1, 2, …); 0 otherwise.
    pub offset: u64,
    /// Messages on a topic with history: the epoch of the offset; NULL otherwise.
    pub epoch: *const c_char,
    /// Gaps: how many messages were dropped; 0 when unknown (not recovered).
    pub missed: u64,
    /// Refusals: the code and the server's message; NULL otherwise.
    pub error: *const c_char,
}

/// A topic callback, run by `sync_engine_process_events` on the calling thread.
pub type SyncTopicCallback = Option<extern "C" fn(event: *const SyncTopicEvent, user_data: *mut c_void)>;

/// The C subscriptions of an engine.
#[derive(Default)]
struct CTopics {
    next_id: u64,
    subscriptions: Vec<CTopic>,
}

struct CTopic {
    id: u64,
    subscription: crate::Subscription,
    callback: extern "C" fn(*const SyncTopicEvent, *mut c_void),
    /// Handed back to the callback untouched, never dereferenced here.
    user_data: usize,
}

fn lock_topics(handle: &CSyncEngine) -> std::sync::MutexGuard<'_, CTopics> {
    // A panic while holding it (a push or a retain) leaves the list whole.
    handle.topics.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle behind a pointer.
///
/// # Safety
/// `engine` must be NULL or a live handle from `sync_engine_create`.
unsafe fn handle<'a>(engine: *mut CSyncEngine) -> Result<&'a CSyncEngine, SyncError> {
    if engine.is_null() {
        return Err(SyncError::InvalidInput("engine is NULL".into()));
    }
    // SAFETY: the caller promises a live handle; it is used through `&` only.
    Ok(unsafe { &*engine })
}

/// Keeps `subscription` with its callback; writes its id to `out_subscription_id`.
///
/// # Safety
/// `out_subscription_id` NULL or writable.
unsafe fn keep(
    handle: &CSyncEngine,
    subscription: crate::Subscription,
    callback: SyncTopicCallback,
    user_data: *mut c_void,
    out_subscription_id: *mut u64,
) -> Result<(), SyncError> {
    let Some(callback) = callback else { return Err(SyncError::InvalidInput("callback is NULL".into())) };
    let mut topics = lock_topics(handle);
    topics.next_id += 1;
    let id = topics.next_id;
    topics.subscriptions.push(CTopic { id, subscription, callback, user_data: user_data as usize });
    drop(topics);
    if !out_subscription_id.is_null() {
        // SAFETY: the caller's contract on `out_subscription_id`.
        unsafe { write(out_subscription_id, id) }?;
    }
    Ok(())
}

/// Runs the topic callbacks for every event waiting; returns how many ran.
fn dispatch_topics(handle: &CSyncEngine) -> usize {
    type Batch = (u64, String, extern "C" fn(*const SyncTopicEvent, *mut c_void), usize, Vec<crate::TopicEvent>);
    // Taken under the lock, run without it: callbacks may subscribe or unsubscribe.
    let batches: Vec<Batch> = lock_topics(handle)
        .subscriptions
        .iter()
        .filter_map(|t| {
            let events: Vec<_> = std::iter::from_fn(|| t.subscription.try_recv()).collect();
            (!events.is_empty()).then(|| (t.id, t.subscription.topic(), t.callback, t.user_data, events))
        })
        .collect();
    let owned = |s: &str| CString::new(s.replace('\0', "\\0")).unwrap_or_default();
    let mut ran = 0;
    for (id, text, callback, user_data, events) in batches {
        let subscription = owned(&text);
        for event in events {
            if !lock_topics(handle).subscriptions.iter().any(|t| t.id == id) {
                // Unsubscribed by an earlier callback: its user data may be gone.
                break;
            }
            let mut c = SyncTopicEvent {
                kind: SyncTopicEventKind::SYNC_TOPIC_MESSAGE,
                subscription_id: id,
                subscription: subscription.as_ptr(),
                topic: std::ptr::null(),
                data: std::ptr::null(),
                from: std::ptr::null(),
                timestamp: std::ptr::null(),
                offset: 0,
                epoch: std::ptr::null(),
                missed: 0,
                error: std::ptr::null(),
            };
            // The strings live until the end of this iteration, after the call returns.
            let strings: Vec<Option<CString>>;
            match event {
                crate::TopicEvent::Message(m) => {
                    strings = vec![
                        Some(owned(&m.topic)),
                        Some(owned(&m.data.to_string())),
                        m.from.as_deref().map(owned),
                        Some(owned(&m.timestamp.to_string())),
                        m.epoch.as_deref().map(owned),
                    ];
                    let ptr = |i: usize| strings[i].as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
                    (c.topic, c.data, c.from, c.timestamp, c.epoch) = (ptr(0), ptr(1), ptr(2), ptr(3), ptr(4));
                    c.offset = m.offset.unwrap_or(0);
                }
                crate::TopicEvent::Gap(gap) => {
                    strings = Vec::new();
                    c.kind = SyncTopicEventKind::SYNC_TOPIC_GAP;
                    c.missed = match gap {
                        crate::Gap::Dropped(n) => n,
                        crate::Gap::NotRecovered => 0,
                    };
                }
                crate::TopicEvent::Refused { code, message } => {
                    strings = vec![Some(owned(&format!("{code}: {message}")))];
                    c.kind = SyncTopicEventKind::SYNC_TOPIC_REFUSED;
                    c.error = strings[0].as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
                }
            }
            callback(&c, user_data as *mut c_void);
            drop(strings);
            ran += 1;
        }
    }
    ran
}

/// Subscribes to a topic name (`team.42.chat`) or pattern (`team.*.chat`, `team.>`):
/// from now on `callback` runs, inside `sync_engine_process_events` on the calling
/// thread, for every message on a matching topic (and for gaps, see
/// `SyncTopicEventKind`), with `user_data` handed back untouched. Writes the
/// subscription's id to `*out_subscription_id` (which may be NULL), for
/// `sync_engine_unsubscribe`.
///
/// While connected this waits for the server's answer (at most 10 s): a refusal is
/// `ErrorRefused` (`sync_last_error()`: `forbidden`, …). While offline it returns at once
/// and the subscription is made on connecting. Subscriptions are renewed after every
/// reconnect. An invalid name or pattern is `ErrorInvalidInput`. `broadcast` reaches every
/// session without subscribing; subscribing to it only routes it to this callback.
///
/// # Safety
/// `engine` a live handle; `topic` a NUL-terminated string; `callback` safe to call from
/// the thread that calls `sync_engine_process_events`, with `user_data`, until
/// `sync_engine_unsubscribe` of this subscription (or `sync_engine_destroy`) returns;
/// `out_subscription_id` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_subscribe(
    engine: *mut CSyncEngine,
    topic: *const c_char,
    callback: SyncTopicCallback,
    user_data: *mut c_void,
    out_subscription_id: *mut u64,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (handle, topic) = unsafe { (self::handle(engine)?, text(topic, "topic")?) };
        if callback.is_none() {
            return Err(SyncError::InvalidInput("callback is NULL".into()));
        }
        let subscription = handle.engine.block_on(handle.engine.subscribe(topic))??;
        // SAFETY: the caller's contract on `out_subscription_id`.
        unsafe { keep(handle, subscription, callback, user_data, out_subscription_id) }
    })
}

/// Subscribes to this user's personal topic (`user.<user id>`): what the user's other
/// devices, admins and the server send to this user. Works before the engine has
/// connected; needs no answer from the server. Otherwise as `sync_engine_subscribe`.
///
/// # Safety
/// As `sync_engine_subscribe`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_subscribe_personal(
    engine: *mut CSyncEngine,
    callback: SyncTopicCallback,
    user_data: *mut c_void,
    out_subscription_id: *mut u64,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let handle = unsafe { self::handle(engine) }?;
        if callback.is_none() {
            return Err(SyncError::InvalidInput("callback is NULL".into()));
        }
        let subscription = handle.engine.subscribe_personal()?;
        // SAFETY: the caller's contract on `out_subscription_id`.
        unsafe { keep(handle, subscription, callback, user_data, out_subscription_id) }
    })
}

/// Ends a subscription made with `sync_engine_subscribe` or
/// `sync_engine_subscribe_personal`: its callback is not called again once this returns
/// (so its `user_data` may be freed), even from inside a callback. The server is told
/// once no subscription of that name or pattern is left. An unknown id is
/// `ErrorNotFound`.
///
/// # Safety
/// `engine` a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_unsubscribe(engine: *mut CSyncEngine, subscription_id: u64) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let handle = unsafe { self::handle(engine) }?;
        let mut topics = lock_topics(handle);
        let Some(index) = topics.subscriptions.iter().position(|t| t.id == subscription_id) else {
            return Err(SyncError::NotFound(format!("no topic subscription {subscription_id}")));
        };
        let removed = topics.subscriptions.remove(index);
        drop(topics);
        drop(removed);
        Ok(())
    })
}

/// Publishes `data_json` (any JSON) on `topic` (a name, no wildcards) to every session
/// subscribed to it, and to this one too when `echo` is true and it is subscribed; waits
/// for the server's answer (a round trip, at most 10 s: call it off a thread that must
/// not wait). Writes how many sessions it was queued for to `*out_delivered`, and its
/// offset on a topic with history (else 0) to `*out_offset`; either may be NULL.
///
/// Topic messages are live, not queued: while disconnected this is `ErrorNotConnected`.
/// A refusal is `ErrorRefused` (`forbidden`, `rate_limit_exceeded`, `payload_too_large`);
/// an invalid name or JSON is `ErrorInvalidInput`; a connection lost before the answer
/// is `ErrorConnection` (the message may or may not have been delivered).
///
/// # Safety
/// `engine` a live handle; `topic` and `data_json` NUL-terminated strings;
/// `out_delivered` and `out_offset` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_publish(
    engine: *mut CSyncEngine,
    topic: *const c_char,
    data_json: *const c_char,
    echo: bool,
    out_delivered: *mut u64,
    out_offset: *mut u64,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let (engine, topic, data) =
            unsafe { (self::engine(engine)?, text(topic, "topic")?, json_arg(data_json, "data_json")?) };
        let publishing = if echo { engine.publish_echo(topic, data)? } else { engine.publish(topic, data)? };
        let published = engine.block_on(std::future::IntoFuture::into_future(publishing))??;
        if !out_delivered.is_null() {
            // SAFETY: the caller's contract on `out_delivered`.
            unsafe { write(out_delivered, published.delivered) }?;
        }
        if !out_offset.is_null() {
            // SAFETY: the caller's contract on `out_offset`.
            unsafe { write(out_offset, published.offset.unwrap_or(0)) }?;
        }
        Ok(())
    })
}

// --- end topics ---
