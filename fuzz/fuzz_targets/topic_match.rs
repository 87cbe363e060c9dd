//! Topic names and subscription patterns: what parses keeps its text and bounds; a name
//! is a pattern that matches itself (and nothing else); a pattern matches a name exactly
//! when a token-by-token reference matcher says so, and a wildcard never reaches a
//! reserved name (a personal topic, `broadcast`).

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sync_core::topic::{MAX_NAME_BYTES, MAX_TOKENS, Pattern, is_reserved, validate_name};

/// `*` is one token, a last `>` one or more, anything else itself.
fn reference(pattern: &[&str], name: &[&str]) -> bool {
    match (pattern.first(), name.first()) {
        (Some(&">"), _) => pattern.len() == 1 && !name.is_empty(),
        (Some(&"*"), Some(_)) => reference(&pattern[1..], &name[1..]),
        (Some(token), Some(other)) if token == other => reference(&pattern[1..], &name[1..]),
        (None, None) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(pattern), Ok(name)) = (u.arbitrary::<String>(), u.arbitrary::<String>()) else { return };
    if let Ok(parsed) = Pattern::parse(&pattern) {
        assert_eq!(parsed.as_str(), pattern);
        assert!(pattern.len() <= MAX_NAME_BYTES && pattern.split('.').count() <= MAX_TOKENS);
        if validate_name(&name).is_ok() {
            let tokens: Vec<&str> = pattern.split('.').collect();
            let names: Vec<&str> = name.split('.').collect();
            let expected = if parsed.is_wildcard() && is_reserved(&name) { false } else { reference(&tokens, &names) };
            assert_eq!(parsed.matches(&name), expected, "{pattern} ~ {name}");
            if !parsed.is_wildcard() {
                assert_eq!(parsed.matches(&name), pattern == name);
            }
        }
    }
    if validate_name(&name).is_ok() {
        let own = Pattern::parse(&name).expect("a name is a pattern");
        assert!(!own.is_wildcard() && own.matches(&name));
    }
});
