//! Apply and inverse on a small document and patch: a patch applies whole or not at all,
//! its inverse restores the document exactly, and the limited apply is the plain one
//! until an op would take the document past a limit, where it refuses (never falsely)
//! and leaves the document as it was.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::canonical::canonical_json;
use sync_core::patch::{ApplyLimits, PatchErrorKind, apply, apply_with_inverse, apply_within_limits};
use sync_core::protocol::json_depth;
use sync_fuzz::size;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(doc) = sync_fuzz::value(&mut u) else { return };
    let Ok(patch) = sync_fuzz::patch(&mut u, &doc, 8) else { return };

    let mut plain = doc.clone();
    let plain_result = apply_with_inverse(&mut plain, &patch);
    match &plain_result {
        Ok(inverse) => {
            let mut restored = plain.clone();
            apply(&mut restored, inverse).expect("an inverse applies to the post-state");
            assert_eq!(restored, doc);
            assert_eq!(canonical_json(&restored), canonical_json(&doc));
        }
        Err(_) => assert_eq!(plain, doc, "a failed patch leaves the document as it was"),
    }

    let limits = ApplyLimits {
        max_document_bytes: u.int_in_range(0..=512).unwrap_or(512),
        max_depth: u.int_in_range(0..=8).unwrap_or(8),
        max_work_bytes: if u.ratio(1, 2).unwrap_or(true) {
            usize::MAX
        } else {
            u.int_in_range(0..=4096).unwrap_or(4096)
        },
    };
    let mut limited = doc.clone();
    match apply_within_limits(&mut limited, &patch, &limits) {
        Ok(inverse) => {
            let Ok(plain_inverse) = &plain_result else {
                panic!("the limited apply succeeded where the plain one failed")
            };
            assert_eq!(&inverse, plain_inverse);
            assert_eq!(limited, plain);
            // No state on the way past the limits (by more than the sixteenth the
            // account allows before it measures the document).
            let mut state = doc.clone();
            for op in &patch {
                apply(&mut state, std::slice::from_ref(op)).expect("the plain apply applied it");
                let bound = limits.max_document_bytes.max(size(&doc)) + limits.max_document_bytes / 16;
                assert!(size(&state) <= bound, "{state} doc {doc} patch {patch:?} limits {limits:?}");
                assert!(
                    json_depth(&state) <= limits.max_depth.max(json_depth(&doc)),
                    "{state} doc {doc} patch {patch:?} limits {limits:?}"
                );
            }
        }
        Err(err) if err.is_over_limit() => {
            assert_eq!(limited, doc, "a refused patch leaves the document as it was");
            let mut state: Value = doc.clone();
            if apply(&mut state, &patch[..err.index]).is_err() {
                panic!("the limited apply refused op {} after ops that do not apply", err.index);
            }
            // Never a false refusal: after the refused op the document is over the limit
            // (unless the op fails without limits too).
            if apply(&mut state, &patch[err.index..=err.index]).is_ok() {
                match err.kind {
                    PatchErrorKind::DocumentTooLarge { .. } => {
                        assert!(size(&state) > limits.max_document_bytes, "{err}")
                    }
                    PatchErrorKind::DocumentTooDeep { .. } => assert!(json_depth(&state) > limits.max_depth, "{err}"),
                    _ => assert!(limits.max_work_bytes < usize::MAX, "{err}"),
                }
            }
        }
        Err(err) => {
            assert_eq!(limited, doc);
            assert_eq!(Err(&err), plain_result.as_ref().map(drop), "the same error as without limits");
        }
    }
});
