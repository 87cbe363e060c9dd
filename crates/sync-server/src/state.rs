//! What the HTTP routes, the sessions and the handlers share: the configuration, the
//! store, the hub, the topics, the credential checks, the write path's queue, the limits, and the
//! shutdown signal. `app` builds it once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sync_core::protocol::DecodeLimits;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::backend::AnyStore;
use crate::config::Config;
use crate::hub::Hub;
use crate::ratelimit::RateLimiter;
use crate::topics::Topics;
use crate::writer::WriteRequest;

/// Everything the HTTP routes and sessions share.
pub(crate) struct AppState {
    /// The configuration the server started with.
    pub(crate) config: Arc<Config>,
    pub(crate) store: AnyStore,
    pub(crate) hub: Arc<Hub>,
    /// Topic subscriptions and their fan-out, apart from the hub's documents.
    pub(crate) topics: Arc<Topics>,
    pub(crate) auth: Authenticator,
    /// The write path's queue (bounded: a full queue makes writing sessions wait).
    pub(crate) writes: mpsc::Sender<WriteRequest>,
    pub(crate) limiter: RateLimiter,
    /// Permits for WebSocket connections (the connection limit).
    pub(crate) connection_permits: Arc<Semaphore>,
    /// Open WebSocket connections (authenticated or not).
    pub(crate) connections: AtomicUsize,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Session tasks, awaited at shutdown.
    pub(crate) sessions: TaskTracker,
    pub(crate) next_session: AtomicU64,
    /// Limits applied while decoding messages.
    pub(crate) decode_limits: DecodeLimits,
    /// Deflate contexts shared between connections (no context takeover).
    pub(crate) deflate_pool: yawc::DeflatePool,
    /// Held while the access rules are replaced, one replacement at a time.
    pub(crate) acl_changes: tokio::sync::Mutex<()>,
}

impl AppState {
    /// A new session id (also the one `auth_success` names).
    pub(crate) fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }
}
