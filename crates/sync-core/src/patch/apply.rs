//! Applying a patch atomically, in place, while recording its exact inverse.
//!
//! Each operation returns the operations that undo it. A failing operation rolls the
//! document back with the inverses recorded so far, so the caller sees all or nothing
//! without paying for a copy of the document on every call. [`apply_within_limits`]
//! also judges every operation against size, depth and work limits before it runs
//! (see `limits.rs`).

use std::mem;

use serde_json::Value;

use super::limits::{ApplyLimits, Meter};
use super::{Patch, PatchError, PatchErrorKind, PatchOp};
use crate::pointer::{JsonPointer, parse_index};

/// Applies every operation of `patch` to `doc`, or none of them.
pub fn apply(doc: &mut Value, patch: &[PatchOp]) -> Result<(), PatchError> {
    apply_with_inverse(doc, patch).map(drop)
}

/// Applies `patch` atomically and returns its inverse: applying the inverse to the
/// post-state yields the pre-state exactly.
pub fn apply_with_inverse(doc: &mut Value, patch: &[PatchOp]) -> Result<Patch, PatchError> {
    apply_metered(doc, patch, &mut Meter::unlimited())
}

/// [`apply_with_inverse`] for a patch from an untrusted source: every operation is
/// judged before it runs, and before it clones anything, so that no intermediate
/// document grows past `limits.max_document_bytes` (by more than a sixteenth of it, see
/// `limits.rs`) or nests deeper than `limits.max_depth`, and the whole patch measures
/// and clones at most `limits.max_work_bytes` of values. Over a limit, the patch is
/// refused with [`PatchErrorKind::DocumentTooLarge`], [`PatchErrorKind::DocumentTooDeep`]
/// or [`PatchErrorKind::TooMuchWork`] ([`PatchError::is_over_limit`]) and the document
/// is left as it was. The result is a guard, not a measurement: the caller still checks
/// the final document exactly.
pub fn apply_within_limits(doc: &mut Value, patch: &[PatchOp], limits: &ApplyLimits) -> Result<Patch, PatchError> {
    apply_metered(doc, patch, &mut Meter::new(*limits))
}

/// Applies `patch` atomically under `meter`'s account and returns its inverse.
pub(crate) fn apply_metered(doc: &mut Value, patch: &[PatchOp], meter: &mut Meter) -> Result<Patch, PatchError> {
    let mut undo: Vec<Patch> = Vec::with_capacity(patch.len());
    for (index, op) in patch.iter().enumerate() {
        match apply_one_metered(doc, op, index, meter) {
            Ok(inverse) => undo.push(inverse),
            Err(err) => {
                rollback(doc, undo);
                return Err(err);
            }
        }
    }
    Ok(undo.into_iter().rev().flatten().collect())
}

fn rollback(doc: &mut Value, undo: Vec<Patch>) {
    for inverse in undo.into_iter().rev() {
        for (index, op) in inverse.iter().enumerate() {
            // Inverses are built from the state they undo, so they always apply.
            let undone = apply_one(doc, op, index);
            debug_assert!(undone.is_ok(), "inverse failed to apply: {undone:?}");
        }
    }
}

/// Applies one operation in place and returns the operations that undo it.
/// `index` is the position of the operation, used in the error.
pub fn apply_one(doc: &mut Value, op: &PatchOp, index: usize) -> Result<Patch, PatchError> {
    apply_one_metered(doc, op, index, &mut Meter::unlimited())
}

/// [`apply_one`] under `meter`'s account: the operation is judged before it runs.
pub(crate) fn apply_one_metered(
    doc: &mut Value,
    op: &PatchOp,
    index: usize,
    meter: &mut Meter,
) -> Result<Patch, PatchError> {
    let fail = |path: &JsonPointer, kind| PatchError::at(index, op, path, kind);
    match op {
        PatchOp::Add { path, value } => {
            meter.insert(doc, path, value, false).map_err(|k| fail(path, k))?;
            add(doc, path, value.clone()).map_err(|k| fail(path, k))
        }
        PatchOp::Remove { path } => {
            let (removed, concrete) = remove(doc, path).map_err(|k| fail(path, k))?;
            Ok(vec![PatchOp::Add { path: concrete, value: removed }])
        }
        PatchOp::Replace { path, value } => {
            // A missing target is reported as such before the meter judges the value;
            // without limits, `get_mut` below finds it missing at no extra cost.
            if meter.is_limited() && path.get(doc).is_none() {
                return Err(fail(path, PatchErrorKind::PathNotFound));
            }
            meter.insert(doc, path, value, true).map_err(|k| fail(path, k))?;
            let target = path.get_mut(doc).ok_or_else(|| fail(path, PatchErrorKind::PathNotFound))?;
            let old = mem::replace(target, value.clone());
            Ok(vec![PatchOp::Replace { path: path.clone(), value: old }])
        }
        PatchOp::Move { from, path } => {
            if from == path {
                // Moving a value onto itself changes nothing, but RFC 6902 §4.4 still
                // requires the source to exist: a move from nowhere is an error.
                return match from.get(doc) {
                    Some(_) => Ok(Vec::new()),
                    None => Err(fail(from, PatchErrorKind::PathNotFound)),
                };
            }
            if path.starts_with(from) {
                return Err(fail(path, PatchErrorKind::MoveIntoChild));
            }
            meter.relocate(doc, from, path).map_err(|k| fail(path, k))?;
            // A value moved onto one of its ancestors replaces it (or, in an array, goes in
            // before it), and no inverse can move it back into a child of where it then
            // is: the inverse writes the ancestor's old value whole, so that value is kept
            // (and counted as a clone).
            let ancestor = match path.get(doc) {
                Some(old) if from.starts_with(path) => {
                    meter.clone_for_inverse(old).map_err(|k| fail(path, k))?;
                    Some(old.clone())
                }
                _ => None,
            };
            let from_in_array = from.split_last().and_then(|(parent, _)| parent.get(doc)).is_some_and(Value::is_array);
            let (moved, concrete_from) = remove(doc, from).map_err(|k| fail(from, k))?;
            let inverse = match add_resolved(doc, path, moved) {
                Ok((concrete_path, previous)) if let Some(original) = ancestor => {
                    // Into an array the value was inserted and the ancestor moved one place
                    // on: take the value out first, and the ancestor is back at the path.
                    let mut inverse = Vec::with_capacity(2);
                    if previous.is_none() {
                        inverse.push(PatchOp::Remove { path: concrete_path.clone() });
                    }
                    inverse.push(PatchOp::Replace { path: concrete_path, value: original });
                    inverse
                }
                Ok((concrete_path, previous)) => {
                    // The overwritten member goes back once the value is back at its source,
                    // where the source's array has its element again: the member's path is
                    // read in that frame.
                    let previous_path = match from_in_array {
                        true => after_reinsert(&concrete_path, &concrete_from),
                        false => concrete_path.clone(),
                    };
                    let mut inverse = vec![PatchOp::Move { from: concrete_path, path: concrete_from }];
                    if let Some(previous) = previous {
                        inverse.push(PatchOp::Add { path: previous_path, value: previous });
                    }
                    inverse
                }
                Err((kind, moved)) => {
                    // Put the value back where it came from before reporting.
                    let restored = add(doc, &concrete_from, moved);
                    debug_assert!(restored.is_ok());
                    return Err(fail(path, kind));
                }
            };
            // A move clones nothing, so it is judged after it is made: its value keeps its
            // size, but the member name it lands under can be longer than the one it left.
            if let Err(kind) = meter.moved(doc, path) {
                for op in &inverse {
                    let undone = apply_one(doc, op, index);
                    debug_assert!(undone.is_ok(), "inverse failed to apply: {undone:?}");
                }
                return Err(fail(path, kind));
            }
            Ok(inverse)
        }
        PatchOp::Copy { from, path } => {
            let source = from.get(doc).ok_or_else(|| fail(from, PatchErrorKind::PathNotFound))?;
            // Judged before the clone: the clone is what would be too large.
            meter.insert(doc, path, source, false).map_err(|k| fail(path, k))?;
            let value = source.clone();
            add(doc, path, value).map_err(|k| fail(path, k))
        }
        PatchOp::Test { path, value } => {
            let actual = path.get(doc).ok_or_else(|| fail(path, PatchErrorKind::PathNotFound))?;
            if json_equal(actual, value) { Ok(Vec::new()) } else { Err(fail(path, PatchErrorKind::TestFailed)) }
        }
    }
}

/// `path`, read in a frame where the array element at `element` was taken out, as it
/// reads once the element is back: an index at or after it in that array is one more.
fn after_reinsert(path: &JsonPointer, element: &JsonPointer) -> JsonPointer {
    let Some((array, index)) = element.split_last() else { return path.clone() };
    let (Some(removed), depth) = (parse_index(index), array.len()) else { return path.clone() };
    match path.tokens().get(depth).and_then(|token| parse_index(token)) {
        Some(i) if path.starts_with(&array) && i >= removed => path.with_token(depth, (i + 1).to_string()),
        _ => path.clone(),
    }
}

/// `add` returning the inverse operations.
fn add(doc: &mut Value, path: &JsonPointer, value: Value) -> Result<Patch, PatchErrorKind> {
    match add_resolved(doc, path, value) {
        Ok((concrete, Some(previous))) => Ok(vec![PatchOp::Replace { path: concrete, value: previous }]),
        Ok((concrete, None)) => Ok(vec![PatchOp::Remove { path: concrete }]),
        Err((kind, _)) => Err(kind),
    }
}

/// `add` returning the concrete path written (`-` resolved) and the value it replaced,
/// or the error and the value back.
fn add_resolved(
    doc: &mut Value,
    path: &JsonPointer,
    value: Value,
) -> Result<(JsonPointer, Option<Value>), (PatchErrorKind, Value)> {
    let Some((parent, token)) = path.split_last() else {
        let previous = mem::replace(doc, value);
        return Ok((JsonPointer::root(), Some(previous)));
    };
    let Some(container) = parent.get_mut(doc) else {
        return Err((PatchErrorKind::ParentNotFound, value));
    };
    match container {
        Value::Object(map) => {
            let previous = map.insert(token.to_owned(), value);
            Ok((path.clone(), previous))
        }
        Value::Array(items) => {
            let index = if token == "-" {
                items.len()
            } else {
                match parse_index(token) {
                    Some(i) => i,
                    None => return Err((PatchErrorKind::InvalidIndex(token.to_owned()), value)),
                }
            };
            if index > items.len() {
                return Err((PatchErrorKind::IndexOutOfBounds { index, len: items.len() }, value));
            }
            items.insert(index, value);
            Ok((parent.child(index.to_string()), None))
        }
        _ => Err((PatchErrorKind::ParentNotFound, value)),
    }
}

/// Removes the value at `path`; returns it and the concrete path it was at.
fn remove(doc: &mut Value, path: &JsonPointer) -> Result<(Value, JsonPointer), PatchErrorKind> {
    let Some((parent, token)) = path.split_last() else {
        return Err(PatchErrorKind::RemoveRoot);
    };
    let container = parent.get_mut(doc).ok_or(PatchErrorKind::ParentNotFound)?;
    match container {
        Value::Object(map) => {
            let removed = map.remove(token).ok_or(PatchErrorKind::PathNotFound)?;
            Ok((removed, path.clone()))
        }
        Value::Array(items) => {
            let index = parse_index(token).ok_or_else(|| PatchErrorKind::InvalidIndex(token.to_owned()))?;
            if index >= items.len() {
                return Err(PatchErrorKind::IndexOutOfBounds { index, len: items.len() });
            }
            Ok((items.remove(index), path.clone()))
        }
        _ => Err(PatchErrorKind::ParentNotFound),
    }
}

/// JSON equality as RFC 6902 `test` defines it: numbers compare by value (`1 == 1.0`),
/// objects regardless of member order, arrays element by element.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse_patch;
    use serde_json::json;

    fn check(doc: Value, patch: Value, expected: Value) {
        let patch = parse_patch(patch).unwrap();
        let mut state = doc.clone();
        let inverse = apply_with_inverse(&mut state, &patch).unwrap();
        assert_eq!(state, expected);
        apply(&mut state, &inverse).unwrap();
        assert_eq!(state, doc, "inverse {inverse:?} did not restore the pre-state");
    }

    #[test]
    fn inverse_restores_overwritten_members() {
        check(json!({"a": 1, "b": 2}), json!([{"op": "add", "path": "/a", "value": 5}]), json!({"a": 5, "b": 2}));
        check(json!({"a": 1, "b": 2}), json!([{"op": "move", "from": "/a", "path": "/b"}]), json!({"b": 1}));
        check(json!({"a": [1, 2]}), json!([{"op": "add", "path": "/a/-", "value": 3}]), json!({"a": [1, 2, 3]}));
        check(
            json!({"a": [1, 2, 3]}),
            json!([{"op": "move", "from": "/a/0", "path": "/a/-"}]),
            json!({"a": [2, 3, 1]}),
        );
        check(json!({"a": 1}), json!([{"op": "copy", "from": "/a", "path": "/b"}]), json!({"a": 1, "b": 1}));
        check(json!({"a": 1}), json!([{"op": "replace", "path": "", "value": [1]}]), json!([1]));
    }

    /// Found by the `patch_apply_inverse` fuzz target: a move of a value onto one of its
    /// ancestors recorded an inverse that moves the ancestor into its own child, which
    /// no document accepts, so the reverse patch did not apply and rollback failed.
    #[test]
    fn moving_a_value_onto_its_ancestor_has_an_inverse_that_applies() {
        check(json!({"a": {"b": 1, "c": 2}}), json!([{"op": "move", "from": "/a/b", "path": "/a"}]), json!({"a": 1}));
        // Into an array the moved value goes in before its old container.
        check(json!([[1, [2, 3]], 4]), json!([{"op": "move", "from": "/0/1", "path": "/0"}]), json!([[2, 3], [1], 4]));
        check(json!({"a": {"b": [5]}}), json!([{"op": "move", "from": "/a/b/0", "path": ""}]), json!(5));
        check(
            json!({"-": {"x": {"y": 1}}}),
            json!([{"op": "move", "from": "/-/x", "path": "/-"}]),
            json!({"-": {"y": 1}}),
        );
        // And a patch that fails after such a move is rolled back through that inverse.
        let doc = json!({"a": {"b": 1, "c": 2}, "l": []});
        let mut state = doc.clone();
        let patch = parse_patch(json!([
            {"op": "move", "from": "/a/b", "path": "/a"},
            {"op": "remove", "path": "/missing"}
        ]))
        .unwrap();
        assert!(apply(&mut state, &patch).is_err());
        assert_eq!(state, doc);
    }

    /// Found by the `patch_apply_inverse` fuzz target: a move out of an array onto an
    /// existing member of a later element recorded the member's restore at its path
    /// after the removal, but the inverse restores it after putting the element back,
    /// when that path names the element before.
    #[test]
    fn a_move_out_of_an_array_onto_a_later_member_has_an_inverse_that_applies() {
        check(json!([1, 2, {"x": 0}]), json!([{"op": "move", "from": "/0", "path": "/1/x"}]), json!([2, {"x": 1}]));
        check(
            json!({"l": ["a", "b", {"k": {"x": 0}}, "c"]}),
            json!([{"op": "move", "from": "/l/0", "path": "/l/1/k/x"}]),
            json!({"l": ["b", {"k": {"x": "a"}}, "c"]}),
        );
        // Elements before the removed one keep their index.
        check(json!([{"x": 0}, 5, 6]), json!([{"op": "move", "from": "/1", "path": "/0/x"}]), json!([{"x": 5}, 6]));
        // Object members never shift.
        check(
            json!({"a": 1, "b": {"x": 0}}),
            json!([{"op": "move", "from": "/a", "path": "/b/x"}]),
            json!({"b": {"x": 1}}),
        );
    }

    #[test]
    fn failure_leaves_document_untouched() {
        let doc = json!({"a": {"b": [1, 2, 3]}, "c": "x"});
        let patch = parse_patch(json!([
            {"op": "remove", "path": "/a/b/0"},
            {"op": "add", "path": "/d", "value": 4},
            {"op": "move", "from": "/c", "path": "/a/e"},
            {"op": "replace", "path": "/missing", "value": 1}
        ]))
        .unwrap();
        let mut state = doc.clone();
        let err = apply(&mut state, &patch).unwrap_err();
        assert_eq!(err.index, 3);
        assert_eq!(err.kind, PatchErrorKind::PathNotFound);
        assert_eq!(state, doc);
        assert_eq!(err.to_string(), r#"op 3 (replace "/missing"): path does not exist"#);
    }

    #[test]
    fn failed_move_puts_value_back() {
        let doc = json!({"a": 1, "b": [1]});
        let mut state = doc.clone();
        let patch = parse_patch(json!([{"op": "move", "from": "/a", "path": "/b/7"}])).unwrap();
        assert!(apply(&mut state, &patch).is_err());
        assert_eq!(state, doc);
    }

    #[test]
    fn move_and_copy_need_an_existing_source() {
        let doc = json!({"a": 1, "l": [1]});
        for patch in [
            json!([{"op": "move", "from": "/nope", "path": "/nope"}]),
            json!([{"op": "move", "from": "/nope", "path": "/b"}]),
            json!([{"op": "move", "from": "/l/1", "path": "/l/1"}]),
            json!([{"op": "move", "from": "/l/-", "path": "/l/-"}]),
            json!([{"op": "move", "from": "/x/y", "path": "/x/y"}]),
            json!([{"op": "copy", "from": "/nope", "path": "/nope"}]),
            json!([{"op": "copy", "from": "/nope", "path": "/b"}]),
        ] {
            let mut state = doc.clone();
            let err = apply(&mut state, &parse_patch(patch.clone()).unwrap()).expect_err(&patch.to_string());
            assert_eq!(err.index, 0, "{patch}");
            assert_eq!(state, doc, "{patch}");
        }
        let err =
            apply(&mut doc.clone(), &parse_patch(json!([{"op": "move", "from": "/nope", "path": "/nope"}])).unwrap())
                .unwrap_err();
        assert_eq!(err.to_string(), r#"op 0 (move "/nope"): path does not exist"#);
        // A move onto itself of a value that exists is allowed and changes nothing.
        check(doc.clone(), json!([{"op": "move", "from": "/a", "path": "/a"}]), doc.clone());
        check(doc.clone(), json!([{"op": "move", "from": "/l/0", "path": "/l/0"}]), doc);
    }

    #[test]
    fn numbers_compare_by_value_in_test() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(&json!({"a": [1, {"b": 2.0}]}), &json!({"a": [1.0, {"b": 2}]})));
        assert!(!json_equal(&json!(1), &json!("1")));
        assert!(!json_equal(&json!([1]), &json!([1, 1])));
    }
}
