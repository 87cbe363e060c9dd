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
