//! Table tests for decoding client messages: every current and seed-era shape, and the
//! errors a malformed message gets.

use serde_json::json;
use sync_core::ErrorCode;
use sync_core::patch::PatchOp;
use sync_core::protocol::*;

fn decode(text: &str) -> Result<ClientEnvelope, DecodeError> {
    let mut frame = decode_client_frame(text, &DecodeLimits::default())?;
    assert_eq!(frame.len(), 1);
    frame.remove(0)
}

fn check_error(text: &str, code: ErrorCode, fragment: &str) {
    let err = decode(text).expect_err(text);
    assert_eq!(err.code, code, "{text}: {err}");
    assert!(err.message.contains(fragment), "{text}: {:?} lacks {fragment:?}", err.message);
}

#[test]
fn seed_era_bearer_authenticate() {
    let msg = decode(r#"{"type":"authenticate","user_id":"u1","auth_token":"t0k"}"#).unwrap();
    let ClientMessage::Authenticate(auth) = msg.message else { panic!() };
    assert_eq!(auth.credentials, Credentials::Bearer { user_id: "u1".into(), auth_token: "t0k".into() });
}

#[test]
fn seed_era_hmac_authenticate_with_string_timestamp() {
    let text = json!({"type": "authenticate", "email": "a@b.c", "client_id": "c1", "api_key": "rpa_x",
        "signature": "ff", "timestamp": "1700000000"})
    .to_string();
    let ClientMessage::Authenticate(auth) = decode(&text).unwrap().message else { panic!() };
    assert_eq!(
        auth.credentials,
        Credentials::Hmac {
            email: "a@b.c".into(),
            api_key: "rpa_x".into(),
            signature: "ff".into(),
            timestamp: 1_700_000_000
        }
    );
    assert_eq!(auth.client_id.as_deref(), Some("c1"));
}

#[test]
fn seed_era_jwt_authenticate() {
    let ClientMessage::Authenticate(auth) =
        decode(r#"{"type":"authenticate","token":"a.b.c","last_sequence":12}"#).unwrap().message
    else {
        panic!()
    };
    assert_eq!(auth.credentials, Credentials::Jwt { token: "a.b.c".into() });
    assert_eq!(auth.last_sequence, Some(12));
    assert_eq!(auth.collections, None);
}

#[test]
fn authenticate_may_limit_the_sync_to_collections() {
    let ClientMessage::Authenticate(auth) =
        decode(r#"{"type":"authenticate","token":"a.b.c","collections":["tasks","notes"]}"#).unwrap().message
    else {
        panic!()
    };
    assert_eq!(auth.collections, Some(vec!["tasks".to_owned(), "notes".to_owned()]));
}

#[test]
fn authenticate_refuses_a_client_id_no_replica_should_have() {
    let auth = |client_id: &str| {
        json!({"type": "authenticate", "token": "a.b.c", "client_id": client_id, "request_id": 3}).to_string()
    };
    for bad in ["x".repeat(200_000), "phone\u{0}".to_owned(), "two words".to_owned(), String::new(), "é".to_owned()] {
        let Err(err) = decode(&auth(&bad)) else { panic!("a client_id of {} bytes was accepted", bad.len()) };
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(err.message.starts_with("field `client_id`: invalid client id"), "{}", err.message);
        assert!(err.message.len() < 400, "the error does not echo a huge id: {}", err.message.len());
        assert_eq!(err.request_id, Some(RequestId::Int(3)));
    }
    for good in ["4b1d7c3e-1111-4222-8333-944455566677", "android:9774d56d682e549c"] {
        let ClientMessage::Authenticate(a) = decode(&auth(good)).unwrap().message else { panic!() };
        assert_eq!(a.client_id.as_deref(), Some(good));
    }
}

#[test]
fn create_with_top_level_title() {
    // Seed-era: the document's fields at the top level of the message.
    let ClientMessage::CreateDocument(c) =
        decode(r#"{"type":"create_document","title":"Buy milk","content":{"done":false}}"#).unwrap().message
    else {
        panic!()
    };
    assert_eq!(c.document.normalized_content(), json!({"title": "Buy milk", "done": false}));
    // Current shape with a top-level title inside `document`.
    let ClientMessage::CreateDocument(c) =
        decode(r#"{"type":"create_document","document":{"id":"d1","title":"T","content":{"title":"kept"}}}"#)
            .unwrap()
            .message
    else {
        panic!()
    };
    assert_eq!(c.document.id.as_deref(), Some("d1"));
    assert_eq!(c.document.normalized_content(), json!({"title": "kept"}), "an existing content.title wins");
}

#[test]
fn update_with_only_document_id_and_patch() {
    let msg = decode(r#"{"type":"update_document","document_id":"d1","patch":[{"op":"replace","path":"/a","value":1}],"request_id":7}"#)
        .unwrap();
    assert_eq!(msg.request_id, Some(RequestId::Int(7)));
    let ClientMessage::UpdateDocument(u) = msg.message else { panic!() };
    assert_eq!(u.patch.document_id, "d1");
    assert_eq!(u.patch.base_revision, None);
    assert_eq!(u.patch.patch, vec![PatchOp::Replace { path: "/a".parse().unwrap(), value: json!(1) }]);
}

#[test]
fn current_update_shape() {
    let msg = decode(
        r#"{"type":"update_document","request_id":"r-1","patch":{"document_id":"d1","patch":[],"base_revision":3,"client_change_id":"c"}}"#,
    )
    .unwrap();
    assert_eq!(msg.request_id, Some(RequestId::Str("r-1".into())));
    let ClientMessage::UpdateDocument(u) = msg.message else { panic!() };
    assert_eq!((u.patch.base_revision, u.patch.client_change_id.as_deref()), (Some(3), Some("c")));
}

#[test]
fn sync_is_an_alias_of_publish_and_unknown_fields_are_ignored() {
    let msg = decode(r#"{"type":"sync","topic":"t","data":{"x":1},"extra":true}"#).unwrap();
    assert_eq!(msg.message, ClientMessage::Publish(Publish { topic: "t".into(), data: json!({"x": 1}), echo: false }));
    assert_eq!(decode(r#"{"type":"ping","whatever":[1]}"#).unwrap().message, ClientMessage::Ping);
}

#[test]
fn errors_say_which_field_and_what_was_expected() {
    check_error("{not json", ErrorCode::InvalidMessage, "malformed JSON");
    check_error("[1]", ErrorCode::InvalidMessage, "must be a JSON object");
    check_error(r#"{"no_type":1}"#, ErrorCode::InvalidMessage, "missing `type`");
    check_error(r#"{"type":"launch_rockets"}"#, ErrorCode::InvalidMessage, "unknown message type `launch_rockets`");
    check_error(r#"{"type":"delete_document"}"#, ErrorCode::InvalidMessage, "missing field `document_id`");
    check_error(r#"{"type":"delete_document","document_id":5}"#, ErrorCode::InvalidMessage, "field `document_id`");
    check_error(
        r#"{"type":"update_document","patch":{"document_id":"d","patch":[],"base_revision":"x"}}"#,
        ErrorCode::InvalidMessage,
        "field `patch.base_revision`: invalid type: string \"x\", expected u64",
    );
    check_error(
        r#"{"type":"update_document","patch":{"document_id":"d","patch":[{"op":"add","path":"/a"}]}}"#,
        ErrorCode::InvalidPatch,
        "op 0 (add): missing `value`",
    );
    check_error(r#"{"type":"get_changes_since","last_sequence":-1}"#, ErrorCode::InvalidMessage, "last_sequence");
    check_error(r#"{"type":"authenticate"}"#, ErrorCode::InvalidMessage, "authenticate needs");
    check_error(r#"{"type":"authenticate","token":3}"#, ErrorCode::InvalidMessage, "field `token`: expected a string");
    check_error(
        r#"{"type":"authenticate","token":"t","collections":"tasks"}"#,
        ErrorCode::InvalidMessage,
        "collections",
    );
    check_error(
        r#"{"type":"authenticate","token":"t","collections":["Bad"]}"#,
        ErrorCode::InvalidMessage,
        "collection",
    );
    check_error(r#"{"type":"authenticate","token":"t","collections":[1]}"#, ErrorCode::InvalidMessage, "collections");
    check_error(r#"{"type":"ping","request_id":{"a":1}}"#, ErrorCode::InvalidMessage, "request_id");
}

#[test]
fn errors_echo_the_request_id() {
    let err = decode(r#"{"type":"nope","request_id":"abc"}"#).unwrap_err();
    assert_eq!(err.request_id, Some(RequestId::Str("abc".into())));
    assert_eq!(err.message_type.as_deref(), Some("nope"));
}

#[test]
fn limits_on_depth_and_patch_size() {
    let limits = DecodeLimits { max_depth: 3, max_patch_ops: 2 };
    let deep = r#"{"type":"create_document","document":{"content":{"a":{"b":{"c":{}}}}}}"#;
    let err = decode_client_frame(deep, &limits).unwrap().remove(0).unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    let ops =
        json!([{"op":"test","path":"","value":1},{"op":"test","path":"","value":1},{"op":"test","path":"","value":1}]);
    let big = json!({"type": "update_document", "patch": {"document_id": "d", "patch": ops}}).to_string();
    let err = decode_client_frame(&big, &limits).unwrap().remove(0).unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    // Beyond what the JSON parser itself will nest, the whole frame is refused.
    let absurd = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(decode_client_frame(&absurd, &limits).unwrap_err().code, ErrorCode::PayloadTooLarge);
}

/// `[[…]]` nested `depth` levels deep: beyond what the JSON parser accepts (128).
fn too_deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn a_refused_frame_keeps_its_top_level_request_id() {
    let limits = DecodeLimits::default();
    let refused = |text: &str| decode_client_frame(text, &limits).expect_err(text);
    let deep = too_deep(500);
    // Before and after the part that is too deep, a string or an integer.
    for (text, id) in [
        (
            format!(r#"{{"type":"create_document","request_id":"r-9","document":{{"content":{deep}}}}}"#),
            RequestId::Str("r-9".into()),
        ),
        (
            format!(r#"{{"type":"create_document","document":{{"content":{deep}}},"request_id":42}}"#),
            RequestId::Int(42),
        ),
        (format!(r#" {{ "data" : {deep} , "request_id" : -7 , "type":"publish"}}"#), RequestId::Int(-7)),
        // An escaped key is the same key, and the last one counts, as in decoding.
        (format!(r#"{{"request_id":1,"x":{deep},"request\u005fid":"last"}}"#), RequestId::Str("last".into())),
        // Brackets and quotes inside strings are skipped.
        (format!(r#"{{"note":"]}}\"{{[","x":{deep},"request_id":"a\"b"}}"#), RequestId::Str("a\"b".into())),
    ] {
        let err = refused(&text);
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{text}");
        assert_eq!(err.request_id, Some(id), "{text}");
    }
    // Malformed JSON: the id read before the text stops making sense.
    let err = refused(r#"{"type":"ping","request_id":7,}"#);
    assert_eq!((err.code, err.request_id), (ErrorCode::InvalidMessage, Some(RequestId::Int(7))));
    let err = refused(r#"{"request_id":"early","type":"ping" oops"#);
    assert_eq!(err.request_id, Some(RequestId::Str("early".into())));
    // No top-level id: nested in a member, inside a string, in a batch, not an id
    // decoding would accept, or no object at all.
    for text in [
        format!(r#"{{"type":"x","document":{{"request_id":"inner","content":{deep}}}}}"#),
        format!(r#"{{"type":"x","note":"\"request_id\":5","content":{deep}}}"#),
        format!(r#"[{{"type":"ping","request_id":1}},{deep}]"#),
        format!(r#"{{"request_id":{{"a":1}},"x":{deep}}}"#),
        format!(r#"{{"request_id":1.5,"x":{deep}}}"#),
        format!(r#"{{"request_id":null,"x":{deep}}}"#),
        format!(r#"{{"request_id":18446744073709551615,"x":{deep}}}"#),
        deep.clone(),
        "not json".to_owned(),
        String::new(),
    ] {
        assert_eq!(refused(&text).request_id, None, "{text}");
    }
    // Read in one pass with a counter, however deep the frame.
    let abyss = format!(r#"{{"x":{},"request_id":"deep"}}"#, too_deep(1_000_000));
    assert_eq!(refused(&abyss).request_id, Some(RequestId::Str("deep".into())));
}

#[test]
fn batches_decode_each_message_on_its_own() {
    let frame = r#"[{"type":"ping","request_id":1},{"type":"bogus","request_id":2},{"type":"ping","request_id":3}]"#;
    let decoded = decode_client_frame(frame, &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.len(), 3);
    assert!(decoded[0].is_ok() && decoded[1].is_err() && decoded[2].is_ok());
    assert_eq!(decoded[1].as_ref().unwrap_err().request_id, Some(RequestId::Int(2)));
}

#[test]
fn debug_output_never_shows_secrets() {
    let auth = Authenticate {
        credentials: Credentials::Hmac {
            email: "a@b.c".into(),
            api_key: "rpa_0123456789abcdef".into(),
            signature: "deadbeefcafe".into(),
            timestamp: 1,
        },
        client_id: None,
        last_sequence: None,
        collections: None,
    };
    let shown = format!("{auth:?}");
    assert!(!shown.contains("deadbeefcafe") && !shown.contains("0123456789abcdef"), "{shown}");
    let shown = format!("{:?}", Credentials::Bearer { user_id: "u".into(), auth_token: "sekrit".into() });
    assert!(!shown.contains("sekrit"));
}

/// The change responses are one `Result` in Rust and flat on the wire, exactly as
/// PROTOCOL.md §4 shows them: `error: null` when committed, no revision or sequence when
/// refused, and `conflicts` always present on an update's answer.
#[test]
fn change_responses_keep_their_flat_wire_shape() {
    let body = sync_core::ErrorBody::new(ErrorCode::VersionMismatch, "stale");
    let cases = [
        (
            ServerMessage::DocumentUpdatedResponse(ChangeResponse::refused("d", body.clone())),
            json!({"type": "document_updated_response", "document_id": "d", "success": false,
                   "error": {"code": "version_mismatch", "message": "stale"}, "conflicts": []}),
        ),
        (
            ServerMessage::DocumentUpdatedResponse(ChangeResponse {
                document_id: "d".into(),
                outcome: Ok(Updated {
                    sync_revision: 3,
                    sequence: 9,
                    applied_patch: None,
                    conflicts: Vec::new(),
                    content_hash: Some("h".into()),
                }),
            }),
            json!({"type": "document_updated_response", "document_id": "d", "success": true, "error": null,
                   "sync_revision": 3, "sequence": 9, "conflicts": [], "content_hash": "h"}),
        ),
        (
            ServerMessage::DocumentDeletedResponse(ChangeResponse {
                document_id: "d".into(),
                outcome: Ok(Deleted { sync_revision: 4, sequence: 10 }),
            }),
            json!({"type": "document_deleted_response", "document_id": "d", "success": true, "error": null,
                   "sync_revision": 4, "sequence": 10}),
        ),
        (
            ServerMessage::DocumentCreatedResponse(ChangeResponse::refused("", body)),
            json!({"type": "document_created_response", "document_id": "", "success": false,
                   "error": {"code": "version_mismatch", "message": "stale"}}),
        ),
    ];
    for (message, wire) in cases {
        assert_eq!(serde_json::to_value(&message).unwrap(), wire);
        assert_eq!(serde_json::from_value::<ServerMessage>(wire).unwrap(), message);
    }
    // A committed answer without its revision, or a refusal without its reason, is not
    // a response this protocol sends: decoding says what is missing.
    let err = serde_json::from_value::<ServerMessage>(json!({"type": "document_deleted_response",
        "document_id": "d", "success": true, "error": null, "sequence": 1}))
    .unwrap_err();
    assert!(err.to_string().contains("sync_revision"), "{err}");
    let err = serde_json::from_value::<ServerMessage>(json!({"type": "document_deleted_response",
        "document_id": "d", "success": false, "error": null}))
    .unwrap_err();
    assert!(err.to_string().contains("error"), "{err}");
}
