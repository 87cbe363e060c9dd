//! The write path's queue: bounded like a channel, but taken from *fairly* — one request
//! of each user in turn — so that one user's flood of changes (each within its limits)
//! does not stand between every other user and the write path.
//!
//! Guarantees:
//! - one user's requests leave in the order they came (so one session's changes, and
//!   its answers, keep their order);
//! - users take turns: a request waits for at most one request of each other user with
//!   requests queued, however many those users queued (or from however many sessions);
//! - at most `capacity` requests wait in all; a sender beyond that waits for room (the
//!   back-pressure a channel gives), and a closed queue refuses new requests while the
//!   write path drains what is already in it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, Semaphore};

use super::request::WriteRequest;

/// Refused: the write path is shutting down.
#[derive(Debug)]
pub(crate) struct Closed;

struct Waiting {
    /// Each user's requests, oldest first.
    by_user: HashMap<String, VecDeque<WriteRequest>>,
    /// Users with requests queued, in the order of their next turn.
    turns: VecDeque<String>,
}

struct Shared {
    waiting: Mutex<Waiting>,
    /// One permit per free place.
    room: Semaphore,
    /// Signalled when a request arrives, or the last sender leaves.
    arrived: Notify,
    /// Senders alive.
    senders: AtomicUsize,
}

/// The sending side (cloned by every session and the HTTP routes).
pub(crate) struct WriteSender {
    shared: Arc<Shared>,
}

impl Clone for WriteSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl Drop for WriteSender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver may be waiting: nothing more can arrive.
            self.shared.arrived.notify_one();
        }
    }
}

/// The write path's side.
pub(crate) struct WriteReceiver {
    shared: Arc<Shared>,
}

/// A queue of at most `capacity` waiting requests.
pub(crate) fn write_queue(capacity: usize) -> (WriteSender, WriteReceiver) {
    let shared = Arc::new(Shared {
        waiting: Mutex::new(Waiting { by_user: HashMap::new(), turns: VecDeque::new() }),
        room: Semaphore::new(capacity.max(1)),
        arrived: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (WriteSender { shared: Arc::clone(&shared) }, WriteReceiver { shared })
}

impl WriteSender {
    /// Queues `request` behind the same user's earlier ones; waits while the queue is full.
    pub(crate) async fn send(&self, request: WriteRequest) -> Result<(), Closed> {
        let permit = self.shared.room.acquire().await.map_err(|_| Closed)?;
        // The place is given back when the write path takes the request.
        permit.forget();
        let mut waiting = self.shared.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let user = request.user_id.clone();
        let queue = waiting.by_user.entry(user.clone()).or_default();
        queue.push_back(request);
        if queue.len() == 1 {
            waiting.turns.push_back(user);
        }
        drop(waiting);
        self.shared.arrived.notify_one();
        Ok(())
    }
}

impl WriteReceiver {
    /// The next request in turn, without waiting.
    pub(crate) fn try_recv(&self) -> Option<WriteRequest> {
        let mut waiting = self.shared.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let user = waiting.turns.pop_front()?;
        let queue = waiting.by_user.get_mut(&user)?;
        let request = queue.pop_front();
        if queue.is_empty() {
            waiting.by_user.remove(&user);
        } else {
            // Back of the line for its next request.
            waiting.turns.push_back(user);
        }
        drop(waiting);
        if request.is_some() {
            self.shared.room.add_permits(1);
        }
        request
    }

    /// The next request in turn; `None` once the queue is empty and closed (or every
    /// sender is gone).
    pub(crate) async fn recv(&mut self) -> Option<WriteRequest> {
        loop {
            let arrived = self.shared.arrived.notified();
            if let Some(request) = self.try_recv() {
                return Some(request);
            }
            if self.shared.room.is_closed() || self.shared.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            arrived.await;
        }
    }

    /// Refuses new requests; those already queued are still received.
    pub(crate) fn close(&mut self) {
        self.shared.room.close();
        self.shared.arrived.notify_one();
    }

    /// How many requests wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.waiting.lock().unwrap_or_else(PoisonError::into_inner).by_user.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use sync_core::protocol::{CreateDocument, NewDocument};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::hub::SessionLink;
    use crate::writer::WriteOp;

    fn request(user: &str, id: &str) -> WriteRequest {
        let (tx, _rx) = crate::queue::channel(1);
        WriteRequest {
            op: WriteOp::Create(CreateDocument {
                document: NewDocument {
                    id: Some(id.to_owned()),
                    collection: None,
                    title: None,
                    content: serde_json::json!({}),
                },
                client_change_id: None,
            }),
            user_id: user.to_owned(),
            client_id: "c".to_owned(),
            reply_to: SessionLink { id: 0, tx, kill: CancellationToken::new() },
            request_id: None,
            queued: std::time::Instant::now(),
        }
    }

    fn id(request: &WriteRequest) -> &str {
        request.op.document_id().unwrap()
    }

    #[tokio::test]
    async fn users_take_turns_and_each_keeps_its_order() {
        let (tx, rx) = write_queue(100);
        for i in 0..5 {
            tx.send(request("flood", &format!("f{i}"))).await.unwrap();
        }
        tx.send(request("alice", "a0")).await.unwrap();
        tx.send(request("bob", "b0")).await.unwrap();
        tx.send(request("alice", "a1")).await.unwrap();
        let order: Vec<String> = std::iter::from_fn(|| rx.try_recv()).map(|r| id(&r).to_owned()).collect();
        assert_eq!(order, ["f0", "a0", "b0", "f1", "a1", "f2", "f3", "f4"]);
        assert_eq!(rx.len(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_holds_senders_back_and_a_closed_one_drains_then_ends() {
        let (tx, mut rx) = write_queue(2);
        tx.send(request("u", "1")).await.unwrap();
        tx.send(request("u", "2")).await.unwrap();
        let sender = tx.clone();
        let third = tokio::spawn(async move { sender.send(request("u", "3")).await });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "no room: the sender waits");
        assert_eq!(id(&rx.recv().await.unwrap()), "1");
        third.await.unwrap().unwrap();
        rx.close();
        assert!(tx.send(request("u", "4")).await.is_err(), "closed: refused");
        assert_eq!(id(&rx.recv().await.unwrap()), "2");
        assert_eq!(id(&rx.recv().await.unwrap()), "3");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = write_queue(4);
        tx.send(request("u", "1")).await.unwrap();
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.map(|r| id(&r).to_owned());
            (first, rx.recv().await.is_none())
        });
        drop(tx);
        assert_eq!(waiter.await.unwrap(), (Some("1".to_owned()), true));
    }
}
