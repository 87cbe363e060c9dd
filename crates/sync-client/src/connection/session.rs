//! One connected session: catch up, then send the outbox and apply what the server
//! sends until the connection fails or the engine stops. Reports whether to reconnect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use sync_core::protocol::{ClientEnvelope, ClientMessage, RequestFullSync, RequestId};
use yawc::Frame;

use super::wire::{Socket, next_messages};
use super::{Ended, Reconcile, Session};
use crate::events::{EventType, SyncEvent};
use crate::shared::Shared;

impl Session {
    /// A session on a socket that has just authenticated.
    pub(super) fn new(shared: Arc<Shared>, socket: Socket, access_reconcile: bool) -> Self {
        let reconcile = if access_reconcile { Reconcile::Wanted } else { Reconcile::No };
        Self {
            shared,
            socket,
            outbox: Vec::new(),
            resyncing: HashSet::new(),
            requests: 0,
            since_ack: 0,
            topics_held: BTreeMap::new(),
            topic_requests: HashMap::new(),
            reconcile,
        }
    }

    /// Runs the session until the connection fails or the engine stops; says which.
    /// The topic subscriptions are renewed first, so that live messages flow during a
    /// long catch-up too.
    pub(super) async fn run(mut self, user_id: &str) -> Ended {
        let topics = Arc::clone(self.shared.topics());
        topics.online(user_id);
        self.sync_topics();
        if let Err(e) = self.flush().await {
            return Ended::Lost(e.to_string());
        }
        self.shared.emit(SyncEvent::new(EventType::SyncStarted));
        let synced = match self.catch_up().await {
            Ok(n) => n,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        self.shared.caught_up();
        let mut event = SyncEvent::new(EventType::SyncCompleted);
        event.numeric_data = synced;
        self.shared.emit(event);
        self.ack_cursor();
        if matches!(self.reconcile, Reconcile::Wanted) {
            let request_id = self.request_id("reconcile");
            let collections = self.shared.config().collections.clone();
            let message = ClientMessage::RequestFullSync(RequestFullSync { collections });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id.clone())));
            self.reconcile = Reconcile::Listing(request_id, HashSet::new());
        }
        if let Err(e) = self.queue_outbox(true) {
            return Ended::Lost(e.to_string());
        }
        let mut ping = tokio::time::interval(Duration::from_secs(20));
        ping.tick().await;
        loop {
            if let Err(e) = self.flush().await {
                return Ended::Lost(e.to_string());
            }
            if self.shared.is_flushing() && self.shared.pending_count().unwrap_or(0) == 0 {
                let _ = self.socket.send(Frame::close(yawc::close::CloseCode::Normal, "client shutting down")).await;
                return Ended::Stopped;
            }
            tokio::select! {
                frame = next_messages(&mut self.socket) => match frame {
                    Ok(messages) => {
                        for message in messages {
                            if let Err(e) = self.on_message(message) {
                                tracing::warn!(error = %e, "applying a server message failed");
                                let mut event = SyncEvent::new(EventType::SyncError);
                                event.error = Some(e.to_string());
                                self.shared.emit(event);
                            }
                        }
                    }
                    Err(e) => return Ended::Lost(e.to_string()),
                },
                () = self.shared.woken() => {
                    // Connected, `sync_now` has nothing to cut short.
                    self.shared.take_sync_now();
                    if let Err(e) = self.queue_outbox(false) {
                        return Ended::Lost(e.to_string());
                    }
                }
                () = topics.woken() => self.sync_topics(),
                _ = ping.tick() => self.outbox.push(ClientEnvelope::new(ClientMessage::Ping)),
                () = self.shared.stopped() => return Ended::Stopped,
                () = self.shared.flushing(), if !self.shared.is_flushing() => {}
            }
        }
    }
}
