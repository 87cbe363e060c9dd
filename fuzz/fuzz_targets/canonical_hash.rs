//! Canonical JSON and the content hash (PROTOCOL.md §3): the canonical form of a value is
//! serde_json's compact form (whose maps keep keys in byte order here), it parses back to
//! the same value (floats exactly), and the hash is stable across parse and serialize.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::canonical::{canonical_bytes, canonical_json, content_hash, hash_of_canonical};

fuzz_target!(|data: &[u8]| {
    // Either JSON text as sent by a client, or a value built from the bytes.
    let value = match data.split_first() {
        Some((0, text)) => match serde_json::from_slice::<Value>(text) {
            Ok(value) => value,
            Err(_) => return,
        },
        _ => match sync_fuzz::value(&mut Unstructured::new(data)) {
            Ok(value) => value,
            Err(_) => return,
        },
    };
    let canonical = canonical_json(&value);
    assert_eq!(canonical, serde_json::to_string(&value).expect("a value serializes"));
    assert_eq!(canonical.as_bytes(), canonical_bytes(&value).as_slice());
    let hash = content_hash(&value);
    assert_eq!(hash, hash_of_canonical(canonical.as_bytes()));
    let parsed: Value = serde_json::from_str(&canonical).expect("the canonical form is JSON");
    assert_eq!(parsed, value);
    assert_eq!(canonical_json(&parsed), canonical, "parse then serialize gives the same text");
    assert_eq!(content_hash(&parsed), hash);
});
