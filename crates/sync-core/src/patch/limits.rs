//! Limits on what applying one patch may build and cost, and the running account that
//! holds a patch to them op by op.
//!
//! The account is a guard, not the authority: whoever applies a client's patch still
//! measures the result exactly (the server writes the canonical form to hash it). The
//! guard exists because a patch is small and what it builds need not be: each
//! `{"op":"copy","from":"/x","path":"/x/c<i>"}` doubles `/x`, so 17 such ops (806 bytes)
//! would build a document of hundreds of MiB before a check after the patch could
//! refuse it, and a thousand ops that copy and remove a large subtree in turn would
//! burn seconds of CPU. So every op is judged before it runs, and before it clones
//! anything: what it adds to the document's size, how deep it nests it, and how many
//! bytes of values the patch has measured and cloned so far.
//!
//! The account never serializes the document for a small patch: it adds what each op
//! inserts (measured, not serialized, and only as far as the limit) and measures the
//! whole document only once the patch has added more than a sixteenth of the limit.
//! Until then an intermediate document can exceed the limit by that sixteenth at most;
//! from then on the account is exact or an upper bound, so it refuses a patch only
//! when the document after the refused op would exceed the limit.

use serde_json::Value;

use super::PatchErrorKind;
use crate::pointer::{JsonPointer, parse_index};

/// How many bytes of values one patch may measure and clone, per byte of the document
/// limit: enough for a patch that copies a document-sized subtree about four times
/// (each copy is measured, then cloned), few enough that no patch costs more than a few
/// passes over the largest document the server keeps.
pub const WORK_PER_DOCUMENT_BYTE: usize = 8;

/// Limits a patch is held to while it applies, op by op (see [`super::apply_within_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyLimits {
    /// Largest document, as the length of its compact (or canonical) JSON text.
    pub max_document_bytes: usize,
    /// Deepest nesting of the document, counted as [`crate::protocol::json_depth`] does.
    pub max_depth: usize,
    /// Most bytes of JSON values one patch may measure and clone in all.
    pub max_work_bytes: usize,
}

impl ApplyLimits {
    /// Limits for documents of at most `max_document_bytes` and `max_depth`, with a work
    /// budget of [`WORK_PER_DOCUMENT_BYTE`] times the document limit.
    pub fn new(max_document_bytes: usize, max_depth: usize) -> Self {
        Self {
            max_document_bytes,
            max_depth,
            max_work_bytes: max_document_bytes.saturating_mul(WORK_PER_DOCUMENT_BYTE),
        }
    }
}

/// The running account of one patch (or of one pass of the transform over a patch).
#[derive(Debug)]
pub(crate) struct Meter {
    /// `None`: no limits, and no accounting at all.
    limits: Option<ApplyLimits>,
    /// What is known of the document's size.
    size: Size,
    /// Bytes of values measured and cloned so far.
    work: usize,
}

#[derive(Clone, Copy, Debug)]
enum Size {
    /// Not measured yet: the document has grown by at most this many bytes since the
    /// patch began.
    Unknown { growth: usize },
    /// The document is at most this many bytes.
    AtMost(usize),
}

impl Meter {
    /// An account that checks nothing (plain [`super::apply`]).
    pub(crate) fn unlimited() -> Self {
        Self { limits: None, size: Size::Unknown { growth: 0 }, work: 0 }
    }

    /// An account that holds a patch to `limits`.
    pub(crate) fn new(limits: ApplyLimits) -> Self {
        Self { limits: Some(limits), size: Size::Unknown { growth: 0 }, work: 0 }
    }

    /// Whether any limit is kept (an unlimited meter does no accounting at all).
    pub(crate) fn is_limited(&self) -> bool {
        self.limits.is_some()
    }

    /// Judges inserting `value` at `path` of `doc`: an `add` or `copy` (`replace` false:
    /// into an array it inserts) or a `replace` (the target exists and is overwritten).
    /// Called before the value is cloned; on `Ok` the account holds the insert.
    pub(crate) fn insert(
        &mut self,
        doc: &Value,
        path: &JsonPointer,
        value: &Value,
        replace: bool,
    ) -> Result<(), PatchErrorKind> {
        let Some(limits) = self.limits else { return Ok(()) };
        let Some(room) = limits.max_depth.checked_sub(path.len()) else {
            return Err(PatchErrorKind::DocumentTooDeep { limit: limits.max_depth });
        };
        let value = self.measure(value, limits.max_document_bytes, room)?;
        // The value is cloned into the document: that is work as well.
        self.charge(value.bytes)?;
        // The member's key, colon and comma (or an element's comma), at most.
        let overhead = path.last().map_or(0, |token| string_len(token) + 2);
        let added = value.bytes.saturating_add(overhead);
        let slack = limits.max_document_bytes / 16;
        let next = match self.size {
            Size::AtMost(size) if size.saturating_add(added) <= limits.max_document_bytes => {
                Some(Size::AtMost(size + added))
            }
            Size::Unknown { growth } if growth.saturating_add(added) <= slack => {
                Some(Size::Unknown { growth: growth + added })
            }
            _ => self.exact_after_insert(doc, path, value.bytes, replace, limits)?.map(Size::AtMost),
        };
        // Without a judgement the op fails on its own and changes nothing.
        if let Some(next) = next {
            self.size = next;
        }
        Ok(())
    }

    /// Judges moving the value at `from` to `path` (the source exists) before it is
    /// made: the value may land deeper than it was. (Its size is judged after, by
    /// [`Meter::moved`].)
    pub(crate) fn relocate(
        &mut self,
        doc: &Value,
        from: &JsonPointer,
        path: &JsonPointer,
    ) -> Result<(), PatchErrorKind> {
        let Some(limits) = self.limits else { return Ok(()) };
        if path.len() <= from.len() {
            return Ok(());
        }
        let Some(room) = limits.max_depth.checked_sub(path.len()) else {
            return Err(PatchErrorKind::DocumentTooDeep { limit: limits.max_depth });
        };
        match from.get(doc) {
            Some(moved) => self.measure(moved, usize::MAX, room).map(drop),
            // The move fails on its own, with the error that says why.
            None => Ok(()),
        }
    }

    /// Judges a move just made to `path` of `doc`: the document grew by at most the
    /// member name (or comma) around its new place. When the account cannot rule out
    /// that the document is now over the limit, it measures it: a refusal is exact.
    pub(crate) fn moved(&mut self, doc: &Value, path: &JsonPointer) -> Result<(), PatchErrorKind> {
        let Some(limits) = self.limits else { return Ok(()) };
        let added = path.last().map_or(0, |token| string_len(token) + 2);
        self.size = match self.size {
            Size::AtMost(size) if size.saturating_add(added) <= limits.max_document_bytes => Size::AtMost(size + added),
            Size::Unknown { growth } if growth.saturating_add(added) <= limits.max_document_bytes / 16 => {
                Size::Unknown { growth: growth + added }
            }
            _ => Size::AtMost(self.measure(doc, limits.max_document_bytes, usize::MAX)?.bytes),
        };
        Ok(())
    }

    /// Judges keeping a copy of `value` for an inverse (a `move` onto an ancestor): the
    /// copy is measured and cloned like a `copy`'s source, but adds nothing to the document.
    pub(crate) fn clone_for_inverse(&mut self, value: &Value) -> Result<(), PatchErrorKind> {
        if self.limits.is_none() {
            return Ok(());
        }
        let measured = self.measure(value, usize::MAX, usize::MAX)?;
        self.charge(measured.bytes)
    }

    /// The document's exact size after the insert: the document measured now, less the
    /// value the insert overwrites, plus the value and the member or element around it.
    /// `None` when the insert cannot happen (no container at the parent path): the op
    /// then fails on its own, with the error that says why.
    fn exact_after_insert(
        &mut self,
        doc: &Value,
        path: &JsonPointer,
        value_bytes: usize,
        replace: bool,
        limits: ApplyLimits,
    ) -> Result<Option<usize>, PatchErrorKind> {
        let Some((parent, token)) = path.split_last() else {
            // The whole document is replaced by the value, already measured.
            return Ok(Some(value_bytes));
        };
        let (overwritten, overhead) = match parent.get(doc) {
            Some(Value::Object(map)) => match map.get(token) {
                Some(old) => (Some(old), 0),
                None => (None, string_len(token) + 1 + usize::from(!map.is_empty())),
            },
            Some(Value::Array(items)) if replace => (parse_index(token).and_then(|i| items.get(i)), 0),
            Some(Value::Array(items)) => (None, usize::from(!items.is_empty())),
            _ => return Ok(None),
        };
        let old = match overwritten {
            Some(old) => self.measure(old, usize::MAX, usize::MAX)?.bytes,
            None => 0,
        };
        let others = value_bytes.saturating_add(overhead);
        // The document may hold at most this much before the insert.
        let room = limits.max_document_bytes.saturating_add(old).saturating_sub(others);
        let before = self.measure(doc, room, usize::MAX)?.bytes;
        Ok(Some(before - old + others))
    }

    /// Measures `value` as far as `max_bytes` and `max_depth` and charges the bytes
    /// walked; refuses when the value is larger or deeper, or the work budget is spent.
    fn measure(&mut self, value: &Value, max_bytes: usize, max_depth: usize) -> Result<Measured, PatchErrorKind> {
        let Some(limits) = self.limits else { return Ok(Measured::default()) };
        let budget = limits.max_work_bytes.saturating_sub(self.work);
        let measured = measure(value, max_bytes.min(budget), max_depth);
        self.work = self.work.saturating_add(measured.bytes);
        if measured.depth > max_depth {
            Err(PatchErrorKind::DocumentTooDeep { limit: limits.max_depth })
        } else if measured.bytes > max_bytes {
            Err(PatchErrorKind::DocumentTooLarge { limit: limits.max_document_bytes })
        } else if measured.bytes > budget {
            Err(PatchErrorKind::TooMuchWork { limit: limits.max_work_bytes })
        } else {
            Ok(measured)
        }
    }

    /// Charges `bytes` of work (a clone); refuses when the budget is spent.
    fn charge(&mut self, bytes: usize) -> Result<(), PatchErrorKind> {
        let Some(limits) = self.limits else { return Ok(()) };
        self.work = self.work.saturating_add(bytes);
        if self.work > limits.max_work_bytes {
            return Err(PatchErrorKind::TooMuchWork { limit: limits.max_work_bytes });
        }
        Ok(())
    }
}

/// What [`measure`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Measured {
    /// The length of the value's compact JSON text, or, when the walk stopped early, a
    /// length already past the bound it stopped at.
    pub(crate) bytes: usize,
    /// The nesting depth (0 for a scalar, 1 for `[]` or `{}`), or, when the walk stopped
    /// early, a depth already past the bound.
    pub(crate) depth: usize,
}

/// The length of `value`'s compact JSON text (as serde_json and the canonical form write
/// it) and its nesting depth, walking until the length passes `max_bytes` or the depth
/// passes `max_depth`, whichever comes first. An explicit stack: any nesting is safe.
pub(crate) fn measure(value: &Value, max_bytes: usize, max_depth: usize) -> Measured {
    let mut found = Measured::default();
    let mut stack = vec![(value, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        let (bytes, node_depth) = match node {
            Value::Null => (4, depth),
            Value::Bool(b) => (if *b { 4 } else { 5 }, depth),
            Value::Number(n) => (number_len(n), depth),
            Value::String(s) => (string_len(s), depth),
            Value::Array(items) => {
                stack.extend(items.iter().map(|item| (item, depth + 1)));
                (2 + items.len().saturating_sub(1), depth + 1)
            }
            Value::Object(map) => {
                let keys: usize = map.keys().map(|key| string_len(key) + 1).sum();
                stack.extend(map.values().map(|item| (item, depth + 1)));
                (2 + map.len().saturating_sub(1) + keys, depth + 1)
            }
        };
        found.bytes = found.bytes.saturating_add(bytes);
        found.depth = found.depth.max(node_depth);
        if found.bytes > max_bytes || found.depth > max_depth {
            break;
        }
    }
    found
}

/// Counts the bytes serde_json writes, without keeping them.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of a string as JSON, quotes and escapes included: serde_json's own writer
/// is the definition of the form.
fn string_len(s: &str) -> usize {
    let mut count = Count(0);
    // Writing a string into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, s);
    count.0
}

fn number_len(n: &serde_json::Number) -> usize {
    let mut count = Count(0);
    // Writing a number into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, n);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{PatchError, apply_with_inverse, apply_within_limits, parse_patch};
    use serde_json::json;

    /// Applies `ops` under `limits`; on success checks that the plain apply gives the
    /// same document and inverse, on failure that the document is untouched.
    fn check(doc: &Value, ops: Value, limits: ApplyLimits) -> Result<Value, PatchError> {
        let patch = parse_patch(ops).unwrap();
        let mut limited = doc.clone();
        match apply_within_limits(&mut limited, &patch, &limits) {
            Ok(inverse) => {
                let mut plain = doc.clone();
                assert_eq!(apply_with_inverse(&mut plain, &patch).unwrap(), inverse);
                assert_eq!(plain, limited);
                Ok(limited)
            }
            Err(err) => {
                assert_eq!(&limited, doc, "a refused patch leaves the document as it was");
                Err(err)
            }
        }
    }

    fn copies_into_itself(n: usize) -> Value {
        Value::Array((0..n).map(|i| json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")})).collect())
    }

    #[test]
    fn a_patch_of_doubling_copies_is_refused_before_it_builds_the_document() {
        // 17 ops of 806 bytes would build a document of 1036 * 2^17 bytes (130 MiB).
        let doc = json!({"x": {"s": "a".repeat(1024)}});
        let limits = ApplyLimits::new(1 << 20, 64);
        let err = check(&doc, copies_into_itself(17), limits).unwrap_err();
        assert_eq!(err.kind, PatchErrorKind::DocumentTooLarge { limit: 1 << 20 }, "{err}");
        assert!(err.is_over_limit());
        // Refused at the first copy that would pass the limit (the tenth: 1036 * 2^10
        // bytes), not after building anything larger.
        assert_eq!(err.index, 9, "{err}");
        assert_eq!(
            err.to_string(),
            r#"op 9 (copy "/x/c9"): the document would be larger than the limit of 1048576 bytes"#
        );
        // Nine copies stay under the limit and apply as they would without one.
        let nine = check(&doc, copies_into_itself(9), limits).unwrap();
        assert!(serde_json::to_string(&nine).unwrap().len() <= 1 << 20);
    }

    #[test]
    fn the_size_account_is_exact_at_the_limit() {
        // `{"a":"x…x","b":"y…y"}`: 48 bytes, then 5 for `,"b":` and 47 for the value.
        let limits = ApplyLimits::new(100, 64);
        let doc = json!({"a": "x".repeat(40)});
        let fits = json!([{"op": "add", "path": "/b", "value": "y".repeat(45)}]);
        let grown = check(&doc, fits, limits).unwrap();
        assert_eq!(serde_json::to_string(&grown).unwrap().len(), 100);
        let one_more = json!([{"op": "add", "path": "/b", "value": "y".repeat(46)}]);
        assert_eq!(check(&doc, one_more, limits).unwrap_err().kind, PatchErrorKind::DocumentTooLarge { limit: 100 });
        // Replacing a large value by another counts what it overwrites.
        let big = json!({"a": "x".repeat(90)});
        let swap = json!([{"op": "replace", "path": "/a", "value": "z".repeat(90)}, {"op": "add", "path": "/a", "value": "w".repeat(90)}]);
        assert_eq!(check(&big, swap, limits).unwrap(), json!({"a": "w".repeat(90)}));
        // Inserting into an array, and replacing the whole document.
        let list = json!(["x".repeat(90)]);
        let fits = json!([{"op": "add", "path": "/-", "value": "y"}, {"op": "replace", "path": "/0", "value": "q".repeat(89)}]);
        check(&list, fits, limits).unwrap();
        let too_big = json!([{"op": "add", "path": "/0", "value": "y".repeat(10)}]);
        assert!(check(&list, too_big, limits).unwrap_err().is_over_limit());
        let root = json!([{"op": "replace", "path": "", "value": "r".repeat(98)}]);
        assert_eq!(check(&list, root, limits).unwrap(), json!("r".repeat(98)));
    }

    #[test]
    fn copying_and_removing_a_large_subtree_in_turn_runs_out_of_work() {
        let doc = json!({"big": "x".repeat(100_000)});
        let ops: Vec<Value> = (0..500)
            .flat_map(|_| [json!({"op": "copy", "from": "/big", "path": "/t"}), json!({"op": "remove", "path": "/t"})])
            .collect();
        let limits = ApplyLimits::new(1 << 20, 64);
        let err = check(&doc, Value::Array(ops), limits).unwrap_err();
        assert_eq!(err.kind, PatchErrorKind::TooMuchWork { limit: 8 << 20 }, "{err}");
        // Each copy measures and clones 100,002 bytes, and the account measures the whole
        // document now and then: the budget allows at most 41 copies, and not much fewer.
        let copies = err.index / 2;
        assert!((35..=41).contains(&copies), "{err}");
        // A few such copies are fine.
        let few: Vec<Value> = (0..3)
            .flat_map(|_| [json!({"op": "copy", "from": "/big", "path": "/t"}), json!({"op": "remove", "path": "/t"})])
            .collect();
        assert_eq!(check(&doc, Value::Array(few), limits).unwrap(), doc);
    }

    #[test]
    fn no_op_may_nest_the_document_deeper_than_the_limit() {
        let limits = ApplyLimits::new(1 << 20, 4);
        let doc = json!({"a": {"b": {"c": 1}}, "l": [[1]]});
        let deep = |ops: Value| check(&doc, ops, limits).map_err(|e| e.kind);
        let too_deep = Err(PatchErrorKind::DocumentTooDeep { limit: 4 });
        assert_eq!(deep(json!([{"op": "add", "path": "/a/b/d", "value": {"e": {}}}])), too_deep);
        assert_eq!(deep(json!([{"op": "replace", "path": "/a/b/c", "value": [[]]}])), too_deep);
        assert_eq!(deep(json!([{"op": "add", "path": "/l/0/-", "value": [[]]}])), too_deep);
        assert_eq!(deep(json!([{"op": "copy", "from": "/a", "path": "/a/b/copy"}])), too_deep);
        assert_eq!(deep(json!([{"op": "move", "from": "/l", "path": "/a/b/l"}])), too_deep);
        // Even when a later op would undo it: the limit holds after every op.
        let undone = json!([{"op": "add", "path": "/a/b/d", "value": {"e": {}}}, {"op": "remove", "path": "/a/b/d"}]);
        assert_eq!(deep(undone), too_deep);
        // At the limit, and moving up, is fine.
        assert!(deep(json!([{"op": "add", "path": "/a/b/d", "value": {"e": 1}}])).is_ok());
        assert!(deep(json!([{"op": "move", "from": "/a/b", "path": "/b"}])).is_ok());
        assert!(deep(json!([{"op": "copy", "from": "/a/b", "path": "/l/-"}])).is_ok());
    }

    /// Found by the `patch_apply_inverse` fuzz target: a move keeps its value's size but
    /// not the member name around it, so a document at the limit grew past it.
    #[test]
    fn a_move_under_a_longer_name_counts_the_name() {
        let limits = ApplyLimits::new(20, 64);
        // `{"a":{"b":"xxxxxx"}}`: 20 bytes, at the limit.
        let doc = json!({"a": {"b": "x".repeat(6)}});
        assert_eq!(serde_json::to_string(&doc).unwrap().len(), 20);
        let longer = json!([{"op": "move", "from": "/a/b", "path": "/a/bb"}]);
        assert_eq!(check(&doc, longer, limits).unwrap_err().kind, PatchErrorKind::DocumentTooLarge { limit: 20 });
        let same = json!([{"op": "move", "from": "/a/b", "path": "/a/c"}]);
        assert_eq!(check(&doc, same, limits).unwrap(), json!({"a": {"c": "x".repeat(6)}}));
        // Shorter is fine, and so is a move up that replaces its container.
        let shorter = json!([{"op": "move", "from": "/a", "path": "/"}, {"op": "move", "from": "/", "path": "/a"}]);
        check(&doc, shorter, limits).unwrap();
        check(&doc, json!([{"op": "move", "from": "/a/b", "path": "/a"}]), limits).unwrap();
    }

    #[test]
    fn structural_errors_are_reported_as_without_limits() {
        let limits = ApplyLimits::new(10, 64);
        let doc = json!({"a": 1});
        for ops in [
            json!([{"op": "copy", "from": "/nope", "path": "/b"}]),
            json!([{"op": "replace", "path": "/nope", "value": "x".repeat(100)}]),
            json!([{"op": "move", "from": "/nope", "path": "/x/y"}]),
            json!([{"op": "move", "from": "/a", "path": "/a/b"}]),
        ] {
            let patch = parse_patch(ops.clone()).unwrap();
            let plain = apply_with_inverse(&mut doc.clone(), &patch).unwrap_err();
            assert_eq!(check(&doc, ops, limits).unwrap_err(), plain);
        }
    }

    #[test]
    fn measure_is_the_length_of_the_compact_text_and_the_depth() {
        for value in [
            json!(null),
            json!(true),
            json!(false),
            json!(-12.5e-7),
            json!(u64::MAX),
            json!("quote \" backslash \\ nul \u{0} tab \t é \u{7f}"),
            json!([]),
            json!({}),
            json!([1, [2, [3, {}]], {"k\n": {"": null}}]),
            json!({"b": 1, "a": [true, "x"], "c": {"d": {"e": []}}}),
        ] {
            let measured = measure(&value, usize::MAX, usize::MAX);
            assert_eq!(measured.bytes, serde_json::to_string(&value).unwrap().len(), "{value}");
            assert_eq!(measured.depth, crate::protocol::json_depth(&value), "{value}");
        }
    }

    #[test]
    fn measure_stops_once_past_a_bound() {
        let wide = Value::Array(vec![json!("x".repeat(100)); 1000]);
        let measured = measure(&wide, 1000, usize::MAX);
        assert!(measured.bytes > 1000 && measured.bytes < 1200, "{measured:?}");
        let mut deep = json!(1);
        for _ in 0..10_000 {
            deep = Value::Array(vec![deep]);
        }
        let measured = measure(&deep, usize::MAX, 64);
        assert_eq!(measured.depth, 65);
        // Deeper than any recursion would survive, measured with an explicit stack.
        assert_eq!(measure(&deep, usize::MAX, usize::MAX).depth, 10_000);
        // Dropped level by level: a recursive drop this deep could overflow the stack.
        while let Value::Array(mut items) = deep {
            deep = items.pop().unwrap_or(Value::Null);
        }
    }
}
