//! JSON Pointer: a string that parses prints back as itself; any tokens print as a
//! pointer that parses back to them; an array index token is exactly a number's digits;
//! lookups agree with the tokens they follow.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sync_core::pointer::{JsonPointer, lookup, parse_index};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pointer) = JsonPointer::parse(text) {
            assert_eq!(pointer.to_string(), text);
            assert_eq!(JsonPointer::from_tokens(pointer.tokens().to_vec()), pointer);
        }
        if let Some(index) = parse_index(text) {
            assert_eq!(index.to_string(), text);
        }
    }
    let mut u = Unstructured::new(data);
    let Ok(tokens) = u.arbitrary::<Vec<String>>() else { return };
    let pointer = JsonPointer::from_tokens(tokens.clone());
    let printed = pointer.to_string();
    assert_eq!(JsonPointer::parse(&printed).as_ref(), Ok(&pointer), "{printed}");
    assert_eq!(pointer.tokens(), &tokens[..]);
    if let Some((parent, last)) = pointer.split_last() {
        assert_eq!(parent.child(last), pointer);
        assert!(pointer.starts_with(&parent));
    }
    let Ok(doc) = sync_fuzz::value(&mut u) else { return };
    let Ok(path) = sync_fuzz::pointer(&mut u, &doc) else { return };
    assert_eq!(path.get(&doc), lookup(path.tokens(), &doc));
    let mut copy = doc.clone();
    assert_eq!(path.get_mut(&mut copy).map(|v| v.clone()), path.get(&doc).cloned());
});
