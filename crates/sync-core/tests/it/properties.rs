//! Property tests: patch apply/inverse, diff, merge patch, the transform rules, and
//! protocol round trips.

use crate::common::{Rng, random_patch};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sync_core::patch::{
    ApplyLimits, PatchErrorKind, PatchOp, apply, apply_with_inverse, apply_within_limits, diff, merge_diff,
    merge_patch, patch_to_value,
};
use sync_core::pointer::JsonPointer;
use sync_core::protocol::*;
use sync_core::transform::{
    Policy, RebaseError, Rebased, independent, rebase, rebase_many, rebase_many_in_full, rebase_within_limits,
};

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("c/d".to_owned()), Just("~e".to_owned()), "[a-z]{1,6}"]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-zé ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(arb_key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(arb_key(), arb_json(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_inverse_is_identity(doc in arb_json(), seed in any::<u64>()) {
        let patch = random_patch(&mut Rng(seed), &doc, &JsonPointer::root());
        let mut state = doc.clone();
        let inverse = apply_with_inverse(&mut state, &patch).expect("generated patches apply");
        apply(&mut state, &inverse).expect("inverse applies");
        prop_assert_eq!(state, doc);
    }

    #[test]
    fn apply_within_limits_is_apply_until_an_op_would_pass_a_limit(
        doc in arb_json(), seed in any::<u64>(), max_bytes in 0usize..300, max_depth in 0usize..6
    ) {
        let patch = random_patch(&mut Rng(seed), &doc, &JsonPointer::root());
        let limits = ApplyLimits { max_document_bytes: max_bytes, max_depth, max_work_bytes: usize::MAX };
        let size = |v: &Value| serde_json::to_string(v).unwrap().len();
        let mut limited = doc.clone();
        match apply_within_limits(&mut limited, &patch, &limits) {
            Ok(inverse) => {
                // What the plain apply does, and no state on the way grows past the limits
                // (by more than the sixteenth the account allows before it measures).
                let mut state = doc.clone();
                prop_assert_eq!(apply_with_inverse(&mut state.clone(), &patch).unwrap(), inverse);
                for op in &patch {
                    apply(&mut state, std::slice::from_ref(op)).unwrap();
                    prop_assert!(size(&state) <= max_bytes.max(size(&doc)) + max_bytes / 16, "{}", state);
                    prop_assert!(json_depth(&state) <= max_depth.max(json_depth(&doc)), "{}", state);
                }
                prop_assert_eq!(state, limited);
            }
            Err(err) if err.is_over_limit() => {
                prop_assert_eq!(&limited, &doc);
                // Never a false refusal: after the refused op the document is over the limit
                // (unless the op fails without limits too).
                let mut state = doc.clone();
                apply(&mut state, &patch[..err.index]).unwrap();
                if apply(&mut state, &patch[err.index..=err.index]).is_ok() {
                    match err.kind {
                        PatchErrorKind::DocumentTooLarge { .. } => prop_assert!(size(&state) > max_bytes, "{}", err),
                        PatchErrorKind::DocumentTooDeep { .. } => prop_assert!(json_depth(&state) > max_depth, "{}", err),
                        _ => prop_assert!(false, "no work limit was set: {}", err),
                    }
                }
            }
            Err(err) => prop_assert!(false, "generated patches apply: {}", err),
        }
    }

    #[test]
    fn apply_within_limits_accepts_a_patch_whose_every_state_fits(doc in arb_json(), seed in any::<u64>()) {
        // Limits set to the largest and deepest state the patch passes through: the
        // account is exact where it refuses, so it must let this patch through.
        let patch = random_patch(&mut Rng(seed), &doc, &JsonPointer::root());
        let size = |v: &Value| serde_json::to_string(v).unwrap().len();
        let mut state = doc.clone();
        let (mut peak_size, mut peak_depth) = (size(&doc), json_depth(&doc));
        for op in &patch {
            apply(&mut state, std::slice::from_ref(op)).unwrap();
            (peak_size, peak_depth) = (peak_size.max(size(&state)), peak_depth.max(json_depth(&state)));
        }
        let limits = ApplyLimits { max_document_bytes: peak_size, max_depth: peak_depth, max_work_bytes: usize::MAX };
        let mut limited = doc.clone();
        prop_assert!(apply_within_limits(&mut limited, &patch, &limits).is_ok(), "{:?} under {:?}", patch, limits);
        prop_assert_eq!(limited, state);
    }

    #[test]
    fn rebase_within_limits_that_hold_is_rebase(doc in arb_json(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let committed = random_patch(&mut Rng(s1), &doc, &JsonPointer::root());
        let incoming = random_patch(&mut Rng(s2), &doc, &JsonPointer::root());
        let limits = ApplyLimits::new(1 << 20, 64);
        prop_assert_eq!(
            rebase_within_limits(&doc, &incoming, &committed, Policy::LastWriterWins, &limits),
            rebase(&doc, &incoming, &committed, Policy::LastWriterWins)
        );
    }

    #[test]
    fn diff_then_apply_gives_the_target(a in arb_json(), b in arb_json()) {
        let ops = diff(&a, &b);
        let mut state = a.clone();
        apply(&mut state, &ops).expect("diff applies");
        prop_assert_eq!(state, b);
        prop_assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn diff_of_a_random_edit_applies(doc in arb_json(), seed in any::<u64>()) {
        let patch = random_patch(&mut Rng(seed), &doc, &JsonPointer::root());
        let mut target = doc.clone();
        apply(&mut target, &patch).expect("generated patches apply");
        let mut state = doc.clone();
        apply(&mut state, &diff(&doc, &target)).expect("diff applies");
        prop_assert_eq!(state, target);
    }

    #[test]
    fn merge_as_diff_equals_rfc7396_merge(target in arb_json(), patch in arb_json()) {
        let mut merged = target.clone();
        merge_patch(&mut merged, &patch);
        let mut state = target.clone();
        apply(&mut state, &merge_diff(&target, &patch)).expect("merge diff applies");
        prop_assert_eq!(state, merged);
    }

    #[test]
    fn rebase_over_nothing_is_identity(doc in arb_json(), seed in any::<u64>()) {
        let patch = random_patch(&mut Rng(seed), &doc, &JsonPointer::root());
        let rebased = rebase(&doc, &patch, &[], Policy::LastWriterWins).expect("applies to its base");
        prop_assert!(rebased.conflicts.is_empty());
        let (mut a, mut b) = (doc.clone(), doc.clone());
        apply(&mut a, &patch).unwrap();
        apply(&mut b, &rebased.patch).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn rebased_patch_always_applies_to_the_committed_state(
        doc in arb_json(), s1 in any::<u64>(), s2 in any::<u64>(), server_wins in any::<bool>()
    ) {
        let committed = random_patch(&mut Rng(s1), &doc, &JsonPointer::root());
        let incoming = random_patch(&mut Rng(s2), &doc, &JsonPointer::root());
        let policy = if server_wins { Policy::ServerWins } else { Policy::LastWriterWins };
        let mut state = doc.clone();
        apply(&mut state, &committed).unwrap();
        match rebase(&doc, &incoming, &committed, policy) {
            Ok(rebased) => prop_assert!(apply(&mut state, &rebased.patch).is_ok(), "{:?}", rebased),
            Err(RebaseError::TestFailed { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn the_shortcut_for_independent_edits_answers_as_the_full_rebase(
        left in arb_object(), right in arb_object(), rest in arb_json(),
        s1 in any::<u64>(), s2 in any::<u64>(), s3 in any::<u64>(), server_wins in any::<bool>()
    ) {
        // Edits under two different members (mostly independent, the shortcut's case),
        // and edits anywhere (mostly not): both ways must give the same answer.
        let doc = json!({"left": left, "right": right, "rest": rest});
        let (left, right) = (JsonPointer::from_tokens(["left"]), JsonPointer::from_tokens(["right"]));
        let committed = random_patch(&mut Rng(s1), &doc, &left);
        let incoming = [
            random_patch(&mut Rng(s2), &doc, &right),
            random_patch(&mut Rng(s3), &doc, &JsonPointer::root()),
        ];
        let policy = if server_wins { Policy::ServerWins } else { Policy::LastWriterWins };
        for entries in [&incoming[..1], &incoming[1..], &incoming[..]] {
            prop_assert_eq!(
                rebase_many(&doc, entries, &committed, policy),
                rebase_many_in_full(&doc, entries, &committed, policy)
            );
        }
    }

    #[test]
    fn independence_judged_after_the_committed_changes_agrees_with_the_base(
        left in arb_object(), right in arb_object(), rest in arb_json(), other in arb_json(),
        s1 in any::<u64>(), s2 in any::<u64>(), s3 in any::<u64>(), s4 in any::<u64>(), server_wins in any::<bool>()
    ) {
        // The server's case: two committed changes (the second made on what the first
        // left), and an incoming patch made on the state before them. The server judges
        // independence on the state after them, without rebuilding the base.
        let doc = json!({"left": left, "right": right, "rest": rest});
        let (left, right, root) =
            (JsonPointer::from_tokens(["left"]), JsonPointer::from_tokens(["right"]), JsonPointer::root());
        let first = random_patch(&mut Rng(s1), &doc, if s1 % 3 == 0 { &root } else { &left });
        let mut current = doc.clone();
        apply(&mut current, &first).unwrap();
        let second = random_patch(&mut Rng(s2), &current, &left);
        apply(&mut current, &second).unwrap();
        let committed: Vec<PatchOp> = first.iter().chain(&second).cloned().collect();
        let policy = if server_wins { Policy::ServerWins } else { Policy::LastWriterWins };
        // Under another member (mostly independent), anywhere (mostly not), and made on
        // another document (often does not apply to this one).
        let candidates = [
            random_patch(&mut Rng(s3), &doc, &right),
            random_patch(&mut Rng(s4), &doc, &root),
            random_patch(&mut Rng(s3 ^ s4), &json!({"right": other}), &right),
        ];
        for incoming in &candidates {
            let on_base = independent(&doc, incoming, &committed);
            prop_assert_eq!(on_base, independent(&current, incoming, &committed));
            if !on_base {
                continue;
            }
            let applies_to_base = apply(&mut doc.clone(), incoming).is_ok();
            let mut after = current.clone();
            prop_assert_eq!(applies_to_base, apply(&mut after, incoming).is_ok());
            let full = rebase_many_in_full(&doc, std::slice::from_ref(incoming), &committed, policy);
            if applies_to_base {
                prop_assert_eq!(full, vec![Ok(Rebased { patch: incoming.clone(), conflicts: Vec::new() })]);
            } else {
                prop_assert!(matches!(full[..], [Err(RebaseError::Incoming(_))]), "{:?}", full);
            }
        }
    }

    #[test]
    fn edits_to_disjoint_members_all_survive(
        base in arb_object(), x in arb_json(), y in arb_json(), server_wins in any::<bool>()
    ) {
        // Two replicas each set a member the other does not touch.
        let committed = vec![PatchOp::Add { path: JsonPointer::from_tokens(["left"]), value: x.clone() }];
        let incoming = vec![PatchOp::Add { path: JsonPointer::from_tokens(["right"]), value: y.clone() }];
        let policy = if server_wins { Policy::ServerWins } else { Policy::LastWriterWins };
        let rebased = rebase(&base, &incoming, &committed, policy).unwrap();
        prop_assert!(rebased.conflicts.is_empty());
        let mut state = base.clone();
        apply(&mut state, &committed).unwrap();
        apply(&mut state, &rebased.patch).unwrap();
        prop_assert_eq!(&state["left"], &x);
        prop_assert_eq!(&state["right"], &y);
    }

    #[test]
    fn concurrent_array_inserts_both_survive_in_commit_order(
        items in prop::collection::vec(any::<u8>(), 0..8), i in any::<usize>(), j in any::<usize>()
    ) {
        let base = json!({"l": items});
        let len = items.len() + 1;
        let (i, j) = (i % len, j % len);
        let committed = vec![PatchOp::Add { path: JsonPointer::from_tokens(["l".to_owned(), i.to_string()]), value: json!("first") }];
        let incoming = vec![PatchOp::Add { path: JsonPointer::from_tokens(["l".to_owned(), j.to_string()]), value: json!("second") }];
        let rebased = rebase(&base, &incoming, &committed, Policy::ServerWins).unwrap();
        let mut state = base.clone();
        apply(&mut state, &committed).unwrap();
        apply(&mut state, &rebased.patch).unwrap();
        let list = state["l"].as_array().unwrap();
        let first = list.iter().position(|v| v == "first").unwrap();
        let second = list.iter().position(|v| v == "second").unwrap();
        if i == j {
            prop_assert_eq!(second, first + 1, "committed first comes first");
        }
        // Every original element is still there, in its order.
        let originals: Vec<Value> = list.iter().filter(|v| !v.is_string()).cloned().collect();
        prop_assert_eq!(originals, items.iter().map(|n| json!(n)).collect::<Vec<_>>());
        prop_assert_eq!(list.len(), items.len() + 2);
    }

    #[test]
    fn canonical_form_is_serde_jsons_compact_form_with_sorted_keys(doc in arb_json()) {
        // serde_json's map is ordered by key bytes here (no `preserve_order`), so its own
        // compact writer is an independent statement of the canonical form.
        prop_assert_eq!(sync_core::canonical::canonical_json(&doc), serde_json::to_string(&doc).unwrap());
    }

    #[test]
    fn canonical_hash_ignores_member_order(doc in arb_object()) {
        let reversed: Map<String, Value> = doc.as_object().unwrap().iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(
            sync_core::canonical::content_hash(&doc),
            sync_core::canonical::content_hash(&Value::Object(reversed))
        );
    }

    #[test]
    fn client_messages_round_trip(msg in arb_client_message(), id in prop::option::of(arb_request_id())) {
        let envelope = ClientEnvelope { message: msg, request_id: id };
        let text = envelope.to_json();
        // The scan for the id of a refused frame reads what decoding reads.
        prop_assert_eq!(top_level_request_id(&text), envelope.request_id.clone());
        let decoded = decode_client_frame(&text, &DecodeLimits::default()).unwrap();
        prop_assert_eq!(decoded.len(), 1);
        prop_assert_eq!(decoded.into_iter().next().unwrap().unwrap(), envelope);
    }

    #[test]
    fn server_messages_round_trip(msg in arb_server_message(), id in prop::option::of(arb_request_id())) {
        let envelope = ServerEnvelope { message: msg, request_id: id };
        let text = envelope.to_json();
        let decoded = decode_server_frame(&text).unwrap();
        prop_assert_eq!(decoded, vec![envelope.clone()]);
        // A batch of two decodes to both, in order.
        let batch = encode_batch(&[envelope.clone(), envelope.clone()]);
        prop_assert_eq!(decode_server_frame(&batch).unwrap(), vec![envelope.clone(), envelope]);
    }
}

fn arb_request_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![any::<i64>().prop_map(RequestId::Int), "[a-z0-9-]{1,12}".prop_map(RequestId::Str)]
}

fn arb_patch() -> impl Strategy<Value = Vec<PatchOp>> {
    (arb_json(), any::<u64>()).prop_map(|(doc, seed)| random_patch(&mut Rng(seed), &doc, &JsonPointer::root()))
}

fn arb_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,20}"
}

fn arb_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (arb_id(), "[a-z@.]{3,12}", any::<i64>(), prop::option::of(any::<u64>())).prop_map(|(id, email, ts, last)| {
            ClientMessage::Authenticate(Authenticate {
                credentials: Credentials::Hmac {
                    email,
                    api_key: format!("rpa_{id}"),
                    signature: "ab".repeat(32),
                    timestamp: ts,
                },
                client_id: Some(id),
                last_sequence: last,
                collections: None,
            })
        }),
        "[A-Za-z0-9.]{1,40}".prop_map(|token| ClientMessage::Authenticate(Authenticate {
            credentials: Credentials::Jwt { token },
            client_id: None,
            last_sequence: None,
            collections: Some(vec!["tasks".into(), "notes".into()]),
        })),
        (arb_id(), arb_id()).prop_map(|(user_id, auth_token)| ClientMessage::Authenticate(Authenticate {
            credentials: Credentials::Bearer { user_id, auth_token },
            client_id: None,
            last_sequence: Some(7),
            collections: None,
        })),
        (prop::option::of(arb_id()), prop::option::of("[a-z]{1,8}"), arb_json(), prop::option::of(arb_id())).prop_map(
            |(id, collection, content, change)| ClientMessage::CreateDocument(CreateDocument {
                document: NewDocument { id, collection, title: None, content },
                client_change_id: change,
            })
        ),
        (
            arb_id(),
            arb_patch(),
            prop::option::of(any::<u64>()),
            prop::option::of("[0-9a-f]{64}"),
            prop::option::of(arb_id())
        )
            .prop_map(|(document_id, patch, base_revision, content_hash, client_change_id)| {
                ClientMessage::UpdateDocument(UpdateDocument {
                    patch: DocumentPatch { document_id, patch, base_revision, content_hash, client_change_id },
                })
            }),
        (arb_id(), prop::option::of(any::<u64>())).prop_map(|(document_id, base_revision)| {
            ClientMessage::DeleteDocument(DeleteDocument { document_id, base_revision, client_change_id: None })
        }),
        (any::<u64>(), prop::option::of(1u32..5000), prop::option::of(prop::collection::vec("[a-z]{1,5}", 0..3)))
            .prop_map(|(last_sequence, limit, collections)| {
                ClientMessage::GetChangesSince(GetChangesSince { last_sequence, limit, collections })
            }),
        any::<u64>().prop_map(|up_to_sequence| ClientMessage::AckChanges(AckChanges { up_to_sequence })),
        prop::collection::vec(arb_id(), 0..4)
            .prop_map(|document_ids| ClientMessage::RequestSync(RequestSync { document_ids })),
        (arb_id(), prop::option::of(any::<u64>())).prop_map(|(document_id, at_revision)| ClientMessage::GetDocument(
            GetDocument { document_id, at_revision }
        )),
        ("[a-z-]{1,10}", arb_json(), any::<bool>()).prop_map(|(topic, data, echo)| ClientMessage::Publish(Publish {
            topic,
            data,
            echo
        })),
        ("[a-z.>*]{1,10}", prop::option::of(any::<u64>()), prop::option::of("[a-z0-9]{1,8}")).prop_map(
            |(topic, since_offset, epoch)| ClientMessage::Subscribe(Subscribe { topic, since_offset, epoch })
        ),
        arb_json().prop_map(|data| ClientMessage::Connect(Connect { data })),
        Just(ClientMessage::Ping),
    ]
}

fn arb_server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (arb_id(), arb_patch(), 1u64..1000, any::<u64>()).prop_map(|(document_id, patch, sync_revision, sequence)| {
            ServerMessage::DocumentUpdated(DocumentUpdated {
                patch: PushedPatch { document_id, patch, sync_revision, content_hash: "0".repeat(64) },
                sequence,
                client_change_id: Some("c".into()),
            })
        }),
        (arb_id(), any::<bool>(), arb_patch()).prop_map(|(document_id, success, patch)| {
            ServerMessage::DocumentUpdatedResponse(UpdatedResponse {
                document_id,
                outcome: if success {
                    Ok(Updated {
                        sync_revision: 3,
                        sequence: 9,
                        applied_patch: Some(patch),
                        conflicts: Vec::new(),
                        content_hash: None,
                    })
                } else {
                    Err(sync_core::ErrorBody::new(sync_core::ErrorCode::VersionMismatch, "stale"))
                },
            })
        }),
        (arb_id(), 1u64..100, any::<u64>()).prop_map(|(document_id, sync_revision, sequence)| {
            ServerMessage::DocumentDeleted(DocumentDeleted {
                document_id,
                sync_revision,
                sequence,
                client_change_id: None,
            })
        }),
        "[a-z ]{0,30}".prop_map(|m| ServerMessage::error(sync_core::ErrorCode::InvalidMessage, m)),
        Just(ServerMessage::Pong),
        (any::<u64>(), any::<bool>()).prop_map(|(latest_sequence, has_more)| ServerMessage::Changes(Changes {
            events: Vec::new(),
            latest_sequence,
            has_more
        })),
    ]
}

#[test]
fn patch_values_serialize_in_rfc_shape() {
    let ops = vec![PatchOp::Move { from: "/a".parse().unwrap(), path: "/b".parse().unwrap() }];
    assert_eq!(patch_to_value(&ops), json!([{"op": "move", "from": "/a", "path": "/b"}]));
}
