//! JSON Pointer (RFC 6901): parsing with `~0`/`~1` escapes, formatting, and lookup.
//!
//! A pointer is kept as its unescaped reference tokens, so comparisons between
//! pointers (prefix tests in the transform) never see escape sequences.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A parsed JSON Pointer: the empty pointer is the whole document.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonPointer {
    tokens: Vec<String>,
}

/// Why a string is not a valid JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    #[error("pointer `{0}` must be empty or start with `/`")]
    NoLeadingSlash(String),
    /// `~` must be followed by `0` or `1`.
    #[error("pointer `{0}` has an invalid `~` escape (only `~0` and `~1` are allowed)")]
    BadEscape(String),
}

impl JsonPointer {
    /// The pointer to the whole document (`""`).
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses the string form of a pointer.
    pub fn parse(s: &str) -> Result<Self, PointerError> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(s.to_owned()));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            tokens.push(unescape(raw).ok_or_else(|| PointerError::BadEscape(s.to_owned()))?);
        }
        Ok(Self { tokens })
    }

    /// Builds a pointer from unescaped reference tokens.
    pub fn from_tokens<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { tokens: tokens.into_iter().map(Into::into).collect() }
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Number of reference tokens (0 for the root).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether this is the root pointer.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether this is the root pointer (alias of [`JsonPointer::is_root`], for clippy's taste).
    pub fn is_empty(&self) -> bool {
        self.is_root()
    }

    /// A new pointer one level deeper.
    pub fn child(&self, token: impl Into<String>) -> Self {
        let mut tokens = self.tokens.clone();
        tokens.push(token.into());
        Self { tokens }
    }

    /// Appends a token in place.
    pub fn push(&mut self, token: impl Into<String>) {
        self.tokens.push(token.into());
    }

    /// The parent pointer and the last token, or `None` for the root.
    pub fn split_last(&self) -> Option<(JsonPointer, &str)> {
        let (last, parent) = self.tokens.split_last()?;
        Some((Self { tokens: parent.to_vec() }, last.as_str()))
    }

    /// The last token, or `None` for the root.
    pub fn last(&self) -> Option<&str> {
        self.tokens.last().map(String::as_str)
    }

    /// Whether `prefix` is this pointer or one of its ancestors.
    pub fn starts_with(&self, prefix: &JsonPointer) -> bool {
        self.tokens.starts_with(&prefix.tokens)
    }

    /// Replaces the token at `depth` (used by index arithmetic).
    pub fn with_token(&self, depth: usize, token: impl Into<String>) -> Self {
        let mut tokens = self.tokens.clone();
        tokens[depth] = token.into();
        Self { tokens }
    }

    /// This pointer with its first `prefix_len` tokens replaced by `new_prefix`.
    pub fn rebase_prefix(&self, prefix_len: usize, new_prefix: &JsonPointer) -> Self {
        let mut tokens = new_prefix.tokens.clone();
        tokens.extend_from_slice(&self.tokens[prefix_len..]);
        Self { tokens }
    }

    /// Looks the pointer up in a value.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        lookup(&self.tokens, value)
    }

    /// Looks the pointer up mutably.
    pub fn get_mut<'a>(&self, mut value: &'a mut Value) -> Option<&'a mut Value> {
        for token in &self.tokens {
            value = match value {
                Value::Object(map) => map.get_mut(token)?,
                Value::Array(items) => items.get_mut(parse_index(token)?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

/// Looks a sequence of unescaped tokens up in a value (a pointer, or a prefix of one).
pub fn lookup<'a>(tokens: &[String], mut value: &'a Value) -> Option<&'a Value> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(parse_index(token)?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Parses an array index token: decimal digits, no sign, no leading zeros.
/// `-` (past the end) is not an index and yields `None`.
pub fn parse_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    token.parse().ok()
}

fn unescape(raw: &str) -> Option<String> {
    if !raw.contains('~') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn escape_into(token: &str, out: &mut String) {
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for token in &self.tokens {
            out.push('/');
            escape_into(token, &mut out);
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPointer({:?})", self.to_string())
    }
}

impl std::str::FromStr for JsonPointer {
    type Err = PointerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for JsonPointer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JsonPointer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6901_section5_examples() {
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
            "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        let cases = [
            ("", doc.clone()),
            ("/foo", json!(["bar", "baz"])),
            ("/foo/0", json!("bar")),
            ("/", json!(0)),
            ("/a~1b", json!(1)),
            ("/c%d", json!(2)),
            ("/e^f", json!(3)),
            ("/g|h", json!(4)),
            ("/i\\j", json!(5)),
            ("/k\"l", json!(6)),
            ("/ ", json!(7)),
            ("/m~0n", json!(8)),
        ];
        for (pointer, expected) in cases {
            let p = JsonPointer::parse(pointer).unwrap();
            assert_eq!(p.get(&doc), Some(&expected), "pointer {pointer:?}");
            assert_eq!(p.to_string(), pointer, "round trip of {pointer:?}");
        }
    }

    #[test]
    fn escape_order_is_tilde_one_first() {
        // `~01` is the token `~1`, not `/`.
        let p = JsonPointer::parse("/~01").unwrap();
        assert_eq!(p.tokens(), ["~1"]);
        assert_eq!(p.to_string(), "/~01");
    }

    #[test]
    fn rejects_bad_pointers() {
        assert!(matches!(JsonPointer::parse("foo"), Err(PointerError::NoLeadingSlash(_))));
        assert!(matches!(JsonPointer::parse("/a~2"), Err(PointerError::BadEscape(_))));
        assert!(matches!(JsonPointer::parse("/a~"), Err(PointerError::BadEscape(_))));
    }

    #[test]
    fn array_indexes_are_strict() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("10"), Some(10));
        assert_eq!(parse_index("01"), None);
        assert_eq!(parse_index("1e0"), None);
        assert_eq!(parse_index("-1"), None);
        assert_eq!(parse_index("-"), None);
        assert_eq!(parse_index(""), None);
        assert_eq!(parse_index("+1"), None);
    }
}
