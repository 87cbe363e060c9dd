//! Table tests for every merge rule of PROTOCOL.md §7 that the transform decides.

use serde_json::{Value, json};

use super::*;
use crate::patch::{apply, parse_patch};

/// Rebases `incoming` over `committed` from `base`, applies the result on the committed
/// state, and checks the final document and the conflicts (as `(path, reason, resolution)`).
fn check(
    base: Value,
    committed: Value,
    incoming: Value,
    policy: Policy,
    expected: Value,
    expected_conflicts: &[(&str, ConflictReason, ConflictResolution)],
) {
    let committed = parse_patch(committed).unwrap();
    let incoming = parse_patch(incoming).unwrap();
    let rebased = rebase(&base, &incoming, &committed, policy).unwrap();
    let mut state = base.clone();
    apply(&mut state, &committed).unwrap();
    apply(&mut state, &rebased.patch).unwrap();
    assert_eq!(state, expected, "rebased patch: {:?}", rebased.patch);
    let got: Vec<_> = rebased.conflicts.iter().map(|c| (c.path.as_str(), c.reason, c.resolution)).collect();
    assert_eq!(got, expected_conflicts, "conflicts");
}

use ConflictReason::*;
use ConflictResolution::*;
const LWW: Policy = Policy::LastWriterWins;
const SW: Policy = Policy::ServerWins;

#[test]
fn rule1_disjoint_paths_all_survive() {
    check(
        json!({"a": 1, "b": 1, "n": {"x": 1}}),
        json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "add", "path": "/n/y", "value": 2}]),
        json!([{"op": "replace", "path": "/b", "value": 3}, {"op": "remove", "path": "/n/x"}]),
        LWW,
        json!({"a": 2, "b": 3, "n": {"y": 2}}),
        &[],
    );
}

#[test]
fn rule2_insert_before_shifts_index_up() {
    check(
        json!({"l": ["a", "b", "c"]}),
        json!([{"op": "add", "path": "/l/0", "value": "x"}]),
        json!([{"op": "replace", "path": "/l/1", "value": "B"}]),
        LWW,
        json!({"l": ["x", "a", "B", "c"]}),
        &[],
    );
}

#[test]
fn rule2_removal_before_shifts_index_down() {
    check(
        json!({"l": ["a", "b", "c"]}),
        json!([{"op": "remove", "path": "/l/0"}]),
        json!([{"op": "replace", "path": "/l/2", "value": "C"}]),
        LWW,
        json!({"l": ["b", "C"]}),
        &[],
    );
}

#[test]
fn rule2_concurrent_inserts_at_one_index_both_survive_committed_first() {
    check(
        json!({"l": ["a", "b"]}),
        json!([{"op": "add", "path": "/l/1", "value": "first"}]),
        json!([{"op": "add", "path": "/l/1", "value": "second"}]),
        LWW,
        json!({"l": ["a", "first", "second", "b"]}),
        &[],
    );
    // Appends with `-` on both sides behave the same way.
    check(
        json!({"l": ["a"]}),
        json!([{"op": "add", "path": "/l/-", "value": "first"}]),
        json!([{"op": "add", "path": "/l/-", "value": "second"}]),
        SW,
        json!({"l": ["a", "first", "second"]}),
        &[],
    );
}

#[test]
fn rule2_later_ops_of_a_patch_see_the_earlier_ones() {
    // The second incoming op addresses the list after the first incoming insert.
    check(
        json!({"l": ["a", "b", "c"]}),
        json!([{"op": "remove", "path": "/l/1"}]),
        json!([{"op": "add", "path": "/l/0", "value": "X"}, {"op": "replace", "path": "/l/1", "value": "A"}]),
        LWW,
        json!({"l": ["X", "A", "c"]}),
        &[],
    );
}

#[test]
fn rule3_op_on_removed_target_is_dropped_and_reported() {
    check(
        json!({"l": ["a", "b", "c"], "k": 1}),
        json!([{"op": "remove", "path": "/l/1"}]),
        json!([{"op": "replace", "path": "/l/1", "value": "B"}, {"op": "replace", "path": "/k", "value": 2}]),
        LWW,
        json!({"l": ["a", "c"], "k": 2}),
        &[("/l/1", TargetRemoved, Dropped)],
    );
}

#[test]
fn rule3_op_under_removed_ancestor_is_dropped_and_reported() {
    check(
        json!({"o": {"x": 1}, "k": 1}),
        json!([{"op": "remove", "path": "/o"}]),
        json!([{"op": "replace", "path": "/o/x", "value": 2}, {"op": "add", "path": "/o/y", "value": 3}]),
        SW,
        json!({"k": 1}),
        &[("/o/x", TargetRemoved, Dropped), ("/o/y", TargetRemoved, Dropped)],
    );
}

#[test]
fn rule3_replaced_ancestor_counts_as_removed() {
    check(
        json!({"settings": {"theme": "dark", "font": 12}}),
        json!([{"op": "replace", "path": "/settings", "value": {"theme": "light"}}]),
        json!([{"op": "replace", "path": "/settings/font", "value": 14}]),
        LWW,
        json!({"settings": {"theme": "light"}}),
        &[("/settings/font", AncestorReplaced, Dropped)],
    );
}

#[test]
fn rule3_removing_what_was_removed_is_not_a_conflict() {
    check(
        json!({"l": [1, 2, 3], "o": {"k": 1}}),
        json!([{"op": "remove", "path": "/l/1"}, {"op": "remove", "path": "/o/k"}]),
        json!([{"op": "remove", "path": "/l/1"}, {"op": "remove", "path": "/o/k"}, {"op": "replace", "path": "/l/1", "value": 30}]),
        LWW,
        json!({"l": [1, 30], "o": {}}),
        &[],
    );
}

#[test]
fn rule4_same_path_last_writer_wins() {
    check(
        json!({"status": "pending"}),
        json!([{"op": "replace", "path": "/status", "value": "started"}]),
        json!([{"op": "replace", "path": "/status", "value": "completed"}]),
        LWW,
        json!({"status": "completed"}),
        &[("/status", ConcurrentWrite, Applied)],
    );
}

#[test]
fn rule4_same_path_server_wins_drops_the_later_write() {
    check(
        json!({"status": "pending", "n": 0}),
        json!([{"op": "replace", "path": "/status", "value": "started"}]),
        json!([{"op": "replace", "path": "/status", "value": "completed"}, {"op": "replace", "path": "/n", "value": 1}]),
        SW,
        json!({"status": "started", "n": 1}),
        &[("/status", ConcurrentWrite, Dropped)],
    );
}

#[test]
fn rule4_write_containing_a_committed_write_is_a_clash() {
    let base = json!({"s": {"x": 1, "y": 1}});
    let committed = json!([{"op": "replace", "path": "/s/x", "value": 2}]);
    let incoming = json!([{"op": "replace", "path": "/s", "value": {"z": 3}}]);
    check(
        base.clone(),
        committed.clone(),
        incoming.clone(),
        LWW,
        json!({"s": {"z": 3}}),
        &[("/s", ConcurrentWrite, Applied)],
    );
    check(base, committed, incoming, SW, json!({"s": {"x": 2, "y": 1}}), &[("/s", ConcurrentWrite, Dropped)]);
}

#[test]
fn rule4_remove_and_recreate_member() {
    let base = json!({"o": {"k": 1}});
    let committed = json!([{"op": "remove", "path": "/o/k"}]);
    let incoming = json!([{"op": "add", "path": "/o/k", "value": 2}]);
    check(
        base.clone(),
        committed.clone(),
        incoming.clone(),
        LWW,
        json!({"o": {"k": 2}}),
        &[("/o/k", ConcurrentWrite, Applied)],
    );
    check(base, committed, incoming, SW, json!({"o": {}}), &[("/o/k", ConcurrentWrite, Dropped)]);
}

#[test]
fn rule6_test_is_evaluated_at_apply_time() {
    let base = json!({"v": 1, "l": ["a", "b"]});
    let committed = parse_patch(json!([{"op": "replace", "path": "/v", "value": 2}])).unwrap();
    let incoming =
        parse_patch(json!([{"op": "test", "path": "/v", "value": 1}, {"op": "add", "path": "/w", "value": 1}]))
            .unwrap();
    let err = rebase(&base, &incoming, &committed, LWW).unwrap_err();
    assert!(matches!(err, RebaseError::TestFailed { index: 0, .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::VersionMismatch);

    // A test whose element shifted still finds it.
    check(
        base,
        json!([{"op": "add", "path": "/l/0", "value": "z"}]),
        json!([{"op": "test", "path": "/l/1", "value": "b"}, {"op": "replace", "path": "/l/1", "value": "B"}]),
        LWW,
        json!({"v": 1, "l": ["z", "a", "B"]}),
        &[],
    );
}

#[test]
fn rule6_a_test_that_holds_only_at_apply_time_passes() {
    // The test fails against the base but holds after the committed change: rule 6 judges
    // it at apply time, so the patch applies.
    check(
        json!({"v": 1}),
        json!([{"op": "replace", "path": "/v", "value": 2}]),
        json!([{"op": "test", "path": "/v", "value": 2}, {"op": "add", "path": "/w", "value": true}]),
        LWW,
        json!({"v": 2, "w": true}),
        &[],
    );
}

#[test]
fn rule6_test_on_removed_target_rejects_the_patch() {
    let base = json!({"l": ["a", "b"]});
    let committed = parse_patch(json!([{"op": "remove", "path": "/l/1"}])).unwrap();
    let incoming = parse_patch(json!([{"op": "test", "path": "/l/1", "value": "b"}])).unwrap();
    assert!(matches!(rebase(&base, &incoming, &committed, LWW), Err(RebaseError::TestFailed { .. })));
}

#[test]
fn edits_follow_a_moved_value() {
    check(
        json!({"tasks": [{"t": "a"}, {"t": "b"}, {"t": "c"}]}),
        json!([{"op": "move", "from": "/tasks/0", "path": "/tasks/2"}]),
        json!([{"op": "replace", "path": "/tasks/0/t", "value": "A"}, {"op": "replace", "path": "/tasks/1/t", "value": "B"}]),
        LWW,
        json!({"tasks": [{"t": "B"}, {"t": "c"}, {"t": "A"}]}),
        &[],
    );
}

#[test]
fn ops_that_depended_on_a_dropped_op_are_dropped() {
    check(
        json!({"a": {}, "k": 0}),
        json!([{"op": "remove", "path": "/a"}]),
        json!([
            {"op": "add", "path": "/a/b", "value": {}},
            {"op": "add", "path": "/a/b/c", "value": 1},
            {"op": "replace", "path": "/k", "value": 1}
        ]),
        LWW,
        json!({"k": 1}),
        &[("/a/b", TargetRemoved, Dropped), ("/a/b/c", TargetRemoved, Dropped)],
    );
}

#[test]
fn a_dropped_insert_is_undone_for_later_ops() {
    // The incoming insert into /l/1 survives; its removal of /o/k is dropped (server
    // wins on the re-created member), and the later index stays right.
    check(
        json!({"l": [0, 1, 2], "o": {"k": 1}}),
        json!([{"op": "replace", "path": "/o/k", "value": 5}, {"op": "remove", "path": "/l/0"}]),
        json!([
            {"op": "remove", "path": "/o/k"},
            {"op": "add", "path": "/l/1", "value": "x"},
            {"op": "replace", "path": "/l/3", "value": 20}
        ]),
        SW,
        json!({"l": ["x", 1, 20], "o": {"k": 5}}),
        &[("/o/k", ConcurrentWrite, Dropped)],
    );
}

#[test]
fn incoming_that_does_not_apply_to_its_base_is_an_error() {
    let base = json!({});
    let incoming = parse_patch(json!([{"op": "remove", "path": "/nope"}])).unwrap();
    let err = rebase(&base, &incoming, &[], LWW).unwrap_err();
    assert!(matches!(err, RebaseError::Incoming(_)));
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
}

/// `n` ops copying `/x` into itself: each doubles it.
fn doubling_copies(n: usize) -> Patch {
    let ops: Vec<Value> = (0..n).map(|i| json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")})).collect();
    parse_patch(Value::Array(ops)).unwrap()
}

#[test]
fn a_patch_over_a_limit_is_refused_by_the_limited_rebase_wherever_it_grows() {
    let limits = ApplyLimits::new(10_000, 64);
    // Too large already on its base: refused, not built.
    let base = json!({"x": {"s": "a".repeat(1024)}, "y": 0});
    let touch_x = parse_patch(json!([{"op": "add", "path": "/x/t", "value": 1}])).unwrap();
    let err = rebase_within_limits(&base, &doubling_copies(17), &touch_x, LWW, &limits).unwrap_err();
    assert!(matches!(&err, RebaseError::OverLimit(e) if e.index < 17), "{err:?}");
    assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
    // Also when the shortcut for independent edits would take it.
    let touch_y = parse_patch(json!([{"op": "replace", "path": "/y", "value": 1}])).unwrap();
    let err = rebase_within_limits(&base, &doubling_copies(17), &touch_y, LWW, &limits).unwrap_err();
    assert!(matches!(err, RebaseError::OverLimit(_)), "{err:?}");

    // Small on its base (8 doublings of 14 bytes), too large on the committed state,
    // where `/x/s` grew to 1 KiB: the rebased copies would build 256 KiB.
    let base = json!({"x": {"s": "a"}});
    let grow = parse_patch(json!([{"op": "replace", "path": "/x/s", "value": "a".repeat(1024)}])).unwrap();
    let mut on_base = base.clone();
    crate::patch::apply_within_limits(&mut on_base, &doubling_copies(8), &limits).unwrap();
    let err = rebase_within_limits(&base, &doubling_copies(8), &grow, LWW, &limits).unwrap_err();
    assert!(matches!(err, RebaseError::OverLimit(_)), "{err:?}");
    // Without limits the same rebase goes through: the limit is what refused it.
    assert!(rebase(&base, &doubling_copies(8), &grow, LWW).is_ok());
}

#[test]
fn rebase_many_keeps_entry_boundaries() {
    let base = json!({"l": ["a"], "s": 0});
    let committed =
        parse_patch(json!([{"op": "add", "path": "/l/0", "value": "r"}, {"op": "replace", "path": "/s", "value": 9}]))
            .unwrap();
    let entries = vec![
        parse_patch(json!([{"op": "add", "path": "/l/1", "value": "p1"}])).unwrap(),
        parse_patch(
            json!([{"op": "replace", "path": "/l/0", "value": "A"}, {"op": "replace", "path": "/s", "value": 1}]),
        )
        .unwrap(),
    ];
    let results = rebase_many(&base, &entries, &committed, SW);
    let mut state = base.clone();
    apply(&mut state, &committed).unwrap();
    for r in &results {
        apply(&mut state, &r.as_ref().unwrap().patch).unwrap();
    }
    assert_eq!(state, json!({"l": ["r", "A", "p1"], "s": 9}));
    assert!(results[0].as_ref().unwrap().conflicts.is_empty());
    assert_eq!(results[1].as_ref().unwrap().conflicts.len(), 1);
}

/// Whether the shortcut for independent changes answers (`Some`) for these patches.
fn shortcut_taken(base: Value, committed: Value, incoming: Value) -> bool {
    let committed = parse_patch(committed).unwrap();
    let incoming = parse_patch(incoming).unwrap();
    rebase_independent(&base, &[incoming], &committed, None).is_some()
}

#[test]
fn the_shortcut_takes_edits_that_part_inside_objects_only() {
    let base = json!({"a": 1, "b": 1, "n": {"x": 1, "y": [1, 2]}, "list": [{"k": 1}, {"k": 2}]});
    let replace = |path: &str| json!([{"op": "replace", "path": path, "value": 9}]);
    // Different members of the root, or of a nested object.
    assert!(shortcut_taken(base.clone(), replace("/a"), replace("/b")));
    assert!(shortcut_taken(base.clone(), replace("/n/x"), replace("/a")));
    assert!(shortcut_taken(base.clone(), replace("/n/x"), json!([{"op": "add", "path": "/n/z", "value": 1}])));
    // Same path, or one inside the other: the merge rules decide.
    assert!(!shortcut_taken(base.clone(), replace("/a"), replace("/a")));
    assert!(!shortcut_taken(base.clone(), replace("/n"), replace("/n/x")));
    assert!(!shortcut_taken(base.clone(), replace("/n/x"), replace("/n")));
    // Parting inside an array: an index may shift.
    assert!(!shortcut_taken(base.clone(), json!([{"op": "remove", "path": "/list/0"}]), replace("/list/1/k")));
    // `move` reads its `from`; a test and an append are left to the full algorithm.
    assert!(!shortcut_taken(base.clone(), json!([{"op": "move", "from": "/a", "path": "/c"}]), replace("/a")));
    assert!(!shortcut_taken(base.clone(), replace("/a"), json!([{"op": "test", "path": "/b", "value": 1}])));
    assert!(!shortcut_taken(base.clone(), replace("/a"), json!([{"op": "add", "path": "/n/y/-", "value": 3}])));
    // An incoming patch that does not apply to its base is reported by the full algorithm.
    assert!(!shortcut_taken(base, replace("/a"), replace("/missing")));
}
