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

use serde_json::{Value, json};

use crate::config::{Auth, SyncConfig};
use crate::engine::SyncEngine;
use crate::error::SyncError;
use crate::events::EventType;
use crate::local::{DocStatus, Document};

/// An engine handle for C. Opaque: create with `sync_engine_create`, free with
/// `sync_engine_destroy`.
pub struct CSyncEngine {
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
        SyncError::Connection(_) | SyncError::WebSocket { .. } | SyncError::Timeout(_) | SyncError::Server { .. } => {
            CSyncResult::ErrorConnection
        }
        SyncError::Thread { .. } | SyncError::Shutdown => CSyncResult::ErrorUnknown,
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
        created = Some(Box::new(CSyncEngine { engine }));
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

/// Runs the registered callbacks for every queued event on this thread; writes how many
/// ran to `*out_processed_count` (which may be NULL).
///
/// # Safety
/// `engine` a live handle; `out_processed_count` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sync_engine_process_events(
    engine: *mut CSyncEngine,
    out_processed_count: *mut u32,
) -> CSyncResult {
    guard(|| {
        // SAFETY: the caller's contract.
        let engine = unsafe { self::engine(engine) }?;
        let processed = engine.event_dispatcher().process_events()?;
        if !out_processed_count.is_null() {
            // SAFETY: the caller's contract on `out_processed_count`.
            unsafe { write(out_processed_count, u32::try_from(processed).unwrap_or(u32::MAX)) }?;
        }
        Ok(())
    })
}
