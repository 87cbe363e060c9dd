//! A small diff between two JSON values: `apply(diff(a, b), a) == b` exactly.
//!
//! Objects are compared member by member and recursed into. Arrays keep their common
//! prefix and suffix, align the middle by longest common subsequence (bounded in size),
//! and turn an element replaced in place into a nested diff, so editing one field of one
//! list item yields one small operation rather than a new list.

use serde_json::Value;

use super::{Patch, PatchOp};
use crate::pointer::JsonPointer;

/// Above this many cells the LCS table is not built and arrays are diffed by position.
const LCS_CELL_LIMIT: usize = 250_000;

/// The operations that turn `from` into `to`.
pub fn diff(from: &Value, to: &Value) -> Patch {
    let mut ops = Vec::new();
    diff_at(&mut JsonPointer::root(), from, to, &mut ops);
    ops
}

fn diff_at(path: &mut JsonPointer, from: &Value, to: &Value, ops: &mut Patch) {
    // Exact equality (1 and 1.0 differ): the result must be byte-identical.
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys() {
                if !b.contains_key(key) {
                    ops.push(PatchOp::Remove { path: path.child(key.as_str()) });
                }
            }
            for (key, new) in b {
                match a.get(key) {
                    Some(old) => {
                        path.push(key.as_str());
                        diff_at(path, old, new, ops);
                        pop(path);
                    }
                    None => ops.push(PatchOp::Add { path: path.child(key.as_str()), value: new.clone() }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => diff_arrays(path, a, b, ops),
        _ => ops.push(PatchOp::Replace { path: path.clone(), value: to.clone() }),
    }
}

fn pop(path: &mut JsonPointer) {
    if let Some((parent, _)) = path.split_last() {
        *path = parent;
    }
}

fn diff_arrays(path: &mut JsonPointer, a: &[Value], b: &[Value], ops: &mut Patch) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a.iter().rev().zip(b.iter().rev()).take(max_suffix).take_while(|(x, y)| x == y).count();
    let old = &a[prefix..a.len() - suffix];
    let new = &b[prefix..b.len() - suffix];

    // Pairs of (old index, new index) that stay, in order.
    let matches = if old.is_empty() || new.is_empty() || old.len() == new.len() {
        Vec::new()
    } else if old.len().saturating_mul(new.len()) <= LCS_CELL_LIMIT {
        lcs(old, new)
    } else {
        Vec::new()
    };

    // Walk the gaps between matches; `at` is the position in the array being edited,
    // which equals the position in `new` because everything before it is final.
    let mut at = prefix;
    let (mut i, mut j) = (0, 0);
    for (mi, mj) in matches.into_iter().chain(std::iter::once((old.len(), new.len()))) {
        emit_gap(path, &old[i..mi], &new[j..mj], &mut at, ops);
        at += 1; // the matched element itself
        i = mi + 1;
        j = mj + 1;
    }
}

/// Turns the old elements of one gap into the new ones.
fn emit_gap(path: &mut JsonPointer, old: &[Value], new: &[Value], at: &mut usize, ops: &mut Patch) {
    let paired = old.len().min(new.len());
    for k in 0..paired {
        path.push(at.to_string());
        diff_at(path, &old[k], &new[k], ops);
        pop(path);
        *at += 1;
    }
    for _ in paired..old.len() {
        ops.push(PatchOp::Remove { path: path.child(at.to_string()) });
    }
    for value in &new[paired..] {
        ops.push(PatchOp::Add { path: path.child(at.to_string()), value: value.clone() });
        *at += 1;
    }
}

/// Longest common subsequence of two slices as matched index pairs.
fn lcs(a: &[Value], b: &[Value]) -> Vec<(usize, usize)> {
    let (n, m) = (a.len(), b.len());
    // lengths[i][j] = LCS length of a[i..] and b[j..], stored row-major.
    let width = m + 1;
    let mut lengths = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lengths[i * width + j] = if a[i] == b[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if lengths[(i + 1) * width + j] >= lengths[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{apply, patch_to_value};
    use serde_json::json;

    fn check(a: Value, b: Value, expected_ops: Value) {
        let ops = diff(&a, &b);
        assert_eq!(patch_to_value(&ops), expected_ops);
        let mut state = a;
        apply(&mut state, &ops).unwrap();
        assert_eq!(state, b);
    }

    #[test]
    fn object_members() {
        check(
            json!({"title": "a", "done": false, "gone": 1}),
            json!({"title": "a", "done": true, "new": [1]}),
            json!([
                {"op": "remove", "path": "/gone"},
                {"op": "replace", "path": "/done", "value": true},
                {"op": "add", "path": "/new", "value": [1]}
            ]),
        );
    }

    #[test]
    fn array_insert_and_remove_are_single_ops() {
        check(json!([1, 2, 3]), json!([1, 9, 2, 3]), json!([{"op": "add", "path": "/1", "value": 9}]));
        check(json!([1, 2, 3]), json!([1, 3]), json!([{"op": "remove", "path": "/1"}]));
        check(
            json!(["a", "b", "c", "d"]),
            json!(["b", "c", "x"]),
            json!([
                {"op": "remove", "path": "/0"},
                {"op": "replace", "path": "/2", "value": "x"}
            ]),
        );
    }

    #[test]
    fn nested_edit_inside_list_item() {
        check(
            json!({"tasks": [{"t": "a", "done": false}, {"t": "b", "done": false}]}),
            json!({"tasks": [{"t": "a", "done": false}, {"t": "b", "done": true}]}),
            json!([{"op": "replace", "path": "/tasks/1/done", "value": true}]),
        );
    }

    #[test]
    fn numbers_that_print_differently_differ() {
        check(json!({"n": 1}), json!({"n": 1.0}), json!([{"op": "replace", "path": "/n", "value": 1.0}]));
    }

    #[test]
    fn type_change_and_root() {
        check(json!([1]), json!({"a": 1}), json!([{"op": "replace", "path": "", "value": {"a": 1}}]));
        check(json!({"a/b": 1}), json!({"a/b": 2}), json!([{"op": "replace", "path": "/a~1b", "value": 2}]));
    }
}
