//! Running document and change event queries, and decoding their rows: a stored value
//! that cannot be decoded is `Corrupt`, naming its record and column.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Params, Row};
use serde::de::DeserializeOwned;
use sync_core::{ChangeEvent, Document};

use super::db;
use crate::rows::{self, ColumnError, Columns};
use crate::{StoreError, StoreResult};

/// Runs a document query.
pub(super) fn query_documents(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<Vec<Document>> {
    let mut statement = conn.prepare_cached(sql).map_err(db("preparing a document query"))?;
    let mut rows = statement.query(params).map_err(db("querying documents"))?;
    let mut documents = Vec::new();
    while let Some(row) = rows.next().map_err(db("reading documents"))? {
        documents.push(document_from_row(row)?);
    }
    Ok(documents)
}

/// Runs a change event query.
pub(super) fn query_events(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<Vec<ChangeEvent>> {
    let mut statement = conn.prepare_cached(sql).map_err(db("preparing an event query"))?;
    let mut rows = statement.query(params).map_err(db("querying change events"))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(db("reading change events"))? {
        events.push(event_from_row(row)?);
    }
    Ok(events)
}

pub(super) fn document_from_row(row: &Row<'_>) -> StoreResult<Document> {
    rows::document(row)
}

pub(super) fn event_from_row(row: &Row<'_>) -> StoreResult<ChangeEvent> {
    rows::event(row, 0)
}

impl Columns for Row<'_> {
    fn text(&self, index: usize) -> Result<String, ColumnError> {
        Ok(self.get(index)?)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, ColumnError> {
        Ok(self.get(index)?)
    }

    fn integer(&self, index: usize) -> Result<i64, ColumnError> {
        Ok(self.get(index)?)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, ColumnError> {
        Ok(self.get(index)?)
    }

    /// Parsed straight from SQLite's buffer.
    fn json<T: DeserializeOwned>(&self, index: usize) -> Result<T, ColumnError> {
        Ok(serde_json::from_str(self.get_ref(index)?.as_str()?)?)
    }

    fn optional_json<T: DeserializeOwned>(&self, index: usize) -> Result<Option<T>, ColumnError> {
        match self.get_ref(index)? {
            ValueRef::Null => Ok(None),
            value => Ok(Some(serde_json::from_str(value.as_str()?)?)),
        }
    }
}

/// The newest committed sequence (0 when the log is empty).
pub(super) fn latest_sequence(conn: &Connection) -> StoreResult<u64> {
    // MAX of the rowid is answered from the end of the table's b-tree.
    let latest: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(sequence), 0) FROM change_events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db("reading the latest sequence"))?;
    u64::try_from(latest).map_err(|_| StoreError::corrupt_value(format!("negative sequence {latest}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::open::migrate;

    #[test]
    fn list_queries_use_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("p.db")).expect("open");
        migrate(&mut conn).expect("migrate");
        let plan = |sql: &str| -> String {
            let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("prepare");
            let rows = s.query_map([], |r| r.get::<_, String>(3)).expect("query");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let find = concat!(
            "SELECT sequence FROM change_events WHERE user_id = 'u'",
            " AND client_change_id IN (SELECT value FROM json_each('[\"a\"]'))"
        );
        assert!(plan(find).contains("change_events_client_change"), "{}", plan(find));
        let load = "SELECT id FROM documents WHERE id IN (SELECT value FROM json_each('[\"a\"]'))";
        assert!(plan(load).contains("sqlite_autoindex_documents_1 (id=?)"), "{}", plan(load));
    }
}
