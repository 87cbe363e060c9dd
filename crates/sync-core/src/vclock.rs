//! Vector clocks: per-replica counts of changes, compared and merged.
//!
//! The server keeps one per document for information (PROTOCOL.md §3); ordering and
//! merging of edits are decided by revisions and the transform, not by the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How two clocks relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockOrdering {
    /// Every count of `self` is ≤ the other's and at least one is smaller.
    Before,
    /// The reverse of `Before`.
    After,
    /// Identical counts.
    Equal,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A vector clock: client id → number of that client's changes included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VectorClock(pub BTreeMap<String, u64>);

impl VectorClock {
    /// An empty clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The count for one replica (0 when absent).
    pub fn get(&self, replica: &str) -> u64 {
        self.0.get(replica).copied().unwrap_or(0)
    }

    /// Counts one more change by `replica`.
    pub fn increment(&mut self, replica: &str) {
        *self.0.entry(replica.to_owned()).or_insert(0) += 1;
    }

    /// Takes the element-wise maximum with `other`.
    pub fn merge(&mut self, other: &VectorClock) {
        for (replica, &count) in &other.0 {
            let entry = self.0.entry(replica.clone()).or_insert(0);
            *entry = (*entry).max(count);
        }
    }

    /// Compares two clocks (absent entries count as 0).
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        let (mut less, mut greater) = (false, false);
        for replica in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(replica), other.get(replica));
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (true, true) => ClockOrdering::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(entries: &[(&str, u64)]) -> VectorClock {
        VectorClock(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }

    #[test]
    fn compare_covers_all_orderings() {
        let a = clock(&[("x", 1), ("y", 2)]);
        assert_eq!(a.compare(&a.clone()), ClockOrdering::Equal);
        assert_eq!(a.compare(&clock(&[("x", 1), ("y", 3)])), ClockOrdering::Before);
        assert_eq!(a.compare(&clock(&[("x", 1)])), ClockOrdering::After);
        assert_eq!(a.compare(&clock(&[("x", 2), ("y", 1)])), ClockOrdering::Concurrent);
        assert_eq!(clock(&[("x", 0)]).compare(&VectorClock::new()), ClockOrdering::Equal);
    }

    #[test]
    fn merge_takes_maximum() {
        let mut a = clock(&[("x", 1), ("y", 5)]);
        a.merge(&clock(&[("x", 3), ("z", 1)]));
        assert_eq!(a, clock(&[("x", 3), ("y", 5), ("z", 1)]));
        a.increment("x");
        assert_eq!(a.get("x"), 4);
    }
}
