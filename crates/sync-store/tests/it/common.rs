//! Helpers both backends' tests use: changes in the default collection.

use serde_json::Value;
use sync_core::Document;
use sync_store::{NewChange, conformance};

/// The create of document `id` of `user`, in the default collection.
pub(crate) fn create(user: &str, id: &str, content: Value) -> NewChange {
    conformance::create(user, "default", id, content)
}

/// The update of `previous` to `content`.
pub(crate) fn update(previous: &Document, content: Value) -> NewChange {
    conformance::update(previous, content)
}

/// What the migration tests write into a database made by migration 0001 alone, in
/// sequence order from 1 (see `conformance::changes_from_before_owners_are_their_authors`):
/// `ada` creates `m-ada` in `tasks`, `bob` creates `m-bob` in `notes`, `ada` updates `m-ada`.
/// Each change carries the document as it leaves it.
pub(crate) fn changes_before_owners() -> Vec<NewChange> {
    let ada = conformance::create("ada", "tasks", "m-ada", serde_json::json!({"title": "a"}));
    let bob = conformance::create("bob", "notes", "m-bob", serde_json::json!({"title": "b"}));
    let again = conformance::update(&ada.document, serde_json::json!({"title": "a2"}));
    vec![ada, bob, again]
}

/// A JSON value as the text a raw insert binds.
pub(crate) fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
