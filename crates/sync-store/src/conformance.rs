//! The store conformance suite: the behaviour every [`Store`] backend must show, written
//! only against the trait so that every backend runs it unchanged.
//!
//! Each check is a `pub async fn` named after the behaviour it asserts, and panics with
//! a message naming what differed (this is a test suite: panicking is how it reports).
//! [`run_all`] runs every check in turn.
//!
//! Every check makes its own users, documents and ids from fresh UUIDs, so the checks do
//! not see each other's data and the suite may run against a database that already holds
//! data. Checks that compare sequence numbers across calls (`latest_sequence`, gap-free
//! batches, `reached`) assume that nothing else writes to the store while the suite runs.
//!
//! # Running it on a backend
//!
//! The suite is built with the `testing` feature, which a backend's tests turn on through
//! their dev-dependency on sync-store. A backend's integration test opens a fresh store
//! and hands it over:
//!
//! ```no_run
//! # async fn example() -> Result<(), sync_store::StoreError> {
//! let dir = std::env::temp_dir().join("conformance-example");
//! std::fs::create_dir_all(&dir).ok();
//! let store = sync_store::sqlite::SqliteStore::open(&dir.join("sync.db"))?;
//! sync_store::conformance::run_all(&store).await;
//! # Ok(())
//! # }
//! ```
//!
//! A backend that needs a runtime for its own tasks runs this inside
//! `#[tokio::test(flavor = "multi_thread")]`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde_json::{Value, json};
use sync_core::acl::{Acl, ReadView, Rule};
use sync_core::canonical::content_hash;
use sync_core::model::new_document_id;
use sync_core::vclock::VectorClock;
use sync_core::{ChangeEvent, ChangeKind, Document, Timestamp};

use crate::{AclSince, ApiCredential, ChangePage, NewChange, ReadScope, Store, StoreError, StoreResult, TokenRecord};

/// Runs every check of the suite against `store`, in order; panics at the first failure.
pub async fn run_all<S: Store>(store: &S) {
    ping_answers(store).await;
    empty_batch_writes_nothing(store).await;
    documents_round_trip_exactly(store).await;
    events_round_trip_exactly(store).await;
    batch_sequences_are_consecutive_and_gap_free(store).await;
    several_changes_to_one_document_in_one_batch(store).await;
    revision_mismatch_refuses_the_whole_batch(store).await;
    create_of_existing_id_is_duplicate(store).await;
    duplicate_client_change_id_is_duplicate(store).await;
    find_client_changes_is_per_user(store).await;
    changes_since_shows_only_the_readers_changes(store).await;
    changes_since_pages_with_reached_and_has_more(store).await;
    changes_since_filters_collections(store).await;
    document_changes_selects_revision_ranges(store).await;
    history_is_newest_first(store).await;
    bounds_beyond_the_stored_range_are_no_error(store).await;
    list_documents_pages_by_id_with_tombstones(store).await;
    api_credentials_round_trip(store).await;
    tokens_round_trip(store).await;
    ensure_user_is_idempotent(store).await;
    access_rules_are_replaced_whole(store).await;
    the_rules_history_answers_what_a_resuming_reader_went_by(store).await;
    ack_cursor_accepts_any_order(store).await;
    stats_count_live_documents_and_changes(store).await;
    concurrent_appends_get_unique_gap_free_sequences(store).await;
    a_refused_append_does_not_fail_the_appends_grouped_with_it(store).await;
    a_shared_document_is_visible_to_its_reader(store).await;
    an_earlier_denial_shadows_a_later_allow(store).await;
    prefixes_match_names_that_start_with_them_and_nothing_else(store).await;
    everything_and_admin_views_read_every_document(store).await;
    a_collections_filter_narrows_what_shares_show(store).await;
    paging_through_a_mostly_hidden_log_misses_nothing(store).await;
    a_dense_prefix_share_over_every_collection_pages_without_a_gap(store).await;
}

/// `ping` answers on a working store.
pub async fn ping_answers<S: Store>(store: &S) {
    ok(store.ping().await, "ping");
}

/// An empty batch succeeds, gets no sequences and consumes none.
pub async fn empty_batch_writes_nothing<S: Store>(store: &S) {
    let before = latest(store).await;
    assert_eq!(ok(store.append_batch(Vec::new()).await, "empty batch"), Vec::<u64>::new());
    assert_eq!(latest(store).await, before, "an empty batch moved latest_sequence");
}

/// A document comes back from `load_documents` exactly as written: nested content,
/// unicode, numbers of every kind, vector clock, millisecond timestamps, tombstone.
/// Missing ids are left out.
pub async fn documents_round_trip_exactly<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();

    let mut rich = create(&user, &collection, &unique("doc"), rich_content());
    let document = Arc::make_mut(&mut rich.document);
    document.vector_clock = clock(&[("client-a", 3), ("client-b", 1), (&"c".repeat(100), u64::from(u32::MAX))]);
    document.created_at = Timestamp::from_unix_millis(1_795_000_000_123);
    document.updated_at = Timestamp::from_unix_millis(1_795_000_999_999);

    // No title: the content has none.
    let plain = create(&user, &collection, &unique("doc"), json!([1, "two", {"three": 3}]));
    assert_eq!(plain.document.title, None);
    let gone = delete(&plain.document);
    assert!(gone.document.is_deleted());

    ok(store.append_batch(vec![rich.clone(), plain, gone.clone()]).await, "append");

    let missing = unique("missing");
    let ids = vec![rich.document.id.clone(), missing, gone.document.id.clone()];
    let loaded = sorted_documents(ok(store.load_documents(ids).await, "load_documents"));
    let expected = sorted_documents(vec![(*rich.document).clone(), (*gone.document).clone()]);
    assert_eq!(loaded, expected, "documents did not round-trip");

    assert_eq!(ok(store.load_documents(Vec::new()).await, "load nothing"), Vec::<Document>::new());
}

/// Change events come back exactly as written, with the sequence the store assigned:
/// patches, `None` patches, custom event types, client change ids and hashes.
pub async fn events_round_trip_exactly<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let mut first = create(&user, &collection, &unique("doc"), json!({"title": "Café ☕", "n": 1}));
    first.event.client_change_id = Some(unique("cc"));
    let mut second = update(&first.document, json!({"title": "Café ☕", "n": 2.5}));
    second.event.event_type = ChangeKind::Custom("archive".to_owned());
    let third = delete(&second.document);

    let batch = vec![first, second, third];
    let sequences = ok(store.append_batch(batch.clone()).await, "append");
    let expected: Vec<ChangeEvent> = batch.iter().zip(&sequences).map(|(c, &s)| with_sequence(&c.event, s)).collect();

    let stored = ok(store.document_changes(expected[0].document_id.clone(), 0, None).await, "document_changes");
    assert_eq!(stored, expected, "events did not round-trip");
    assert_eq!(stored[2].forward_patch, None, "a delete has no forward patch");
    assert_eq!(stored[0].reverse_patch, None, "a create has no reverse patch");
}

/// `append_batch` assigns consecutive sequences in batch order, continuing right after the
/// previous batch, and `latest_sequence` follows.
pub async fn batch_sequences_are_consecutive_and_gap_free<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let before = latest(store).await;

    let batch: Vec<NewChange> = (0..5).map(|i| create(&user, &collection, &unique("doc"), json!({"i": i}))).collect();
    let sequences = ok(store.append_batch(batch.clone()).await, "first batch");
    assert_eq!(sequences, (before + 1..=before + 5).collect::<Vec<_>>(), "first batch sequences");
    assert_eq!(latest(store).await, before + 5, "latest after the first batch");

    // The sequences are the events' order in the log, not only numbers handed back.
    let page = ok(store.changes_since(scope(&user), before, 100, None).await, "changes_since");
    let logged: Vec<&str> = page.events.iter().map(|e| e.event_id.as_str()).collect();
    let sent: Vec<&str> = batch.iter().map(|c| c.event.event_id.as_str()).collect();
    assert_eq!(logged, sent, "log order differs from batch order");

    let more: Vec<NewChange> = (0..3).map(|i| create(&user, &collection, &unique("doc"), json!({"i": i}))).collect();
    let sequences = ok(store.append_batch(more).await, "second batch");
    assert_eq!(sequences, (before + 6..=before + 8).collect::<Vec<_>>(), "second batch sequences");
    assert_eq!(latest(store).await, before + 8, "latest after the second batch");
}

/// One batch may create a document and change it several times: each change expects the
/// revision the previous one produced.
pub async fn several_changes_to_one_document_in_one_batch<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let created = create(&user, &collection, &unique("doc"), json!({"title": "v1"}));
    let updated = update(&created.document, json!({"title": "v2"}));
    let again = update(&updated.document, json!({"title": "v3", "extra": [1, 2]}));
    let deleted = delete(&again.document);
    let batch = vec![created, updated, again, deleted.clone()];

    let before = latest(store).await;
    let sequences = ok(store.append_batch(batch.clone()).await, "append");
    assert_eq!(sequences, (before + 1..=before + 4).collect::<Vec<_>>());

    let id = deleted.document.id.clone();
    let loaded = ok(store.load_documents(vec![id.clone()]).await, "load");
    assert_eq!(loaded, vec![(*deleted.document).clone()], "the last change of the batch wins");

    let events = ok(store.document_changes(id, 0, None).await, "document_changes");
    let revisions: Vec<u64> = events.iter().map(|e| e.sync_revision).collect();
    assert_eq!(revisions, vec![1, 2, 3, 4]);
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, vec!["create", "update", "update", "delete"]);
}

/// A change whose expected revision is not the stored one (or whose document does not
/// exist) refuses the whole batch with `Conflict` naming those documents: nothing is
/// written and no sequence is consumed.
pub async fn revision_mismatch_refuses_the_whole_batch<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let a = create(&user, &collection, &unique("doc-a"), json!({"title": "a"}));
    let b = create(&user, &collection, &unique("doc-b"), json!({"title": "b"}));
    ok(store.append_batch(vec![a.clone(), b.clone()]).await, "setup");
    let before = latest(store).await;

    let good = update(&a.document, json!({"title": "a2"}));
    let fresh = create(&user, &collection, &unique("doc-c"), json!({}));
    let mut stale = update(&b.document, json!({"title": "b2"}));
    stale.expected_revision = 7;
    let never_created = create(&user, &collection, &unique("doc-d"), json!({}));
    let phantom = update(&never_created.document, json!({"x": 1}));

    let batch = vec![good.clone(), fresh.clone(), stale.clone(), phantom.clone()];
    match store.append_batch(batch).await {
        Err(StoreError::Conflict(mut ids)) => {
            ids.sort();
            let mut expected = vec![b.document.id.clone(), phantom.document.id.clone()];
            expected.sort();
            assert_eq!(ids, expected, "Conflict must name exactly the documents that moved");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }

    assert_eq!(latest(store).await, before, "a refused batch consumed sequences");
    let ids = vec![a.document.id.clone(), b.document.id.clone(), fresh.document.id.clone()];
    let loaded = sorted_documents(ok(store.load_documents(ids).await, "load"));
    assert_eq!(
        loaded,
        sorted_documents(vec![(*a.document).clone(), (*b.document).clone()]),
        "a refused batch wrote documents"
    );
    let events = ok(store.document_changes(a.document.id.clone(), 0, None).await, "document_changes");
    assert_eq!(events.len(), 1, "a refused batch wrote events");

    // The next batch continues right after the last committed sequence.
    let sequences = ok(store.append_batch(vec![good]).await, "retry");
    assert_eq!(sequences, vec![before + 1], "the sequence after a refused batch");
}

/// Creating a document whose id exists refuses the batch with `Duplicate(id)`; nothing of
/// the batch is written.
pub async fn create_of_existing_id_is_duplicate<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let existing = create(&user, &collection, &unique("doc"), json!({"title": "first"}));
    ok(store.append_batch(vec![existing.clone()]).await, "setup");
    let before = latest(store).await;

    let other = create(&user, &collection, &unique("doc"), json!({}));
    let again = create(&user, &collection, &existing.document.id, json!({"title": "second"}));
    match store.append_batch(vec![other.clone(), again]).await {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, existing.document.id, "Duplicate names the id"),
        other => panic!("expected Duplicate, got {other:?}"),
    }

    assert_eq!(latest(store).await, before, "a refused batch consumed sequences");
    let ids = vec![existing.document.id.clone(), other.document.id.clone()];
    let loaded = ok(store.load_documents(ids).await, "load");
    assert_eq!(loaded, vec![(*existing.document).clone()], "a refused batch wrote documents");
}

/// A `client_change_id` is unique per user: a second use by the same user (in a later
/// batch or the same one) refuses the batch with `Duplicate`; another user may use it.
pub async fn duplicate_client_change_id_is_duplicate<S: Store>(store: &S) {
    let (user, other_user) = (unique("user"), unique("user"));
    let collection = unique_collection();
    let client_change = unique("cc");

    let first = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &client_change);
    ok(store.append_batch(vec![first]).await, "first use");
    let before = latest(store).await;

    let second = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &client_change);
    let refused = store.append_batch(vec![second.clone()]).await;
    assert!(matches!(refused, Err(StoreError::Duplicate(_))), "reuse in a later batch: {refused:?}");

    let twice = unique("cc");
    let x = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &twice);
    let y = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &twice);
    let refused = store.append_batch(vec![x.clone(), y]).await;
    assert!(matches!(refused, Err(StoreError::Duplicate(_))), "reuse within one batch: {refused:?}");

    assert_eq!(latest(store).await, before, "refused batches consumed sequences");
    let ids = vec![second.document.id.clone(), x.document.id.clone()];
    assert_eq!(ok(store.load_documents(ids).await, "load"), Vec::<Document>::new(), "refused batches wrote documents");

    let theirs = with_client_change(create(&other_user, &collection, &unique("doc"), json!({})), &client_change);
    ok(store.append_batch(vec![theirs]).await, "another user may use the same client change id");
}

/// `find_client_changes` returns the events of that user carrying those ids, never
/// another user's, and handles long id lists.
pub async fn find_client_changes_is_per_user<S: Store>(store: &S) {
    let (user, other_user) = (unique("user"), unique("user"));
    let collection = unique_collection();
    let (k1, k2) = (unique("cc"), unique("cc"));

    let mine_1 = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &k1);
    let mine_2 = with_client_change(create(&user, &collection, &unique("doc"), json!({})), &k2);
    let untagged = create(&user, &collection, &unique("doc"), json!({}));
    let theirs = with_client_change(create(&other_user, &collection, &unique("doc"), json!({})), &k1);
    let batch = vec![mine_1, mine_2, untagged, theirs];
    let sequences = ok(store.append_batch(batch.clone()).await, "append");
    let events: Vec<ChangeEvent> = batch.iter().zip(&sequences).map(|(c, &s)| with_sequence(&c.event, s)).collect();

    let found = ok(store.find_client_changes(user.clone(), vec![k1.clone(), k2.clone(), unique("cc")]).await, "find");
    assert_eq!(sorted_events(found), vec![events[0].clone(), events[1].clone()], "the user's own changes");

    let found = ok(store.find_client_changes(other_user, vec![k1.clone()]).await, "find other");
    assert_eq!(found, vec![events[3].clone()], "the other user's change only");

    let found = ok(store.find_client_changes(user.clone(), Vec::new()).await, "find nothing");
    assert_eq!(found, Vec::<ChangeEvent>::new());

    // Longer than SQLite's and PostgreSQL's bound-parameter limits if bound one by one.
    let mut many: Vec<String> = (0..40_000).map(|i| format!("absent-{i}")).collect();
    many.insert(20_000, k2);
    let found = ok(store.find_client_changes(user, many).await, "find among many");
    assert_eq!(found, vec![events[1].clone()], "found among many ids");
}

/// `changes_since` shows a reader only their own changes.
pub async fn changes_since_shows_only_the_readers_changes<S: Store>(store: &S) {
    let (user, other_user) = (unique("user"), unique("user"));
    let collection = unique_collection();
    let before = latest(store).await;
    let batch = vec![
        create(&user, &collection, &unique("doc"), json!({})),
        create(&other_user, &collection, &unique("doc"), json!({})),
        create(&user, &collection, &unique("doc"), json!({})),
    ];
    let sequences = ok(store.append_batch(batch.clone()).await, "append");

    let page = ok(store.changes_since(scope(&user), before, 100, None).await, "mine");
    assert_eq!(
        page.events,
        vec![with_sequence(&batch[0].event, sequences[0]), with_sequence(&batch[2].event, sequences[2])]
    );
    let page = ok(store.changes_since(scope(&other_user), before, 100, None).await, "theirs");
    assert_eq!(page.events, vec![with_sequence(&batch[1].event, sequences[1])]);
    let page = ok(store.changes_since(scope(&unique("user")), before, 100, None).await, "nobody's");
    assert_eq!(page.events, Vec::<ChangeEvent>::new());
}

/// `changes_since` pages: a full page reaches its last event and says whether visible
/// changes follow; a page that is not full reaches the newest sequence of the store and
/// has no more; `reached` is never below `after`.
pub async fn changes_since_pages_with_reached_and_has_more<S: Store>(store: &S) {
    let (user, other_user) = (unique("user"), unique("user"));
    let collection = unique_collection();
    let before = latest(store).await;
    // Mine at positions 0, 2, 3, 5, 6; the store's newest change (7) is someone else's.
    let owners = [&user, &other_user, &user, &user, &other_user, &user, &user, &other_user];
    let batch: Vec<NewChange> =
        owners.iter().map(|owner| create(owner, &collection, &unique("doc"), json!({}))).collect();
    let s = ok(store.append_batch(batch).await, "append");
    let newest = s[7];
    let me = || scope(&user);

    let page = ok(store.changes_since(me(), before, 2, None).await, "page 1");
    assert_eq!(summary(&page), (vec![s[0], s[2]], s[2], true), "page 1: (sequences, reached, has_more)");
    let page = ok(store.changes_since(me(), page.reached, 2, None).await, "page 2");
    assert_eq!(summary(&page), (vec![s[3], s[5]], s[5], true), "page 2");
    let page = ok(store.changes_since(me(), page.reached, 2, None).await, "page 3");
    assert_eq!(summary(&page), (vec![s[6]], newest, false), "page 3 is not full: it reaches the newest sequence");

    // Full, but nothing visible follows.
    let page = ok(store.changes_since(me(), s[5], 1, None).await, "exactly full");
    assert_eq!(summary(&page), (vec![s[6]], s[6], false), "a full last page");

    let page = ok(store.changes_since(me(), newest, 10, None).await, "caught up");
    assert_eq!(summary(&page), (vec![], newest, false), "caught up");
    let page = ok(store.changes_since(me(), newest + 100, 10, None).await, "ahead");
    assert_eq!(summary(&page), (vec![], newest + 100, false), "reached is never below after");

    let all = ok(store.changes_since(me(), before, 1000, None).await, "one page");
    assert_eq!(summary(&all), (vec![s[0], s[2], s[3], s[5], s[6]], newest, false), "one big page");
}

/// A collections filter limits which changes are visible, for the events and for
/// `has_more` alike.
pub async fn changes_since_filters_collections<S: Store>(store: &S) {
    let user = unique("user");
    let (ca, cb) = (unique_collection(), unique_collection());
    let before = latest(store).await;
    let batch = vec![
        create(&user, &ca, &unique("doc"), json!({})),
        create(&user, &cb, &unique("doc"), json!({})),
        create(&user, &ca, &unique("doc"), json!({})),
        create(&user, &cb, &unique("doc"), json!({})),
    ];
    let s = ok(store.append_batch(batch).await, "append");
    let only = |names: &[&String]| Some(names.iter().map(|n| (*n).clone()).collect::<Vec<_>>());

    let page = ok(store.changes_since(scope(&user), before, 10, only(&[&ca])).await, "ca");
    assert_eq!(summary(&page), (vec![s[0], s[2]], s[3], false), "one collection");
    let page = ok(store.changes_since(scope(&user), before, 1, only(&[&ca])).await, "ca page 1");
    assert_eq!(summary(&page), (vec![s[0]], s[0], true), "filtered page 1");
    let page = ok(store.changes_since(scope(&user), s[0], 1, only(&[&ca])).await, "ca page 2");
    assert_eq!(summary(&page), (vec![s[2]], s[2], false), "the last cb change is not visible, so no more");
    let page = ok(store.changes_since(scope(&user), before, 10, only(&[&ca, &cb])).await, "both");
    assert_eq!(summary(&page), (s.clone(), s[3], false), "both collections");
    let page = ok(store.changes_since(scope(&user), before, 10, Some(Vec::new())).await, "none");
    assert_eq!(summary(&page), (vec![], s[3], false), "an empty filter shows nothing");
}

/// `document_changes` returns `from < sync_revision <= to` in revision order.
pub async fn document_changes_selects_revision_ranges<S: Store>(store: &S) {
    let id = five_revisions(store).await;
    let revisions = |events: Vec<ChangeEvent>| events.iter().map(|e| e.sync_revision).collect::<Vec<_>>();
    for (from, to, expected) in [
        (0, None, vec![1, 2, 3, 4, 5]),
        (2, Some(4), vec![3, 4]),
        (4, Some(100), vec![5]),
        (5, None, vec![]),
        (0, Some(0), vec![]),
        (3, Some(3), vec![]),
    ] {
        let events = ok(store.document_changes(id.clone(), from, to).await, "document_changes");
        assert_eq!(revisions(events), expected, "document_changes({from}, {to:?})");
    }
    let none = ok(store.document_changes(unique("missing"), 0, None).await, "unknown document");
    assert_eq!(none, Vec::<ChangeEvent>::new());
}

/// `history` returns a document's changes newest first, below `before_revision`, at most
/// `limit`.
pub async fn history_is_newest_first<S: Store>(store: &S) {
    let id = five_revisions(store).await;
    let revisions = |events: Vec<ChangeEvent>| events.iter().map(|e| e.sync_revision).collect::<Vec<_>>();
    for (before, limit, expected) in [
        (None, 10, vec![5, 4, 3, 2, 1]),
        (None, 2, vec![5, 4]),
        (Some(4), 2, vec![3, 2]),
        (Some(100), 1, vec![5]),
        (Some(1), 10, vec![]),
    ] {
        let events = ok(store.history(id.clone(), before, limit).await, "history");
        assert_eq!(revisions(events), expected, "history({before:?}, {limit})");
    }
}

/// Sequences and revisions at or above 2^63 (which a client may send: they are valid
/// `u64`s) bound reads like any other: nothing is stored beyond them, or everything is
/// below them. They are never a storage error.
pub async fn bounds_beyond_the_stored_range_are_no_error<S: Store>(store: &S) {
    let id = five_revisions(store).await;
    let revisions = |events: Vec<ChangeEvent>| events.iter().map(|e| e.sync_revision).collect::<Vec<_>>();
    for after in [1 << 63, u64::MAX] {
        let page = ok(store.changes_since(scope(&unique("user")), after, 10, None).await, "changes_since beyond");
        assert_eq!(summary(&page), (vec![], after, false), "changes_since({after})");
        let events = ok(store.document_changes(id.clone(), after, None).await, "document_changes beyond");
        assert_eq!(revisions(events), Vec::<u64>::new(), "document_changes({after}, None)");
        let events = ok(store.document_changes(id.clone(), 0, Some(after)).await, "document_changes up to beyond");
        assert_eq!(revisions(events), vec![1, 2, 3, 4, 5], "document_changes(0, {after})");
        let events = ok(store.history(id.clone(), Some(after), 10).await, "history before beyond");
        assert_eq!(revisions(events), vec![5, 4, 3, 2, 1], "history({after})");
    }
}

/// `list_documents` returns the reader's documents, tombstones included, in id order,
/// after `after_id`, at most `limit`, optionally in some collections only.
pub async fn list_documents_pages_by_id_with_tombstones<S: Store>(store: &S) {
    let (user, other_user) = (unique("user"), unique("user"));
    let (ca, cb) = (unique_collection(), unique_collection());
    let prefix = unique("doc");
    let ids: Vec<String> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
    // Created out of id order, so that id order is not insertion order.
    let mut batch: Vec<NewChange> = [4, 0, 3, 1, 2]
        .iter()
        .map(|&i| create(&user, if i < 3 { &ca } else { &cb }, &ids[i], json!({"i": i})))
        .collect();
    let tombstone = delete(&batch[4].document);
    batch.push(tombstone);
    // Another user's document sorts in the middle of ours.
    batch.push(create(&other_user, &ca, &format!("{prefix}-2a"), json!({})));
    ok(store.append_batch(batch).await, "append");

    let all = ok(store.load_documents(ids.clone()).await, "load");
    let all = sorted_documents(all);
    assert!(all[2].is_deleted(), "setup: the middle document is a tombstone");
    let list = |collections: Option<Vec<String>>, after: Option<&String>, limit| {
        store.list_documents(scope(&user), collections, after.cloned(), limit)
    };

    assert_eq!(ok(list(None, None, 100).await, "all"), all, "every document, tombstone included, by id");
    assert_eq!(ok(list(None, None, 2).await, "page 1"), all[0..2].to_vec(), "page 1");
    assert_eq!(ok(list(None, Some(&ids[1]), 2).await, "page 2"), all[2..4].to_vec(), "page 2");
    assert_eq!(ok(list(None, Some(&ids[3]), 2).await, "page 3"), all[4..].to_vec(), "page 3");
    assert_eq!(ok(list(None, Some(&ids[4]), 2).await, "page 4"), Vec::<Document>::new(), "after the last");
    assert_eq!(ok(list(Some(vec![cb.clone()]), None, 100).await, "cb"), all[3..].to_vec(), "one collection");
    assert_eq!(ok(list(Some(vec![ca.clone()]), Some(&ids[0]), 1).await, "ca"), all[1..2].to_vec(), "filtered page");
    assert_eq!(ok(list(Some(Vec::new()), None, 100).await, "none"), Vec::<Document>::new(), "an empty filter");

    let theirs = ok(store.list_documents(scope(&other_user), None, None, 100).await, "theirs");
    let theirs: Vec<&str> = theirs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(theirs, vec![format!("{prefix}-2a")], "another user's documents");
}

/// API credentials are stored and read back exactly, counted, and unique by key.
pub async fn api_credentials_round_trip<S: Store>(store: &S) {
    let before = ok(store.count_api_credentials().await, "count");
    let admin = ApiCredential {
        api_key: format!("rpa_{}", unique("key")),
        name: "Admin ✓".to_owned(),
        is_admin: true,
        created_at: 1_795_000_000_123,
        revoked_at: None,
    };
    let revoked = ApiCredential {
        api_key: format!("rpa_{}", unique("key")),
        name: "old app".to_owned(),
        is_admin: false,
        created_at: 1_700_000_000_000,
        revoked_at: Some(1_795_000_000_456),
    };
    ok(store.create_api_credential(admin.clone()).await, "create admin");
    ok(store.create_api_credential(revoked.clone()).await, "create revoked");

    assert_eq!(ok(store.get_api_credential(admin.api_key.clone()).await, "get"), Some(admin.clone()));
    assert_eq!(ok(store.get_api_credential(revoked.api_key.clone()).await, "get"), Some(revoked));
    assert_eq!(ok(store.get_api_credential(unique("rpa")).await, "get missing"), None);
    assert_eq!(ok(store.count_api_credentials().await, "count"), before + 2);

    let again = store.create_api_credential(ApiCredential { name: "impostor".to_owned(), ..admin.clone() }).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "a second credential with the same key: {again:?}");
    assert_eq!(ok(store.get_api_credential(admin.api_key.clone()).await, "get"), Some(admin), "unchanged");
    assert_eq!(ok(store.count_api_credentials().await, "count"), before + 2);
}

/// Token records are stored and read back exactly, and unique by id.
pub async fn tokens_round_trip<S: Store>(store: &S) {
    let user = unique("user");
    let lasting = TokenRecord {
        id: unique("tok"),
        user_id: user.clone(),
        hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        is_admin: false,
        created_at: 1_795_000_000_123,
        expires_at: None,
    };
    let expiring =
        TokenRecord { id: unique("tok"), is_admin: true, expires_at: Some(1_795_086_400_000), ..lasting.clone() };
    ok(store.create_token(lasting.clone()).await, "create");
    ok(store.create_token(expiring.clone()).await, "create expiring");

    assert_eq!(ok(store.get_token(lasting.id.clone()).await, "get"), Some(lasting.clone()));
    assert_eq!(ok(store.get_token(expiring.id.clone()).await, "get"), Some(expiring));
    assert_eq!(ok(store.get_token(unique("tok")).await, "get missing"), None);

    let again = store.create_token(TokenRecord { hash: "other".to_owned(), ..lasting.clone() }).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "a second token with the same id: {again:?}");
    assert_eq!(ok(store.get_token(lasting.id.clone()).await, "get"), Some(lasting), "unchanged");
}

/// `ensure_user` may be called any number of times for one user.
pub async fn ensure_user_is_idempotent<S: Store>(store: &S) {
    let user = unique("user");
    ok(store.ensure_user(user.clone(), Some("ada@example.com".to_owned())).await, "first");
    ok(store.ensure_user(user.clone(), Some("ada@example.com".to_owned())).await, "again");
    ok(store.ensure_user(user, None).await, "without email");
}

/// `set_acl` replaces the whole list, in order; concurrent replacements leave one whole
/// list, never a mix; `get_acl` reads what was set.
pub async fn access_rules_are_replaced_whole<S: Store>(store: &S) {
    let list = |n: usize, user: &str| {
        let rules: Vec<_> = (0..n)
            .map(|i| json!({"user": user, "item": format!("doc:c{i}/*"), "action": "view", "allow": i % 2 == 0}))
            .collect();
        Acl::from_json(&Value::Array(rules)).expect("valid rules")
    };
    assert_eq!(ok(store.get_acl().await, "never set"), Acl::default());
    let five = list(5, "ada");
    ok(store.set_acl(five.clone()).await, "set five");
    assert_eq!(ok(store.get_acl().await, "read five"), five, "the rules come back in order, aliases canonical");
    let two = list(2, "*");
    ok(store.set_acl(two.clone()).await, "set two");
    assert_eq!(ok(store.get_acl().await, "read two"), two, "the old list is gone whole");
    let (a, b) = (list(40, "bob"), list(30, "carol"));
    let results = join_all(vec![store.set_acl(a.clone()), store.set_acl(b.clone())]).await;
    for result in results {
        ok(result, "concurrent set");
    }
    let after = ok(store.get_acl().await, "after concurrent sets");
    assert!(after == a || after == b, "one whole list wins, not a mix: {} rules", after.rules().len());
    ok(store.set_acl(Acl::default()).await, "clear");
    assert!(ok(store.get_acl().await, "cleared").is_empty());
}

/// Every list `set_acl` stores is recorded with the newest sequence; `acl_since(N)`
/// answers the list in force before the first one stored at or after `N` (a list stored
/// at `N` may not have reached a reader whose cursor is `N`), and the history keeps at
/// most [`crate::ACL_HISTORY_VERSIONS`] lists and [`crate::ACL_HISTORY_BYTES`], the
/// newest always.
pub async fn the_rules_history_answers_what_a_resuming_reader_went_by<S: Store>(store: &S) {
    let list = |user: &str, n: usize| {
        let rules: Vec<_> = (0..n)
            .map(|i| json!({"user": user, "item": format!("doc:c{i}/*"), "action": "read", "allow": true}))
            .collect();
        Acl::from_json(&Value::Array(rules)).expect("valid rules")
    };
    let (a, b) = (list("ada", 3), list("bob", 2));
    let user = unique("history");
    ok(store.set_acl(a.clone()).await, "set a");
    ok(store.append_batch(vec![create(&user, "tasks", &unique("h"), json!({}))]).await, "append");
    let latest = ok(store.latest_sequence().await, "latest");
    ok(store.set_acl(b.clone()).await, "set b");
    assert_eq!(ok(store.acl_since(latest + 1).await, "after b"), AclSince::Unchanged, "nothing stored since");
    assert_eq!(ok(store.acl_since(u64::MAX).await, "far after"), AclSince::Unchanged);
    assert_eq!(
        ok(store.acl_since(latest).await, "at b"),
        AclSince::Changed(vec![a.clone(), b.clone()]),
        "b was stored at the cursor: the reader went by a, or by b"
    );

    // More lists than the history keeps: the oldest go, and a cursor before them is
    // beyond the history, answered with the oldest kept.
    ok(store.append_batch(vec![create(&user, "tasks", &unique("h"), json!({}))]).await, "append");
    let latest = ok(store.latest_sequence().await, "latest");
    let many: Vec<Acl> = (0..crate::ACL_HISTORY_VERSIONS + 3).map(|i| list(&format!("u{i}"), 1)).collect();
    for acl in &many {
        ok(store.set_acl(acl.clone()).await, "set one of many");
    }
    assert_eq!(
        ok(store.acl_since(latest).await, "before many"),
        AclSince::BeyondHistory(many[3..].to_vec()),
        "the newest {} lists are kept",
        crate::ACL_HISTORY_VERSIONS
    );
    // Lists stored again unchanged are answered once.
    let last = many.last().expect("lists").clone();
    ok(store.set_acl(last.clone()).await, "the newest again");
    match ok(store.acl_since(latest).await, "with a repeat") {
        AclSince::BeyondHistory(lists) => assert_eq!(lists, many[4..].to_vec(), "one list fell out, none repeats"),
        other => panic!("expected the history to be cut, got {other:?}"),
    }
    assert_eq!(ok(store.acl_since(latest + 1).await, "after many"), AclSince::Unchanged);

    // Large lists: the total size bounds the history before the count does.
    let rule_bytes = 230;
    let per_list = 10_000 * rule_bytes;
    let fits = crate::ACL_HISTORY_BYTES / per_list;
    assert!(fits < 10, "{fits} large lists fit: the check needs more of them");
    // About 60 bytes of each rule's JSON are not its user.
    let large: Vec<Acl> =
        (0..fits + 2).map(|i| list(&format!("big{i}-{}", "x".repeat(rule_bytes - 60)), 10_000)).collect();
    for acl in &large {
        ok(store.set_acl(acl.clone()).await, "set a large list");
    }
    match ok(store.acl_since(latest).await, "before the large lists") {
        AclSince::BeyondHistory(lists) => {
            let kept =
                large.iter().position(|acl| *acl == lists[0]).expect("the oldest kept is one of the large lists");
            assert!(kept >= 2, "at most {fits} large lists are kept, not {}", large.len() - kept);
            assert_eq!(lists, large[kept..].to_vec(), "the newest large lists, in order");
        }
        other => panic!("expected the history to be cut, got {other:?}"),
    }
    ok(store.set_acl(Acl::default()).await, "clear");
}

/// `ack_cursor` accepts acknowledgements in any order (a late, lower one must not fail;
/// the backend keeps the highest).
pub async fn ack_cursor_accepts_any_order<S: Store>(store: &S) {
    let (user, client) = (unique("user"), unique("client"));
    ok(store.ack_cursor(user.clone(), client.clone(), 10).await, "first");
    ok(store.ack_cursor(user.clone(), client.clone(), 5).await, "lower");
    ok(store.ack_cursor(user.clone(), client.clone(), 10).await, "same");
    ok(store.ack_cursor(user, client, 11).await, "higher");
}

/// `stats` counts live documents (tombstones excluded) and the newest sequence.
pub async fn stats_count_live_documents_and_changes<S: Store>(store: &S) {
    let user = unique("user");
    let collection = unique_collection();
    let before = ok(store.stats().await, "stats");
    assert_eq!(before.total_changes, latest(store).await, "total_changes is the latest sequence");

    let batch: Vec<NewChange> = (0..3).map(|i| create(&user, &collection, &unique("doc"), json!({"i": i}))).collect();
    let gone = delete(&batch[0].document);
    ok(store.append_batch(batch).await, "create");
    ok(store.append_batch(vec![gone]).await, "delete");

    let after = ok(store.stats().await, "stats");
    assert_eq!(after.documents, before.documents + 2, "live documents");
    assert_eq!(after.total_changes, before.total_changes + 4, "changes");
}

/// Batches appended concurrently get unique sequences, consecutive within each batch,
/// and together gap-free.
pub async fn concurrent_appends_get_unique_gap_free_sequences<S: Store>(store: &S) {
    const WRITERS: u64 = 8;
    const BATCHES: u64 = 5;
    const CHANGES: u64 = 4;
    let user = unique("user");
    let collection = unique_collection();
    let before = latest(store).await;

    let writers = (0..WRITERS).map(|_| async {
        let mut assigned = Vec::new();
        for _ in 0..BATCHES {
            let batch = (0..CHANGES).map(|i| create(&user, &collection, &unique("doc"), json!({"i": i}))).collect();
            assigned.push(ok(store.append_batch(batch).await, "concurrent append"));
        }
        assigned
    });
    let batches: Vec<Vec<u64>> = join_all(writers.collect()).await.into_iter().flatten().collect();

    for sequences in &batches {
        let first = sequences[0];
        assert_eq!(sequences, &(first..first + CHANGES).collect::<Vec<_>>(), "a batch's sequences are consecutive");
    }
    let mut all: Vec<u64> = batches.into_iter().flatten().collect();
    all.sort_unstable();
    let total = WRITERS * BATCHES * CHANGES;
    assert_eq!(all, (before + 1..=before + total).collect::<Vec<_>>(), "unique and gap-free");
    assert_eq!(latest(store).await, before + total);
}

/// Many appends at once, so that a backend that groups them (one transaction, one
/// statement) does: every stale one is refused alone and writes nothing, the others
/// commit with consecutive sequences; then a repeat of a committed client change id
/// refuses only the append that carries it.
pub async fn a_refused_append_does_not_fail_the_appends_grouped_with_it<S: Store>(store: &S) {
    const TASKS: usize = 40;
    let user = unique("user");
    let collection = unique_collection();
    let shared = create(&user, &collection, &unique("shared"), json!({"n": 0}));
    ok(store.append_batch(vec![shared.clone()]).await, "the shared document");
    let before = latest(store).await;

    let docs: Vec<String> = (0..TASKS).map(|_| unique("doc")).collect();
    let appends = docs.iter().enumerate().map(|(task, id)| {
        let mut change = create(&user, &collection, id, json!({"task": task}));
        change.event.client_change_id = Some(format!("{id}-cc"));
        let mut batch = vec![change];
        if task % 2 == 1 {
            let mut stale = update(&shared.document, json!({"n": task}));
            stale.expected_revision = 99;
            batch.push(stale);
        }
        async move { (task, store.append_batch(batch).await) }
    });
    let mut committed = Vec::new();
    for (task, result) in join_all(appends.collect()).await {
        match result {
            Ok(sequences) if task % 2 == 0 => committed.extend(sequences),
            Err(StoreError::Conflict(ids)) if task % 2 == 1 => {
                assert_eq!(ids, vec![shared.document.id.clone()], "task {task}: the stale document is named")
            }
            other => panic!("task {task}: unexpected {other:?}"),
        }
    }
    committed.sort_unstable();
    let expected: Vec<u64> = (before + 1..=before + (TASKS / 2) as u64).collect();
    assert_eq!(committed, expected, "the fresh appends commit gap-free");
    let odd: Vec<String> = docs.iter().skip(1).step_by(2).cloned().collect();
    assert!(ok(store.load_documents(odd).await, "load").is_empty(), "a refused append left documents");

    let repeated = format!("{}-cc", docs[0]);
    let mut again = create(&user, &collection, &unique("late"), json!({}));
    again.event.client_change_id = Some(repeated.clone());
    let bystander = create(&user, &collection, &unique("bystander"), json!({}));
    let (refused, fine) = tokio::join!(store.append_batch(vec![again]), store.append_batch(vec![bystander]));
    assert!(
        matches!(refused, Err(StoreError::Duplicate(ref id)) if *id == repeated),
        "a repeated client change id: {refused:?}"
    );
    let last = before + (TASKS / 2) as u64;
    assert_eq!(ok(fine, "the bystander"), vec![last + 1], "the bystander commits right after");
}

/// A rule that lets a reader read another user's document shows it in `list_documents`
/// and every change of it in `changes_since`: the owner's, and the reader's own changes
/// to it. Without the rule the reader sees none of them (not even the change they made),
/// and the owner's feed holds every change of the document, whoever made it: a change
/// belongs to its document's owner, not to its author.
pub async fn a_shared_document_is_visible_to_its_reader<S: Store>(store: &S) {
    let (owner, reader, stranger) = (unique("owner"), unique("reader"), unique("user"));
    let collection = unique_collection();
    let before = latest(store).await;
    let shared = create(&owner, &collection, &unique("doc"), json!({"n": 1}));
    let private = create(&owner, &collection, &unique("doc"), json!({}));
    let own = create(&reader, &collection, &unique("doc"), json!({}));
    let created = ok(store.append_batch(vec![shared.clone(), private, own.clone()]).await, "creates");
    let by_reader = authored_by(update(&shared.document, json!({"n": 2})), &reader);
    let by_owner = update(&by_reader.document, json!({"n": 3}));
    let s_reader = ok(store.append_batch(vec![by_reader.clone()]).await, "the reader's update")[0];
    let s_owner = ok(store.append_batch(vec![by_owner.clone()]).await, "the owner's update")[0];
    let rule = format!("doc:{collection}/{}", shared.document.id);
    let granted = ruled(&reader, &[(&reader, &rule, true)]);

    let seen = visible_changes(store, &granted, before, None).await;
    assert_eq!(
        seen,
        vec![created[0], created[2], s_reader, s_owner],
        "the shared document's changes and the reader's own"
    );
    let page = ok(store.changes_since(granted.clone(), created[2], 10, None).await, "the updates");
    let expected = vec![with_sequence(&by_reader.event, s_reader), with_sequence(&by_owner.event, s_owner)];
    assert_eq!(page.events, expected, "each change keeps its author");
    let listed = visible_documents(store, &granted, None).await;
    let expected = sorted_documents(vec![(*by_owner.document).clone(), (*own.document).clone()]);
    assert_eq!(listed, expected, "the shared document, as its last change left it, and the reader's own");
    let same_owner = ok(store.load_documents(vec![shared.document.id.clone()]).await, "load")[0].user_id.clone();
    assert_eq!(same_owner, owner, "an update by another user leaves the owner");

    let alone = scope(&reader);
    assert_eq!(visible_changes(store, &alone, before, None).await, vec![created[2]], "without the rule");
    assert_eq!(visible_documents(store, &alone, None).await, vec![(*own.document).clone()], "without the rule");
    let theirs = visible_changes(store, &scope(&owner), before, None).await;
    assert_eq!(theirs, vec![created[0], created[1], s_reader, s_owner], "the owner's feed holds the reader's change");
    let not_for_me = ruled(&stranger, &[(&reader, &rule, true)]);
    assert_eq!(visible_changes(store, &not_for_me, before, None).await, Vec::<u64>::new(), "a rule for another user");
    assert_eq!(visible_documents(store, &not_for_me, None).await, Vec::<Document>::new(), "a rule for another user");
}

/// The first matching rule decides: a denial before a broader allow hides what it names,
/// the same denial after it hides nothing, and a denial for another user changes nothing.
pub async fn an_earlier_denial_shadows_a_later_allow<S: Store>(store: &S) {
    let (owner, reader) = (unique("owner"), unique("reader"));
    let collection = unique_collection();
    let before = latest(store).await;
    let batch = vec![
        create(&owner, &collection, &unique("secret"), json!({})),
        create(&owner, &collection, &unique("open"), json!({})),
        create(&owner, &collection, &unique("secret"), json!({})),
    ];
    let s = ok(store.append_batch(batch.clone()).await, "append");
    let (secret, all) = (format!("doc:{collection}/secret-*"), format!("doc:{collection}/*"));
    let ids = |picked: &[usize]| picked.iter().map(|&i| batch[i].document.id.clone()).collect::<Vec<_>>();
    let check = |rules: Vec<(&str, &str, bool)>, visible: &[usize], what: &'static str| {
        let reading = ruled(&reader, &rules);
        let expected_ids = sorted_ids(ids(visible));
        let expected_sequences: Vec<u64> = visible.iter().map(|&i| s[i]).collect();
        async move {
            assert_eq!(visible_changes(store, &reading, before, None).await, expected_sequences, "changes: {what}");
            assert_eq!(ids_of(visible_documents(store, &reading, None).await), expected_ids, "documents: {what}");
        }
    };
    check(vec![(&reader, &secret, false), (&reader, &all, true)], &[1], "deny, then allow").await;
    check(vec![("*", &secret, false), ("*", &all, true)], &[1], "the same for everyone").await;
    check(vec![(&reader, &all, true), (&reader, &secret, false)], &[0, 1, 2], "allow, then deny").await;
    check(vec![(&owner, &secret, false), (&reader, &all, true)], &[0, 1, 2], "a denial for another user").await;
}

/// Prefix patterns select exactly the names that start with the prefix, byte for byte:
/// not the prefix without its last character, not another case, not names that only a
/// SQL wildcard (`_`, `.` as any character) would match, and an exact collection is not
/// a prefix of a longer one.
pub async fn prefixes_match_names_that_start_with_them_and_nothing_else<S: Store>(store: &S) {
    let (owner, reader) = (unique("owner"), unique("reader"));
    let collection = unique_collection();
    let longer = format!("{collection}2");
    let p = unique("p");
    let before = latest(store).await;
    let names = ["task-1", "task-", "task", "task.1", "Task-2", "taskX", "a_b1", "aXb1", "c.d1", "cXd1", "task-:9"];
    let mut batch: Vec<NewChange> =
        names.iter().map(|name| create(&owner, &collection, &format!("{p}.{name}"), json!({}))).collect();
    // In the longer collection: matched by the bare prefix (any collection) only.
    batch.push(create(&owner, &longer, &format!("{p}.task-in-longer"), json!({})));
    let s = ok(store.append_batch(batch.clone()).await, "append");
    let by_id: std::collections::HashMap<String, u64> =
        batch.iter().zip(&s).map(|(c, &seq)| (c.document.id.clone(), seq)).collect();

    let check = |items: Vec<String>, expected: Vec<&str>, what: &'static str| {
        let rules: Vec<(String, String, bool)> = items.into_iter().map(|item| (reader.clone(), item, true)).collect();
        let rules: Vec<(&str, &str, bool)> = rules.iter().map(|(u, i, a)| (u.as_str(), i.as_str(), *a)).collect();
        let reading = ruled(&reader, &rules);
        let expected = sorted_ids(expected.iter().map(|name| format!("{p}.{name}")).collect());
        let mut sequences: Vec<u64> = expected.iter().map(|id| by_id[id]).collect();
        sequences.sort_unstable();
        async move {
            assert_eq!(visible_changes(store, &reading, before, None).await, sequences, "changes: {what}");
            assert_eq!(ids_of(visible_documents(store, &reading, None).await), expected, "documents: {what}");
        }
    };
    check(vec![format!("{p}.task-*")], vec!["task-1", "task-", "task-:9", "task-in-longer"], "a bare id prefix").await;
    check(
        vec![format!("doc:{collection}/{p}.task-*")],
        vec!["task-1", "task-", "task-:9"],
        "an id prefix in a collection",
    )
    .await;
    check(vec![format!("{p}.a_b*"), format!("{p}.c.d*")], vec!["a_b1", "c.d1"], "`_` and `.` are plain characters")
        .await;
    check(vec![format!("{p}.task")], vec!["task"], "an exact id").await;
    check(vec![format!("{p}.Task-*")], vec!["Task-2"], "case counts").await;
    check(vec![format!("doc:{collection}/*")], names.to_vec(), "an exact collection is not a prefix").await;
    let everything: Vec<&str> = names.iter().copied().chain(["task-in-longer"]).collect();
    check(vec![format!("doc:{collection}*")], everything, "a collection prefix").await;
    check(vec![format!("doc:{longer}/*")], vec!["task-in-longer"], "the longer collection alone").await;
}

/// An admin view and a rule that allows everything read every document; a denial before
/// the rule that allows everything still hides what it names.
pub async fn everything_and_admin_views_read_every_document<S: Store>(store: &S) {
    let (first, second, reader) = (unique("owner"), unique("owner"), unique("reader"));
    let (collection, hidden) = (unique_collection(), unique_collection());
    let before = latest(store).await;
    let batch = vec![
        create(&first, &collection, &unique("doc"), json!({})),
        create(&second, &collection, &unique("doc"), json!({})),
        create(&first, &hidden, &unique("doc"), json!({})),
    ];
    let s = ok(store.append_batch(batch.clone()).await, "append");
    let only = |name: &String| Some(vec![name.clone()]);
    let admin = ReadScope { view: Arc::new(ReadView::everything(&reader)) };
    let everyone = ruled(&reader, &[("*", "*", true)]);
    for (reading, what) in [(&admin, "admin"), (&everyone, "a rule for everything")] {
        // Nothing else writes meanwhile, so everything after `before` is this check's.
        assert_eq!(visible_changes(store, reading, before, None).await, s, "{what}: every change");
        assert_eq!(visible_changes(store, reading, before, only(&collection)).await, s[..2], "{what}: one collection");
        let listed = ids_of(visible_documents(store, reading, only(&collection)).await);
        assert_eq!(listed, sorted_ids(vec![batch[0].document.id.clone(), batch[1].document.id.clone()]), "{what}");
    }
    let item = format!("doc:{hidden}/*");
    let all_but = ruled(&reader, &[(&reader, &item, false), ("*", "*", true)]);
    assert_eq!(visible_changes(store, &all_but, before, None).await, s[..2], "a denial before everything");
    assert_eq!(visible_documents(store, &all_but, only(&hidden)).await, Vec::<Document>::new(), "denied collection");
}

/// A collections filter applies to shared documents as to the reader's own: a share in
/// any collection shows only the filtered ones, a share of another collection nothing.
pub async fn a_collections_filter_narrows_what_shares_show<S: Store>(store: &S) {
    let (owner, reader) = (unique("owner"), unique("reader"));
    let (ca, cb) = (unique_collection(), unique_collection());
    let p = unique("p");
    let before = latest(store).await;
    let batch = vec![
        create(&owner, &ca, &format!("{p}-1"), json!({})),
        create(&owner, &cb, &format!("{p}-2"), json!({})),
        create(&reader, &cb, &unique("doc"), json!({})),
        create(&owner, &ca, &format!("{p}-3"), json!({})),
    ];
    let s = ok(store.append_batch(batch.clone()).await, "append");
    let filter = |names: &[&String]| Some(names.iter().map(|n| (*n).clone()).collect::<Vec<_>>());
    let ids = |picked: &[usize]| sorted_ids(picked.iter().map(|&i| batch[i].document.id.clone()).collect());

    let prefix = ruled(&reader, &[(&reader, &format!("{p}-*"), true)]);
    assert_eq!(
        visible_changes(store, &prefix, before, filter(&[&ca])).await,
        vec![s[0], s[3]],
        "prefix, one collection"
    );
    assert_eq!(ids_of(visible_documents(store, &prefix, filter(&[&ca])).await), ids(&[0, 3]), "prefix, one collection");
    assert_eq!(visible_changes(store, &prefix, before, filter(&[&ca, &cb])).await, s, "prefix, both collections");
    assert_eq!(ids_of(visible_documents(store, &prefix, filter(&[&cb])).await), ids(&[1, 2]), "prefix and own, cb");
    assert_eq!(visible_changes(store, &prefix, before, Some(Vec::new())).await, Vec::<u64>::new(), "an empty filter");

    let other = ruled(&reader, &[(&reader, &format!("doc:{cb}/*"), true)]);
    assert_eq!(
        visible_changes(store, &other, before, filter(&[&ca])).await,
        Vec::<u64>::new(),
        "a share of cb, ca only"
    );
    assert_eq!(
        visible_documents(store, &other, filter(&[&ca])).await,
        Vec::<Document>::new(),
        "a share of cb, ca only"
    );
    assert_eq!(
        visible_changes(store, &other, before, filter(&[&cb])).await,
        vec![s[1], s[2]],
        "a share of cb, cb only"
    );
}

/// Paging through a feed where the SQL selects many rows the reader may not read (a
/// denial inside a shared collection): every page holds at most `limit` changes, pages
/// follow each other without a gap or a repeat, `reached` never moves back, a page may
/// come back short (the call's work is bounded) but then says there is more, and the
/// last page says there is none and reaches the newest sequence.
pub async fn paging_through_a_mostly_hidden_log_misses_nothing<S: Store>(store: &S) {
    let (owner, reader) = (unique("owner"), unique("reader"));
    let collection = unique_collection();
    let before = latest(store).await;
    // Visible documents between runs of hidden ones, one run longer than a call may read.
    let mut batch = Vec::new();
    for (run, hidden) in [3, 0, 40, 700, 1, 130].into_iter().enumerate() {
        for _ in 0..hidden {
            batch.push(create(&owner, &collection, &unique("hidden"), json!({})));
        }
        batch.push(create(&owner, &collection, &unique("shown"), json!({"run": run})));
    }
    batch.push(create(&owner, &collection, &unique("hidden"), json!({})));
    let mut sequences = Vec::new();
    for chunk in batch.chunks(200) {
        sequences.extend(ok(store.append_batch(chunk.to_vec()).await, "append"));
    }
    let newest = latest(store).await;
    let shown: Vec<u64> =
        batch.iter().zip(&sequences).filter(|(c, _)| c.document.id.starts_with("shown")).map(|(_, &s)| s).collect();
    let rules = [
        (reader.as_str(), format!("doc:{collection}/hidden-*"), false),
        (reader.as_str(), format!("doc:{collection}/*"), true),
    ];
    let rules: Vec<(&str, &str, bool)> = rules.iter().map(|(u, i, a)| (*u, i.as_str(), *a)).collect();
    let reading = ruled(&reader, &rules);

    for limit in [1, 2, 5, 1000] {
        let seen = walk_pages(store, &reading, None, before, limit, newest, 1000).await;
        assert_eq!(seen, shown, "limit {limit}: every visible change once, in order");
    }

    let (mut after, mut listed) = (None, Vec::new());
    loop {
        let page = ok(store.list_documents(reading.clone(), None, after.clone(), 2).await, "list page");
        listed.extend(page.iter().map(|d| d.id.clone()));
        if page.len() < 2 {
            break;
        }
        after = page.last().map(|d| d.id.clone());
    }
    let expected =
        sorted_ids(batch.iter().map(|c| c.document.id.clone()).filter(|id| id.starts_with("shown")).collect());
    assert_eq!(listed, expected, "every visible document once, in id order");
}

/// A share of an id prefix over every collection that is dense in the log (a third of
/// it, dealt over three collections, part of it denied): whether a call reads the share
/// whole or scans the log in sequence order (a backend may choose by density and page
/// size), pages follow each other without a gap or a repeat, `reached` never moves back
/// and the last page reaches the newest sequence; with a collections filter too.
pub async fn a_dense_prefix_share_over_every_collection_pages_without_a_gap<S: Store>(store: &S) {
    let (owner, reader) = (unique("owner"), unique("reader"));
    let prefix = new_document_id().replace('-', "");
    let collections = [unique_collection(), unique_collection(), unique_collection()];
    let before = latest(store).await;
    let mut batch = Vec::new();
    for n in 0..3000 {
        let collection = &collections[n % 3];
        let change = match n % 6 {
            0 | 3 => create(&owner, collection, &format!("{prefix}-{n}"), json!({})),
            1 if n % 30 == 1 => create(&owner, collection, &format!("{prefix}-x{n}"), json!({})),
            4 if n % 12 == 4 => create(&reader, collection, &unique("own"), json!({})),
            _ => create(&owner, collection, &unique("other"), json!({})),
        };
        batch.push(change);
    }
    let mut sequences = Vec::new();
    for chunk in batch.chunks(500) {
        sequences.extend(ok(store.append_batch(chunk.to_vec()).await, "append"));
    }
    let newest = latest(store).await;
    let rules = [(reader.as_str(), format!("{prefix}-x*"), false), (reader.as_str(), format!("{prefix}-*"), true)];
    let rules: Vec<(&str, &str, bool)> = rules.iter().map(|(u, i, a)| (*u, i.as_str(), *a)).collect();
    let reading = ruled(&reader, &rules);
    let visible = |change: &NewChange, filter: Option<&[String]>| {
        let d = &change.document;
        let shared = d.id.starts_with(&format!("{prefix}-")) && !d.id.starts_with(&format!("{prefix}-x"));
        (shared || d.user_id == reader) && filter.is_none_or(|names| names.contains(&d.collection))
    };
    let two = collections[..2].to_vec();
    for filter in [None, Some(two)] {
        let expected: Vec<u64> =
            batch.iter().zip(&sequences).filter(|(c, _)| visible(c, filter.as_deref())).map(|(_, &s)| s).collect();
        for limit in [1, 7, 100, 1000] {
            let seen = walk_pages(store, &reading, filter.clone(), before, limit, newest, 5000).await;
            assert_eq!(seen, expected, "limit {limit}, filter {filter:?}: every visible change once, in order");
        }
    }
}

/// For a backend's own test, on a database that was created by migration 0001 alone
/// and given (with raw SQL, in 0001's columns) these changes: `ada` created `m-ada` in
/// `tasks` (sequence 1), `bob` created `m-bob` in `notes` (2), `ada` updated `m-ada` (3),
/// with the documents as they left them; and then opened with the store (which applied
/// the later migrations). The changes belong to their authors, who were the owners; the
/// shares of the new schema work on them; and a change by a non-owner appended now
/// belongs to the owner.
pub async fn changes_from_before_owners_are_their_authors<S: Store>(store: &S) {
    let ada = scope("ada");
    assert_eq!(visible_changes(store, &ada, 0, None).await, vec![1, 3], "ada's changes");
    assert_eq!(visible_changes(store, &scope("bob"), 0, None).await, vec![2], "bob's changes");
    let bob_reads_tasks = ruled("bob", &[("bob", "doc:tasks/*", true)]);
    assert_eq!(visible_changes(store, &bob_reads_tasks, 0, None).await, vec![1, 2, 3], "bob reads ada's tasks");
    assert_eq!(ids_of(visible_documents(store, &bob_reads_tasks, None).await), vec!["m-ada", "m-bob"], "listed");
    assert_eq!(ids_of(visible_documents(store, &scope("bob"), None).await), vec!["m-bob"], "bob's own");

    let document = ok(store.load_documents(vec!["m-ada".to_owned()]).await, "load").remove(0);
    let by_bob = authored_by(update(&document, json!({"by": "bob"})), "bob");
    let s = ok(store.append_batch(vec![by_bob]).await, "bob's update of ada's document")[0];
    assert_eq!(visible_changes(store, &ada, 0, None).await, vec![1, 3, s], "ada's feed holds bob's change");
    assert_eq!(visible_changes(store, &scope("bob"), 0, None).await, vec![2], "bob without the rule");
    assert_eq!(visible_changes(store, &bob_reads_tasks, 0, None).await, vec![1, 2, 3, s], "bob with the rule");
}

/// For a backend's own test, after it damaged (with raw SQL) the stored document `id` of
/// `user` and its change event at `sequence`: both reads name what is damaged, with
/// `Corrupt`, and the store keeps working for everything else.
pub async fn damaged_rows_are_reported<S: Store>(store: &S, user: &str, id: &str, sequence: u64) {
    match store.load_documents(vec![id.to_owned()]).await {
        Err(error @ StoreError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(message.contains(id), "no id in {message:?}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match store.changes_since(scope(user), sequence - 1, 10, None).await {
        Err(error @ StoreError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&format!("change event {sequence}")), "no sequence in {message:?}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    ok(store.ping().await, "ping after corruption");
    let fine = create(user, "default", &unique("doc-good"), json!({}));
    ok(store.append_batch(vec![fine]).await, "append after corruption");
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A fresh id with a readable label.
fn unique(label: &str) -> String {
    format!("{label}-{}", new_document_id())
}

/// A fresh collection name (`[a-z0-9_-]`).
fn unique_collection() -> String {
    format!("c-{}", new_document_id())
}

/// Pages through `changes_since` from `after` to the end, checking every page's bounds
/// on the way (at most `limit` changes, inside what the page says it reached, a short
/// page that still has more moves on, the last short page reaches `newest`); returns the
/// sequences seen, in order. Fails after `max_calls` pages.
async fn walk_pages<S: Store>(
    store: &S,
    reading: &ReadScope,
    filter: Option<Vec<String>>,
    mut after: u64,
    limit: usize,
    newest: u64,
    max_calls: usize,
) -> Vec<u64> {
    let (mut seen, mut calls) = (Vec::new(), 0);
    loop {
        calls += 1;
        assert!(calls < max_calls, "limit {limit}: the feed does not end");
        let page = ok(store.changes_since(reading.clone(), after, limit, filter.clone()).await, "page");
        assert!(page.events.len() <= limit, "limit {limit}: {} changes in a page", page.events.len());
        assert!(page.reached >= after, "limit {limit}: reached {} moved back from {after}", page.reached);
        for event in &page.events {
            assert!(
                event.sequence > after && event.sequence <= page.reached,
                "limit {limit}: {} outside the page",
                event.sequence
            );
            seen.push(event.sequence);
        }
        if page.events.len() < limit && page.has_more {
            assert!(page.reached > after, "limit {limit}: a short page that does not move on");
        }
        after = page.reached;
        if !page.has_more {
            if page.events.len() < limit {
                assert_eq!(page.reached, newest, "limit {limit}: the last page reaches the newest sequence");
            }
            return seen;
        }
    }
}

fn scope(user: &str) -> ReadScope {
    ReadScope::owner_only(user)
}

/// The scope of `reader` under read rules `(user, item, allow)`, in order.
fn ruled(reader: &str, rules: &[(&str, &str, bool)]) -> ReadScope {
    let rules = rules
        .iter()
        .map(|(user, item, allow)| match Rule::parse(user, item, "read", *allow) {
            Ok(rule) => rule,
            Err(e) => panic!("the rule {user} {item}: {e}"),
        })
        .collect();
    match Acl::new(rules) {
        Ok(acl) => ReadScope { view: Arc::new(acl.read_view(reader)) },
        Err(e) => panic!("the rules: {e}"),
    }
}

/// `change` as made by `author` (the document keeps its owner).
fn authored_by(mut change: NewChange, author: &str) -> NewChange {
    change.event.user_id = author.to_owned();
    change
}

/// Every change `reading` sees after `after`, by sequence, read in pages of 100 (each
/// page checked to be in order and above the previous one).
async fn visible_changes<S: Store>(
    store: &S,
    reading: &ReadScope,
    after: u64,
    collections: Option<Vec<String>>,
) -> Vec<u64> {
    let (mut after, mut seen) = (after, Vec::new());
    loop {
        let page = ok(store.changes_since(reading.clone(), after, 100, collections.clone()).await, "changes_since");
        for event in &page.events {
            assert!(event.sequence > after, "sequence {} after {after}", event.sequence);
            after = event.sequence;
            seen.push(event.sequence);
        }
        after = after.max(page.reached);
        if !page.has_more {
            return seen;
        }
    }
}

/// Every document `reading` sees, in id order, read in pages of 100.
async fn visible_documents<S: Store>(
    store: &S,
    reading: &ReadScope,
    collections: Option<Vec<String>>,
) -> Vec<Document> {
    let (mut after, mut listed) = (None, Vec::<Document>::new());
    loop {
        let page = ok(store.list_documents(reading.clone(), collections.clone(), after, 100).await, "list_documents");
        let short = page.len() < 100;
        after = page.last().map(|d| d.id.clone());
        listed.extend(page);
        if short {
            return listed;
        }
    }
}

fn ids_of(documents: Vec<Document>) -> Vec<String> {
    documents.into_iter().map(|d| d.id).collect()
}

fn sorted_ids(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Unwraps a store result, naming the step that failed.
fn ok<T>(result: StoreResult<T>, step: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{step}: {e}"),
    }
}

async fn latest<S: Store>(store: &S) -> u64 {
    ok(store.latest_sequence().await, "latest_sequence")
}

/// The parts of a page the paging rules talk about.
fn summary(page: &ChangePage) -> (Vec<u64>, u64, bool) {
    (page.events.iter().map(|e| e.sequence).collect(), page.reached, page.has_more)
}

fn sorted_documents(mut documents: Vec<Document>) -> Vec<Document> {
    documents.sort_by(|a, b| a.id.cmp(&b.id));
    documents
}

fn sorted_events(mut events: Vec<ChangeEvent>) -> Vec<ChangeEvent> {
    events.sort_by_key(|e| e.sequence);
    events
}

fn with_sequence(event: &ChangeEvent, sequence: u64) -> ChangeEvent {
    ChangeEvent { sequence, ..event.clone() }
}

fn with_client_change(mut change: NewChange, id: &str) -> NewChange {
    change.event.client_change_id = Some(id.to_owned());
    change
}

fn clock(entries: &[(&str, u64)]) -> VectorClock {
    VectorClock(entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
}

/// Content that exercises what JSON storage can get wrong: nesting, empty containers,
/// unicode beyond the BMP, escapes, floats, and integers at the edges of 64 bits.
fn rich_content() -> Value {
    json!({
        "title": "Grüße, 世界 🌍",
        "nested": {"deep": {"deeper": {"deepest": ["a", {"b": [null]}]}}, "empty_object": {}, "empty_array": []},
        "numbers": {
            "zero": 0, "negative": -17, "big": u64::MAX, "small": i64::MIN,
            "half": 0.5, "tenth": 0.1, "tiny": 1e-7, "pi": std::f64::consts::PI, "large": -2.5e10,
        },
        "flags": [true, false, null],
        "text": {
            "escapes": "quote \" backslash \\ slash / newline \n tab \t bell \u{7}",
            "family": "👩‍👩‍👧‍👦", "arabic": "مرحبا", "combining": "e\u{301}", "empty": "",
        },
    })
}

/// A create of `id` by `user`, at revision 1, with a unique event id (also for the
/// backends' own tests).
pub fn create(user: &str, collection: &str, id: &str, content: Value) -> NewChange {
    let at = Timestamp::from_unix_millis(1_795_000_000_000);
    let mut document = Document {
        id: id.to_owned(),
        user_id: user.to_owned(),
        collection: collection.to_owned(),
        title: None,
        content,
        sync_revision: 1,
        vector_clock: clock(&[("conformance", 1)]),
        content_hash: String::new(),
        created_at: at,
        updated_at: at,
        deleted_at: None,
    };
    document.refresh_derived();
    let event = ChangeEvent {
        sequence: 0,
        event_id: unique("event"),
        document_id: id.to_owned(),
        collection: collection.to_owned(),
        user_id: user.to_owned(),
        client_id: "conformance".to_owned(),
        event_type: ChangeKind::Create,
        forward_patch: Some(document.content.clone()),
        reverse_patch: None,
        sync_revision: 1,
        created_at: at,
        client_change_id: None,
        content_hash: Some(document.content_hash.clone()),
    };
    NewChange { event, document: Arc::new(document), expected_revision: 0 }
}

/// The next revision of `previous` with `content` (the patches are illustrative: the
/// store keeps them, it does not apply them).
pub fn update(previous: &Document, content: Value) -> NewChange {
    let mut document = next_revision(previous);
    let forward = json!([{"op": "replace", "path": "", "value": content}]);
    let reverse = json!([{"op": "replace", "path": "", "value": previous.content}]);
    document.content = content;
    document.refresh_derived();
    let event = ChangeEvent {
        event_type: ChangeKind::Update,
        forward_patch: Some(forward),
        reverse_patch: Some(reverse),
        content_hash: Some(content_hash(&document.content)),
        ..event_for(&document)
    };
    NewChange { event, document: Arc::new(document), expected_revision: previous.sync_revision }
}

/// The tombstone that follows `previous`.
fn delete(previous: &Document) -> NewChange {
    let mut document = next_revision(previous);
    document.deleted_at = Some(document.updated_at);
    let event = ChangeEvent {
        event_type: ChangeKind::Delete,
        forward_patch: None,
        reverse_patch: Some(previous.content.clone()),
        content_hash: None,
        ..event_for(&document)
    };
    NewChange { event, document: Arc::new(document), expected_revision: previous.sync_revision }
}

fn next_revision(previous: &Document) -> Document {
    let mut document = previous.clone();
    document.sync_revision += 1;
    document.vector_clock.increment("conformance");
    document.updated_at = Timestamp::from_unix_millis(previous.updated_at.unix_millis() + 1_001);
    document
}

fn event_for(document: &Document) -> ChangeEvent {
    ChangeEvent {
        sequence: 0,
        event_id: unique("event"),
        document_id: document.id.clone(),
        collection: document.collection.clone(),
        user_id: document.user_id.clone(),
        client_id: "conformance".to_owned(),
        event_type: ChangeKind::Update,
        forward_patch: None,
        reverse_patch: None,
        sync_revision: document.sync_revision,
        created_at: document.updated_at,
        client_change_id: None,
        content_hash: None,
    }
}

/// Creates a document and changes it four times (revisions 1 to 5); returns its id.
async fn five_revisions<S: Store>(store: &S) -> String {
    let user = unique("user");
    let collection = unique_collection();
    let mut batch = vec![create(&user, &collection, &unique("doc"), json!({"n": 1}))];
    for n in 2..=5 {
        let next = update(&batch[batch.len() - 1].document, json!({"n": n}));
        batch.push(next);
    }
    let id = batch[0].document.id.clone();
    ok(store.append_batch(batch).await, "five revisions");
    id
}

/// Polls every future until all are done, in one task: the suite needs concurrency
/// without spawning (which would require `'static` stores and a particular runtime).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
