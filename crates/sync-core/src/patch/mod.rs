//! JSON Patch (RFC 6902): the operation type, parsing with clear errors, atomic apply
//! with inverse, minimal diff, and RFC 7396 merge expressed as a patch.
//!
//! Guarantees: [`apply`] applies all operations or none; the inverse returned by
//! [`apply_with_inverse`] restores the pre-state exactly; `apply(diff(a, b), a) == b`;
//! [`apply_within_limits`] refuses, before it runs, any operation that would take the
//! document past its size or depth limit or the patch past its work budget.

mod apply;
mod diff;
mod limits;
mod merge;

use std::fmt;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use apply::{apply, apply_one, apply_with_inverse, apply_within_limits, json_equal};
pub(crate) use apply::{apply_metered, apply_one_metered};
pub use diff::diff;
pub(crate) use limits::Meter;
pub use limits::{ApplyLimits, WORK_PER_DOCUMENT_BYTE};
pub use merge::{merge_diff, merge_patch};

use crate::pointer::JsonPointer;

/// One RFC 6902 operation.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchOp {
    /// Adds a value: inserts into an array, sets an object member, or replaces the root.
    Add {
        /// Where to add.
        path: JsonPointer,
        /// The value to add.
        value: Value,
    },
    /// Removes the value at `path`, which must exist.
    Remove {
        /// What to remove.
        path: JsonPointer,
    },
    /// Replaces the value at `path`, which must exist.
    Replace {
        /// What to replace.
        path: JsonPointer,
        /// The new value.
        value: Value,
    },
    /// Removes the value at `from` and adds it at `path`.
    Move {
        /// Source location.
        from: JsonPointer,
        /// Target location (resolved after the removal).
        path: JsonPointer,
    },
    /// Copies the value at `from` to `path`.
    Copy {
        /// Source location.
        from: JsonPointer,
        /// Target location.
        path: JsonPointer,
    },
    /// Fails the whole patch unless the value at `path` equals `value`.
    Test {
        /// What to compare.
        path: JsonPointer,
        /// The expected value.
        value: Value,
    },
}

/// A JSON Patch document: a list of operations applied in order.
pub type Patch = Vec<PatchOp>;

impl PatchOp {
    /// The operation name as written on the wire (`"add"`, `"remove"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            PatchOp::Add { .. } => "add",
            PatchOp::Remove { .. } => "remove",
            PatchOp::Replace { .. } => "replace",
            PatchOp::Move { .. } => "move",
            PatchOp::Copy { .. } => "copy",
            PatchOp::Test { .. } => "test",
        }
    }

    /// The target location of the operation.
    pub fn path(&self) -> &JsonPointer {
        match self {
            PatchOp::Add { path, .. }
            | PatchOp::Remove { path }
            | PatchOp::Replace { path, .. }
            | PatchOp::Move { path, .. }
            | PatchOp::Copy { path, .. }
            | PatchOp::Test { path, .. } => path,
        }
    }

    /// The source location of `move` and `copy`.
    pub fn from(&self) -> Option<&JsonPointer> {
        match self {
            PatchOp::Move { from, .. } | PatchOp::Copy { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Parses one operation from its JSON form. `index` is only used in error messages.
    pub fn from_value(index: usize, value: Value) -> Result<PatchOp, PatchError> {
        let Value::Object(mut map) = value else {
            return Err(PatchError::malformed(index, None, "an operation must be a JSON object"));
        };
        let op = match map.remove("op") {
            Some(Value::String(op)) => op,
            Some(_) => return Err(PatchError::malformed(index, None, "`op` must be a string")),
            None => return Err(PatchError::malformed(index, None, "missing `op`")),
        };
        let name: &'static str = match op.as_str() {
            "add" => "add",
            "remove" => "remove",
            "replace" => "replace",
            "move" => "move",
            "copy" => "copy",
            "test" => "test",
            other => {
                return Err(PatchError::malformed(index, None, format!("unknown op `{other}`")));
            }
        };
        let pointer = |map: &mut Map<String, Value>, field: &str| -> Result<JsonPointer, PatchError> {
            match map.remove(field) {
                Some(Value::String(s)) => JsonPointer::parse(&s)
                    .map_err(|e| PatchError::malformed(index, Some(name), format!("`{field}`: {e}"))),
                Some(_) => Err(PatchError::malformed(index, Some(name), format!("`{field}` must be a string"))),
                None => Err(PatchError::malformed(index, Some(name), format!("missing `{field}`"))),
            }
        };
        let value_field = |map: &mut Map<String, Value>| -> Result<Value, PatchError> {
            map.remove("value").ok_or_else(|| PatchError::malformed(index, Some(name), "missing `value`"))
        };
        Ok(match name {
            "add" => PatchOp::Add { path: pointer(&mut map, "path")?, value: value_field(&mut map)? },
            "remove" => PatchOp::Remove { path: pointer(&mut map, "path")? },
            "replace" => PatchOp::Replace { path: pointer(&mut map, "path")?, value: value_field(&mut map)? },
            "move" => PatchOp::Move { from: pointer(&mut map, "from")?, path: pointer(&mut map, "path")? },
            "copy" => PatchOp::Copy { from: pointer(&mut map, "from")?, path: pointer(&mut map, "path")? },
            _ => PatchOp::Test { path: pointer(&mut map, "path")?, value: value_field(&mut map)? },
        })
    }

    /// The JSON form of the operation.
    pub fn to_value(&self) -> Value {
        // Serializing a PatchOp into a Value cannot fail: every part is a string or a Value.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Parses a JSON Patch document (a JSON array of operations).
pub fn parse_patch(value: Value) -> Result<Patch, PatchError> {
    let Value::Array(items) = value else {
        return Err(PatchError::malformed(0, None, "a patch must be a JSON array of operations"));
    };
    items.into_iter().enumerate().map(|(i, v)| PatchOp::from_value(i, v)).collect()
}

/// Serializes a patch to its JSON array form.
pub fn patch_to_value(patch: &[PatchOp]) -> Value {
    Value::Array(patch.iter().map(PatchOp::to_value).collect())
}

impl Serialize for PatchOp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = match self {
            PatchOp::Remove { .. } => 2,
            _ => 3,
        };
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("op", self.name())?;
        match self {
            PatchOp::Add { path, value } | PatchOp::Replace { path, value } | PatchOp::Test { path, value } => {
                map.serialize_entry("path", path)?;
                map.serialize_entry("value", value)?;
            }
            PatchOp::Remove { path } => map.serialize_entry("path", path)?,
            PatchOp::Move { from, path } | PatchOp::Copy { from, path } => {
                map.serialize_entry("from", from)?;
                map.serialize_entry("path", path)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for PatchOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        PatchOp::from_value(0, value).map_err(D::Error::custom)
    }
}

/// Deserializes a [`Patch`] with the errors of [`parse_patch`]; use with
/// `#[serde(deserialize_with = "…")]` on `Vec<PatchOp>` fields.
pub fn deserialize_patch<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Patch, D::Error> {
    let value = Value::deserialize(deserializer)?;
    parse_patch(value).map_err(D::Error::custom)
}

/// What went wrong in a patch, with the operation it happened in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct PatchError {
    /// Zero-based position of the failing operation in the patch.
    pub index: usize,
    /// The operation name, when known.
    pub op: Option<&'static str>,
    /// The path the operation was working on, when known.
    pub path: Option<String>,
    /// The reason.
    pub kind: PatchErrorKind,
}

/// The reason a patch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchErrorKind {
    /// The operation is not well formed (missing or wrongly typed member, unknown op).
    Malformed(String),
    /// The target location (or for `from`, the source) does not exist.
    PathNotFound,
    /// The parent of the target location does not exist or is not a container.
    ParentNotFound,
    /// An array index is out of range.
    IndexOutOfBounds {
        /// The index given.
        index: usize,
        /// The length of the array.
        len: usize,
    },
    /// A token used on an array is not a valid index (`01`, `1e0`, `-1`, a name).
    InvalidIndex(String),
    /// A `test` operation found a different value.
    TestFailed,
    /// `move` into one of its own children.
    MoveIntoChild,
    /// `remove` of the whole document.
    RemoveRoot,
    /// The document would grow past the size limit (bytes of compact JSON).
    DocumentTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The document would nest deeper than the depth limit.
    DocumentTooDeep {
        /// The limit.
        limit: usize,
    },
    /// The patch would measure and clone more bytes of values than one patch may.
    TooMuchWork {
        /// The budget.
        limit: usize,
    },
}

impl PatchError {
    /// Whether the patch was refused for a limit ([`apply_within_limits`]): the document
    /// would be too large or too deep, or the patch too much work. Such a patch is not
    /// wrong for the document; it is too big for this server (`payload_too_large`).
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self.kind,
            PatchErrorKind::DocumentTooLarge { .. }
                | PatchErrorKind::DocumentTooDeep { .. }
                | PatchErrorKind::TooMuchWork { .. }
        )
    }

    pub(crate) fn malformed(index: usize, op: Option<&'static str>, msg: impl Into<String>) -> Self {
        Self { index, op, path: None, kind: PatchErrorKind::Malformed(msg.into()) }
    }

    pub(crate) fn at(index: usize, op: &PatchOp, path: &JsonPointer, kind: PatchErrorKind) -> Self {
        Self { index, op: Some(op.name()), path: Some(path.to_string()), kind }
    }

    fn describe(&self) -> String {
        let mut s = format!("op {}", self.index);
        if let Some(op) = self.op {
            s.push_str(&format!(" ({op}"));
            if let Some(path) = &self.path {
                s.push_str(&format!(" {path:?}"));
            }
            s.push(')');
        }
        s.push_str(": ");
        s.push_str(&self.kind.to_string());
        s
    }
}

impl fmt::Display for PatchErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchErrorKind::Malformed(msg) => f.write_str(msg),
            PatchErrorKind::PathNotFound => f.write_str("path does not exist"),
            PatchErrorKind::ParentNotFound => f.write_str("parent of the path does not exist or is not a container"),
            PatchErrorKind::IndexOutOfBounds { index, len } => {
                write!(f, "array index {index} is out of bounds (length {len})")
            }
            PatchErrorKind::InvalidIndex(token) => write!(f, "`{token}` is not a valid array index"),
            PatchErrorKind::TestFailed => f.write_str("test failed: the value differs"),
            PatchErrorKind::MoveIntoChild => f.write_str("cannot move a value into one of its own children"),
            PatchErrorKind::RemoveRoot => f.write_str("cannot remove the whole document"),
            PatchErrorKind::DocumentTooLarge { limit } => {
                write!(f, "the document would be larger than the limit of {limit} bytes")
            }
            PatchErrorKind::DocumentTooDeep { limit } => {
                write!(f, "the document would nest deeper than the limit of {limit} levels")
            }
            PatchErrorKind::TooMuchWork { limit } => write!(
                f,
                "the patch would copy or measure more than {limit} bytes of values; send it as smaller patches"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_errors_name_the_op_and_field() {
        let err =
            parse_patch(json!([{"op": "add", "path": "/a", "value": 1}, {"op": "replace", "path": "/b"}])).unwrap_err();
        assert_eq!(err.to_string(), "op 1 (replace): missing `value`");
        let err = parse_patch(json!([{"op": "spam", "path": "/a"}])).unwrap_err();
        assert_eq!(err.to_string(), "op 0: unknown op `spam`");
        let err = parse_patch(json!([{"op": "add", "path": null, "value": 1}])).unwrap_err();
        assert_eq!(err.to_string(), "op 0 (add): `path` must be a string");
        let err = parse_patch(json!({"op": "add"})).unwrap_err();
        assert!(err.to_string().contains("JSON array"));
    }

    #[test]
    fn serializes_in_rfc_shape() {
        let patch = parse_patch(json!([
            {"op": "add", "path": "/a~1b", "value": [1]},
            {"op": "move", "from": "/x", "path": "/y"},
            {"op": "remove", "path": "/z", "ignored": true}
        ]))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"add","path":"/a~1b","value":[1]},{"op":"move","from":"/x","path":"/y"},{"op":"remove","path":"/z"}]"#
        );
    }
}
