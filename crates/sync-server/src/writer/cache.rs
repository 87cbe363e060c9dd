//! The hot-document cache of the write path: recent documents with their latest
//! revisions' patches, so most updates are decided (and most stale ones rebased) without
//! reading the database.
//!
//! Only the write path touches it. It holds decided state: a document is updated here
//! when a change to it is decided, before its batch commits, so the next batch can be
//! decided while this one is on its way to the store. What is not committed yet is
//! marked so (and its history is never trimmed); when a batch fails to commit, every
//! document it and the batches decided after it touched is evicted, so what stays is
//! what the store has.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sync_core::{Document, Patch};

/// Patches of one committed update, kept to rebase stale changes. Shared, not copied:
/// a change a hundred revisions stale takes a hundred entries out of the cache.
#[derive(Clone, Debug)]
pub(crate) struct HistEntry {
    /// The revision the update produced.
    pub(crate) revision: u64,
    /// The patch as applied.
    pub(crate) forward: Arc<Patch>,
    /// The patch that undoes it.
    pub(crate) reverse: Arc<Patch>,
}

/// Committed updates kept per document for rebasing. Updates not known to be committed
/// are always kept: the store cannot serve them yet, so a stale change rebased over them
/// would find its history incomplete (a hot document written by many clients runs
/// hundreds of revisions ahead of the last commit while batches are in flight). They are
/// bounded by the write path's batch size times its pipeline depth.
const HISTORY: usize = 64;
/// A document whose stale changes reach further back keeps as much as they needed, up to
/// this: a document edited by a hundred clients at once sees each change arrive about a
/// hundred revisions late, and would otherwise read that history from the store for
/// every change.
const HISTORY_MAX: usize = 1024;

/// A cached document and its recent updates (contiguous, ending at its revision).
#[derive(Clone, Debug)]
pub(crate) struct CachedDoc {
    /// The current state (shared with the change that produced it, on its way to the store).
    pub(crate) doc: Arc<Document>,
    history: VecDeque<HistEntry>,
    /// The newest revision known to be committed; history above it is never trimmed.
    committed: u64,
    /// Committed updates kept: [`HISTORY`], or more once stale changes needed more.
    keep: usize,
    last_used: u64,
}

impl CachedDoc {
    /// Drops committed history beyond what is kept.
    fn trim(&mut self) {
        // History is contiguous, so the committed part is the front up to `committed`.
        while self
            .history
            .front()
            .is_some_and(|h| h.revision <= self.committed && self.committed - h.revision >= self.keep as u64)
        {
            self.history.pop_front();
        }
    }
}

impl CachedDoc {
    /// The updates after `base` up to the current revision, if all are kept.
    pub(crate) fn since(&self, base: u64) -> Option<Vec<HistEntry>> {
        let current = self.doc.sync_revision;
        if base >= current {
            return Some(Vec::new());
        }
        let first = self.history.front()?.revision;
        if first > base + 1 {
            return None;
        }
        Some(self.history.iter().filter(|h| h.revision > base).cloned().collect())
    }
}

/// Documents by id, bounded, least recently used out first.
pub(crate) struct DocCache {
    docs: HashMap<String, CachedDoc>,
    capacity: usize,
    clock: u64,
}

impl DocCache {
    /// A cache of at most `capacity` documents.
    pub(crate) fn new(capacity: usize) -> Self {
        Self { docs: HashMap::new(), capacity: capacity.max(16), clock: 0 }
    }

    /// Whether the document is cached (a cached `None` is never stored: absent means unknown).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.docs.contains_key(id)
    }

    /// The cached document, without marking it used.
    pub(crate) fn peek(&self, id: &str) -> Option<&CachedDoc> {
        self.docs.get(id)
    }

    /// The cached document, marking it used.
    pub(crate) fn get(&mut self, id: &str) -> Option<&CachedDoc> {
        self.clock += 1;
        let clock = self.clock;
        self.docs.get_mut(id).map(|entry| {
            entry.last_used = clock;
            &*entry
        })
    }

    /// Records that `revision` of `id` is committed, so history up to it may be trimmed.
    pub(crate) fn mark_committed(&mut self, id: &str, revision: u64) {
        if let Some(entry) = self.docs.get_mut(id) {
            entry.committed = entry.committed.max(revision);
            entry.trim();
        }
    }

    /// Caches a document loaded from the store (no history yet).
    pub(crate) fn insert_loaded(&mut self, doc: Document) {
        self.clock += 1;
        let id = doc.id.clone();
        let committed = doc.sync_revision;
        self.docs.insert(
            id,
            CachedDoc { doc: Arc::new(doc), history: VecDeque::new(), committed, keep: HISTORY, last_used: self.clock },
        );
        self.evict_if_needed();
    }

    /// Adds history loaded from the store in front of what is kept, and keeps that much
    /// from now on (up to [`HISTORY_MAX`]): the next stale change will likely reach as far.
    pub(crate) fn prepend_history(&mut self, id: &str, entries: Vec<HistEntry>) {
        if let Some(entry) = self.docs.get_mut(id) {
            // Read from the store, so committed. Not trimmed here: the caller needs them now.
            if let Some(last) = entries.last() {
                entry.committed = entry.committed.max(last.revision);
            }
            if let Some(first) = entries.first() {
                let reach = usize::try_from(entry.committed.saturating_sub(first.revision) + 1).unwrap_or(usize::MAX);
                entry.keep = entry.keep.max(reach.min(HISTORY_MAX));
            }
            let first_kept = entry.history.front().map_or(entry.doc.sync_revision + 1, |h| h.revision);
            for h in entries.into_iter().rev().filter(|h| h.revision < first_kept) {
                entry.history.push_front(h);
            }
        }
    }

    /// Records a decided change: the new state, and for updates its patches.
    pub(crate) fn apply(&mut self, doc: Arc<Document>, update: Option<HistEntry>) {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.docs.entry(doc.id.clone()).or_insert_with(|| CachedDoc {
            doc: Arc::clone(&doc),
            history: VecDeque::new(),
            committed: 0,
            keep: HISTORY,
            last_used: clock,
        });
        match update {
            Some(h) if entry.history.back().is_none_or(|last| last.revision + 1 == h.revision) => {
                entry.history.push_back(h);
                entry.trim();
            }
            // Not contiguous (or not an update): what is kept no longer ends at the revision.
            _ => entry.history.clear(),
        }
        entry.doc = doc;
        entry.last_used = clock;
        self.evict_if_needed();
    }

    /// Forgets documents (after a failed commit, or a concurrent writer elsewhere).
    pub(crate) fn evict(&mut self, ids: impl IntoIterator<Item = impl AsRef<str>>) {
        for id in ids {
            self.docs.remove(id.as_ref());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.docs.len()
    }

    fn evict_if_needed(&mut self) {
        if self.docs.len() <= self.capacity + self.capacity / 8 {
            return;
        }
        // Drop the least recently used eighth in one pass, so eviction is amortised.
        let excess = self.docs.len() - self.capacity;
        let mut ages: Vec<u64> = self.docs.values().map(|d| d.last_used).collect();
        let (_, cutoff, _) = ages.select_nth_unstable(excess);
        let cutoff = *cutoff;
        self.docs.retain(|_, d| d.last_used >= cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sync_core::Timestamp;

    fn doc(id: &str, revision: u64) -> Document {
        Document {
            id: id.into(),
            user_id: "u".into(),
            collection: "default".into(),
            title: None,
            content: json!({}),
            sync_revision: revision,
            vector_clock: Default::default(),
            content_hash: String::new(),
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
            deleted_at: None,
        }
    }

    fn hist(revision: u64) -> HistEntry {
        HistEntry { revision, forward: Arc::default(), reverse: Arc::default() }
    }

    #[test]
    fn history_is_served_only_when_complete() {
        let mut cache = DocCache::new(100);
        cache.insert_loaded(doc("a", 3));
        assert!(cache.get("a").unwrap().since(3).unwrap().is_empty());
        assert!(cache.get("a").unwrap().since(2).is_none(), "revision 3's patches were never seen");
        cache.apply(Arc::new(doc("a", 4)), Some(hist(4)));
        cache.apply(Arc::new(doc("a", 5)), Some(hist(5)));
        let since = cache.get("a").unwrap().since(3).unwrap();
        assert_eq!(since.iter().map(|h| h.revision).collect::<Vec<_>>(), vec![4, 5]);
        cache.prepend_history("a", vec![hist(2), hist(3)]);
        assert_eq!(cache.get("a").unwrap().since(1).unwrap().len(), 4);
    }

    #[test]
    fn history_not_yet_committed_is_never_trimmed() {
        let mut cache = DocCache::new(100);
        cache.insert_loaded(doc("hot", 10));
        // Three pipelined batches of a hot document: far more than HISTORY revisions
        // decided, none committed yet. A stale change based on revision 10 needs them all.
        let last = 10 + 3 * HISTORY as u64;
        for revision in 11..=last {
            cache.apply(Arc::new(doc("hot", revision)), Some(hist(revision)));
        }
        let since = cache.get("hot").unwrap().since(10).expect("uncommitted history is kept");
        assert_eq!(since.len(), 3 * HISTORY);
        // Once committed, only the newest HISTORY updates stay.
        cache.mark_committed("hot", last);
        assert!(cache.get("hot").unwrap().since(10).is_none());
        let kept = cache.get("hot").unwrap().since(last - HISTORY as u64).expect("the newest are kept");
        assert_eq!(kept.len(), HISTORY);
        // Committed up to the middle: everything above it stays.
        let mut cache = DocCache::new(100);
        cache.insert_loaded(doc("hot", 0));
        for revision in 1..=200 {
            cache.apply(Arc::new(doc("hot", revision)), Some(hist(revision)));
        }
        cache.mark_committed("hot", 150);
        assert_eq!(cache.get("hot").unwrap().since(150 - HISTORY as u64).unwrap().len(), 50 + HISTORY);
    }

    #[test]
    fn history_read_from_the_store_is_kept_from_then_on() {
        let mut cache = DocCache::new(100);
        cache.insert_loaded(doc("hot", 300));
        // A stale change based on revision 100 read 200 revisions from the store.
        cache.prepend_history("hot", (101..=300).map(hist).collect());
        for revision in 301..=400 {
            cache.apply(Arc::new(doc("hot", revision)), Some(hist(revision)));
            cache.mark_committed("hot", revision);
        }
        // The next change as stale as that one finds its history in the cache.
        assert_eq!(cache.get("hot").unwrap().since(200).map(|h| h.len()), Some(200));
        // Not beyond the cap, however far a change reached.
        let mut cache = DocCache::new(100);
        cache.insert_loaded(doc("old", 5000));
        cache.prepend_history("old", (1..=5000).map(hist).collect());
        cache.apply(Arc::new(doc("old", 5001)), Some(hist(5001)));
        cache.mark_committed("old", 5001);
        assert!(cache.get("old").unwrap().since(5001 - HISTORY_MAX as u64 - 1).is_none());
        assert!(cache.get("old").unwrap().since(5001 - HISTORY_MAX as u64).is_some());
    }

    #[test]
    fn eviction_keeps_recent_documents() {
        let mut cache = DocCache::new(16);
        for i in 0..40 {
            cache.insert_loaded(doc(&format!("d{i}"), 1));
            cache.get("d0");
        }
        assert!(cache.len() <= 18, "{}", cache.len());
        assert!(cache.contains("d0"), "recently used survives");
        assert!(cache.contains("d39"));
    }
}
