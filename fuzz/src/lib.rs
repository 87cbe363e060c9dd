//! Structured inputs for the fuzz targets: small JSON documents and patches decoded from
//! the fuzzer's bytes.
//!
//! Keys and tokens come from a small alphabet that holds what JSON Pointer and the
//! transform treat specially (`""`, `-`, digits, `~` and `/`, which need escapes), so
//! that generated paths often meet existing members; pointers are mostly drawn from the
//! document the op will apply to, so that most ops apply and the fuzzer explores what
//! happens after them rather than the first `path does not exist`.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};
use sync_core::patch::{Patch, PatchOp, apply_one};
use sync_core::pointer::JsonPointer;

/// Object keys and pointer tokens.
pub const KEYS: &[&str] = &["a", "b", "c", "", "0", "1", "-", "~", "/", "~1", "a/b", "é"];

/// Deepest nesting of a generated value.
const MAX_DEPTH: usize = 5;

/// A small JSON value.
pub fn value(u: &mut Unstructured<'_>) -> Result<Value> {
    value_at(u, 0)
}

fn value_at(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let kinds = if depth >= MAX_DEPTH { 5 } else { 7 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.int_in_range(-3i64..=3)?),
        3 => number(u)?,
        4 => Value::String(string(u)?),
        5 => {
            let len = u.int_in_range(0..=3)?;
            Value::Array((0..len).map(|_| value_at(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => {
            let len = u.int_in_range(0..=3)?;
            let mut map = Map::new();
            for _ in 0..len {
                map.insert(key(u)?, value_at(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

/// Numbers that print differently but may compare equal (`1`, `1.0`, `-0.0`), the edges of
/// the integer types, and any finite float.
fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.choose_index(6)? {
        0 => Value::from(1.0),
        1 => Value::from(-0.0),
        2 => Value::from(u64::MAX),
        3 => Value::from(i64::MIN),
        4 => Value::from(u.arbitrary::<i64>()?),
        _ => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
    })
}

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1, 2)? {
        return Ok(KEYS[u.choose_index(KEYS.len())?].to_owned());
    }
    let s: String = u.arbitrary()?;
    Ok(s.chars().take(8).collect())
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(KEYS[u.choose_index(KEYS.len())?].to_owned())
}

/// A pointer: mostly a path that exists in `doc`, sometimes one token past it, sometimes
/// made up.
pub fn pointer(u: &mut Unstructured<'_>, doc: &Value) -> Result<JsonPointer> {
    let mut tokens: Vec<String> = Vec::new();
    let mut node = Some(doc);
    while let Some(current) = node {
        if !u.ratio(3, 4)? {
            break;
        }
        node = match current {
            Value::Array(items) if !items.is_empty() => {
                let i = u.choose_index(items.len())?;
                tokens.push(i.to_string());
                items.get(i)
            }
            Value::Object(map) if !map.is_empty() => {
                let i = u.choose_index(map.len())?;
                let Some((k, v)) = map.iter().nth(i) else { break };
                tokens.push(k.clone());
                Some(v)
            }
            _ => None,
        };
    }
    if u.ratio(1, 3)? {
        // A token past what exists: a new member, an index, `-`, or an odd one.
        tokens.push(match u.choose_index(3)? {
            0 => key(u)?,
            1 => u.int_in_range(0u8..=4)?.to_string(),
            _ => "-".to_owned(),
        });
    }
    Ok(JsonPointer::from_tokens(tokens))
}

/// One op, its pointers drawn from `doc`.
pub fn op(u: &mut Unstructured<'_>, doc: &Value) -> Result<PatchOp> {
    Ok(match u.choose_index(6)? {
        0 => PatchOp::Add { path: pointer(u, doc)?, value: value(u)? },
        1 => PatchOp::Remove { path: pointer(u, doc)? },
        2 => PatchOp::Replace { path: pointer(u, doc)?, value: value(u)? },
        3 => PatchOp::Move { from: pointer(u, doc)?, path: pointer(u, doc)? },
        4 => PatchOp::Copy { from: pointer(u, doc)?, path: pointer(u, doc)? },
        _ => {
            let path = pointer(u, doc)?;
            // Often the value that is there, so that the test passes.
            let value = match path.get(doc) {
                Some(current) if u.ratio(2, 3)? => current.clone(),
                _ => value(u)?,
            };
            PatchOp::Test { path, value }
        }
    })
}

/// A patch of up to `max_ops` ops for `doc`, each drawn from the state the ops before it
/// leave (an op that fails there is kept: the patch then fails at it).
pub fn patch(u: &mut Unstructured<'_>, doc: &Value, max_ops: usize) -> Result<Patch> {
    let mut scratch = doc.clone();
    let len = u.int_in_range(0..=max_ops)?;
    let mut ops = Vec::with_capacity(len);
    for index in 0..len {
        let op = op(u, &scratch)?;
        let _ = apply_one(&mut scratch, &op, index);
        ops.push(op);
    }
    Ok(ops)
}

/// The length of the compact JSON text of `value`.
pub fn size(value: &Value) -> usize {
    serde_json::to_string(value).map_or(0, |text| text.len())
}
