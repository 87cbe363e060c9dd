//! The rebase of a patch over changes committed since its base (PROTOCOL.md §7).
//!
//! One pure function, [`rebase`], decides every concurrent edit; the server calls it on
//! a stale `update_document` and clients call [`rebase_many`] on their pending changes
//! when a remote change arrives. Both sides run the same code on the same inputs, which
//! is what makes replicas converge.
//!
//! How it works: every committed operation is reduced to *primitives* (array insert,
//! array delete, set a value, unset a member, move), and every incoming operation's
//! pointers are carried through them:
//!
//! - inserts and deletes before an index shift it (rule 2); a concurrent insert at the
//!   same index goes after the committed one (committed first comes first);
//! - a pointer at or under a removed value is gone, and its op is dropped and reported
//!   (rule 3); a pointer under a value that was *replaced* counts as removed too;
//! - a pointer under a moved value follows the move;
//! - two writes to one path, or a write to a path that contains another's write, are a
//!   clash decided by the collection [`Policy`] (rule 4).
//!
//! The committed primitives are themselves carried past each incoming op that stays, so
//! the second op of a patch is transformed in the frame the first one left. An incoming
//! op that is dropped is undone for the ops after it. Finally the result is checked
//! against the committed state: what does not apply there is dropped and reported, and a
//! failing `test` rejects the whole patch (rule 6).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::patch::{
    ApplyLimits, Meter, Patch, PatchError, PatchOp, apply_metered, apply_one, apply_one_metered, apply_with_inverse,
};
use crate::pointer::{JsonPointer, lookup, parse_index};

/// How two writes to the same path are resolved (rule 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The later arrival at the server wins.
    #[default]
    LastWriterWins,
    /// The earlier committed write stays; the later one is dropped and reported.
    ServerWins,
}

impl Policy {
    /// Parses `last_writer_wins` / `server_wins`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "last_writer_wins" => Some(Policy::LastWriterWins),
            "server_wins" => Some(Policy::ServerWins),
            _ => None,
        }
    }
}

/// One conflict found while rebasing: which op, where, why, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conflict {
    /// The op's path: where it landed when applied, the original path when dropped.
    pub path: String,
    /// The op name (`add`, `replace`, …).
    pub op: String,
    /// Why it conflicted.
    pub reason: ConflictReason,
    /// Whether the op was applied anyway or dropped.
    pub resolution: ConflictResolution,
}

/// Why an op conflicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    /// The target, or an ancestor, was removed by an intervening change (rule 3).
    TargetRemoved,
    /// An ancestor was replaced by an intervening change, so the target is gone (rule 3).
    AncestorReplaced,
    /// Another change wrote the same path, or inside it (rule 4).
    ConcurrentWrite,
    /// After rebasing, the op no longer applies to the current state.
    NotApplicable,
}

/// What became of a conflicting op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictResolution {
    /// The op was applied (it won under `last_writer_wins`).
    Applied,
    /// The op was dropped.
    Dropped,
}

/// A rebased patch: the ops to apply to the current state, and the conflicts met.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rebased {
    /// Applies to the state after all committed changes.
    pub patch: Patch,
    /// Conflicts, in op order.
    pub conflicts: Vec<Conflict>,
}

impl Rebased {
    /// Whether any op was dropped.
    pub fn dropped_any(&self) -> bool {
        self.conflicts.iter().any(|c| c.resolution == ConflictResolution::Dropped)
    }
}

/// Why a patch could not be rebased at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RebaseError {
    /// The incoming patch does not apply to its own base state.
    #[error("the patch does not apply at its base revision: {0}")]
    Incoming(PatchError),
    /// The committed changes do not apply to the base state (inconsistent history).
    #[error("the committed history does not apply in order: {0}")]
    Committed(PatchError),
    /// A `test` op failed against the state at apply time (rule 6).
    #[error("test failed at {path:?}: the document changed")]
    TestFailed {
        /// Position of the `test` op in the incoming patch.
        index: usize,
        /// Its path.
        path: String,
    },
    /// The incoming patch, on its base or as rebased, goes over a limit of
    /// [`rebase_within_limits`] ([`PatchError::is_over_limit`]).
    #[error("the patch is over a limit: {0}")]
    OverLimit(PatchError),
}

impl RebaseError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            RebaseError::Incoming(_) | RebaseError::TestFailed { .. } => ErrorCode::VersionMismatch,
            RebaseError::Committed(_) => ErrorCode::ServerError,
            RebaseError::OverLimit(_) => ErrorCode::PayloadTooLarge,
        }
    }
}

/// Rebases `incoming`, made against `base`, over `committed` (the ops of every change
/// committed since, in order), under `policy`.
pub fn rebase(
    base: &Value,
    incoming: &[PatchOp],
    committed: &[PatchOp],
    policy: Policy,
) -> Result<Rebased, RebaseError> {
    let mut results = rebase_many(base, &[incoming.to_vec()], committed, policy);
    results.pop().unwrap_or_else(|| Ok(Rebased::default()))
}

/// [`rebase`] for a patch from an untrusted source: wherever the rebase applies the
/// incoming ops (to their base, to the frames it carries them through, to the committed
/// state), they are held to `limits` as [`crate::patch::apply_within_limits`] holds
/// them, and a patch over a limit is refused as a whole with [`RebaseError::OverLimit`]
/// rather than built. Within the limits the answer is [`rebase`]'s.
pub fn rebase_within_limits(
    base: &Value,
    incoming: &[PatchOp],
    committed: &[PatchOp],
    policy: Policy,
    limits: &ApplyLimits,
) -> Result<Rebased, RebaseError> {
    let mut results = rebase_many_with(base, &[incoming.to_vec()], committed, policy, Some(limits));
    results.pop().unwrap_or_else(|| Ok(Rebased::default()))
}

/// Rebases a sequence of patches (a client's pending changes, each made on top of the
/// previous one, the first against `base`) over `committed`. Each entry is rebased as a
/// unit: a failing `test` rejects that entry only.
pub fn rebase_many(
    base: &Value,
    entries: &[Patch],
    committed: &[PatchOp],
    policy: Policy,
) -> Vec<Result<Rebased, RebaseError>> {
    rebase_many_with(base, entries, committed, policy, None)
}

/// [`rebase_many`], with the incoming ops held to `limits` when there are any.
fn rebase_many_with(
    base: &Value,
    entries: &[Patch],
    committed: &[PatchOp],
    policy: Policy,
    limits: Option<&ApplyLimits>,
) -> Vec<Result<Rebased, RebaseError>> {
    match rebase_independent(base, entries, committed, limits) {
        Some(results) => results,
        None => rebase_in_full_with(base, entries, committed, policy, limits),
    }
}

/// An account for one pass of incoming ops over a document: under `limits` when given.
fn meter(limits: Option<&ApplyLimits>) -> Meter {
    limits.map_or_else(Meter::unlimited, |limits| Meter::new(*limits))
}

/// The shortcut of [`rebase_many`] for the common case: no incoming op and no committed
/// op touch the same place — no path (or `from`) of one is a prefix of, or equal to, a
/// path of the other, and every two paths part inside an object, where keys do not shift
/// each other the way array indexes do. Then every op lands where it was written, there
/// is no conflict, and the rebase is the identity. The full algorithm gives the same
/// answer at the cost of a copy of the document per committed op, which dominates the
/// write path on a document edited by many clients at once.
///
/// `None` (take the full way) also when an incoming patch has a `test` or an append
/// (`-`), or when the incoming patches do not apply to their base in order: the full
/// algorithm reports those.
fn rebase_independent(
    base: &Value,
    entries: &[Patch],
    committed: &[PatchOp],
    limits: Option<&ApplyLimits>,
) -> Option<Vec<Result<Rebased, RebaseError>>> {
    if !independent(base, entries.iter().flatten(), committed) {
        return None;
    }
    // The incoming patches must apply to their base, in order. They then apply after the
    // committed ops too: those change nothing at, above or beside (in an array) any place
    // an incoming op reads or writes, so whatever an incoming op needs is as it was.
    let mut frame = base.clone();
    for entry in entries {
        apply_metered(&mut frame, entry, &mut meter(limits)).ok()?;
    }
    Some(entries.iter().map(|entry| Ok(Rebased { patch: entry.clone(), conflicts: Vec::new() })).collect())
}

/// Whether the rebase of `incoming` over `committed` is the identity, by the shortcut's
/// rule (see [`rebase_many`]): no `test`, no append, and every place an incoming op reads
/// or writes parts inside an object from every place a committed op does.
///
/// `state` may be the base the incoming ops were made against or the state after the
/// committed ops: the answer is the same. The check looks only at the containers where two
/// pointers part, which are ancestors of an incoming op's place; a committed op that
/// replaced, moved or removed such a container, or shifted it in an array, has a pointer
/// that is a prefix of the incoming one or parts from it inside an array, and fails the
/// check on either state. When the answer is yes, the incoming ops also apply to the state
/// after the committed ops exactly when they apply to their base: nothing they read or
/// write, or any of its ancestors, was touched. So a caller that holds the committed state
/// (the server) can decide a stale change without rebuilding its base; if the incoming ops
/// then fail to apply, it takes the full way, which says why. A property test holds all
/// of this to the full algorithm.
pub fn independent<'a, I, C>(state: &Value, incoming: I, committed: C) -> bool
where
    I: IntoIterator<Item = &'a PatchOp>,
    C: IntoIterator<Item = &'a PatchOp>,
    C::IntoIter: Clone,
{
    let committed = committed.into_iter();
    for op in incoming {
        if matches!(op, PatchOp::Test { .. }) {
            return false;
        }
        for p in op_pointers(op) {
            if p.last() == Some("-") {
                return false;
            }
            if !committed.clone().flat_map(op_pointers).all(|q| parted_in_object(state, p, q)) {
                return false;
            }
        }
    }
    true
}

/// The places an op reads or writes: its path, and `from` for `move` and `copy`.
fn op_pointers(op: &PatchOp) -> impl Iterator<Item = &JsonPointer> {
    let from = match op {
        PatchOp::Move { from, .. } | PatchOp::Copy { from, .. } => Some(from),
        _ => None,
    };
    std::iter::once(op.path()).chain(from)
}

/// Whether neither pointer is a prefix of the other and they part inside an object of
/// `base` (the container at their longest common prefix).
fn parted_in_object(base: &Value, p: &JsonPointer, q: &JsonPointer) -> bool {
    let (a, b) = (p.tokens(), q.tokens());
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    common < a.len() && common < b.len() && lookup(&a[..common], base).is_some_and(Value::is_object)
}

/// [`rebase_many`] without its shortcut for independent changes: the same results,
/// always by the full algorithm. Public so that property tests can hold the shortcut to it.
pub fn rebase_many_in_full(
    base: &Value,
    entries: &[Patch],
    committed: &[PatchOp],
    policy: Policy,
) -> Vec<Result<Rebased, RebaseError>> {
    rebase_in_full_with(base, entries, committed, policy, None)
}

/// [`rebase_many_in_full`], with the incoming ops held to `limits` when there are any:
/// each pass of them over a document (their base, each frame, the committed state) has
/// its own account, and an op over a limit fails its entry with
/// [`RebaseError::OverLimit`] instead of being dropped as not applicable.
fn rebase_in_full_with(
    base: &Value,
    entries: &[Patch],
    committed: &[PatchOp],
    policy: Policy,
    limits: Option<&ApplyLimits>,
) -> Vec<Result<Rebased, RebaseError>> {
    let mut items: Vec<Item> = Vec::new();
    let mut failed: Vec<Option<RebaseError>> = vec![None; entries.len()];
    let mut conflicts: Vec<Vec<Conflict>> = vec![Vec::new(); entries.len()];

    // The incoming patches must apply to their own base, one after the other. Their `test`
    // ops are not judged here: rule 6 evaluates them against the state at apply time.
    let mut frame = base.clone();
    for (entry, ops) in entries.iter().enumerate() {
        let effective: Patch = ops.iter().filter(|op| !matches!(op, PatchOp::Test { .. })).cloned().collect();
        match apply_metered(&mut frame, &effective, &mut meter(limits)) {
            Ok(_) => items.extend(ops.iter().enumerate().map(|(index, op)| Item {
                entry,
                index,
                op: op.clone(),
                original: op.clone(),
                alive: true,
            })),
            Err(err) if err.is_over_limit() => failed[entry] = Some(RebaseError::OverLimit(err)),
            Err(err) => failed[entry] = Some(RebaseError::Incoming(err)),
        }
    }

    let mut state = base.clone();
    for c in committed {
        let c = resolve_append(c, &state);
        if !items.iter().any(|i| i.alive) {
            // Nothing left to carry: only the committed state needs to move on.
            if let Err(err) = apply_one(&mut state, &c, 0) {
                return entries.iter().map(|_| Err(RebaseError::Committed(err.clone()))).collect();
            }
            continue;
        }
        let c_prims = op_prims(&c, &shape_of(&c, &state));
        // `frame` is the incoming side's view: the state before `c` plus the incoming ops
        // kept so far, untransformed. It tells whether a pointer meets an array or object.
        let mut frame = state.clone();
        if let Err(err) = apply_one(&mut state, &c, 0) {
            return entries.iter().map(|_| Err(RebaseError::Committed(err.clone()))).collect();
        }
        let mut xs: Vec<XPrim> = c_prims.into_iter().map(|prim| XPrim { prim, origin: Origin::Committed }).collect();
        let mut pass = meter(limits);
        for item in items.iter_mut().filter(|i| i.alive) {
            if failed[item.entry].is_some() {
                item.alive = false;
                continue;
            }
            let op = resolve_append(&item.op, &frame);
            // A `test` changes nothing; it is judged against the final state only.
            let is_test = matches!(op, PatchOp::Test { .. });
            if xs.is_empty() {
                if !is_test && let Err(err) = apply_one_metered(&mut frame, &op, item.index, &mut pass) {
                    fail_item(item, err, &mut failed, &mut conflicts);
                }
                continue;
            }
            let shape = shape_of(&op, &frame);
            match carry(&op, &shape, &xs, policy) {
                Carried::Kept { op: rebased, xs: next_xs, clashes } => {
                    if !is_test && let Err(err) = apply_one_metered(&mut frame, &op, item.index, &mut pass) {
                        fail_item(item, err, &mut failed, &mut conflicts);
                        continue;
                    }
                    for _ in 0..clashes {
                        push_conflict(
                            &mut conflicts[item.entry],
                            Conflict {
                                path: rebased.path().to_string(),
                                op: rebased.name().to_owned(),
                                reason: ConflictReason::ConcurrentWrite,
                                resolution: ConflictResolution::Applied,
                            },
                        );
                    }
                    item.op = rebased;
                    xs = next_xs;
                }
                Carried::Dropped(reason) => {
                    if let Some(reason) = reason {
                        drop_item(item, &mut conflicts, reason);
                    } else {
                        item.alive = false;
                    }
                    // The ops after this one were made in a frame that contains it: undo it
                    // for them before the committed primitives.
                    let mut undo = undo_prims(&op, &frame);
                    undo.append(&mut xs);
                    xs = undo;
                }
                Carried::TestGone => {
                    failed[item.entry] =
                        Some(RebaseError::TestFailed { index: item.index, path: item.original.path().to_string() });
                    item.alive = false;
                    let mut undo = undo_prims(&op, &frame);
                    undo.append(&mut xs);
                    xs = undo;
                }
            }
        }
    }

    // Check the result against the committed state, entry by entry.
    let mut results = Vec::with_capacity(entries.len());
    let mut current = state;
    for (entry, failure) in failed.into_iter().enumerate() {
        if let Some(err) = failure {
            results.push(Err(err));
            continue;
        }
        let mut trial = current.clone();
        let mut patch = Vec::new();
        let mut outcome = Ok(());
        let mut pass = meter(limits);
        for item in items.iter().filter(|i| i.alive && i.entry == entry) {
            match apply_one_metered(&mut trial, &item.op, item.index, &mut pass) {
                Ok(_) => patch.push(item.op.clone()),
                Err(err) if err.is_over_limit() => {
                    outcome = Err(RebaseError::OverLimit(err));
                    break;
                }
                Err(_) if matches!(item.op, PatchOp::Test { .. }) => {
                    outcome =
                        Err(RebaseError::TestFailed { index: item.index, path: item.original.path().to_string() });
                    break;
                }
                Err(_) => push_conflict(
                    &mut conflicts[entry],
                    Conflict {
                        path: item.original.path().to_string(),
                        op: item.original.name().to_owned(),
                        reason: ConflictReason::NotApplicable,
                        resolution: ConflictResolution::Dropped,
                    },
                ),
            }
        }
        match outcome {
            Ok(()) => {
                current = trial;
                results.push(Ok(Rebased { patch, conflicts: std::mem::take(&mut conflicts[entry]) }));
            }
            Err(err) => results.push(Err(err)),
        }
    }
    results
}

struct Item {
    entry: usize,
    index: usize,
    op: PatchOp,
    original: PatchOp,
    alive: bool,
}

fn drop_item(item: &mut Item, conflicts: &mut [Vec<Conflict>], reason: ConflictReason) {
    item.alive = false;
    push_conflict(
        &mut conflicts[item.entry],
        Conflict {
            path: item.original.path().to_string(),
            op: item.original.name().to_owned(),
            reason,
            resolution: ConflictResolution::Dropped,
        },
    );
}

/// An incoming op that does not apply to its frame: dropped as not applicable, or, when
/// it is over a limit, failing its whole entry (a patch over a limit is never half
/// applied).
fn fail_item(item: &mut Item, err: PatchError, failed: &mut [Option<RebaseError>], conflicts: &mut [Vec<Conflict>]) {
    if err.is_over_limit() {
        item.alive = false;
        failed[item.entry] = Some(RebaseError::OverLimit(err));
    } else {
        drop_item(item, conflicts, ConflictReason::NotApplicable);
    }
}

fn push_conflict(list: &mut Vec<Conflict>, conflict: Conflict) {
    if !list.contains(&conflict) {
        list.push(conflict);
    }
}

/// The primitives that undo `op` (which applies to `frame`), in the frame after it.
fn undo_prims(op: &PatchOp, frame: &Value) -> Vec<XPrim> {
    let mut after = frame.clone();
    let Ok(inverse) = apply_with_inverse(&mut after, std::slice::from_ref(op)) else {
        return Vec::new();
    };
    let mut prims = Vec::new();
    for inv in inverse {
        let inv = resolve_append(&inv, &after);
        prims.extend(
            op_prims(&inv, &shape_of(&inv, &after)).into_iter().map(|prim| XPrim { prim, origin: Origin::Undo }),
        );
        if apply_one(&mut after, &inv, 0).is_err() {
            break;
        }
    }
    prims
}

/// A primitive effect of an op on the shape of the document.
#[derive(Clone, Debug, PartialEq)]
enum Prim {
    /// An array element inserted at this path (last token is a concrete index).
    Insert(JsonPointer),
    /// The array element at this path removed.
    Delete(JsonPointer),
    /// The value at this path written (an object member set, an array element replaced,
    /// or the root replaced). `element` tells whether the path is an array element.
    Set { path: JsonPointer, element: bool },
    /// The object member at this path removed.
    Unset(JsonPointer),
    /// The value at `from` moved to `to` (`to` in the frame after the move).
    Move { from: JsonPointer, from_element: bool, to: JsonPointer, to_element: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// From a committed change.
    Committed,
    /// Undoing an incoming op that was dropped.
    Undo,
}

#[derive(Clone, Debug)]
struct XPrim {
    prim: Prim,
    origin: Origin,
}

/// Which side the pointer being transformed is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// An incoming op's pointer, through a committed primitive (it arrived later).
    Later,
    /// A committed primitive's pointer, through an incoming op that was kept.
    Earlier,
    /// An incoming op's pointer, through the undo of an earlier incoming op.
    Undo,
}

/// What an op does at a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Reads the value (`test`, `copy` source).
    Read,
    /// Removes the value (`remove`).
    Remove,
    /// Takes the value away to put it elsewhere (`move` source).
    MoveFrom,
    /// Overwrites the value (`replace`, or setting an array element).
    Replace,
    /// Inserts into an array at an index.
    InsertAt,
    /// Sets an object member (or the root).
    SetKey,
}

impl Role {
    /// Roles whose write collides with another write to the same place.
    fn clashes(self) -> bool {
        matches!(self, Role::Remove | Role::Replace | Role::SetKey)
    }
}

enum PtrOutcome {
    /// The pointer still designates the same place.
    Unchanged,
    /// The pointer designates the same place under a new path.
    Moved(JsonPointer),
    Gone {
        reason: ConflictReason,
        silent: bool,
    },
    Clash,
}

impl PtrOutcome {
    /// The pointer after the primitive, when it survives.
    fn survivor(self, x: &JsonPointer) -> Option<JsonPointer> {
        match self {
            PtrOutcome::Unchanged => Some(x.clone()),
            PtrOutcome::Moved(p) => Some(p),
            _ => None,
        }
    }
}

/// How an op meets the document before it: whether its path and source are array elements.
#[derive(Clone, Copy, Debug)]
struct Shape {
    path_in_array: bool,
    from_in_array: bool,
}

fn in_array(pointer: &JsonPointer, state: &Value) -> bool {
    pointer.split_last().is_some_and(|(parent, _)| matches!(parent.get(state), Some(Value::Array(_))))
}

fn shape_of(op: &PatchOp, state: &Value) -> Shape {
    Shape { path_in_array: in_array(op.path(), state), from_in_array: op.from().is_some_and(|f| in_array(f, state)) }
}

/// Replaces a trailing `-` by the concrete index it means in `state`.
fn resolve_append(op: &PatchOp, state: &Value) -> PatchOp {
    let path = op.path();
    if path.last() != Some("-") {
        return op.clone();
    }
    let Some((parent, _)) = path.split_last() else {
        return op.clone();
    };
    let Some(Value::Array(items)) = parent.get(state) else {
        return op.clone();
    };
    let mut len = items.len();
    if let PatchOp::Move { from, .. } = op
        && from.split_last().is_some_and(|(from_parent, _)| from_parent == parent)
    {
        len = len.saturating_sub(1);
    }
    let concrete = path.with_token(path.len() - 1, len.to_string());
    match op.clone() {
        PatchOp::Add { value, .. } => PatchOp::Add { path: concrete, value },
        PatchOp::Move { from, .. } => PatchOp::Move { from, path: concrete },
        PatchOp::Copy { from, .. } => PatchOp::Copy { from, path: concrete },
        other => other,
    }
}

fn write_role(shape: &Shape) -> Role {
    if shape.path_in_array { Role::InsertAt } else { Role::SetKey }
}

fn op_prims(op: &PatchOp, shape: &Shape) -> Vec<Prim> {
    let set_or_insert = |path: &JsonPointer| {
        if shape.path_in_array { Prim::Insert(path.clone()) } else { Prim::Set { path: path.clone(), element: false } }
    };
    match op {
        PatchOp::Add { path, .. } | PatchOp::Copy { path, .. } => vec![set_or_insert(path)],
        PatchOp::Remove { path } => {
            vec![if shape.path_in_array { Prim::Delete(path.clone()) } else { Prim::Unset(path.clone()) }]
        }
        PatchOp::Replace { path, .. } => vec![Prim::Set { path: path.clone(), element: shape.path_in_array }],
        PatchOp::Move { from, path } if from == path => Vec::new(),
        PatchOp::Move { from, path } => vec![Prim::Move {
            from: from.clone(),
            from_element: shape.from_in_array,
            to: path.clone(),
            to_element: shape.path_in_array,
        }],
        PatchOp::Test { .. } => Vec::new(),
    }
}

enum Carried {
    Kept { op: PatchOp, xs: Vec<XPrim>, clashes: usize },
    Dropped(Option<ConflictReason>),
    TestGone,
}

/// Carries an incoming op through the primitives `xs`, and `xs` past the op.
fn carry(op: &PatchOp, shape: &Shape, xs: &[XPrim], policy: Policy) -> Carried {
    let mut cur = op.clone();
    let mut next = Vec::with_capacity(xs.len());
    let mut clashes = 0;
    for x in xs {
        let side = if x.origin == Origin::Committed { Side::Later } else { Side::Undo };
        match step(&cur, shape, &x.prim, side) {
            Step::Same(moved) => {
                carry_prim_past(&x.prim, &cur, shape)
                    .into_iter()
                    .for_each(|prim| next.push(XPrim { prim, origin: x.origin }));
                if let Some(moved) = moved {
                    cur = moved;
                }
            }
            Step::Clash(moved) => match policy {
                Policy::LastWriterWins => {
                    clashes += 1;
                    carry_prim_past(&x.prim, &cur, shape)
                        .into_iter()
                        .for_each(|prim| next.push(XPrim { prim, origin: x.origin }));
                    if let Some(moved) = moved {
                        cur = moved;
                    }
                }
                Policy::ServerWins => return Carried::Dropped(Some(ConflictReason::ConcurrentWrite)),
            },
            Step::Gone { reason, silent } => {
                if matches!(op, PatchOp::Test { .. }) {
                    return Carried::TestGone;
                }
                return Carried::Dropped(if silent { None } else { Some(reason) });
            }
        }
    }
    Carried::Kept { op: cur, xs: next, clashes }
}

enum Step {
    /// Survives; `Some` when its pointers moved.
    Same(Option<PatchOp>),
    /// Clashes with the primitive; `Some` when its pointers moved.
    Clash(Option<PatchOp>),
    Gone {
        reason: ConflictReason,
        silent: bool,
    },
}

/// Transforms every pointer of `op` through one primitive.
fn step(op: &PatchOp, shape: &Shape, prim: &Prim, side: Side) -> Step {
    let path_role = match op {
        PatchOp::Add { .. } | PatchOp::Copy { .. } | PatchOp::Move { .. } => write_role(shape),
        PatchOp::Remove { .. } => Role::Remove,
        PatchOp::Replace { .. } => Role::Replace,
        PatchOp::Test { .. } => Role::Read,
    };
    let mut clash = false;
    let path = match transform_pointer(op.path(), path_role, prim, side) {
        PtrOutcome::Unchanged => None,
        PtrOutcome::Moved(p) => Some(p),
        PtrOutcome::Clash => {
            clash = true;
            None
        }
        PtrOutcome::Gone { reason, silent } => return Step::Gone { reason, silent },
    };
    let from = match op {
        PatchOp::Move { from, .. } | PatchOp::Copy { from, .. } => {
            let role = if matches!(op, PatchOp::Move { .. }) { Role::MoveFrom } else { Role::Read };
            match transform_pointer(from, role, prim, side) {
                PtrOutcome::Unchanged => None,
                PtrOutcome::Moved(p) => Some(p),
                PtrOutcome::Clash => {
                    clash = true;
                    None
                }
                PtrOutcome::Gone { reason, .. } => return Step::Gone { reason, silent: false },
            }
        }
        _ => None,
    };
    let moved = if path.is_none() && from.is_none() { None } else { Some(with_pointers(op, path, from)) };
    if clash { Step::Clash(moved) } else { Step::Same(moved) }
}

/// `op` with its path and/or source replaced.
fn with_pointers(op: &PatchOp, path: Option<JsonPointer>, from: Option<JsonPointer>) -> PatchOp {
    let path = path.unwrap_or_else(|| op.path().clone());
    match op {
        PatchOp::Add { value, .. } => PatchOp::Add { path, value: value.clone() },
        PatchOp::Remove { .. } => PatchOp::Remove { path },
        PatchOp::Replace { value, .. } => PatchOp::Replace { path, value: value.clone() },
        PatchOp::Test { value, .. } => PatchOp::Test { path, value: value.clone() },
        PatchOp::Move { from: f, .. } => PatchOp::Move { from: from.unwrap_or_else(|| f.clone()), path },
        PatchOp::Copy { from: f, .. } => PatchOp::Copy { from: from.unwrap_or_else(|| f.clone()), path },
    }
}

/// Carries a committed (or undo) primitive past an incoming op that stays.
fn carry_prim_past(prim: &Prim, op: &PatchOp, shape: &Shape) -> Option<Prim> {
    let mut prim = prim.clone();
    for o in op_prims(op, shape) {
        prim = transform_prim(&prim, &o)?;
    }
    Some(prim)
}

fn transform_prim(prim: &Prim, through: &Prim) -> Option<Prim> {
    let single = |p: &JsonPointer, role: Role| transform_pointer(p, role, through, Side::Earlier).survivor(p);
    match prim {
        Prim::Insert(p) => single(p, Role::InsertAt).map(Prim::Insert),
        Prim::Delete(p) => single(p, Role::Remove).map(Prim::Delete),
        Prim::Set { path, element } => {
            let role = if *element { Role::Replace } else { Role::SetKey };
            single(path, role).map(|path| Prim::Set { path, element: *element })
        }
        Prim::Unset(p) => single(p, Role::Remove).map(Prim::Unset),
        Prim::Move { from, from_element, to, to_element } => {
            let from = single(from, Role::MoveFrom)?;
            let to_role = if *to_element { Role::InsertAt } else { Role::SetKey };
            match single(to, to_role) {
                Some(to) => Some(Prim::Move { from, from_element: *from_element, to, to_element: *to_element }),
                // The destination vanished: what remains is the value leaving its source.
                None if *from_element => Some(Prim::Delete(from)),
                None => Some(Prim::Unset(from)),
            }
        }
    }
}

/// The outcome when `x` is an ancestor of where the primitive wrote: a clash for an
/// incoming write (it would overwrite the committed change), nothing otherwise.
fn contains(role: Role, side: Side) -> PtrOutcome {
    if side == Side::Later && role.clashes() { PtrOutcome::Clash } else { PtrOutcome::Unchanged }
}

/// Transforms one pointer through one primitive.
fn transform_pointer(x: &JsonPointer, role: Role, prim: &Prim, side: Side) -> PtrOutcome {
    let xt = x.tokens();
    let gone = |reason| PtrOutcome::Gone { reason, silent: side == Side::Earlier };
    match prim {
        Prim::Insert(p) | Prim::Delete(p) => {
            let Some((last, array)) = p.tokens().split_last() else { return PtrOutcome::Unchanged };
            let Some(j) = parse_index(last) else { return PtrOutcome::Unchanged };
            let depth = array.len();
            if xt.len() <= depth || !xt.starts_with(array) {
                return if array.starts_with(xt) { contains(role, side) } else { PtrOutcome::Unchanged };
            }
            let Some(i) = parse_index(&xt[depth]) else { return PtrOutcome::Unchanged };
            let insertion_point = role == Role::InsertAt && xt.len() == depth + 1;
            let shifted = |k: usize| PtrOutcome::Moved(x.with_token(depth, k.to_string()));
            if matches!(prim, Prim::Insert(_)) {
                let shift = if insertion_point { i > j || (i == j && side != Side::Earlier) } else { i >= j };
                if shift { shifted(i + 1) } else { PtrOutcome::Unchanged }
            } else if i > j {
                shifted(i - 1)
            } else if i < j || insertion_point {
                PtrOutcome::Unchanged
            } else {
                // Both removing the same element is one intent, not a conflict.
                let silent = side == Side::Earlier || (role == Role::Remove && xt.len() == depth + 1);
                PtrOutcome::Gone { reason: ConflictReason::TargetRemoved, silent }
            }
        }
        Prim::Set { path: p, .. } => {
            let pt = p.tokens();
            if xt == pt {
                match (side, role) {
                    (Side::Later, r) if r.clashes() => PtrOutcome::Clash,
                    // The later write (the kept incoming op) overwrote this one.
                    (Side::Earlier, r) if r.clashes() => {
                        PtrOutcome::Gone { reason: ConflictReason::ConcurrentWrite, silent: true }
                    }
                    _ => PtrOutcome::Unchanged,
                }
            } else if xt.starts_with(pt) {
                gone(ConflictReason::AncestorReplaced)
            } else if pt.starts_with(xt) {
                contains(role, side)
            } else {
                PtrOutcome::Unchanged
            }
        }
        Prim::Unset(p) => {
            let pt = p.tokens();
            if xt == pt {
                match (side, role) {
                    (Side::Later, Role::SetKey) => PtrOutcome::Clash,
                    (Side::Undo, Role::SetKey) => PtrOutcome::Unchanged,
                    (_, Role::Remove) => PtrOutcome::Gone { reason: ConflictReason::TargetRemoved, silent: true },
                    _ => gone(ConflictReason::TargetRemoved),
                }
            } else if xt.starts_with(pt) {
                gone(ConflictReason::TargetRemoved)
            } else if pt.starts_with(xt) {
                contains(role, side)
            } else {
                PtrOutcome::Unchanged
            }
        }
        Prim::Move { from, from_element, to, to_element } => {
            let ft = from.tokens();
            let at_source = xt == ft && !matches!(role, Role::InsertAt | Role::SetKey);
            if at_source || (xt.len() > ft.len() && xt.starts_with(ft)) {
                return PtrOutcome::Moved(x.rebase_prefix(ft.len(), to));
            }
            let detach = if *from_element { Prim::Delete(from.clone()) } else { Prim::Unset(from.clone()) };
            let attach =
                if *to_element { Prim::Insert(to.clone()) } else { Prim::Set { path: to.clone(), element: false } };
            match transform_pointer(x, role, &detach, side) {
                PtrOutcome::Unchanged => transform_pointer(x, role, &attach, side),
                PtrOutcome::Moved(x1) => match transform_pointer(&x1, role, &attach, side) {
                    PtrOutcome::Unchanged => PtrOutcome::Moved(x1),
                    other => other,
                },
                other => other,
            }
        }
    }
}

#[cfg(test)]
mod tests;
