//! A topic's recent messages, held in memory for recovery (PROTOCOL.md §4.1): numbered
//! 1, 2, … within an epoch, at most `messages` of them, none older than `keep`.
//!
//! Guarantees: offsets increase by one per message, without gaps, for as long as the
//! history lives (a new history has a new epoch); [`History::since`] gives every held
//! message after an offset, in order, or says that one of them is no longer held.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One held message: its `data` frame, offset and epoch included.
struct Held {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

/// The held messages of one topic.
pub(super) struct History {
    epoch: Arc<str>,
    /// The offset the next message gets.
    next: u64,
    held: VecDeque<Held>,
    messages: usize,
    keep: Duration,
}

/// What a subscriber asking for the messages after an offset gets.
pub(super) enum Recovery {
    /// Every message after the offset, in order (possibly none).
    Complete(Vec<Bytes>),
    /// Some message after the offset is no longer held, or the epoch differs.
    Gap,
}

impl History {
    pub(super) fn new(epoch: Arc<str>, messages: usize, keep: Duration) -> Self {
        Self { epoch, next: 1, held: VecDeque::new(), messages: messages.max(1), keep }
    }

    pub(super) fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The offset of the latest message (0 before the first).
    pub(super) fn latest(&self) -> u64 {
        self.next - 1
    }

    /// Whether no message is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Drops the messages older than `keep`.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.held.front().is_some_and(|h| now.duration_since(h.at) > self.keep) {
            self.held.pop_front();
        }
    }

    /// Numbers a message and holds it; `frame` builds its frame from its offset.
    pub(super) fn push(&mut self, now: Instant, frame: impl FnOnce(u64, &str) -> Bytes) -> (u64, Bytes) {
        self.expire(now);
        let offset = self.next;
        self.next += 1;
        let frame = frame(offset, &self.epoch);
        if self.held.len() >= self.messages {
            self.held.pop_front();
        }
        self.held.push_back(Held { offset, at: now, frame: frame.clone() });
        (offset, frame)
    }

    /// The held messages after `offset` of `epoch` (the current one when `None`).
    pub(super) fn since(&mut self, now: Instant, offset: u64, epoch: Option<&str>) -> Recovery {
        self.expire(now);
        if epoch.is_some_and(|e| e != &*self.epoch) || offset > self.latest() {
            return Recovery::Gap;
        }
        let oldest = self.held.front().map_or(self.next, |h| h.offset);
        if oldest > offset + 1 {
            return Recovery::Gap;
        }
        Recovery::Complete(self.held.iter().filter(|h| h.offset > offset).map(|h| h.frame.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, epoch: &str) -> Bytes {
        Bytes::from(format!("{epoch}:{offset}"))
    }

    fn complete(recovery: Recovery) -> Vec<Bytes> {
        match recovery {
            Recovery::Complete(frames) => frames,
            Recovery::Gap => panic!("expected a complete recovery"),
        }
    }

    #[test]
    fn offsets_count_up_and_recovery_needs_every_message_after_the_offset() {
        let now = Instant::now();
        let mut history = History::new(Arc::from("e1"), 3, Duration::from_secs(60));
        assert_eq!(history.latest(), 0);
        assert!(complete(history.since(now, 0, None)).is_empty(), "nothing published, nothing missed");
        for _ in 0..5 {
            history.push(now, frame);
        }
        assert_eq!(history.latest(), 5);
        assert_eq!(complete(history.since(now, 2, Some("e1"))), ["e1:3", "e1:4", "e1:5"]);
        assert_eq!(complete(history.since(now, 4, None)), ["e1:5"]);
        assert!(complete(history.since(now, 5, None)).is_empty());
        assert!(matches!(history.since(now, 1, None), Recovery::Gap), "offset 2 is no longer held");
        assert!(matches!(history.since(now, 3, Some("e0")), Recovery::Gap), "another epoch");
        assert!(matches!(history.since(now, 6, None), Recovery::Gap), "an offset never given");
    }

    #[test]
    fn old_messages_expire() {
        let start = Instant::now();
        let mut history = History::new(Arc::from("e"), 10, Duration::from_secs(5));
        history.push(start, frame);
        history.push(start + Duration::from_secs(4), frame);
        let later = start + Duration::from_secs(6);
        assert!(matches!(history.since(later, 0, None), Recovery::Gap), "offset 1 expired");
        assert_eq!(complete(history.since(later, 1, None)), ["e:2"]);
        history.expire(start + Duration::from_secs(10));
        assert!(history.is_empty());
        assert_eq!(history.latest(), 2, "the numbering goes on");
    }
}
