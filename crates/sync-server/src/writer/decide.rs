//! Deciding one change against the current document: validation, the merge rules of
//! PROTOCOL.md §7 through `sync_core::transform`, and the new state and event to store.
//!
//! No I/O and no reading of the clock (the caller passes the commit time), so every
//! rule is tested here directly and the write path only orchestrates. The one thing
//! not determined by the arguments is the id of a create that names none: a new random
//! UUID ([`create_id`]).

use std::sync::Arc;

use serde_json::Value;
use sync_core::acl::{Acl, Action};
use sync_core::canonical;
use sync_core::model::{DEFAULT_COLLECTION, new_document_id, title_of, validate_collection, validate_document_id};
use sync_core::patch::{ApplyLimits, PatchErrorKind, apply_within_limits, diff, merge_diff, patch_to_value};
use sync_core::protocol::{CreateDocument, DeleteDocument, DocumentPatch, RevertDocument};
use sync_core::transform::{Conflict, Policy, Rebased, independent, rebase_within_limits};
use sync_core::vclock::VectorClock;
use sync_core::{ChangeEvent, ChangeKind, Document, ErrorBody, ErrorCode, Patch, Timestamp};
use sync_store::NewChange;

use super::cache::HistEntry;
use super::request::{AppEvent, Merge};

/// Who is writing, when, and under which limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) client_id: &'a str,
    /// The access rules in force.
    pub(crate) acl: &'a Acl,
    /// The commit time.
    pub(crate) now: Timestamp,
    /// Largest serialized content accepted.
    pub(crate) max_document_bytes: usize,
    /// Deepest nesting of the content accepted. Decoding checks each patch value, but a
    /// patch of shallow values can still nest the document deeper, so the result is
    /// checked too: a document deeper than the limit could not be sent back to clients
    /// that enforce it.
    pub(crate) max_depth: usize,
}

/// A change decided and ready to store.
#[derive(Clone, Debug)]
pub(crate) struct Decided {
    /// What to store.
    pub(crate) change: NewChange,
    /// For updates: the patch as applied and its inverse.
    pub(crate) update: Option<HistEntry>,
    /// The applied patch, when it differs from the one sent (it was rebased).
    pub(crate) transformed: Option<Patch>,
    /// Conflicts met while rebasing.
    pub(crate) conflicts: Vec<Conflict>,
    /// The merge policy that decided them.
    pub(crate) policy: Policy,
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

/// Checks the size and depth limits; returns the content hash. Both need the content
/// written out, which is done once (the canonical form is as long as any compact JSON
/// text of the content).
fn checked_hash(content: &Value, ctx: &Ctx<'_>) -> Result<String, ErrorBody> {
    let canonical = canonical::canonical_bytes(content);
    let size = canonical.len();
    if size > ctx.max_document_bytes {
        return Err(error(
            ErrorCode::PayloadTooLarge,
            format!("document is {size} bytes; the limit is {}", ctx.max_document_bytes),
        ));
    }
    let depth = sync_core::protocol::json_depth(content);
    if depth > ctx.max_depth {
        return Err(error(
            ErrorCode::PayloadTooLarge,
            format!("document nests {depth} levels deep; the limit is {}", ctx.max_depth),
        ));
    }
    Ok(canonical::hash_of_canonical(&canonical))
}

/// Refuses a decided change holding what a store cannot keep exactly: U+0000 in a string
/// or key (PostgreSQL's JSONB and text cannot hold it) and negative zero (JSONB keeps
/// numbers as decimals, which have no sign of zero, so the content would come back with
/// another hash). The rule holds on every backend, so that data moves between them and
/// a change accepted on one is accepted on all.
pub(crate) fn check_storable(change: &NewChange) -> Result<(), ErrorBody> {
    let texts = [
        Some(change.event.user_id.as_str()),
        Some(change.event.client_id.as_str()),
        change.event.client_change_id.as_deref(),
    ];
    if texts.into_iter().flatten().any(|t| t.contains('\0')) {
        return Err(error(ErrorCode::InvalidMessage, "identifiers must not contain U+0000"));
    }
    for value in [Some(&change.document.content), change.event.forward_patch.as_ref()].into_iter().flatten() {
        if let Some(reason) = unstorable(value) {
            return Err(error(ErrorCode::InvalidMessage, format!("the change cannot be stored: {reason}")));
        }
    }
    Ok(())
}

/// Why `value` cannot be stored exactly, if it cannot.
fn unstorable(value: &Value) -> Option<&'static str> {
    match value {
        Value::String(s) if s.contains('\0') => Some("a string contains U+0000"),
        Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => {
            Some("a number is negative zero")
        }
        Value::Array(items) => items.iter().find_map(unstorable),
        Value::Object(map) => {
            map.iter().find_map(
                |(key, value)| {
                    if key.contains('\0') { Some("a key contains U+0000") } else { unstorable(value) }
                },
            )
        }
        _ => None,
    }
}

fn event(doc: &Document, ctx: &Ctx<'_>, kind: ChangeKind, client_change_id: Option<&str>) -> ChangeEvent {
    ChangeEvent {
        sequence: 0,
        event_id: uuid::Uuid::now_v7().to_string(),
        document_id: doc.id.clone(),
        collection: doc.collection.clone(),
        // The author; the owner is the document's.
        user_id: ctx.user_id.to_owned(),
        client_id: ctx.client_id.to_owned(),
        event_type: kind,
        forward_patch: None,
        reverse_patch: None,
        sync_revision: doc.sync_revision,
        created_at: ctx.now,
        client_change_id: client_change_id.map(str::to_owned),
        content_hash: None,
    }
}

/// The document id a create will use (validated later by [`create`]).
pub(crate) fn create_id(request: &CreateDocument) -> String {
    request.document.id.clone().unwrap_or_else(new_document_id)
}

/// Decides a `create_document`. `existing` is whatever the store has under the id.
pub(crate) fn create(
    id: &str,
    existing: Option<&Document>,
    request: &CreateDocument,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    validate_document_id(id).map_err(|e| error(ErrorCode::InvalidMessage, e.to_string()))?;
    let collection = request.document.collection.as_deref().unwrap_or(DEFAULT_COLLECTION);
    validate_collection(collection).map_err(|e| error(ErrorCode::InvalidMessage, e.to_string()))?;
    if existing.is_some() {
        // Never an overwrite, and nothing about the existing document is revealed (ids are
        // global, so that one is taken is all a client learns).
        return Err(error(ErrorCode::DocumentExists, format!("a document with id {id:?} already exists")));
    }
    if !ctx.acl.may_create(ctx.user_id, collection, id) {
        return Err(error(ErrorCode::Forbidden, format!("the access rules do not let you create {collection}/{id}")));
    }
    let content = request.document.normalized_content();
    let content_hash = checked_hash(&content, ctx)?;
    let mut vector_clock = VectorClock::new();
    vector_clock.increment(ctx.client_id);
    let doc = Document {
        id: id.to_owned(),
        user_id: ctx.user_id.to_owned(),
        collection: collection.to_owned(),
        title: title_of(&content),
        content,
        sync_revision: 1,
        vector_clock,
        content_hash,
        created_at: ctx.now,
        updated_at: ctx.now,
        deleted_at: None,
    };
    let mut ev = event(&doc, ctx, ChangeKind::Create, request.client_change_id.as_deref());
    ev.forward_patch = Some(doc.content.clone());
    ev.content_hash = Some(doc.content_hash.clone());
    Ok(Decided {
        change: NewChange { event: ev, document: Arc::new(doc), expected_revision: 0 },
        update: None,
        transformed: None,
        conflicts: Vec::new(),
        policy,
    })
}

/// Whether the writer may do `action` on `doc`: its owner, or as the rules say.
pub(crate) fn may(doc: &Document, ctx: &Ctx<'_>, action: Action) -> bool {
    ctx.acl.may(ctx.user_id, &doc.user_id, &doc.collection, &doc.id, action)
}

/// Checks that the writer may do `action` on the document and that it is not deleted.
fn live<'d>(doc: Option<&'d Document>, id: &str, ctx: &Ctx<'_>, action: Action) -> Result<&'d Document, ErrorBody> {
    match doc {
        Some(doc) if may(doc, ctx, action) => {
            if doc.is_deleted() {
                Err(error(ErrorCode::DocumentDeleted, format!("document {id:?} is deleted")))
            } else {
                Ok(doc)
            }
        }
        // Readable but not this: say so (nothing is revealed that a read would not show).
        Some(doc) if may(doc, ctx, Action::Read) => {
            Err(error(ErrorCode::Forbidden, format!("the access rules do not let you {action} document {id:?}")))
        }
        // A document the writer may not read is indistinguishable from a missing one.
        _ => Err(error(ErrorCode::DocumentNotFound, format!("no document {id:?}"))),
    }
}

/// What an update needs besides the document: the updates committed after its base.
pub(crate) enum Intervening {
    /// Nothing to rebase over (base is current, or no base revision).
    None,
    /// The updates after the base revision, in order.
    Updates(Vec<HistEntry>),
}

/// The revision whose successors an update must be rebased over, if any.
pub(crate) fn rebase_base(doc: &Document, request: &DocumentPatch) -> Option<u64> {
    match request.base_revision {
        Some(base) if base >= 1 && base < doc.sync_revision => Some(base),
        _ => None,
    }
}

/// Refuses a stale update whose rebase would cost more than `max_work` — its ops times
/// the revisions it crossed, what carrying it over the committed patches costs — before
/// any history is read: one such change would hold up every other writer while it is
/// carried. The client is told to rebase it itself (it has the pushes in between) and
/// send it again.
pub(crate) fn within_rebase_budget(
    doc: &Document,
    request: &DocumentPatch,
    base: u64,
    max_work: u64,
) -> Result<(), ErrorBody> {
    let crossed = doc.sync_revision.saturating_sub(base);
    let ops = request.patch.len() as u64;
    let work = crossed.saturating_mul(ops);
    if work <= max_work {
        return Ok(());
    }
    Err(error(
        ErrorCode::VersionMismatch,
        format!(
            "the change is {crossed} revisions behind with {ops} ops: rebasing it here would take {work} steps, \
             more than the limit of {max_work}; fetch the document, rebase the change on it and send it again"
        ),
    ))
}

/// The exact cost of a stale update once the changes it crossed are read: each of its ops
/// is carried over each op of those changes, so a few large changes in between cost as
/// much as many small ones. Refused like [`within_rebase_budget`] beyond `max_work`.
pub(crate) fn within_rebase_work(
    request: &DocumentPatch,
    crossed: &[HistEntry],
    max_work: u64,
) -> Result<(), ErrorBody> {
    let ops = request.patch.len() as u64;
    let between: u64 = crossed.iter().map(|h| h.forward.len() as u64).sum();
    let work = ops.saturating_mul(between);
    if work <= max_work {
        return Ok(());
    }
    Err(error(
        ErrorCode::VersionMismatch,
        format!(
            "the change has {ops} ops and the {} revisions since its base hold {between}: rebasing it here would \
             take {work} steps, more than the limit of {max_work}; fetch the document, rebase the change on it and \
             send it again",
            crossed.len()
        ),
    ))
}

/// Decides an `update_document` (rules 1–7 of PROTOCOL.md §7).
pub(crate) fn update(
    doc: Option<&Document>,
    intervening: Intervening,
    request: &DocumentPatch,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    let doc = live(doc, &request.document_id, ctx, Action::Update)?;
    let current = doc.sync_revision;
    // The client's ops are held to the limits while they apply, op by op, so that a small
    // patch cannot build a huge document before `checked_hash` gets to refuse it.
    let limits = ApplyLimits::new(ctx.max_document_bytes, ctx.max_depth);
    let mut conflicts = Vec::new();
    // The history, when the shortcut decided a stale change without it.
    let mut shortcut: Option<Vec<HistEntry>> = None;
    let (mut patch, blind) = match request.base_revision {
        Some(0) => return Err(error(ErrorCode::InvalidMessage, "base_revision starts at 1")),
        Some(base) if base > current => {
            return Err(error(
                ErrorCode::VersionMismatch,
                format!("base_revision {base} is ahead of the document's revision {current}"),
            ));
        }
        Some(base) if base < current => {
            let Intervening::Updates(updates) = intervening else {
                return Err(error(ErrorCode::ServerError, "history needed to rebase the change was not loaded"));
            };
            if updates.len() as u64 != current - base {
                return Err(error(ErrorCode::ServerError, "history needed to rebase the change is incomplete"));
            }
            // Independent of everything committed since (the common case on a document
            // many clients edit at once): the rebase is the identity, judged on the
            // current content without rebuilding the base. Otherwise the full rebase.
            if independent(&doc.content, &request.patch, updates.iter().flat_map(|h| h.forward.iter())) {
                shortcut = Some(updates);
                (request.patch.clone(), false)
            } else {
                let rebased = rebase_in_full(doc, &updates, request, policy, &limits)?;
                conflicts = rebased.conflicts;
                (rebased.patch, false)
            }
        }
        Some(_) => (request.patch.clone(), false),
        // Rule 7: a matching hash means the patch was made on this exact state.
        None => (request.patch.clone(), request.content_hash.as_deref() != Some(doc.content_hash.as_str())),
    };
    let mut content = doc.content.clone();
    let reverse = match apply_within_limits(&mut content, &patch, &limits) {
        Ok(reverse) => reverse,
        // The shortcut's patch does not apply: neither did it to its base. The full
        // rebase says why, as it would have without the shortcut. (A patch over a limit
        // is over it on its base too: no need to rebase it to say so.)
        Err(e)
            if !e.is_over_limit()
                && let Some(updates) = shortcut =>
        {
            let rebased = rebase_in_full(doc, &updates, request, policy, &limits)?;
            (patch, conflicts) = (rebased.patch, rebased.conflicts);
            content = doc.content.clone();
            apply_within_limits(&mut content, &patch, &limits).map_err(|e| patch_error(e, blind))?
        }
        Err(e) => return Err(patch_error(e, blind)),
    };
    let content_hash = checked_hash(&content, ctx)?;
    // Built field by field: cloning `doc` would copy the old content only to drop it.
    let mut vector_clock = doc.vector_clock.clone();
    vector_clock.increment(ctx.client_id);
    let next = Document {
        id: doc.id.clone(),
        user_id: doc.user_id.clone(),
        collection: doc.collection.clone(),
        title: title_of(&content),
        content,
        sync_revision: current + 1,
        vector_clock,
        content_hash,
        created_at: doc.created_at,
        updated_at: ctx.now,
        deleted_at: None,
    };
    let mut ev = event(&next, ctx, ChangeKind::Update, request.client_change_id.as_deref());
    ev.forward_patch = Some(patch_to_value(&patch));
    ev.reverse_patch = Some(patch_to_value(&reverse));
    ev.content_hash = Some(next.content_hash.clone());
    let transformed = (patch != request.patch).then(|| patch.clone());
    Ok(Decided {
        change: NewChange { event: ev, document: Arc::new(next), expected_revision: current },
        update: Some(HistEntry { revision: current + 1, forward: Arc::new(patch), reverse: Arc::new(reverse) }),
        transformed,
        conflicts,
        policy,
    })
}

/// The error of a patch that does not apply to the current content.
fn patch_error(e: sync_core::patch::PatchError, blind: bool) -> ErrorBody {
    let code = if e.is_over_limit() {
        ErrorCode::PayloadTooLarge
    } else if blind || e.kind == PatchErrorKind::TestFailed {
        ErrorCode::VersionMismatch
    } else {
        ErrorCode::InvalidPatch
    };
    error(code, e.to_string())
}

/// Rebases a stale change the full way: the base it was made on (the current content
/// with `updates` undone), then [`rebase`] over every committed op since.
fn rebase_in_full(
    doc: &Document,
    updates: &[HistEntry],
    request: &DocumentPatch,
    policy: Policy,
    limits: &ApplyLimits,
) -> Result<Rebased, ErrorBody> {
    let mut base_state = doc.content.clone();
    for h in updates.iter().rev() {
        sync_core::patch::apply(&mut base_state, &h.reverse)
            .map_err(|e| error(ErrorCode::ServerError, format!("stored history does not apply: {e}")))?;
    }
    let committed: Patch = updates.iter().flat_map(|h| h.forward.iter().cloned()).collect();
    rebase_within_limits(&base_state, &request.patch, &committed, policy, limits)
        .map_err(|e| error(e.code(), e.to_string()))
}

/// Decides a `delete_document`: a tombstone that keeps the last content.
pub(crate) fn delete(
    doc: Option<&Document>,
    request: &DeleteDocument,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    let doc = live(doc, &request.document_id, ctx, Action::Delete)?;
    let mut next = doc.clone();
    next.sync_revision += 1;
    next.vector_clock.increment(ctx.client_id);
    next.updated_at = ctx.now;
    next.deleted_at = Some(ctx.now);
    let mut ev = event(&next, ctx, ChangeKind::Delete, request.client_change_id.as_deref());
    ev.reverse_patch = Some(doc.content.clone());
    Ok(Decided {
        change: NewChange { event: ev, document: Arc::new(next), expected_revision: doc.sync_revision },
        update: None,
        transformed: None,
        conflicts: Vec::new(),
        policy,
    })
}

/// Decides an RFC 7396 merge of the content: the JSON Patch that makes the merge from the
/// current state, applied at the current revision like any update (limits included).
pub(crate) fn merge(
    doc: Option<&Document>,
    request: &Merge,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    let current = live(doc, &request.document_id, ctx, Action::Update)?;
    let patch = DocumentPatch {
        document_id: request.document_id.clone(),
        patch: merge_diff(&current.content, &request.merge),
        base_revision: Some(current.sync_revision),
        content_hash: None,
        client_change_id: request.client_change_id.clone(),
    };
    update(doc, Intervening::None, &patch, ctx, policy)
}

/// Decides a `revert_document`: an update, based on the current revision, from the
/// current content to `target` (the content at `request.to_revision`, read beforehand
/// for a writer who may update the document). Merged with nothing: it is the newest
/// change, and its forward and reverse patches are those of any update.
pub(crate) fn revert(
    doc: Option<&Document>,
    request: &RevertDocument,
    target: Option<&Value>,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    let current = live(doc, &request.document_id, ctx, Action::Update)?;
    let target = target.ok_or_else(|| error(ErrorCode::ServerError, "the revision to restore was not read"))?;
    let patch = DocumentPatch {
        document_id: request.document_id.clone(),
        patch: diff(&current.content, target),
        base_revision: Some(current.sync_revision),
        content_hash: None,
        client_change_id: request.client_change_id.clone(),
    };
    update(doc, Intervening::None, &patch, ctx, policy)
}

/// Decides an application event: a new revision with the same content, the event's
/// action and payload recorded in the change log. Writing one needs `update` rights.
pub(crate) fn app_event(
    doc: Option<&Document>,
    request: &AppEvent,
    ctx: &Ctx<'_>,
    policy: Policy,
) -> Result<Decided, ErrorBody> {
    let doc = live(doc, &request.document_id, ctx, Action::Update)?;
    let mut next = doc.clone();
    next.sync_revision += 1;
    next.vector_clock.increment(ctx.client_id);
    next.updated_at = ctx.now;
    let mut ev = event(&next, ctx, ChangeKind::Custom(request.action.clone()), request.client_change_id.as_deref());
    ev.forward_patch = Some(request.payload.clone());
    ev.content_hash = Some(next.content_hash.clone());
    // In the history as an empty patch: a stale update rebases across it unchanged.
    let empty = Arc::new(Vec::new());
    let update = Some(HistEntry { revision: next.sync_revision, forward: Arc::clone(&empty), reverse: empty });
    let change = NewChange { event: ev, document: Arc::new(next), expected_revision: doc.sync_revision };
    Ok(Decided { change, update, transformed: None, conflicts: Vec::new(), policy })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sync_core::patch::parse_patch;
    use sync_core::protocol::NewDocument;

    static NO_RULES: Acl = Acl::EMPTY;

    fn ctx() -> Ctx<'static> {
        Ctx {
            user_id: "u1",
            client_id: "c1",
            acl: &NO_RULES,
            now: Timestamp::from_unix_millis(1000),
            max_document_bytes: 1 << 20,
            max_depth: 64,
        }
    }

    fn created(content: Value) -> Decided {
        let request = CreateDocument {
            document: NewDocument { id: Some("d1".into()), collection: None, title: None, content },
            client_change_id: None,
        };
        create("d1", None, &request, &ctx(), Policy::LastWriterWins).unwrap()
    }

    fn patch_request(ops: Value, base: Option<u64>, hash: Option<&str>) -> DocumentPatch {
        DocumentPatch {
            document_id: "d1".into(),
            patch: parse_patch(ops).unwrap(),
            base_revision: base,
            content_hash: hash.map(str::to_owned),
            client_change_id: Some("cc".into()),
        }
    }

    #[test]
    fn values_no_store_can_keep_are_refused() {
        for content in [json!({"a": "nul \u{0} inside"}), json!({"a\u{0}": 1}), json!([1, [2, {"deep": -0.0}]])] {
            let change = created(content.clone()).change;
            let err = check_storable(&change).expect_err(&content.to_string());
            assert_eq!(err.code, ErrorCode::InvalidMessage);
        }
        let fine = created(json!({"zero": 0.0, "int_zero": 0, "neg": -1.5, "text": "no nul"})).change;
        assert_eq!(check_storable(&fine), Ok(()));
        let mut odd_client = fine.clone();
        odd_client.event.client_id = "phone\u{0}".to_owned();
        assert!(check_storable(&odd_client).is_err());
        let mut patch = fine;
        patch.event.forward_patch = Some(json!([{"op": "test", "path": "/text", "value": "\u{0}"}]));
        assert!(check_storable(&patch).is_err(), "a value only in the patch");
    }

    #[test]
    fn create_sets_every_field() {
        let d = created(json!({"title": "T", "n": 1}));
        let doc = &d.change.document;
        assert_eq!((doc.sync_revision, doc.title.as_deref(), doc.collection.as_str()), (1, Some("T"), "default"));
        assert_eq!(doc.vector_clock.get("c1"), 1);
        assert_eq!(doc.content_hash, sync_core::canonical::content_hash(&json!({"title": "T", "n": 1})));
        assert_eq!(d.change.expected_revision, 0);
        assert_eq!(d.change.event.forward_patch, Some(json!({"title": "T", "n": 1})));
    }

    #[test]
    fn create_refuses_existing_ids_and_bad_input() {
        let existing = created(json!({})).change.document;
        let request = CreateDocument {
            document: NewDocument { id: Some("d1".into()), collection: None, title: None, content: json!({}) },
            client_change_id: None,
        };
        let err = create("d1", Some(&existing), &request, &ctx(), Policy::LastWriterWins).unwrap_err();
        assert_eq!(err.code, ErrorCode::DocumentExists);
        let err = create("bad id", None, &request, &ctx(), Policy::LastWriterWins).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        let mut small = ctx();
        small.max_document_bytes = 5;
        let big = CreateDocument {
            document: NewDocument { id: None, collection: Some("Bad".into()), title: None, content: json!({}) },
            client_change_id: None,
        };
        assert_eq!(
            create("x", None, &big, &small, Policy::LastWriterWins).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn update_at_current_revision_applies_as_is() {
        let doc = created(json!({"a": 1})).change.document;
        let d = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([{"op": "replace", "path": "/a", "value": 2}]), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap();
        assert_eq!(d.change.document.content, json!({"a": 2}));
        assert_eq!(d.change.document.sync_revision, 2);
        assert!(d.transformed.is_none());
        assert_eq!(d.change.event.reverse_patch, Some(json!([{"op": "replace", "path": "/a", "value": 1}])));
    }

    #[test]
    fn a_patch_that_nests_the_document_too_deep_is_refused() {
        let doc = created(json!({"a": {}})).change.document;
        let mut shallow = ctx();
        shallow.max_depth = 3;
        let ops = json!([{"op": "add", "path": "/a/b", "value": {"c": {}}}]);
        let err =
            update(Some(&doc), Intervening::None, &patch_request(ops, Some(1), None), &shallow, Policy::LastWriterWins)
                .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        let ops = json!([{"op": "add", "path": "/a/b", "value": {}}]);
        assert!(
            update(Some(&doc), Intervening::None, &patch_request(ops, Some(1), None), &shallow, Policy::LastWriterWins)
                .is_ok()
        );
    }

    #[test]
    fn a_patch_that_would_build_a_huge_document_is_refused_while_it_applies() {
        // Each op doubles `/x`: 17 of them would build 130 MiB. Refused at the current
        // revision and when stale (rebased the full way, as `/x` changed meanwhile).
        let copies: Vec<Value> =
            (0..17).map(|i| json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")})).collect();
        let doc1 = created(json!({"x": {"s": "a".repeat(1024)}})).change.document;
        let err = update(
            Some(&doc1),
            Intervening::None,
            &patch_request(Value::Array(copies.clone()), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{}", err.message);
        assert!(err.message.contains("larger than the limit"), "{}", err.message);
        let touch = patch_request(json!([{"op": "add", "path": "/x/t", "value": 1}]), Some(1), None);
        let first = update(Some(&doc1), Intervening::None, &touch, &ctx(), Policy::LastWriterWins).unwrap();
        let err = update(
            Some(&first.change.document),
            Intervening::Updates(vec![first.update.unwrap()]),
            &patch_request(Value::Array(copies), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{}", err.message);
    }

    #[test]
    fn stale_update_is_rebased() {
        let doc1 = created(json!({"l": ["a"]})).change.document;
        // Revision 2 inserted at the front.
        let first = update(
            Some(&doc1),
            Intervening::None,
            &patch_request(json!([{"op": "add", "path": "/l/0", "value": "z"}]), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap();
        let doc2 = first.change.document.clone();
        let d = update(
            Some(&doc2),
            Intervening::Updates(vec![first.update.unwrap()]),
            &patch_request(json!([{"op": "replace", "path": "/l/0", "value": "A"}]), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap();
        assert_eq!(d.change.document.content, json!({"l": ["z", "A"]}));
        assert_eq!(d.transformed, Some(parse_patch(json!([{"op": "replace", "path": "/l/1", "value": "A"}])).unwrap()));
    }

    /// Decides `ops`, made on revision 1, against a document whose revisions 2 and 3 set `/a`.
    fn stale_on_edited_twice(ops: Value) -> Result<Decided, ErrorBody> {
        let mut doc = created(json!({"a": 0, "b": {"x": 1}})).change.document;
        let mut history = Vec::new();
        for value in [1, 2] {
            let replace = json!([{"op": "replace", "path": "/a", "value": value}]);
            let request = patch_request(replace, Some(doc.sync_revision), None);
            let d = update(Some(&doc), Intervening::None, &request, &ctx(), Policy::LastWriterWins).unwrap();
            doc = d.change.document;
            history.push(d.update.unwrap());
        }
        let request = patch_request(ops, Some(1), None);
        update(Some(&doc), Intervening::Updates(history), &request, &ctx(), Policy::LastWriterWins)
    }

    #[test]
    fn stale_update_of_another_member_applies_as_sent() {
        let d = stale_on_edited_twice(json!([{"op": "add", "path": "/b/y", "value": 2}])).unwrap();
        assert_eq!(d.change.document.content, json!({"a": 2, "b": {"x": 1, "y": 2}}));
        assert_eq!(d.transformed, None);
        assert!(d.conflicts.is_empty());
        assert_eq!(d.change.document.sync_revision, 4);
    }

    #[test]
    fn stale_update_that_did_not_apply_to_its_base_is_a_version_mismatch() {
        // Independent of the committed edits, but wrong for the state it was made on:
        // answered as the full rebase answers it, not as a bad patch for the current state.
        let err = stale_on_edited_twice(json!([{"op": "remove", "path": "/b/missing"}])).unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch, "{}", err.message);
    }

    #[test]
    fn rule5_update_against_deleted_document() {
        let doc = created(json!({})).change.document;
        let deleted = delete(
            Some(&doc),
            &DeleteDocument { document_id: "d1".into(), base_revision: None, client_change_id: None },
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap()
        .change
        .document;
        let err = update(
            Some(&deleted),
            Intervening::None,
            &patch_request(json!([]), None, None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::DocumentDeleted);
    }

    #[test]
    fn rule6_failed_test_is_version_mismatch_and_a_bad_op_is_invalid_patch() {
        let doc = created(json!({"v": 1})).change.document;
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([{"op": "test", "path": "/v", "value": 2}]), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch);
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([{"op": "remove", "path": "/nope"}]), Some(1), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPatch);
        assert!(err.message.contains("op 0"), "{}", err.message);
    }

    #[test]
    fn rule7_hash_and_blind_writes() {
        let doc = created(json!({"v": 1})).change.document;
        let ops = json!([{"op": "remove", "path": "/missing"}]);
        // Matching hash: the patch is simply wrong for this state.
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(ops.clone(), None, Some(&doc.content_hash)),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPatch);
        // Stale or absent hash: a blind write that does not apply is a version mismatch.
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(ops, None, Some("stale")),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch);
        let ok = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([{"op": "replace", "path": "/v", "value": 3}]), None, None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap();
        assert_eq!(ok.change.document.content, json!({"v": 3}));
    }

    #[test]
    fn other_users_documents_are_not_found() {
        let doc = created(json!({})).change.document;
        let mut other = ctx();
        other.user_id = "u2";
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([]), None, None),
            &other,
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::DocumentNotFound);
        assert!(!err.message.contains("u1"));
    }

    #[test]
    fn base_revision_ahead_is_a_mismatch() {
        let doc = created(json!({})).change.document;
        let err = update(
            Some(&doc),
            Intervening::None,
            &patch_request(json!([]), Some(9), None),
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionMismatch);
    }

    #[test]
    fn delete_keeps_content_and_records_it_in_reverse() {
        let doc = created(json!({"k": 1})).change.document;
        let d = delete(
            Some(&doc),
            &DeleteDocument { document_id: "d1".into(), base_revision: None, client_change_id: Some("x".into()) },
            &ctx(),
            Policy::LastWriterWins,
        )
        .unwrap();
        assert!(d.change.document.is_deleted());
        assert_eq!(d.change.document.sync_revision, 2);
        assert_eq!(d.change.event.reverse_patch, Some(json!({"k": 1})));
        assert_eq!(d.change.event.forward_patch, None);
    }

    #[test]
    fn a_merge_is_the_patch_from_the_current_state() {
        let doc = created(json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true})).change.document;
        let request = Merge {
            document_id: "d1".into(),
            merge: json!({"a": 5, "b": {"c": null, "e": 4}, "gone": null}),
            client_change_id: None,
        };
        let d = merge(Some(&doc), &request, &ctx(), Policy::LastWriterWins).unwrap();
        assert_eq!(d.change.document.content, json!({"a": 5, "b": {"d": 3, "e": 4}}));
        assert_eq!(d.change.document.sync_revision, 2);
        let mut other = Document::clone(&doc);
        other.user_id = "u2".into();
        let err = merge(Some(&other), &request, &ctx(), Policy::LastWriterWins).unwrap_err();
        assert_eq!(err.code, ErrorCode::DocumentNotFound, "another user's document, no rule");
    }

    #[test]
    fn an_application_event_moves_the_revision_and_not_the_content() {
        let doc = created(json!({"k": 1})).change.document;
        let request = AppEvent {
            document_id: "d1".into(),
            action: "done".into(),
            payload: json!({"by": "u1"}),
            client_change_id: Some("e1".into()),
        };
        let d = app_event(Some(&doc), &request, &ctx(), Policy::LastWriterWins).unwrap();
        assert_eq!(d.change.document.content, doc.content);
        assert_eq!(d.change.document.content_hash, doc.content_hash);
        assert_eq!(d.change.document.sync_revision, 2);
        assert_eq!(d.change.expected_revision, 1);
        assert_eq!(d.change.event.event_type, ChangeKind::Custom("done".into()));
        assert_eq!(d.change.event.forward_patch, Some(json!({"by": "u1"})));
        let history = d.update.expect("an entry in the history");
        assert!(history.forward.is_empty() && history.reverse.is_empty(), "rebasing across it changes nothing");
        assert_eq!(history.revision, 2);
    }
}
