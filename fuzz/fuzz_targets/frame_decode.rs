//! `decode_client_frame` on any text, with the server's default limits: it never panics,
//! every refusal says what was wrong, the id a refused frame keeps is the one decoding
//! reads, and a decoded message encodes and decodes to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::ErrorCode;
use sync_core::protocol::{DecodeLimits, decode_client_frame, top_level_request_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // What `sync-server` decodes with by default (`[limits] max_depth`, `max_patch_ops`).
    let limits = DecodeLimits { max_depth: 64, max_patch_ops: 1000 };
    let scanned = top_level_request_id(text);
    match decode_client_frame(text, &limits) {
        Err(refused) => {
            assert!(matches!(refused.code, ErrorCode::InvalidMessage | ErrorCode::PayloadTooLarge), "{refused}");
            assert!(!refused.message.is_empty());
            assert_eq!(refused.request_id, scanned);
        }
        Ok(messages) => {
            let is_object = text.trim_start().starts_with('{');
            for message in &messages {
                match message {
                    Ok(envelope) => {
                        if is_object {
                            // The scan for a refused frame reads what decoding reads.
                            assert_eq!(scanned, envelope.request_id, "{text}");
                        }
                        let again = decode_client_frame(&envelope.to_json(), &limits).expect("re-encoded frame");
                        assert_eq!(again.len(), 1);
                        assert_eq!(again[0].as_ref().ok(), Some(envelope), "{}", envelope.to_json());
                    }
                    Err(err) => {
                        assert!(!err.message.is_empty());
                        if is_object {
                            assert!(err.request_id.is_none() || err.request_id == scanned, "{text}");
                        }
                    }
                }
            }
        }
    }
});
