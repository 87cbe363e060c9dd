//! The per-session outbound queue: bounded like a tokio `mpsc` channel, but holding no
//! memory while empty, so an idle session costs about a hundred bytes here instead of
//! the ~2.5 KiB a tokio channel allocates up front (its shared state padded to cache
//! lines, plus a first block of 32 slots).
//!
//! Guarantees:
//! - at most `capacity` items wait; [`Sender::try_send`] never waits and reports `Full`;
//! - one receiver, which gets items in the order they were sent;
//! - [`Receiver::recv`] returns `None` once every sender is gone and nothing is left, and
//!   is cancel-safe: an item leaves the queue only when it is returned;
//! - once the receiver is dropped, `try_send` reports `Closed` and queued items are freed;
//! - a queue that drains after a burst gives its buffer back.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A drained queue whose buffer grew past this many slots frees it: a session that
/// once received a burst should not keep the burst's memory while it idles.
const KEEP_SLOTS: usize = 64;

/// Why an item was not queued; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A bounded queue with one receiver: `(sender, receiver)`. A capacity of 0 counts as 1.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), senders: 1, receiver_alive: true }),
        ready: Notify::new(),
        capacity: capacity.max(1),
    });
    (Sender { shared: Arc::clone(&shared) }, Receiver { shared })
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken when an item arrives or the last sender leaves. `notify_one` keeps a permit
    /// while the receiver is not waiting, so a wake-up that falls between the receiver's
    /// look at the queue and its wait is not lost.
    ready: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The lock guards plain queue operations, which leave the queue consistent even
        // if a panic poisoned it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side; clones share the queue.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// How many items wait in the queue now.
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Queues `item` without waiting.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(item));
            }
            if state.items.len() >= self.shared.capacity {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
        }
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.ready.notify_one();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("capacity", &self.shared.capacity).finish_non_exhaustive()
    }
}

/// The receiving side.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// What the receiver found.
enum Polled<T> {
    Item(T),
    Empty,
    Finished,
}

impl<T> Receiver<T> {
    /// The next item, if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        match self.poll() {
            Polled::Item(item) => Some(item),
            Polled::Empty | Polled::Finished => None,
        }
    }

    /// Waits for the next item; `None` once every sender is gone and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            match self.poll() {
                Polled::Item(item) => return Some(item),
                Polled::Finished => return None,
                Polled::Empty => self.shared.ready.notified().await,
            }
        }
    }

    fn poll(&mut self) -> Polled<T> {
        let mut state = self.shared.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
                    state.items = VecDeque::new();
                }
                Polled::Item(item)
            }
            None if state.senders == 0 => Polled::Finished,
            None => Polled::Empty,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item's destructor may be arbitrary.
        drop(items);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("capacity", &self.shared.capacity).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_come_out_in_order_and_a_full_queue_refuses() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(4));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn sending_to_a_dropped_receiver_is_closed() {
        let (tx, rx) = channel(4);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }

    #[tokio::test]
    async fn recv_waits_for_an_item_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(4);
        let other = tx.clone();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            other.try_send("late").map_err(|_| "not queued")
        });
        assert_eq!(rx.recv().await, Some("late"));
        assert_eq!(sender.await.ok(), Some(Ok(())));
        tx.try_send("queued").map_err(|_| "not queued").unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some("queued"), "items sent before the last sender left still arrive");
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (tx, mut rx) = channel(4);
        let waited = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(waited.is_err());
        tx.try_send(7).map_err(|_| "not queued").unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await, Ok(Some(7)));
    }

    #[test]
    fn a_drained_queue_gives_its_burst_buffer_back() {
        let (tx, mut rx) = channel(1000);
        for i in 0..500 {
            tx.try_send(i).map_err(|_| "not queued").unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }
}
