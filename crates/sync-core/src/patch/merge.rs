//! JSON Merge Patch (RFC 7396), both applied directly and expressed as RFC 6902 ops.
//!
//! `update_document(id, {"status": "completed"})` is a merge patch; the client sends it
//! as the ops of [`merge_diff`] so that the server can rebase it like any other patch.
//! `apply(merge_diff(t, p), t) == merge_patch(t, p)` for every target and patch.

use serde_json::{Map, Value};

use super::{Patch, PatchOp};
use crate::pointer::JsonPointer;

/// Applies an RFC 7396 merge patch to `target` in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in members {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The RFC 6902 operations that turn `target` into `merge_patch(target, patch)`,
/// touching only the members the merge patch names.
pub fn merge_diff(target: &Value, patch: &Value) -> Patch {
    let mut ops = Vec::new();
    merge_diff_at(&JsonPointer::root(), Some(target), patch, &mut ops);
    ops
}

fn merge_diff_at(path: &JsonPointer, target: Option<&Value>, patch: &Value, ops: &mut Patch) {
    match (target, patch) {
        (Some(Value::Object(map)), Value::Object(members)) => {
            for (key, value) in members {
                let child = path.child(key.as_str());
                match (map.get(key), value) {
                    (None, Value::Null) => {}
                    (Some(_), Value::Null) => ops.push(PatchOp::Remove { path: child }),
                    (existing, value) => merge_diff_at(&child, existing, value, ops),
                }
            }
        }
        _ => {
            let mut merged = Value::Null;
            merge_patch(&mut merged, patch);
            match target {
                Some(existing) if *existing == merged => {}
                Some(_) => ops.push(PatchOp::Replace { path: path.clone(), value: merged }),
                None => ops.push(PatchOp::Add { path: path.clone(), value: merged }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{apply, patch_to_value};
    use serde_json::json;

    /// The examples of RFC 7396 Appendix A.
    #[test]
    fn rfc7396_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, expected) in cases {
            let mut merged = target.clone();
            merge_patch(&mut merged, &patch);
            assert_eq!(merged, expected, "merge_patch({target}, {patch})");
            let ops = merge_diff(&target, &patch);
            let mut state = target.clone();
            apply(&mut state, &ops).unwrap();
            assert_eq!(state, expected, "merge_diff({target}, {patch}) = {ops:?}");
        }
    }

    #[test]
    fn update_sends_only_named_members() {
        let doc = json!({"title": "My Document", "status": "pending", "tags": ["work"]});
        let ops = merge_diff(&doc, &json!({"status": "completed", "note": null}));
        assert_eq!(patch_to_value(&ops), json!([{"op": "replace", "path": "/status", "value": "completed"}]));
        assert!(merge_diff(&doc, &json!({"status": "pending"})).is_empty());
    }
}
