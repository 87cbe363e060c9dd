//! Records from rows, shared by the backends: both select documents and change events
//! with the same columns in the same order (`document_columns!` / `event_columns!` in each
//! backend), so the decoding — and the `Corrupt` error that names the record and the
//! column — is written once. Each backend only says how to read one column.

use serde::de::DeserializeOwned;
use sync_core::{ChangeEvent, ChangeKind, Document, Timestamp};

use crate::{StoreError, StoreResult};

/// Why a column could not be decoded.
pub(crate) type ColumnError = Box<dyn std::error::Error + Send + Sync>;

/// One row of a backend's result, read column by column.
pub(crate) trait Columns {
    /// A TEXT column.
    fn text(&self, index: usize) -> Result<String, ColumnError>;
    /// A nullable TEXT column.
    fn optional_text(&self, index: usize) -> Result<Option<String>, ColumnError>;
    /// An INTEGER / BIGINT column.
    fn integer(&self, index: usize) -> Result<i64, ColumnError>;
    /// A nullable INTEGER / BIGINT column.
    fn optional_integer(&self, index: usize) -> Result<Option<i64>, ColumnError>;
    /// A JSON column, parsed from the driver's buffer without a copy where it can.
    fn json<T: DeserializeOwned>(&self, index: usize) -> Result<T, ColumnError>;
    /// A nullable JSON column; SQL NULL is `None`.
    fn optional_json<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, ColumnError>;

    /// An integer column that holds a `u64` (stored as a non-negative `i64`).
    fn unsigned(&self, index: usize) -> Result<u64, ColumnError> {
        Ok(u64::try_from(self.integer(index)?)?)
    }
}

/// Decodes a document from the columns of `document_columns!`.
pub(crate) fn document(row: &impl Columns) -> StoreResult<Document> {
    let id = row.text(0).map_err(|e| read_failed("reading documents.id", e))?;
    let what = |column: &str| format!("document {id}: {column}");
    Ok(Document {
        user_id: row.text(1).map_err(|e| corrupt(what("user_id"), e))?,
        collection: row.text(2).map_err(|e| corrupt(what("collection"), e))?,
        title: row.optional_text(3).map_err(|e| corrupt(what("title"), e))?,
        content: row.json(4).map_err(|e| corrupt(what("content"), e))?,
        sync_revision: row.unsigned(5).map_err(|e| corrupt(what("sync_revision"), e))?,
        vector_clock: row.json(6).map_err(|e| corrupt(what("vector_clock"), e))?,
        content_hash: row.text(7).map_err(|e| corrupt(what("content_hash"), e))?,
        created_at: Timestamp::from_unix_millis(row.integer(8).map_err(|e| corrupt(what("created_at"), e))?),
        updated_at: Timestamp::from_unix_millis(row.integer(9).map_err(|e| corrupt(what("updated_at"), e))?),
        deleted_at: row
            .optional_integer(10)
            .map_err(|e| corrupt(what("deleted_at"), e))?
            .map(Timestamp::from_unix_millis),
        id,
    })
}

/// Decodes a change event from the columns of `event_columns!`, starting at column `at`.
pub(crate) fn event(row: &impl Columns, at: usize) -> StoreResult<ChangeEvent> {
    let sequence = row.unsigned(at).map_err(|e| corrupt("change event sequence".to_owned(), e))?;
    let what = |column: &str| format!("change event {sequence}: {column}");
    let event_type = row.text(at + 6).map_err(|e| corrupt(what("event_type"), e))?;
    Ok(ChangeEvent {
        sequence,
        event_id: row.text(at + 1).map_err(|e| corrupt(what("event_id"), e))?,
        document_id: row.text(at + 2).map_err(|e| corrupt(what("document_id"), e))?,
        collection: row.text(at + 3).map_err(|e| corrupt(what("collection"), e))?,
        user_id: row.text(at + 4).map_err(|e| corrupt(what("user_id"), e))?,
        client_id: row.text(at + 5).map_err(|e| corrupt(what("client_id"), e))?,
        event_type: ChangeKind::parse(&event_type),
        forward_patch: row.optional_json(at + 7).map_err(|e| corrupt(what("forward_patch"), e))?,
        reverse_patch: row.optional_json(at + 8).map_err(|e| corrupt(what("reverse_patch"), e))?,
        sync_revision: row.unsigned(at + 9).map_err(|e| corrupt(what("sync_revision"), e))?,
        created_at: Timestamp::from_unix_millis(row.integer(at + 10).map_err(|e| corrupt(what("created_at"), e))?),
        client_change_id: row.optional_text(at + 11).map_err(|e| corrupt(what("client_change_id"), e))?,
        content_hash: row.optional_text(at + 12).map_err(|e| corrupt(what("content_hash"), e))?,
    })
}

/// A column the driver could not read at all (as opposed to a stored value that is
/// wrong): `Database`, with the driver's error as the source when it is one.
fn read_failed(context: &str, error: ColumnError) -> StoreError {
    #[cfg(feature = "sqlite")]
    let error = match error.downcast::<rusqlite::Error>() {
        Ok(error) => return StoreError::database(context, *error),
        Err(other) => other,
    };
    #[cfg(feature = "postgres")]
    let error = match error.downcast::<sqlx::Error>() {
        Ok(error) => return StoreError::database(context, *error),
        Err(other) => other,
    };
    StoreError::database_message(format!("{context}: {error}"))
}

/// A stored value that cannot be decoded, named by `what`.
pub(crate) fn corrupt(what: String, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::corrupt(what, error)
}

/// One stored rule, as its columns: `(user_pattern, item, action, allow)`.
pub(crate) fn rule_columns(rule: &sync_core::acl::Rule) -> (String, String, &'static str, bool) {
    (rule.user.to_string(), rule.item.to_string(), rule.action.as_str(), rule.allow)
}

/// The stored rules, in position order, checked as `PUT /acl` checks them.
pub(crate) fn decode_acl(rows: Vec<(String, String, String, bool)>) -> StoreResult<sync_core::acl::Acl> {
    let mut rules = Vec::with_capacity(rows.len());
    for (position, (user, item, action, allow)) in rows.into_iter().enumerate() {
        let rule = sync_core::acl::Rule::parse(&user, &item, &action, allow)
            .map_err(|e| StoreError::corrupt_value(format!("access rule {position}: {e}")))?;
        rules.push(rule);
    }
    sync_core::acl::Acl::new(rules).map_err(|e| StoreError::corrupt_value(format!("access rules: {e}")))
}

/// A list of rules as the history keeps it: a JSON array, as `PUT /acl` takes it.
pub(crate) fn acl_history_json(acl: &sync_core::acl::Acl) -> StoreResult<String> {
    serde_json::to_string(acl.rules()).map_err(|e| StoreError::database("encoding the access rules", e))
}

/// What [`crate::Store::acl_since`] answers for `sequence`, from the history's rows
/// `(sequence, rules)` in version order, starting with the one before the first stored
/// at or after `sequence` when that one is kept.
pub(crate) fn acl_since_from(rows: Vec<(i64, String)>, sequence: i64) -> StoreResult<crate::AclSince> {
    let Some(first) = rows.iter().position(|(stored_at, _)| *stored_at >= sequence) else {
        return Ok(crate::AclSince::Unchanged);
    };
    let start = first.saturating_sub(1);
    let mut lists = Vec::with_capacity(rows.len() - start);
    let mut previous: Option<&str> = None;
    for (_, text) in &rows[start..] {
        // Lists stored again unchanged (a reload, a repeated `PUT`) need no second look.
        if previous == Some(text.as_str()) {
            continue;
        }
        previous = Some(text);
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| StoreError::corrupt_value(format!("access rules in the history: {e}")))?;
        let acl = sync_core::acl::Acl::from_json(&value)
            .map_err(|e| StoreError::corrupt_value(format!("access rules in the history: {e}")))?;
        lists.push(acl);
    }
    Ok(if first == 0 { crate::AclSince::BeyondHistory(lists) } else { crate::AclSince::Changed(lists) })
}
