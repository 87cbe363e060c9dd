//! The background connection: connect, authenticate, catch up from the stored cursor,
//! push the outbox, apply what the server sends; on failure, reconnect with capped
//! exponential backoff and jitter.
//!
//! Guarantees:
//! - remote changes are applied in sequence order, each exactly once (the session resumes
//!   from the cursor: the server sends what the access rules changed since, then the
//!   catch-up pages, and holds live pushes until the last page; a push at or below the
//!   cursor is skipped), and the cursor is stored in the same local transaction as the
//!   change it covers;
//! - at most one change per document is in flight, sent with a `client_change_id` and
//!   `request_id` equal to it; documents are pipelined, and after a reconnect the
//!   in-flight change is sent again under the same id, so the server applies it once;
//! - a refused change is rolled back locally and reported, never retried forever; the
//!   one exception is an update the server found too far behind (`version_mismatch`)
//!   while this replica already knows newer revisions: having been rebased here over
//!   them, it is sent again against the newest, at most `MAX_RESENDS` (3) times.
//!
//! The files, in the order a connection goes through them: [`reconnect`] (the
//! connect/backoff loop), [`handshake`] (connect and authenticate), [`session`] (one
//! connected session's loop), [`catch_up`] (taking the server's catch-up), [`incoming`]
//! (what the server sends), [`apply`] (a remote change applied to its local row and
//! reported), [`outbox`] (what goes to the server), [`topics`] (topic subscriptions and
//! publishes on the connection), and [`wire`] (frames on the socket).
//! Each depends only on those after it in this list, and on [`crate::shared`].
//!
//! **Blocking.** The connection task is the only task on the engine's own runtime (one
//! worker thread, built by `SyncEngine::with_config`). Its SQLite work (one local
//! transaction per message, or per catch-up page of up to `catch_up_page` changes) runs on
//! that worker directly, and blocks nothing but this task, which needs the result before
//! it reads on: moving it to `spawn_blocking` would add a thread hop per message for no
//! one's benefit. Architecture invariant: nothing else that must make progress meanwhile
//! is spawned on that runtime.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sync_core::protocol::ClientEnvelope;

use crate::shared::Shared;

mod apply;
mod catch_up;
mod handshake;
mod incoming;
mod outbox;
mod reconnect;
mod session;
mod tls;
mod topics;
mod wire;

pub(crate) use reconnect::run;

/// Why a connected session ended.
enum Ended {
    /// The engine is stopping (or the outbox was pushed during shutdown).
    Stopped,
    /// The connection failed; reconnect.
    Lost(String),
}

/// One connected session. Its methods live in the files of this folder, each with the
/// concern it is named for.
struct Session {
    /// The state shared with the application's handle.
    shared: Arc<Shared>,
    /// The authenticated WebSocket.
    socket: wire::Socket,
    /// Messages queued for the next flush (sent together, then flushed once).
    outbox: Vec<ClientEnvelope>,
    /// Documents whose state was asked for again after a gap.
    resyncing: HashSet<String>,
    /// Requests numbered so far on this connection (for their ids).
    requests: u64,
    /// Changes applied since the cursor was last acknowledged to the server.
    since_ack: u64,
    /// The topic subscriptions the server holds for this session: text → registry entry.
    topics_held: BTreeMap<String, u64>,
    /// Topic requests awaiting an answer, by request id.
    topic_requests: HashMap<String, topics::Pending>,
    /// The server could not tell what this replica could read at its cursor
    /// (`auth_success.access_reconcile`): a full sync lists what it may read, and the
    /// documents of others not listed go.
    reconcile: Reconcile,
}

/// Where the reconciliation of documents of others with a full sync stands.
enum Reconcile {
    /// Nothing to reconcile.
    No,
    /// To be asked for once the catch-up is done.
    Wanted,
    /// Asked for with this request id; the documents listed so far.
    Listing(String, HashSet<String>),
}
