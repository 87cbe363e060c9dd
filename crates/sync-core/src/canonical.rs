//! Canonical JSON and the content hash of PROTOCOL.md §3.
//!
//! Canonical form: object keys sorted by their UTF-8 bytes, no whitespace, strings
//! escaped as serde_json escapes them (non-ASCII written as UTF-8, not `\u`), numbers as
//! serde_json writes them. Keys are sorted here rather than relying on serde_json's map
//! order, so a dependency that turns on `preserve_order` cannot change a hash.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` in canonical form.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own writer is the definition of the canonical form.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

/// Lowercase hex SHA-256 of the canonical JSON of `content`.
pub fn content_hash(content: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(content).as_bytes()))
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
