//! The JSON Patch conformance suite (testdata/json-patch-tests, RFC 6902 and its
//! appendix examples) run against `sync_core::patch`, plus the inverse of every case.

use serde_json::Value;
use sync_core::patch::{apply, apply_with_inverse, parse_patch};

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/../../testdata/json-patch-tests/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn run(file: &str) -> usize {
    let mut ran = 0;
    for (i, case) in cases(file).into_iter().enumerate() {
        if case.get("disabled").and_then(Value::as_bool) == Some(true) || case.get("doc").is_none() {
            continue;
        }
        ran += 1;
        let label = format!("{file} #{i} {}", case.get("comment").and_then(Value::as_str).unwrap_or(""));
        let doc = case["doc"].clone();
        let result = parse_patch(case["patch"].clone()).and_then(|patch| {
            let mut state = doc.clone();
            let inverse = apply_with_inverse(&mut state, &patch)?;
            Ok((patch, state, inverse))
        });
        if let Some(expected) = case.get("expected") {
            let (_, state, inverse) = result.unwrap_or_else(|e| panic!("{label}: unexpected error {e}"));
            assert_eq!(&state, expected, "{label}");
            let mut restored = state;
            apply(&mut restored, &inverse).unwrap_or_else(|e| panic!("{label}: inverse failed: {e}"));
            assert_eq!(restored, doc, "{label}: inverse did not restore the document");
        } else if case.get("error").is_some() {
            match result {
                Err(_) => {}
                Ok((_, state, _)) => panic!("{label}: expected an error, got {state}"),
            }
        } else {
            result.unwrap_or_else(|e| panic!("{label}: unexpected error {e}"));
        }
    }
    ran
}

#[test]
fn tests_json() {
    assert!(run("tests.json") > 80);
}

#[test]
fn spec_tests_json() {
    assert!(run("spec_tests.json") > 10);
}

#[test]
fn failed_patches_leave_the_document_unchanged() {
    for case in cases("tests.json").into_iter().chain(cases("spec_tests.json")) {
        if case.get("error").is_none() || case.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let Ok(patch) = parse_patch(case["patch"].clone()) else { continue };
        let mut state = case["doc"].clone();
        assert!(apply(&mut state, &patch).is_err());
        assert_eq!(state, case["doc"], "{case}");
    }
}
