//! `SyncEngine`: the application's handle. Every document call is one local transaction
//! and returns as soon as it commits; a background task on the engine's own runtime keeps
//! the local database in sync with the server.
//!
//! The engine owns its runtime (one worker thread), so it works the same from async Rust,
//! from plain threads, and through the C ABI, and dropping it can wait for the outbox to
//! be pushed without blocking the application's own runtime.
//!
//! Most document calls are `async` in shape but synchronous inside: see
//! [Blocking](SyncEngine#blocking) for which, what they cost, and which ones run on the
//! engine's threads instead.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sync_core::model::{DEFAULT_COLLECTION, validate_collection, validate_document_id};
use sync_core::patch::{Patch, diff, merge_diff, parse_patch};
use sync_core::replica::{Replica, new_change_id};

use crate::config::{Auth, SyncConfig};
use crate::error::{Result, SyncError};
use crate::events::{EventDispatcher, EventStream, EventType, SyncEvent};
use crate::local::{self, DocRow, Document, LocalStore};
use crate::shared::Shared;
use crate::topics::{ANSWER_TIMEOUT, Key, Publishing, Subscription};

/// Largest document content accepted locally (the server's default limit).
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The offline-first sync engine.
///
/// # Blocking
///
/// `create_document`, `create_document_with_id`, `create_document_in`,
/// `update_document`, `patch_document`, `replace_document`, `delete_document` and
/// `get_document` are `async` for the shape of the API, but do their work on the calling
/// thread before their future first returns: they take the local database's lock and run
/// one SQLite transaction on one row. That is fast (a local write's p99 is 0.06–0.15 ms
/// in `docs/BENCHMARKS.md`), since it does not wait for the disk: WAL with
/// `synchronous=NORMAL`, checkpoints on a background thread. Handing each call to another
/// thread would cost about as much again, so they stay synchronous. Two things can make
/// one wait longer: the background connection holding the lock while it stores a
/// catch-up page (one transaction of up to `catch_up_page` changes, a few milliseconds),
/// and another process holding the database file's write lock (up to SQLite's 5 s busy
/// timeout; do not share the file). An application whose executor threads cannot afford
/// such a stall calls them from `tokio::task::spawn_blocking`. `pending_count` takes the
/// same lock; `new`/`with_config` open the database on the calling thread (once,
/// milliseconds), and `shutdown` (like dropping the engine) runs a last checkpoint of the
/// WAL into the database file on the calling thread, which waits for the disk.
///
/// `list_documents`, `count_documents` and the checks of `wait_for_sync`, whose work
/// grows with the number of documents, run on the engine's own blocking threads: they do
/// not block the caller's executor.
pub struct SyncEngine {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<()>>,
    _checkpointer: crate::local::Checkpointer,
}

impl SyncEngine {
    /// Creates an engine from the four essentials: the local database (URL or path,
    /// created when missing), the server URL, an API key (`rpa_…`, secret from
    /// `SYNC_API_SECRET`) or a token/JWT, and the user (email for API keys, user id for
    /// tokens). Works offline: it connects when the server is reachable.
    ///
    /// Opens the local database on the calling thread, like [`SyncEngine::with_config`].
    pub async fn new(database: &str, server_url: &str, credential: &str, user: &str) -> Result<SyncEngine> {
        let auth = Auth::from_credential(credential, std::env::var("SYNC_API_SECRET").ok())?;
        Self::with_config(SyncConfig::new(database, server_url, user, auth))
    }

    /// Creates an engine with every option explicit. Opens (or creates) the local
    /// database on the calling thread, and starts the engine's runtime and its
    /// checkpoint thread.
    pub fn with_config(mut config: SyncConfig) -> Result<SyncEngine> {
        if config.user.trim().is_empty() {
            return Err(SyncError::Config("the user (email or user id) is empty".into()));
        }
        if !(config.server_url.starts_with("ws://") || config.server_url.starts_with("wss://")) {
            return Err(SyncError::Config(format!(
                "server URL must start with ws:// or wss:// (got {:?})",
                config.server_url
            )));
        }
        config.check_collections()?;
        let local = LocalStore::open(&config.database)?;
        let checkpointer = crate::local::Checkpointer::start(&config.database, Duration::from_millis(500))?;
        let shared = Arc::new(Shared::new(config, local)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sync-client")
            .enable_all()
            .build()
            .map_err(|source| SyncError::Thread { what: "the engine's runtime", source })?;
        let task = runtime.spawn(crate::connection::run(Arc::clone(&shared)));
        Ok(SyncEngine { shared, runtime: Some(runtime), task: Some(task), _checkpointer: checkpointer })
    }

    /// This replica's id (stable for the local database).
    pub fn client_id(&self) -> &str {
        self.shared.client_id()
    }

    /// The user id the server knows this user as (`auth_success.user_id`; for API keys,
    /// derived from the email), kept in the local database: `None` until the engine has
    /// connected once. A document whose [`Document::owner`] differs from it is another
    /// user's, shared with this one.
    pub fn user_id(&self) -> Option<String> {
        self.shared.user_id()
    }

    /// Creates a document in the default collection.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn create_document(&self, content: Value) -> Result<Document> {
        self.create_now(None, DEFAULT_COLLECTION, content)
    }

    /// Creates a document with a chosen id (1–128 chars of `[A-Za-z0-9._:-]`).
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn create_document_with_id(&self, id: &str, content: Value) -> Result<Document> {
        self.create_now(Some(id), DEFAULT_COLLECTION, content)
    }

    /// Creates a document in a collection (`[a-z0-9_-]{1,64}`).
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn create_document_in(&self, collection: &str, content: Value) -> Result<Document> {
        self.create_now(None, collection, content)
    }

    // The calls below do their work synchronously (one local transaction); the async
    // methods wrap them, and the C ABI calls them directly.

    pub(crate) fn create_now(&self, id: Option<&str>, collection: &str, content: Value) -> Result<Document> {
        let id = match id {
            Some(id) => {
                validate_document_id(id).map_err(|e| SyncError::InvalidInput(e.to_string()))?;
                id.to_owned()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        validate_collection(collection).map_err(|e| SyncError::InvalidInput(e.to_string()))?;
        check_size(&content)?;
        let row = DocRow {
            id: id.clone(),
            collection: collection.to_owned(),
            replica: Replica::created_locally(content, new_change_id(), self.shared.policy(collection)),
            conflict: false,
            owner: self.shared.user_id(),
        };
        self.shared.transaction(|tx| {
            if local::load(tx, &id, &|c| self.shared.policy(c))?.is_some() {
                return Err(SyncError::InvalidInput(format!("a document with id {id:?} already exists")));
            }
            local::save(tx, &row).map(drop)
        })?;
        self.shared.emit_document(EventType::DocumentCreated, &row, false);
        self.shared.local_change();
        // A row created locally always has a view; `NotFound` is what `edit` answers too.
        row.document().ok_or(SyncError::NotFound(id))
    }

    /// Merges `partial` into the content (RFC 7396: named members set, `null` removes);
    /// only the members that change are sent.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn update_document(&self, id: impl AsRef<str>, partial: Value) -> Result<Document> {
        self.update_now(id.as_ref(), partial)
    }

    /// Applies RFC 6902 operations (a JSON array) to the content.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn patch_document(&self, id: impl AsRef<str>, patch: Value) -> Result<Document> {
        self.patch_now(id.as_ref(), patch)
    }

    /// Replaces the whole content; only the differences are sent.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn replace_document(&self, id: impl AsRef<str>, content: Value) -> Result<Document> {
        self.edit(id.as_ref(), |view| Ok(diff(view, &content)))
    }

    pub(crate) fn update_now(&self, id: &str, partial: Value) -> Result<Document> {
        self.edit(id, |view| Ok(merge_diff(view, &partial)))
    }

    pub(crate) fn patch_now(&self, id: &str, patch: Value) -> Result<Document> {
        let ops = parse_patch(patch).map_err(|e| SyncError::InvalidInput(format!("invalid patch: {e}")))?;
        self.edit(id, move |_| Ok(ops))
    }

    fn edit(&self, id: &str, ops: impl FnOnce(&Value) -> Result<Patch>) -> Result<Document> {
        let row = self.shared.transaction(|tx| {
            let mut row =
                local::load(tx, id, &|c| self.shared.policy(c))?.ok_or_else(|| SyncError::NotFound(id.to_owned()))?;
            let view = row.replica.view().ok_or_else(|| SyncError::NotFound(id.to_owned()))?;
            let patch = ops(&view)?;
            let new_view = row
                .replica
                .local_update(patch, new_change_id())
                .map_err(|e| SyncError::InvalidInput(format!("patch does not apply: {e}")))?;
            check_size(&new_view)?;
            local::save(tx, &row)?;
            Ok(row)
        })?;
        self.shared.emit_document(EventType::DocumentUpdated, &row, false);
        self.shared.local_change();
        row.document().ok_or_else(|| SyncError::NotFound(id.to_owned()))
    }

    /// Deletes a document.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn delete_document(&self, id: impl AsRef<str>) -> Result<()> {
        self.delete_now(id.as_ref())
    }

    pub(crate) fn delete_now(&self, id: &str) -> Result<()> {
        let row = self.shared.transaction(|tx| {
            let mut row =
                local::load(tx, id, &|c| self.shared.policy(c))?.ok_or_else(|| SyncError::NotFound(id.to_owned()))?;
            if row.replica.view().is_none() {
                return Err(SyncError::NotFound(id.to_owned()));
            }
            row.replica.local_delete(new_change_id());
            local::save(tx, &row)?;
            Ok(row)
        })?;
        let mut event = SyncEvent::new(EventType::DocumentDeleted);
        event.document_id = Some(row.id.clone());
        self.shared.emit(event);
        self.shared.local_change();
        Ok(())
    }

    /// A document (local changes included); `NotFound` when missing or deleted.
    ///
    /// Synchronous and fast: one local transaction on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn get_document(&self, id: impl AsRef<str>) -> Result<Document> {
        self.get_now(id.as_ref())
    }

    pub(crate) fn get_now(&self, id: &str) -> Result<Document> {
        self.shared.load(id)?.and_then(|row| row.document()).ok_or_else(|| SyncError::NotFound(id.to_owned()))
    }

    /// Every document, or those of one collection, ordered by id.
    ///
    /// Reads every row, so it runs on the engine's blocking threads.
    pub async fn list_documents(&self, collection: Option<&str>) -> Result<Vec<Document>> {
        let collection = collection.map(str::to_owned);
        self.off_executor(move |shared| shared.list(collection.as_deref())).await
    }

    pub(crate) fn list_now(&self, collection: Option<&str>) -> Result<Vec<Document>> {
        self.shared.list(collection)
    }

    /// How many documents there are locally.
    ///
    /// Counts every row, so it runs on the engine's blocking threads.
    pub async fn count_documents(&self) -> Result<u64> {
        self.off_executor(Shared::count).await
    }

    pub(crate) fn count_now(&self) -> Result<u64> {
        self.shared.count()
    }

    /// Whether the engine is connected and authenticated.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Local changes waiting for the server. Takes the local database's lock for one
    /// indexed query (see [Blocking](SyncEngine#blocking)).
    pub fn pending_count(&self) -> Result<u64> {
        self.shared.pending_count()
    }

    /// The newest server sequence stored locally.
    pub fn last_synced_sequence(&self) -> u64 {
        self.shared.cursor()
    }

    /// Pushes pending changes now and, when disconnected, retries the connection now.
    pub fn sync_now(&self) {
        self.shared.sync_now();
    }

    /// Waits until connected, caught up and with no pending changes, or `timeout`.
    ///
    /// It looks at the outbox again after every change of the connection or the outbox;
    /// those looks run on the engine's blocking threads, since a large outbox keeps
    /// changing while it is pushed.
    pub async fn wait_for_sync(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed();
            if self.shared.is_caught_up() && self.off_executor(Shared::pending_count).await? == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let pending = self.off_executor(Shared::pending_count).await?;
                return Err(SyncError::Timeout(format!(
                    "not in sync after {timeout:?} (connected: {}, pending changes: {pending})",
                    self.is_connected()
                )));
            }
        }
    }

    // Topics (PROTOCOL.md §4.1): live messages, not stored. See the `topics` module for
    // the guarantees.

    /// Subscribes to a topic name (`team.42.chat`) or pattern (`team.*.chat`, `team.>`):
    /// the handle yields every message published on a matching topic from now on,
    /// until it is dropped (or [`SyncEngine::unsubscribe`] is called). A message reaches
    /// every local subscription it matches.
    ///
    /// The name is checked here first (an invalid one is `InvalidInput`). While
    /// connected, this waits for the server's answer (at most 10 s): a refusal
    /// (`forbidden` by the access rules, too many subscriptions) is
    /// `SyncError::Server`. While offline it returns at once; the subscription is made
    /// when the engine connects. It is renewed after every reconnect, recovering what was
    /// published meanwhile on topics whose history the server keeps; when that is not
    /// possible the handle yields a [`Gap::NotRecovered`](crate::Gap).
    ///
    /// `broadcast` and the personal topic (see [`SyncEngine::subscribe_personal`]) reach
    /// every session without subscribing: a subscription to them only routes them to
    /// this handle.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription> {
        let (subscription, answer) = self.shared.topics().subscribe(Key::Topic(topic.to_owned()))?;
        if let Some(answer) = answer {
            match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
                // Answered, or the connection ended first (then it is renewed on the next).
                Ok(Ok(Ok(())) | Err(_)) => {}
                Ok(Ok(Err(refusal))) => return Err(refusal.into()),
                Err(_) => {
                    return Err(SyncError::Timeout(format!(
                        "no answer to subscribe {topic:?} within {ANSWER_TIMEOUT:?}"
                    )));
                }
            }
        }
        Ok(subscription)
    }

    /// Subscribes to this user's personal topic, `user.<user id>`: what the user's other
    /// devices, admins' REST calls and the server send to this user. The server delivers
    /// it to every session of the user without subscribing, so this works before the
    /// user id is known and needs no answer.
    pub fn subscribe_personal(&self) -> Result<Subscription> {
        Ok(self.shared.topics().subscribe(Key::Personal)?.0)
    }

    /// The personal topic of this user (`user.<user id>`, to publish to the user's other
    /// devices); `None` until the engine has connected once.
    pub fn personal_topic(&self) -> Option<String> {
        self.user_id().map(|id| sync_core::topic::personal_topic(&id))
    }

    /// Ends the subscription `topic` (as subscribed): every handle of it closes (its
    /// `recv` answers `None` once drained) and the server is told. Not subscribed is not
    /// an error.
    pub fn unsubscribe(&self, topic: &str) -> Result<()> {
        self.shared.topics().unsubscribe(topic)
    }

    /// Publishes `data` (any JSON) on the topic `topic` (a name, no wildcards), to every
    /// session subscribed to it except this one. Await the returned [`Publishing`] for the
    /// server's answer ([`Published`](crate::Published): how many sessions it was queued for, and its offset
    /// on a topic with history) or its refusal (`SyncError::Server` with `forbidden`,
    /// `rate_limit_exceeded`, `payload_too_large`); dropping it does not take the message
    /// back.
    ///
    /// The message is queued for the current connection before this returns. Topic
    /// messages are live, not queued for later: while disconnected this fails with
    /// [`SyncError::NotConnected`], and if the connection drops before the answer the
    /// publish fails with a connection error (the server may or may not have delivered
    /// it). An invalid name is `InvalidInput`, and so is a publish while 1,024 others
    /// still wait for their answers.
    pub fn publish(&self, topic: &str, data: Value) -> Result<Publishing> {
        Ok(Publishing { answer: self.shared.topics().publish(topic, data, false)? })
    }

    /// [`SyncEngine::publish`], and this session receives the message too when one of
    /// its subscriptions matches (`echo`).
    pub fn publish_echo(&self, topic: &str, data: Value) -> Result<Publishing> {
        Ok(Publishing { answer: self.shared.topics().publish(topic, data, true)? })
    }

    /// Runs `future` to completion on the engine's runtime, blocking the calling thread
    /// (which must not be an async runtime's): for the C ABI's calls that wait for the
    /// server.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        let runtime = self.runtime.as_ref().ok_or(SyncError::Shutdown)?;
        Ok(runtime.block_on(future))
    }

    /// A dispatcher to register callbacks and run them on the calling thread.
    pub fn event_dispatcher(&self) -> EventDispatcher {
        self.shared.event_dispatcher()
    }

    /// Events as an async stream.
    pub fn events(&self) -> EventStream {
        self.shared.event_stream()
    }

    /// Stops the engine: for up to the grace period, pushes the outbox (connecting if
    /// needed); what remains stays queued for the next start.
    ///
    /// Its last step is a checkpoint of the local database on the calling thread (see
    /// [Blocking](SyncEngine#blocking)).
    pub async fn shutdown(mut self) -> Result<()> {
        self.shared.topics().close();
        self.shared.flush_and_stop();
        if let Some(task) = self.task.take() {
            let grace = self.shared.config().shutdown_grace + Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, task).await;
        }
        self.shared.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        Ok(())
    }

    /// Runs `f` on the engine's blocking threads, so that work that grows with the
    /// database does not hold up the caller's executor. A panic in `f` is resumed here,
    /// as if `f` had run on the calling thread.
    async fn off_executor<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // Only `shutdown` and `drop` take the runtime, and neither leaves a `&self` behind.
        let Some(runtime) = &self.runtime else { return Err(SyncError::Shutdown) };
        let shared = Arc::clone(&self.shared);
        match runtime.spawn_blocking(move || f(&shared)).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Not run: the runtime is shutting down.
                Err(_) => Err(SyncError::Shutdown),
            },
        }
    }
}

impl Drop for SyncEngine {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        self.shared.topics().close();
        self.shared.flush_and_stop();
        if let Some(task) = self.task.take() {
            // The engine's own thread does the work, so waiting here cannot deadlock even
            // when the application drops the engine on one of its async workers.
            let (done, wait) = std::sync::mpsc::channel();
            runtime.spawn(async move {
                let _ = task.await;
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(self.shared.config().shutdown_grace + Duration::from_secs(1));
        }
        self.shared.stop();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside an async runtime a blocking shutdown would panic: let the engine's
            // thread wind down on its own.
            runtime.shutdown_background();
        } else {
            // From plain threads (and C), join the engine's thread so nothing outlives it.
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn check_size(content: &Value) -> Result<()> {
    let size = serde_json::to_vec(content)?.len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(SyncError::InvalidInput(format!("document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")));
    }
    Ok(())
}
