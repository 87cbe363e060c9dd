//! Topic names and subscription patterns (PROTOCOL.md §4.1).
//!
//! A topic name is a list of tokens separated by `.`: `team.42.chat`. A subscription
//! pattern is a name in which a whole token may be `*` (exactly one token) and the last
//! token may be `>` (one or more tokens): `team.*.chat`, `team.>`.
//!
//! Two kinds of name are reserved:
//! - `user.<user_id>` is the personal topic of that user (the user id is everything after
//!   the first `.`, dots included): only that user's sessions receive it, and only that
//!   user, the server and admins may publish to it;
//! - `broadcast` carries what the server sends to every session.
//!
//! Reserved names are never matched by a wildcard: `>` does not reach other users'
//! personal topics or broadcasts (each session receives those without subscribing).

use std::fmt;

/// The longest topic name or pattern, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The most tokens in a topic name or pattern.
pub const MAX_TOKENS: usize = 16;
/// The prefix of personal topics.
pub const PERSONAL_PREFIX: &str = "user.";
/// The topic of broadcasts.
pub const BROADCAST: &str = "broadcast";

/// Why a topic name or pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicError(String);

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TopicError {}

fn refuse(text: &str, why: impl fmt::Display) -> TopicError {
    let shown: String = text.chars().take(64).collect();
    let more = if shown.len() < text.len() { "…" } else { "" };
    TopicError(format!("topic {shown:?}{more}: {why}"))
}

/// Checks the shape shared by names and patterns; `wildcards` allows `*` and `>` tokens.
fn check(text: &str, wildcards: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(refuse(text, "must not be empty"));
    }
    if text.len() > MAX_NAME_BYTES {
        return Err(refuse(text, format_args!("longer than {MAX_NAME_BYTES} bytes")));
    }
    let count = text.split('.').count();
    if count > MAX_TOKENS {
        return Err(refuse(text, format_args!("more than {MAX_TOKENS} tokens")));
    }
    for (i, token) in text.split('.').enumerate() {
        if token.is_empty() {
            return Err(refuse(text, "empty token (a leading, trailing or doubled `.`)"));
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse(text, format_args!("token {:?} holds {:?}", token, c)));
        }
        match token {
            "*" if wildcards => {}
            ">" if wildcards && i + 1 == count => {}
            ">" if wildcards => return Err(refuse(text, "`>` may only be the last token")),
            _ if token.contains(['*', '>']) => {
                return Err(refuse(
                    text,
                    if wildcards {
                        "`*` and `>` must be whole tokens"
                    } else {
                        "a name to publish to holds no `*` or `>` (wildcards are for subscriptions)"
                    },
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic name to publish to (no wildcards).
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check(name, false)
}

/// The personal topic of `user_id`.
pub fn personal_topic(user_id: &str) -> String {
    format!("{PERSONAL_PREFIX}{user_id}")
}

/// The user whose personal topic `name` is, if it is one.
pub fn personal_owner(name: &str) -> Option<&str> {
    name.strip_prefix(PERSONAL_PREFIX).filter(|user| !user.is_empty())
}

/// Whether `name` is reserved (a personal topic or `broadcast`): never matched by a
/// wildcard.
pub fn is_reserved(name: &str) -> bool {
    name == BROADCAST || personal_owner(name).is_some()
}

/// A subscription: a topic name, or a pattern with `*` and `>` tokens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    wildcard: bool,
}

impl Pattern {
    /// Parses and checks a subscription.
    pub fn parse(text: &str) -> Result<Pattern, TopicError> {
        check(text, true)?;
        let wildcard = text.split('.').any(|t| t == "*" || t == ">");
        if wildcard && (text == BROADCAST || text.starts_with(PERSONAL_PREFIX)) {
            // `user.*` would look like it reaches every user's personal topic.
            return Err(refuse(text, "a wildcard cannot subscribe to personal topics (`user.…`)"));
        }
        Ok(Pattern { text: text.to_owned(), wildcard })
    }

    /// The text of the subscription.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it holds a `*` or `>` token.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether a message on `name` reaches this subscription. A wildcard never matches a
    /// reserved name.
    pub fn matches(&self, name: &str) -> bool {
        if !self.wildcard {
            return self.text == name;
        }
        if is_reserved(name) {
            return false;
        }
        let mut names = name.split('.');
        for token in self.text.split('.') {
            match token {
                ">" => return names.next().is_some(),
                "*" => {
                    if names.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if names.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }

    /// The tokens of the pattern.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.text.split('.')
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_tokens() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        assert!(p("team.*.chat").matches("team.42.chat"));
        assert!(!p("team.*.chat").matches("team.42.43.chat"));
        assert!(!p("team.*.chat").matches("team.chat"));
        assert!(p("team.>").matches("team.42"));
        assert!(p("team.>").matches("team.42.chat"));
        assert!(!p("team.>").matches("team"));
        assert!(p(">").matches("a"));
        assert!(!p(">").matches("user.bob"));
        assert!(!p(">").matches("broadcast"));
        assert!(!p("*").matches("broadcast"));
        assert!(p("a.b").matches("a.b"));
        assert!(!p("a.b").matches("a.bc"));
        assert!(p("user.bob").matches("user.bob"));
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a.>.b", "a*", "x>", "user.*", "user.>"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        for bad in ["a.*", "a.>", "*"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name("a.".repeat(16).trim_end_matches('.')).is_ok());
        assert!(validate_name("a.".repeat(17).trim_end_matches('.')).is_err());
        assert!(validate_name(&"x".repeat(257)).is_err());
        assert_eq!(personal_owner("user.a.b"), Some("a.b"));
        assert_eq!(personal_owner("user."), None);
    }
}
