//! The client side of one document: the server's confirmed state, the local pending
//! changes on top of it, and what to do when the server answers or pushes.
//!
//! Pure logic, no I/O: the Rust client stores these fields in SQLite, and the
//! convergence simulator drives the same code, so what the simulator proves is what
//! clients run.
//!
//! Invariants:
//! - the local view is the confirmed state with every pending update applied in order;
//! - at most one pending change is in flight, and it is the first;
//! - the confirmed state only ever changes by the server's own patches, in revision
//!   order, so once nothing is pending the view equals the server's content exactly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::patch::{Patch, PatchError, PatchOp, apply, apply_with_inverse};
use crate::transform::{Conflict, Policy, rebase_many};

/// The server's state of the document as this replica last saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmed {
    /// Content at `revision` (for a tombstone: the content before deletion).
    pub content: Value,
    /// The server revision.
    pub revision: u64,
    /// Whether the server has deleted the document.
    pub deleted: bool,
}

/// A local change not yet acknowledged by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The `client_change_id` it is (or will be) sent with.
    pub change_id: String,
    /// What it does.
    pub change: PendingChange,
    /// Whether it has been sent and awaits the server's answer.
    pub in_flight: bool,
    /// How often the server sent it back as too far behind and it was sent again
    /// ([`Replica::on_reject`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resends: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// How often a change the server found too far behind is sent again against the newer
/// revision before it is given up (rolled back) like any refusal.
pub const MAX_RESENDS: u8 = 3;

/// The kind of a pending change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingChange {
    /// Create the document with this content.
    Create {
        /// The content.
        content: Value,
    },
    /// Apply this patch (kept rebased on the confirmed state and earlier pending changes).
    Update {
        /// The patch, in the frame of the changes before it.
        patch: Patch,
        /// The revision it was sent against, once in flight.
        base_revision: Option<u64>,
    },
    /// Delete the document.
    Delete {
        /// The revision it was sent against, once in flight.
        base_revision: Option<u64>,
    },
}

/// A change ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The `client_change_id`.
    pub change_id: String,
    /// What to send.
    pub change: PendingChange,
}

/// A change the server committed, as pushed or returned by catch-up.
#[derive(Clone, Debug, PartialEq)]
pub enum RemoteChange {
    /// The document was created with this content.
    Create(Value),
    /// The document was patched.
    Update(Patch),
    /// The document was deleted.
    Delete,
}

/// What a server message did to the replica, for the application's events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Conflicts met while rebasing pending changes, or reported by the server.
    pub conflicts: Vec<Conflict>,
    /// Pending changes that were given up, with why.
    pub rejected: Vec<Rejected>,
    /// The replica missed revisions and must fetch the document again.
    pub resync_needed: bool,
    /// The message was already known (a duplicate) and changed nothing.
    pub duplicate: bool,
}

/// A pending change given up.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// Its `client_change_id`.
    pub change_id: String,
    /// The server's code, or the local reason's nearest code.
    pub code: ErrorCode,
    /// Why.
    pub message: String,
}

/// One document on one client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    /// The server's state, once known.
    pub confirmed: Option<Confirmed>,
    /// Local changes, oldest first.
    pub pending: Vec<Pending>,
    /// Collection policy used when rebasing locally (the server's decision still rules).
    #[serde(default)]
    pub policy: Policy,
}

/// Most operations one merged pending change may hold (the server refuses patches of
/// more than 1,000 by default).
pub const MAX_MERGED_OPS: usize = 500;

/// Whether `next` may be appended to `queued` as one change: neither carries a `test`
/// (a failed test would take the other's edits down with it) and the result stays small.
fn mergeable(queued: &[PatchOp], next: &[PatchOp]) -> bool {
    let has_test = |ops: &[PatchOp]| ops.iter().any(|op| matches!(op, PatchOp::Test { .. }));
    !has_test(queued) && !has_test(next) && queued.len() + next.len() <= MAX_MERGED_OPS
}

/// Appends `op` to a queued patch, folding a `replace` into an earlier write of the same
/// path when nothing in between could have moved or read it: setting a field twice
/// offline queues one op, not two. The result has the same effect as appending.
fn append_compacted(queued: &mut Patch, op: PatchOp) {
    if let PatchOp::Replace { path, value } = &op {
        let parent = path.split_last().map(|(p, _)| p);
        for earlier in queued.iter_mut().rev() {
            match earlier {
                PatchOp::Replace { path: p, value: v } | PatchOp::Add { path: p, value: v } if p == path => {
                    *v = value.clone();
                    return;
                }
                _ => {}
            }
            // Anything touching the path, its family, or a sibling (an array index could
            // shift) ends the search.
            let touches = |q: &crate::pointer::JsonPointer| {
                q.starts_with(path) || path.starts_with(q) || q.split_last().map(|(p, _)| p) == parent
            };
            if touches(earlier.path()) || earlier.from().is_some_and(touches) || matches!(earlier, PatchOp::Test { .. })
            {
                break;
            }
        }
    }
    queued.push(op);
}

/// A new `client_change_id`: a UUIDv7, so ids are time-ordered and the server's unique
/// index on them grows at its end instead of at random places.
pub fn new_change_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Replica {
    /// A replica of a document known from the server.
    pub fn from_server(content: Value, revision: u64, deleted: bool, policy: Policy) -> Self {
        Self { confirmed: Some(Confirmed { content, revision, deleted }), pending: Vec::new(), policy }
    }

    /// A replica of a document created locally (not yet on the server).
    pub fn created_locally(content: Value, change_id: String, policy: Policy) -> Self {
        Self {
            confirmed: None,
            pending: vec![Pending {
                change_id,
                change: PendingChange::Create { content },
                in_flight: false,
                resends: 0,
            }],
            policy,
        }
    }

    /// The content the application sees, or `None` when the document is deleted (or
    /// does not exist yet anywhere).
    pub fn view(&self) -> Option<Value> {
        let mut state = self.confirmed.as_ref().filter(|c| !c.deleted).map(|c| c.content.clone());
        for p in &self.pending {
            match &p.change {
                PendingChange::Create { content } => state = Some(content.clone()),
                PendingChange::Update { patch, .. } => {
                    if let Some(s) = state.as_mut() {
                        // Pending patches are kept applicable; one that is not is skipped
                        // rather than hiding the document.
                        let _ = apply(s, patch);
                    }
                }
                PendingChange::Delete { .. } => state = None,
            }
        }
        state
    }

    /// The server revision known, 0 before the server has the document.
    pub fn revision(&self) -> u64 {
        self.confirmed.as_ref().map_or(0, |c| c.revision)
    }

    /// Whether local changes await the server.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a change is in flight.
    pub fn in_flight(&self) -> Option<&Pending> {
        self.pending.first().filter(|p| p.in_flight)
    }

    /// Records a local patch. It must apply to the current view.
    pub fn local_update(&mut self, patch: Patch, change_id: String) -> Result<Value, PatchError> {
        let mut view = self.view().ok_or_else(|| PatchError {
            index: 0,
            op: None,
            path: None,
            kind: crate::patch::PatchErrorKind::Malformed("the document is deleted".into()),
        })?;
        apply(&mut view, &patch)?;
        if patch.is_empty() {
            return Ok(view);
        }
        // Consecutive unsent edits of one document become one pending change, so an
        // offline burst keeps the stored state (and the send) small.
        if let Some(last) = self.pending.last_mut()
            && !last.in_flight
            && let PendingChange::Update { patch: queued, .. } = &mut last.change
            && mergeable(queued, &patch)
        {
            for op in patch {
                append_compacted(queued, op);
            }
            return Ok(view);
        }
        self.pending.push(Pending {
            change_id,
            change: PendingChange::Update { patch, base_revision: None },
            in_flight: false,
            resends: 0,
        });
        Ok(view)
    }

    /// Records a local delete.
    pub fn local_delete(&mut self, change_id: String) {
        self.pending.push(Pending {
            change_id,
            change: PendingChange::Delete { base_revision: None },
            in_flight: false,
            resends: 0,
        });
    }

    /// The next change to send, if none is in flight. Consecutive pending updates are
    /// merged into one (keeping the first one's id) so an offline burst of edits to one
    /// document costs one round trip; updates carrying a `test` op are sent alone.
    pub fn next_to_send(&mut self) -> Option<Outgoing> {
        if self.pending.first()?.in_flight {
            return None;
        }
        let revision = self.revision();
        let server_deleted = self.confirmed.as_ref().is_some_and(|c| c.deleted);
        // An update can only be sent once the server has the document.
        if matches!(self.pending[0].change, PendingChange::Update { .. } | PendingChange::Delete { .. })
            && (self.confirmed.is_none() || server_deleted)
        {
            return None;
        }
        if let PendingChange::Update { .. } = self.pending[0].change {
            // A patch with a `test` is all-or-nothing on its own terms: merging other
            // edits into it would let a failed test take them down too.
            let mut run = 1;
            let mut ops = match &self.pending[0].change {
                PendingChange::Update { patch, .. } => patch.clone(),
                _ => Vec::new(),
            };
            while let Some(PendingChange::Update { patch, .. }) = self.pending.get(run).map(|p| &p.change) {
                if !mergeable(&ops, patch) {
                    break;
                }
                ops.extend(patch.iter().cloned());
                run += 1;
            }
            if run > 1 {
                self.pending.drain(1..run);
                if let PendingChange::Update { patch, .. } = &mut self.pending[0].change {
                    *patch = ops;
                }
            }
        }
        let first = &mut self.pending[0];
        match &mut first.change {
            PendingChange::Update { base_revision, .. } | PendingChange::Delete { base_revision } => {
                *base_revision = Some(revision);
            }
            PendingChange::Create { .. } => {}
        }
        first.in_flight = true;
        Some(Outgoing { change_id: first.change_id.clone(), change: first.change.clone() })
    }

    /// The in-flight change again, after a reconnect, under the same id so the server
    /// applies it at most once. While in flight its patch was rebased locally over every
    /// change that arrived, so it is resent against the revision known now.
    pub fn resend(&mut self) -> Option<Outgoing> {
        let revision = self.revision();
        let first = self.pending.first_mut().filter(|p| p.in_flight)?;
        match &mut first.change {
            PendingChange::Update { base_revision, .. } | PendingChange::Delete { base_revision } => {
                *base_revision = Some(revision);
            }
            PendingChange::Create { .. } => {}
        }
        Some(Outgoing { change_id: first.change_id.clone(), change: first.change.clone() })
    }

    /// Applies a change the server committed at `revision`. `change_id` is the
    /// `client_change_id` it was made with, if any: the replica's own in-flight change
    /// coming back through catch-up counts as its acknowledgement.
    pub fn on_remote(&mut self, revision: u64, change: RemoteChange, change_id: Option<&str>) -> Outcome {
        if let (Some(id), Some(inflight)) = (change_id, self.in_flight())
            && inflight.change_id == id
        {
            let applied = match &change {
                RemoteChange::Update(patch) => Some(patch.clone()),
                _ => None,
            };
            let content = match &change {
                RemoteChange::Create(content) => Some(content.clone()),
                _ => None,
            };
            return self.on_ack(id, revision, applied, content);
        }
        let mut outcome = Outcome::default();
        let known = self.revision();
        if self.confirmed.is_some() && revision <= known {
            outcome.duplicate = true;
            return outcome;
        }
        match change {
            RemoteChange::Create(content) => {
                if self.confirmed.is_some() || revision != 1 {
                    outcome.resync_needed = true;
                    return outcome;
                }
                // Someone else created a document with the id of our pending create: ours
                // will be refused, and our pending edits were made on different content.
                if !self.pending.is_empty() {
                    for p in self.pending.drain(..) {
                        outcome.rejected.push(Rejected {
                            change_id: p.change_id,
                            code: ErrorCode::DocumentExists,
                            message: "another replica created a document with this id first".into(),
                        });
                    }
                }
                self.confirmed = Some(Confirmed { content, revision, deleted: false });
            }
            RemoteChange::Update(patch) => {
                let Some(confirmed) = self.confirmed.as_mut() else {
                    outcome.resync_needed = true;
                    return outcome;
                };
                if revision != confirmed.revision + 1 || confirmed.deleted {
                    outcome.resync_needed = true;
                    return outcome;
                }
                let base = confirmed.content.clone();
                if apply(&mut confirmed.content, &patch).is_err() {
                    outcome.resync_needed = true;
                    return outcome;
                }
                confirmed.revision = revision;
                self.rebase_pending(&base, &patch, &mut outcome);
            }
            RemoteChange::Delete => {
                let Some(confirmed) = self.confirmed.as_mut() else {
                    outcome.resync_needed = true;
                    return outcome;
                };
                confirmed.deleted = true;
                confirmed.revision = revision;
                // Queued edits can never apply; the in-flight one gets the server's answer.
                let keep_first = self.pending.first().is_some_and(|p| p.in_flight);
                let start = usize::from(keep_first);
                for p in self.pending.drain(start..) {
                    if !matches!(p.change, PendingChange::Delete { .. }) {
                        outcome.rejected.push(Rejected {
                            change_id: p.change_id,
                            code: ErrorCode::DocumentDeleted,
                            message: "the document was deleted on another replica".into(),
                        });
                    }
                }
            }
        }
        outcome
    }

    /// Rebases every pending update over a committed patch made against `base`.
    fn rebase_pending(&mut self, base: &Value, committed: &Patch, outcome: &mut Outcome) {
        let indices: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.change, PendingChange::Update { .. }))
            .map(|(i, _)| i)
            .collect();
        if indices.is_empty() {
            return;
        }
        let entries: Vec<Patch> = indices
            .iter()
            .map(|&i| match &self.pending[i].change {
                PendingChange::Update { patch, .. } => patch.clone(),
                _ => Vec::new(),
            })
            .collect();
        let results = rebase_many(base, &entries, committed, self.policy);
        let mut drop = Vec::new();
        for (&i, result) in indices.iter().zip(results) {
            match result {
                Ok(rebased) => {
                    outcome.conflicts.extend(rebased.conflicts);
                    if let PendingChange::Update { patch, .. } = &mut self.pending[i].change {
                        *patch = rebased.patch;
                    }
                }
                Err(err) => {
                    if self.pending[i].in_flight {
                        // The server decides; locally it no longer shows.
                        if let PendingChange::Update { patch, .. } = &mut self.pending[i].change {
                            patch.clear();
                        }
                    } else {
                        drop.push(i);
                        outcome.rejected.push(Rejected {
                            change_id: self.pending[i].change_id.clone(),
                            code: err.code(),
                            message: err.to_string(),
                        });
                    }
                }
            }
        }
        for i in drop.into_iter().rev() {
            self.pending.remove(i);
        }
    }

    /// Replaces the confirmed state with the server's current one (after a gap was
    /// detected and the document fetched again); pending updates are rebased onto it.
    pub fn reset(&mut self, content: Value, revision: u64, deleted: bool) -> Outcome {
        let mut outcome = Outcome::default();
        let old = self.confirmed.replace(Confirmed { content: content.clone(), revision, deleted });
        if deleted {
            let keep_first = self.pending.first().is_some_and(|p| p.in_flight);
            for p in self.pending.drain(usize::from(keep_first)..) {
                outcome.rejected.push(Rejected {
                    change_id: p.change_id,
                    code: ErrorCode::DocumentDeleted,
                    message: "the document was deleted on another replica".into(),
                });
            }
            return outcome;
        }
        match old {
            Some(old) if !old.deleted => {
                let correction = crate::patch::diff(&old.content, &content);
                self.correct(&old.content, &correction, &mut outcome);
            }
            // Nothing to rebase from: pending updates stay as they are and are checked
            // against the new state when shown.
            _ => {}
        }
        outcome
    }

    /// The server acknowledged the in-flight change as committed at `revision`.
    /// `applied` is the patch as the server applied it (when it transformed it);
    /// `content` the stored content of a create.
    pub fn on_ack(
        &mut self,
        change_id: &str,
        revision: u64,
        applied: Option<Patch>,
        content: Option<Value>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        if self.in_flight().is_none_or(|p| p.change_id != change_id) {
            outcome.duplicate = true;
            return outcome;
        }
        let done = self.pending.remove(0);
        match done.change {
            PendingChange::Create { content: local } => {
                let stored = content.unwrap_or_else(|| local.clone());
                self.confirmed = Some(Confirmed { content: stored.clone(), revision, deleted: false });
                if stored != local {
                    // The server normalised the content: replay the pending edits on it.
                    self.correct(&local, &crate::patch::diff(&local, &stored), &mut outcome);
                }
            }
            PendingChange::Update { patch: local, .. } => {
                let Some(confirmed) = self.confirmed.as_mut() else {
                    outcome.resync_needed = true;
                    return outcome;
                };
                if revision <= confirmed.revision {
                    // A resync already brought in the state that includes this change.
                    return outcome;
                }
                let server_patch = applied.unwrap_or_else(|| local.clone());
                let before = confirmed.content.clone();
                if revision != confirmed.revision + 1 || apply(&mut confirmed.content, &server_patch).is_err() {
                    outcome.resync_needed = true;
                    return outcome;
                }
                confirmed.revision = revision;
                if server_patch != local {
                    // Later pending changes were made on top of our version of this one:
                    // undo ours and apply the server's under them.
                    let mut ours = before;
                    if let Ok(mut undo) = apply_with_inverse(&mut ours, &local) {
                        undo.extend(server_patch);
                        self.correct(&ours, &undo, &mut outcome);
                    } else {
                        outcome.resync_needed = true;
                    }
                }
            }
            PendingChange::Delete { .. } => {
                if let Some(confirmed) = self.confirmed.as_mut() {
                    confirmed.deleted = true;
                    confirmed.revision = revision;
                }
                self.pending.clear();
            }
        }
        outcome
    }

    /// The server refused the in-flight change.
    pub fn on_reject(&mut self, change_id: &str, code: ErrorCode, message: &str) -> Outcome {
        let mut outcome = Outcome::default();
        if self.in_flight().is_none_or(|p| p.change_id != change_id) {
            outcome.duplicate = true;
            return outcome;
        }
        // Too far behind for the server (`version_mismatch`) while this replica knows
        // revisions after the one it was sent against: the patch was rebased here over
        // each of them as they arrived, so it is sent again against the revision known
        // now — a few times at most — rather than rolled back. (The server refuses a
        // stale change whose rebase would cost too much and leaves it to the client.)
        // Not when that local rebase failed (a `test` that no longer holds): the patch
        // was emptied then, and the refusal stands.
        let known = self.revision();
        let first = &mut self.pending[0];
        if code == ErrorCode::VersionMismatch
            && first.resends < MAX_RESENDS
            && matches!(&first.change, PendingChange::Update { base_revision: Some(base), patch } if *base < known && !patch.is_empty())
        {
            first.resends += 1;
            first.in_flight = false;
            return outcome;
        }
        let refused = self.pending.remove(0);
        outcome.rejected.push(Rejected { change_id: refused.change_id, code, message: message.to_owned() });
        match refused.change {
            PendingChange::Create { .. } => {
                // Nothing after a refused create can apply.
                for p in self.pending.drain(..) {
                    outcome.rejected.push(Rejected {
                        change_id: p.change_id,
                        code,
                        message: "the document's creation was refused".into(),
                    });
                }
            }
            PendingChange::Update { patch: local, .. } => {
                if let Some(confirmed) = &self.confirmed {
                    let mut ours = confirmed.content.clone();
                    if let Ok(undo) = apply_with_inverse(&mut ours, &local) {
                        self.correct(&ours, &undo, &mut outcome);
                    }
                }
                if matches!(code, ErrorCode::DocumentDeleted | ErrorCode::DocumentNotFound) {
                    self.drop_all(code, &mut outcome);
                }
            }
            PendingChange::Delete { .. } => {
                if matches!(code, ErrorCode::DocumentDeleted | ErrorCode::DocumentNotFound) {
                    // Already gone: the intent holds.
                    outcome.rejected.clear();
                    self.drop_all(code, &mut outcome);
                }
            }
        }
        outcome
    }

    fn drop_all(&mut self, code: ErrorCode, outcome: &mut Outcome) {
        for p in self.pending.drain(..) {
            outcome.rejected.push(Rejected { change_id: p.change_id, code, message: "the document is deleted".into() });
        }
    }

    /// Rebases the pending updates, made on top of `base`, over `correction`.
    fn correct(&mut self, base: &Value, correction: &[PatchOp], outcome: &mut Outcome) {
        if correction.is_empty() {
            return;
        }
        self.rebase_pending(base, &correction.to_vec(), outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{merge_diff, parse_patch};
    use serde_json::json;

    fn ops(v: Value) -> Patch {
        parse_patch(v).unwrap()
    }

    #[test]
    fn offline_edits_are_merged_into_one_send() {
        let mut r = Replica::from_server(json!({"a": 1}), 3, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/a", "value": 2}])), "c1".into()).unwrap();
        r.local_update(ops(json!([{"op": "add", "path": "/b", "value": 1}])), "c2".into()).unwrap();
        assert_eq!(r.view(), Some(json!({"a": 2, "b": 1})));
        let out = r.next_to_send().unwrap();
        assert_eq!(out.change_id, "c1");
        assert_eq!(
            out.change,
            PendingChange::Update {
                patch: ops(
                    json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "add", "path": "/b", "value": 1}])
                ),
                base_revision: Some(3)
            }
        );
        assert!(r.next_to_send().is_none(), "one in flight at a time");
        let outcome = r.on_ack("c1", 4, None, None);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(r.confirmed.as_ref().unwrap().content, json!({"a": 2, "b": 1}));
        assert!(!r.has_pending());
    }

    #[test]
    fn local_edits_merge_but_stay_under_the_op_cap() {
        let mut r = Replica::from_server(json!({"n": 0}), 1, false, Policy::LastWriterWins);
        for i in 0..700 {
            r.local_update(ops(json!([{"op": "replace", "path": "/n", "value": i}])), format!("c{i}")).unwrap();
        }
        assert_eq!(r.pending.len(), 1, "700 writes of one field compact to one op");
        for i in 0..700 {
            r.local_update(ops(json!([{"op": "add", "path": format!("/k{i}"), "value": i}])), format!("d{i}")).unwrap();
        }
        assert_eq!(r.pending.len(), 2, "701 distinct ops make two changes of at most 500 ops");
        let sent = r.next_to_send().unwrap();
        let PendingChange::Update { patch, .. } = sent.change else { panic!() };
        assert_eq!(patch.len(), MAX_MERGED_OPS);
        assert_eq!(r.view().unwrap()["n"], 699);
        // A test op is never merged with other edits.
        r.local_update(ops(json!([{"op": "test", "path": "/n", "value": 699}])), "t".into()).unwrap();
        assert_eq!(r.pending.len(), 3);
    }

    #[test]
    fn compaction_keeps_the_effect() {
        let base = json!({"l": [1, 2], "o": {"a": 1}});
        let edits = [
            json!([{"op": "replace", "path": "/o/a", "value": 2}]),
            json!([{"op": "add", "path": "/l/0", "value": 0}]),
            json!([{"op": "replace", "path": "/l/1", "value": 10}]),
            json!([{"op": "replace", "path": "/o/a", "value": 3}]),
            json!([{"op": "replace", "path": "/l/1", "value": 11}]),
            json!([{"op": "remove", "path": "/l/0"}]),
            json!([{"op": "replace", "path": "/l/0", "value": 12}]),
        ];
        let mut r = Replica::from_server(base.clone(), 1, false, Policy::LastWriterWins);
        let mut expected = base.clone();
        for (i, e) in edits.iter().enumerate() {
            apply(&mut expected, &ops(e.clone())).unwrap();
            r.local_update(ops(e.clone()), format!("c{i}")).unwrap();
        }
        assert_eq!(r.view(), Some(expected.clone()));
        let PendingChange::Update { patch, .. } = &r.pending[0].change else { panic!() };
        let mut replayed = base;
        apply(&mut replayed, patch).unwrap();
        assert_eq!(replayed, expected);
        assert!(patch.len() < edits.len(), "{patch:?}");
    }

    #[test]
    fn remote_change_rebases_pending_and_server_version_wins_on_ack() {
        let base = json!({"items": ["x"], "done": false});
        let mut r = Replica::from_server(base.clone(), 1, false, Policy::LastWriterWins);
        r.local_update(merge_diff(&base, &json!({"done": true})), "c1".into()).unwrap();
        r.next_to_send().unwrap();
        let remote = ops(json!([{"op": "add", "path": "/items/0", "value": "y"}]));
        let outcome = r.on_remote(2, RemoteChange::Update(remote), None);
        assert!(outcome.conflicts.is_empty());
        assert_eq!(r.view(), Some(json!({"items": ["y", "x"], "done": true})));
        r.on_ack("c1", 3, Some(ops(json!([{"op": "replace", "path": "/done", "value": true}]))), None);
        assert_eq!(r.view(), Some(json!({"items": ["y", "x"], "done": true})));
        assert!(!r.has_pending());
    }

    #[test]
    fn own_change_coming_back_through_catch_up_is_its_ack() {
        let mut r = Replica::from_server(json!({"n": 0}), 5, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/n", "value": 1}])), "c1".into()).unwrap();
        r.next_to_send().unwrap();
        let outcome =
            r.on_remote(6, RemoteChange::Update(ops(json!([{"op": "replace", "path": "/n", "value": 1}]))), Some("c1"));
        assert!(!outcome.duplicate);
        assert!(!r.has_pending());
        assert_eq!(r.revision(), 6);
        // The late response to the resent change is a duplicate.
        assert!(r.on_ack("c1", 6, None, None).duplicate);
    }

    #[test]
    fn rejected_change_is_rolled_back_under_later_ones() {
        let mut r = Replica::from_server(json!({"l": [1]}), 1, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "add", "path": "/l/0", "value": 0}])), "c1".into()).unwrap();
        r.next_to_send().unwrap();
        r.local_update(ops(json!([{"op": "replace", "path": "/l/1", "value": 10}])), "c2".into()).unwrap();
        assert_eq!(r.view(), Some(json!({"l": [0, 10]})));
        let outcome = r.on_reject("c1", ErrorCode::VersionMismatch, "test failed");
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(r.view(), Some(json!({"l": [10]})));
    }

    #[test]
    fn a_change_refused_as_too_far_behind_is_sent_again_against_the_newer_revision() {
        let mut r = Replica::from_server(json!({"a": 0, "b": 0}), 1, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/a", "value": 1}])), "c1".into()).unwrap();
        let sent = r.next_to_send().unwrap();
        assert!(matches!(sent.change, PendingChange::Update { base_revision: Some(1), .. }));
        // Others' changes arrive while it is in flight; the server then refuses it.
        for revision in 2..=4 {
            r.on_remote(
                revision,
                RemoteChange::Update(ops(json!([{"op": "replace", "path": "/b", "value": revision}]))),
                None,
            );
        }
        let outcome = r.on_reject("c1", ErrorCode::VersionMismatch, "too far behind: rebase it");
        assert!(outcome.rejected.is_empty(), "kept, not rolled back");
        assert_eq!(r.view(), Some(json!({"a": 1, "b": 4})));
        let again = r.next_to_send().unwrap();
        assert_eq!(again.change_id, "c1");
        assert!(matches!(again.change, PendingChange::Update { base_revision: Some(4), .. }), "{again:?}");
        // Refused at the revision it knows: a real refusal, rolled back.
        let outcome = r.on_reject("c1", ErrorCode::VersionMismatch, "test failed");
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(r.view(), Some(json!({"a": 0, "b": 4})));
    }

    #[test]
    fn a_change_whose_test_failed_here_too_is_rolled_back_not_sent_again() {
        let mut r = Replica::from_server(json!({"n": 1}), 1, false, Policy::LastWriterWins);
        let guarded = json!([{"op": "test", "path": "/n", "value": 1}, {"op": "replace", "path": "/n", "value": 5}]);
        r.local_update(ops(guarded), "c1".into()).unwrap();
        r.next_to_send().unwrap();
        // Another change moves /n: the test no longer holds, here as on the server.
        r.on_remote(2, RemoteChange::Update(ops(json!([{"op": "replace", "path": "/n", "value": 2}]))), None);
        let outcome = r.on_reject("c1", ErrorCode::VersionMismatch, "test failed");
        assert_eq!(outcome.rejected.len(), 1, "the refusal stands");
        assert!(!r.has_pending());
        assert_eq!(r.view(), Some(json!({"n": 2})));
    }

    #[test]
    fn resending_a_change_too_far_behind_stops_after_a_few_times() {
        let mut r = Replica::from_server(json!({"a": 0}), 1, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "add", "path": "/x", "value": 1}])), "c1".into()).unwrap();
        let mut revision = 1;
        for attempt in 0..=MAX_RESENDS {
            r.next_to_send().unwrap();
            revision += 1;
            r.on_remote(
                revision,
                RemoteChange::Update(ops(json!([{"op": "replace", "path": "/a", "value": revision}]))),
                None,
            );
            let outcome = r.on_reject("c1", ErrorCode::VersionMismatch, "too far behind");
            assert_eq!(outcome.rejected.len(), usize::from(attempt == MAX_RESENDS), "attempt {attempt}");
        }
        assert!(!r.has_pending());
    }

    #[test]
    fn remote_delete_rejects_queued_edits() {
        let mut r = Replica::from_server(json!({"a": 1}), 2, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/a", "value": 2}])), "c1".into()).unwrap();
        let outcome = r.on_remote(3, RemoteChange::Delete, None);
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(outcome.rejected[0].code, ErrorCode::DocumentDeleted);
        assert_eq!(r.view(), None);
        assert!(r.next_to_send().is_none());
    }

    #[test]
    fn gap_asks_for_resync() {
        let mut r = Replica::from_server(json!({}), 2, false, Policy::LastWriterWins);
        let outcome = r.on_remote(4, RemoteChange::Update(Vec::new()), None);
        assert!(outcome.resync_needed);
        assert!(r.on_remote(2, RemoteChange::Update(Vec::new()), None).duplicate);
    }

    #[test]
    fn reset_rebases_pending_onto_the_fetched_state() {
        let mut r = Replica::from_server(json!({"l": [1], "k": 0}), 2, false, Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/k", "value": 5}])), "c1".into()).unwrap();
        let outcome = r.reset(json!({"l": [0, 1], "k": 0, "x": true}), 7, false);
        assert!(outcome.rejected.is_empty());
        assert_eq!(r.revision(), 7);
        assert_eq!(r.view(), Some(json!({"l": [0, 1], "k": 5, "x": true})));
        let outcome = r.reset(json!({}), 8, true);
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(r.view(), None);
    }

    #[test]
    fn create_edit_delete_offline_sends_in_order() {
        let mut r = Replica::created_locally(json!({"t": "a"}), "c0".into(), Policy::LastWriterWins);
        r.local_update(ops(json!([{"op": "replace", "path": "/t", "value": "b"}])), "c1".into()).unwrap();
        r.local_delete("c2".into());
        assert_eq!(r.view(), None);
        let first = r.next_to_send().unwrap();
        assert!(matches!(first.change, PendingChange::Create { .. }));
        r.on_ack("c0", 1, None, Some(json!({"t": "a"})));
        let second = r.next_to_send().unwrap();
        assert!(matches!(second.change, PendingChange::Update { base_revision: Some(1), .. }));
        r.on_ack("c1", 2, None, None);
        let third = r.next_to_send().unwrap();
        assert!(matches!(third.change, PendingChange::Delete { base_revision: Some(2) }));
        r.on_ack("c2", 3, None, None);
        assert!(r.confirmed.as_ref().unwrap().deleted);
        assert!(!r.has_pending());
    }
}
