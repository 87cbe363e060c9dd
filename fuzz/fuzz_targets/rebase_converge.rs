//! Two replicas edit one document concurrently; the server commits one change first and
//! rebases the other over it. For both orders, every replica — the two authors, running
//! `sync_core::replica` as the clients do, and an observer that only receives the
//! server's patches — ends with the server's content, byte for byte in canonical JSON
//! (PROTOCOL.md §7, the property of `crates/sync-core/tests/convergence.rs`). Along the
//! way: the rebased patch applies to the committed state, the shortcut for independent
//! edits answers as the full rebase, and the limited rebase answers as the plain one
//! when the limits hold.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::canonical::canonical_json;
use sync_core::patch::{ApplyLimits, Patch, apply};
use sync_core::replica::{PendingChange, RemoteChange, Replica};
use sync_core::transform::{Policy, RebaseError, rebase, rebase_many, rebase_many_in_full, rebase_within_limits};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(base) = sync_fuzz::value(&mut u) else { return };
    let (Ok(a), Ok(b)) = (sync_fuzz::patch(&mut u, &base, 4), sync_fuzz::patch(&mut u, &base, 4)) else { return };
    let policy = if u.ratio(1, 2).unwrap_or(false) { Policy::ServerWins } else { Policy::LastWriterWins };
    // Each replica made its patch on the base: only patches that apply there are edits,
    // and an empty one is no edit (a replica sends nothing for it).
    if a.is_empty() || b.is_empty() || apply(&mut base.clone(), &a).is_err() || apply(&mut base.clone(), &b).is_err() {
        return;
    }
    converge(&base, &a, &b, policy);
    converge(&base, &b, &a, policy);
});

/// `first` reaches the server first and is committed as is; `second`, made on the same
/// base, is rebased over it.
fn converge(base: &Value, first: &Patch, second: &Patch, policy: Policy) {
    let entries = [second.clone()];
    assert_eq!(rebase_many(base, &entries, first, policy), rebase_many_in_full(base, &entries, first, policy));
    let limits = ApplyLimits::new(1 << 20, 64);
    let rebased = rebase(base, second, first, policy);
    assert_eq!(rebase_within_limits(base, second, first, policy, &limits), rebased);

    let mut server = base.clone();
    apply(&mut server, first).expect("the first change applies to the base");
    let applied = match rebased {
        Ok(rebased) => {
            let mut committed = server.clone();
            apply(&mut committed, &rebased.patch).expect("a rebased patch applies to the committed state");
            server = committed;
            Some(rebased.patch)
        }
        // Rule 6: a `test` that no longer holds refuses the change.
        Err(RebaseError::TestFailed { .. }) => None,
        Err(other) => panic!("a patch that applies to its base cannot be refused so: {other}"),
    };
    let (revision_first, revision_second) = (2, 3);

    // The author of `first`: its change is acknowledged, then `second` arrives.
    let mut author_first = Replica::from_server(base.clone(), 1, false, policy);
    let id_first = send(&mut author_first, first);
    author_first.on_ack(&id_first, revision_first, None, None);
    if let Some(patch) = &applied {
        author_first.on_remote(revision_second, RemoteChange::Update(patch.clone()), Some("second"));
    }

    // The author of `second`: `first` arrives while its change is in flight, then the
    // server answers it (with the applied patch when the server transformed it).
    let mut author_second = Replica::from_server(base.clone(), 1, false, policy);
    let id_second = send(&mut author_second, second);
    author_second.on_remote(revision_first, RemoteChange::Update(first.clone()), Some("first"));
    match &applied {
        Some(patch) => {
            let transformed = (patch != second).then(|| patch.clone());
            author_second.on_ack(&id_second, revision_second, transformed, None);
        }
        None => {
            author_second.on_reject(&id_second, sync_core::ErrorCode::VersionMismatch, "test failed");
        }
    }

    // An observer: the server's patches only.
    let mut observer = Replica::from_server(base.clone(), 1, false, policy);
    observer.on_remote(revision_first, RemoteChange::Update(first.clone()), None);
    if let Some(patch) = &applied {
        observer.on_remote(revision_second, RemoteChange::Update(patch.clone()), None);
    }

    let expected = canonical_json(&server);
    for (who, replica) in
        [("first's author", &author_first), ("second's author", &author_second), ("observer", &observer)]
    {
        assert!(!replica.has_pending(), "{who} still has pending changes: {replica:?}");
        let view = replica.view().expect("the document exists");
        assert_eq!(canonical_json(&view), expected, "{who}: first {first:?}, second {second:?}");
    }
}

/// Records `patch` as a local edit and sends it; returns its `client_change_id`.
fn send(replica: &mut Replica, patch: &Patch) -> String {
    let id = sync_core::replica::new_change_id();
    replica.local_update(patch.clone(), id).expect("the patch applies to the base");
    let outgoing = replica.next_to_send().expect("a local edit is sent");
    assert!(matches!(outgoing.change, PendingChange::Update { base_revision: Some(1), .. }));
    outgoing.change_id
}
