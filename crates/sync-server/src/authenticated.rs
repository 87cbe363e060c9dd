//! A session once it has authenticated: who it is, its place in the hub, the bounded
//! queue its answers and pushes arrive on, and the writes it has handed to the write
//! path. Only authentication creates one, so everything here is always set.
//!
//! Guarantees:
//! - from registration on, every change delivered to the hub that this session may read
//!   reaches its queue (or the session is told it is too slow and ends);
//! - [`Authenticated::settle`] returns once every write handed over before it is
//!   answered, so a read that follows writes sees them.

use std::sync::Arc;
use std::time::Duration;

use sync_core::acl::ReadView;
use sync_core::protocol::RequestId;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::connection::{Connection, Ending};
use crate::hub::{AccessChange, Outbound, Registration, SessionLink};
use crate::queue;
use crate::state::AppState;
use crate::topics::Membership;
use crate::writer::{WriteOp, WriteRequest};

/// Who a session acts for.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) user_id: String,
    /// The replica (device) it speaks for.
    pub(crate) client_id: String,
    /// Partial sync: only changes of these collections are caught up and pushed.
    pub(crate) collections: Option<Arc<[String]>>,
}

impl Identity {
    /// The identity of `principal` on replica `client_id` (a new one when absent).
    /// Admin credentials give a session no more than their user's access: on the
    /// WebSocket the rules decide for everyone (PROTOCOL.md §8).
    pub(crate) fn new(principal: Principal, client_id: Option<String>) -> Self {
        Self {
            user_id: principal.user_id,
            client_id: client_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            collections: None,
        }
    }
}

/// Credentials that came with the upgrade request (`Authorization: Bearer` or `?token=`),
/// checked before the upgrade.
#[derive(Debug)]
pub(crate) struct PreAuth {
    pub(crate) principal: Principal,
    /// `?client_id=`, if given.
    pub(crate) client_id: Option<String>,
    /// `?last_sequence=`, if given.
    pub(crate) last_sequence: Option<u64>,
}

/// The authenticated state of a session.
pub(crate) struct Authenticated {
    pub(crate) identity: Identity,
    /// What the session may read: the view its position in the stream was decided by.
    pub(crate) view: Arc<ReadView>,
    /// A change of that view not yet acted on (see [`Authenticated::take_access_change`]).
    access_change: Option<AccessChange>,
    link: SessionLink,
    rx: queue::Receiver<Outbound>,
    /// Removes the session from the hub when dropped.
    _registration: Registration,
    /// Its topic subscriptions; ends them all when dropped.
    pub(crate) topics: Membership,
    /// Writes handed to the write path and not answered yet.
    pending_writes: usize,
    /// Most unanswered writes before the session stops reading to take their answers:
    /// half its queue, so its own answers never fill it.
    max_pending: usize,
}

impl Authenticated {
    /// Registers the session with the hub. Returns the position its live pushes start
    /// after: read after registering, so every change after it reaches this session.
    pub(crate) fn register(state: &AppState, session_id: u64, identity: Identity) -> (Self, u64) {
        let capacity = state.config.limits.session_queue.max(16);
        let (tx, rx) = queue::channel(capacity);
        let link = SessionLink { id: session_id, tx, kill: CancellationToken::new() };
        let (registration, view) = state.hub.register(&identity, link.clone());
        let delivered = state.hub.delivered();
        let topics = state.topics.join(session_id, &identity.user_id, link.clone());
        let session = Self {
            identity,
            view,
            access_change: None,
            link,
            rx,
            _registration: registration,
            topics,
            pending_writes: 0,
            max_pending: capacity / 2,
        };
        (session, delivered)
    }

    /// The switch the hub pulls when this session must go (its queue overflowed).
    pub(crate) fn kill_switch(&self) -> CancellationToken {
        self.link.kill.clone()
    }

    /// The next item of the session's queue.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        let outbound = self.rx.recv().await;
        self.count(outbound.as_ref());
        outbound
    }

    fn count(&mut self, outbound: Option<&Outbound>) {
        let Some(outbound) = outbound else { return };
        if outbound.completes_write {
            self.pending_writes = self.pending_writes.saturating_sub(1);
        }
        if let Some(change) = &outbound.access {
            // Reads from here on go by the new view; what changed is acted on as soon as
            // the session can (the connection holds pushes back until then).
            self.view = Arc::clone(&change.new);
            let old = self.access_change.take().map_or_else(|| Arc::clone(&change.old), |earlier| earlier.old);
            self.access_change = Some(AccessChange { old, new: Arc::clone(&change.new) });
        }
    }

    /// A change of what the session may read that it has not acted on yet: the
    /// documents it may now read are to be sent, those it may no longer read revoked.
    /// Several changes in a row come as one.
    pub(crate) fn take_access_change(&mut self) -> Option<AccessChange> {
        self.access_change.take()
    }

    /// Whether a change of the access rules waits to be acted on.
    pub(crate) fn has_access_change(&self) -> bool {
        self.access_change.is_some()
    }

    /// Moves what is already queued for this session into its output (a bounded number
    /// at a time, so a busy queue cannot starve the socket).
    pub(crate) fn drain_into(&mut self, conn: &mut Connection) -> Result<(), Ending> {
        for _ in 0..256 {
            let Some(outbound) = self.rx.try_recv() else { return Ok(()) };
            self.count(Some(&outbound));
            conn.deliver(outbound)?;
        }
        Ok(())
    }

    /// Moves everything already queued for this session into its output: what a
    /// subscription delivered before it ended goes out before the reply that says so.
    pub(crate) fn drain_all(&mut self, conn: &mut Connection) -> Result<(), Ending> {
        while let Some(outbound) = self.rx.try_recv() {
            self.count(Some(&outbound));
            conn.deliver(outbound)?;
        }
        Ok(())
    }

    /// Hands a change to the write path; its answer arrives through the session queue.
    pub(crate) async fn submit(
        &mut self,
        state: &AppState,
        op: WriteOp,
        request_id: Option<RequestId>,
    ) -> Result<(), Ending> {
        let request = WriteRequest {
            op,
            user_id: self.identity.user_id.clone(),
            client_id: self.identity.client_id.clone(),
            reply_to: self.link.clone(),
            request_id,
        };
        self.pending_writes += 1;
        state.writes.send(request).await.map_err(|_| Ending::ShuttingDown)
    }

    /// Waits until this session's earlier writes are answered, so a read sees them.
    pub(crate) async fn settle(&mut self, state: &AppState, conn: &mut Connection) -> Result<(), Ending> {
        self.wait_for_answers(state, conn, 0).await
    }

    /// Makes room for one more write. A client may send thousands of changes in one
    /// frame; their answers come back on this session's bounded queue, and if the
    /// session kept handing changes over without taking the answers, its own answers
    /// would fill the queue and the hub would drop it as too slow. So once half the queue
    /// is owed, the session takes answers (and pushes) into its output and writes them
    /// out before it reads on: the back-pressure falls on reading the client's messages.
    pub(crate) async fn make_room(&mut self, state: &AppState, conn: &mut Connection) -> Result<(), Ending> {
        self.wait_for_answers(state, conn, self.max_pending.saturating_sub(1)).await
    }

    /// Takes what the session's queue brings until at most `owed` writes are unanswered.
    async fn wait_for_answers(&mut self, state: &AppState, conn: &mut Connection, owed: usize) -> Result<(), Ending> {
        let kill = self.kill_switch();
        while self.pending_writes > owed {
            let outbound = tokio::select! {
                biased;
                () = state.shutdown.cancelled() => return Err(Ending::ShuttingDown),
                () = kill.cancelled() => return Err(Ending::TooSlow),
                outbound = self.recv() => outbound,
            };
            match outbound {
                Some(outbound) => conn.deliver(outbound)?,
                None => return Err(Ending::Gone),
            }
            if conn.must_flush() {
                conn.flush().await?;
            }
        }
        Ok(())
    }

    /// Waits (bounded) for the answers to this session's changes already handed to the
    /// write path. The write path keeps committing while sessions close, so without this
    /// a change sent just before shutdown could be committed and never acknowledged.
    pub(crate) async fn settle_at_shutdown(&mut self, conn: &mut Connection) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.pending_writes > 0 {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(outbound)) => {
                    if conn.deliver(outbound).is_err() {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}
