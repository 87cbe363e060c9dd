//! Canonical JSON and the content hash of PROTOCOL.md §3.
//!
//! Canonical form: object keys sorted by their UTF-8 bytes, no whitespace, strings
//! escaped as serde_json escapes them (non-ASCII written as UTF-8, not `\u`), numbers as
//! serde_json writes them. Keys are sorted here rather than relying on serde_json's map
//! order, so a dependency that turns on `preserve_order` cannot change a hash.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Writes `value` in canonical form.
pub fn canonical_json(value: &Value) -> String {
    // Only UTF-8 is written: serde_json writes strings as UTF-8 and everything else is ASCII.
    String::from_utf8(canonical_bytes(value)).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The canonical form as bytes. Its length is the size of the JSON text of `value` (only
/// the order of members can differ from serde_json's compact form), so a caller that
/// checks a size limit and hashes can write the form once for both.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(value, &mut out);
    out
}

/// Lowercase hex SHA-256 of the canonical JSON of `content`.
pub fn content_hash(content: &Value) -> String {
    hash_of_canonical(&canonical_bytes(content))
}

/// The content hash of a canonical form written by [`canonical_bytes`].
pub fn hash_of_canonical(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

/// Writes into one buffer, without a string per key or scalar: the server hashes every
/// revision it commits, so this is on its write path.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            // serde_json keeps a map's keys sorted (a BTreeMap, whose order is the
            // keys' byte order) unless a dependency turns on `preserve_order`: sort only then.
            if map.keys().is_sorted_by(|a, b| a.as_bytes() < b.as_bytes()) {
                write_members(map.iter(), out);
            } else {
                write_members(sorted(map).into_iter(), out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (key, item)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(key.as_str(), out);
        out.push(b':');
        write_canonical(item, out);
    }
}

/// Strings and scalars: serde_json's own writer is the definition of the canonical form.
fn write_json<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Writing a string, number, boolean or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_compact_utf8() {
        let v = json!({"b": 1, "a": [true, null, 1.5, "é\"\n"], "A": {"z": {}, "y": []}});
        assert_eq!(canonical_json(&v), r#"{"A":{"y":[],"z":{}},"a":[true,null,1.5,"é\"\n"],"b":1}"#);
    }

    #[test]
    fn hash_is_sha256_of_canonical_form() {
        // sha256("{}") computed independently.
        assert_eq!(content_hash(&json!({})), "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert_eq!(content_hash(&json!({"b": 1, "a": 2})), content_hash(&json!({"a": 2, "b": 1})));
        assert_ne!(content_hash(&json!({"n": 1})), content_hash(&json!({"n": 1.0})));
    }
}

#[cfg(test)]
mod float_tests {
    use super::*;

    /// Without serde_json's `float_roundtrip`, parsing can land on a neighbouring float,
    /// and a client and the server would store and hash different numbers.
    #[test]
    fn floats_round_trip_exactly() {
        for text in ["114677.48826325756", "0.1", "1e300", "-2.2250738585072014e-308", "5e-324"] {
            let value: Value = serde_json::from_str(text).unwrap();
            let again: Value = serde_json::from_str(&canonical_json(&value)).unwrap();
            assert_eq!(value, again, "{text}");
            assert_eq!(value.as_f64(), text.parse::<f64>().ok(), "{text}");
        }
    }
}
