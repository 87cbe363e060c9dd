//! Running document and change event queries, and decoding their rows: a stored value
//! that cannot be decoded is `Corrupt`, naming its record and column. The reads of a
//! scope (`changes_since`, `list_documents`) are built here from the arms `scope` chose.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, Params, Row, params_from_iter};
use serde::de::DeserializeOwned;
use sync_core::acl::ReadView;
use sync_core::{ChangeEvent, Document};

use super::db;
use crate::params::{sql_bound, sql_limit};
use crate::rows::{self, ColumnError, Columns, corrupt};
use crate::scope::{
    FeedWalk, ListWalk, Selection, Stop, Table, arm_conditions, dense_threshold, in_collections, window,
};
use crate::{ChangePage, StoreError, StoreResult};

/// A read of a scope as one statement, run once per chunk: `?1` the key to read after,
/// `?2` the collections filter (a JSON list, or NULL for every collection), `?3` the
/// chunk's size, `?4`… the values of the arms.
///
/// Each arm is a SELECT of its own and the arms are one compound `UNION ALL … ORDER BY
/// key LIMIT`: SQLite runs a compound with an ORDER BY as a merge of its arms, each read
/// in key order from its index (a co-routine), and stops them all at the LIMIT. A row
/// two arms select comes twice, one after the other; the walk skips the repeat.
pub(super) struct ScopedRead {
    sql: String,
    values: Vec<String>,
    /// A change feed with arms that are not read in sequence order: the same read in
    /// windows of the log, for when those arms are dense.
    windowed: Option<Windowed>,
}

/// A change feed read in windows of sequences, and the count that chooses it.
struct Windowed {
    /// The arms of [`ScopedRead::sql`], each limited to `sequence <= ?N` (the last
    /// parameter, after the arms' values); the unordered arms scan the log in sequence
    /// order through `change_events_sequence_names` (its rows are a few names, the
    /// table's hold the patches).
    sql: String,
    /// The unordered arms' rows, counted up to `?1`: `?2`… their values.
    probe: String,
    probe_values: Vec<String>,
}

/// The rows of the sequences a [`ScopedRead::change_keys`] chunk chose (`?1`, a JSON
/// list): the event columns, then `owner_id`.
const CHANGES_BY_SEQUENCE: &str = concat!(
    "SELECT ",
    event_columns!(),
    ", owner_id FROM change_events WHERE sequence IN (SELECT value FROM json_each(?1)) ORDER BY sequence"
);

impl ScopedRead {
    /// The sequences of a chunk of `change_events`, to be read with
    /// [`CHANGES_BY_SEQUENCE`]. An arm that is a range of ids is read to its end and
    /// sorted on every chunk; selecting only the sequence (in every index, as the rowid)
    /// makes that an index-only read instead of a table lookup per row. The chosen rows
    /// are then read by sequence, and only those the reader may see are decoded.
    pub(super) fn change_keys(selection: &Selection, filtered: bool) -> ScopedRead {
        let select = "SELECT sequence FROM change_events WHERE sequence > ?1";
        let mut read = ScopedRead::new(selection, filtered, Table::Changes, select, "sequence");
        let Selection::Arms(arms) = selection else { return read };
        let unordered: Vec<_> = arms.iter().filter(|arm| arm.is_unordered()).cloned().collect();
        if unordered.is_empty() {
            return read;
        }
        let bound = 4 + read.values.len();
        let (conditions, _) = arm_conditions(arms, Table::Changes, 4, '?');
        let filter = " AND (?2 IS NULL OR collection IN (SELECT value FROM json_each(?2)))";
        let windowed: Vec<String> = arms
            .iter()
            .zip(conditions)
            .map(|(arm, condition)| {
                let table = if arm.is_unordered() {
                    "change_events INDEXED BY change_events_sequence_names"
                } else {
                    "change_events"
                };
                let filter = if filtered && arm.needs_collection_filter() { filter } else { "" };
                format!(
                    "SELECT sequence FROM {table} WHERE sequence > ?1 AND sequence <= ?{bound} AND {condition}{filter}"
                )
            })
            .collect();
        let (conditions, probe_values) = arm_conditions(&unordered, Table::Changes, 2, '?');
        let counts: Vec<String> = conditions
            .iter()
            .map(|condition| format!("(SELECT COUNT(*) FROM (SELECT 1 FROM change_events WHERE {condition} LIMIT ?1))"))
            .collect();
        read.windowed = Some(Windowed {
            sql: format!("{} ORDER BY sequence LIMIT ?3", windowed.join(" UNION ALL ")),
            probe: format!("SELECT {}", counts.join(" + ")),
            probe_values,
        });
        read
    }

    /// The read of `documents`: the document columns.
    pub(super) fn documents(selection: &Selection, filtered: bool) -> ScopedRead {
        let select = concat!("SELECT ", document_columns!(), " FROM documents WHERE id > ?1");
        ScopedRead::new(selection, filtered, Table::Documents, select, "id")
    }

    /// `filtered`: whether the read has a collections filter. Without one, no arm
    /// mentions `collection` beyond its own condition, so an arm on an id range stays an
    /// index-only read.
    fn new(selection: &Selection, filtered: bool, table: Table, select: &str, key: &str) -> ScopedRead {
        let filter = " AND (?2 IS NULL OR collection IN (SELECT value FROM json_each(?2)))";
        let (arms, values) = match selection {
            Selection::All => (vec![format!("{select}{}", if filtered { filter } else { "" })], Vec::new()),
            Selection::Arms(arms) => {
                let (conditions, values) = arm_conditions(arms, table, 4, '?');
                let arms = arms
                    .iter()
                    .zip(conditions)
                    .map(|(arm, condition)| {
                        let filter = if filtered && arm.needs_collection_filter() { filter } else { "" };
                        format!("{select} AND {condition}{filter}")
                    })
                    .collect();
                (arms, values)
            }
        };
        let sql = format!("{} ORDER BY {key} LIMIT ?3", arms.join(" UNION ALL "));
        ScopedRead { sql, values, windowed: None }
    }

    fn parameters(&self, after: Value, collections: Option<&str>, chunk: usize) -> Vec<Value> {
        let mut parameters = Vec::with_capacity(3 + self.values.len());
        parameters.push(after);
        parameters.push(collections.map_or(Value::Null, |c| Value::Text(c.to_owned())));
        parameters.push(Value::Integer(sql_limit(chunk)));
        parameters.extend(self.values.iter().map(|v| Value::Text(v.clone())));
        parameters
    }
}

/// What a scoped read filters by: the reader's view and the collections filter (as a
/// list, and as the JSON parameter the SQL reads).
pub(super) struct Filter<'a> {
    pub(super) view: &'a ReadView,
    pub(super) collections: Option<&'a [String]>,
    pub(super) collections_json: Option<&'a str>,
}

impl Filter<'_> {
    fn admits(&self, owner: &str, collection: &str, id: &str) -> bool {
        in_collections(self.collections, collection) && self.view.may_read(owner, collection, id)
    }
}

/// One `changes_since` page, read in `conn`'s snapshot (the caller holds a read
/// transaction, so every chunk and the newest sequence agree).
pub(super) fn read_changes(
    conn: &Connection,
    keys: &ScopedRead,
    filter: &Filter<'_>,
    after: u64,
    limit: usize,
) -> StoreResult<ChangePage> {
    let mut fetch = conn.prepare_cached(CHANGES_BY_SEQUENCE).map_err(db("preparing a change feed query"))?;
    let mut walk = FeedWalk::new(after, limit);
    // A dense share that no index gives in sequence order: scan the log in windows.
    let windows = match &keys.windowed {
        Some(windowed) => {
            let latest = latest_sequence(conn)?;
            let threshold = dense_threshold(walk.chunk(), latest.saturating_sub(after));
            let mut parameters = vec![Value::Integer(i64::try_from(threshold).unwrap_or(i64::MAX))];
            parameters.extend(windowed.probe_values.iter().map(|v| Value::Text(v.clone())));
            let count: i64 = conn
                .prepare_cached(&windowed.probe)
                .and_then(|mut s| s.query_row(params_from_iter(parameters), |r| r.get(0)))
                .map_err(db("counting a change feed's candidates"))?;
            (count.unsigned_abs() >= threshold).then_some((windowed, latest))
        }
        None => None,
    };
    let sql = windows.map_or(&keys.sql, |(windowed, _)| &windowed.sql);
    let mut choose = conn.prepare_cached(sql).map_err(db("preparing a change feed query"))?;
    let mut chosen: Vec<u64> = Vec::new();
    let stop = 'walk: loop {
        let asked = walk.chunk();
        let mut parameters = keys.parameters(Value::Integer(sql_bound(walk.cursor())), filter.collections_json, asked);
        let upper = windows.map(|(_, latest)| walk.cursor().saturating_add(window(asked)).min(latest));
        if let Some(upper) = upper {
            parameters.push(Value::Integer(sql_bound(upper)));
        }
        let mut rows = choose.query(params_from_iter(parameters)).map_err(db("querying change events"))?;
        let mut count = 0;
        chosen.clear();
        while let Some(row) = rows.next().map_err(db("reading change events"))? {
            count += 1;
            let sequence = row.unsigned(0).map_err(|e| corrupt("change event sequence".to_owned(), e))?;
            if walk.candidate(sequence) {
                chosen.push(sequence);
            }
        }
        if !chosen.is_empty() {
            let list =
                serde_json::to_string(&chosen).map_err(|e| StoreError::database("encoding a list parameter", e))?;
            let mut rows = fetch.query([list]).map_err(db("querying change events"))?;
            while let Some(row) = rows.next().map_err(db("reading change events"))? {
                let sequence = row.unsigned(0).map_err(|e| corrupt("change event sequence".to_owned(), e))?;
                let what = |column: &str| format!("change event {sequence}: {column}");
                let id = column_str(row, 2, || what("document_id"))?;
                let collection = column_str(row, 3, || what("collection"))?;
                let owner = column_str(row, 13, || what("owner_id"))?;
                // The patches are decoded only for the rows the reader may see.
                if filter.admits(owner, collection, id) && walk.keep(event_from_row(row)?) {
                    break 'walk Stop::Full;
                }
            }
        }
        let stop = match (upper, windows) {
            // A short window was read to its end.
            (Some(upper), Some((_, latest))) if count < asked => walk.window_read(upper, latest),
            _ => walk.after_chunk(count, asked),
        };
        if let Some(stop) = stop {
            break stop;
        }
    };
    let latest = match (&stop, windows) {
        (Stop::Exhausted, Some((_, latest))) => latest,
        (Stop::Exhausted, None) => latest_sequence(conn)?,
        _ => 0,
    };
    Ok(walk.finish(stop, latest))
}

/// One `list_documents` page.
pub(super) fn read_documents(
    conn: &Connection,
    read: &ScopedRead,
    filter: &Filter<'_>,
    after_id: String,
    limit: usize,
) -> StoreResult<Vec<Document>> {
    let mut walk = ListWalk::new(after_id, limit);
    if limit == 0 {
        return Ok(walk.finish());
    }
    let mut statement = conn.prepare_cached(&read.sql).map_err(db("preparing a document list query"))?;
    loop {
        let asked = walk.chunk();
        let parameters = read.parameters(Value::Text(walk.cursor().to_owned()), filter.collections_json, asked);
        let mut rows = statement.query(params_from_iter(parameters)).map_err(db("querying documents"))?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(db("reading documents"))? {
            count += 1;
            let id = column_str(row, 0, || "documents.id".to_owned())?;
            if !walk.candidate(id) {
                continue;
            }
            let what = |column: &str| format!("document {id}: {column}");
            let owner = column_str(row, 1, || what("user_id"))?;
            let collection = column_str(row, 2, || what("collection"))?;
            // The content is decoded only for the documents the reader may see.
            if filter.admits(owner, collection, id) && walk.keep(document_from_row(row)?) {
                return Ok(walk.finish());
            }
        }
        if count < asked {
            return Ok(walk.finish());
        }
    }
}

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

/// A text column read in place, for the columns a row is filtered by.
fn column_str<'r>(row: &'r Row<'_>, index: usize, what: impl FnOnce() -> String) -> StoreResult<&'r str> {
    row.get_ref(index)
        .map_err(ColumnError::from)
        .and_then(|value| value.as_str().map_err(ColumnError::from))
        .map_err(|e| corrupt(what(), e))
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
    use sync_core::acl::{Acl, Rule};

    use super::*;
    use crate::scope::select;
    use crate::sqlite::open::migrate;

    #[test]
    fn list_queries_use_the_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("p.db")).expect("open");
        migrate(&mut conn).expect("migrate");
        let plan = |sql: &str| -> String {
            let mut s = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("prepare");
            // Parameters stay NULL: the plan does not depend on their values.
            let nulls = std::iter::repeat_n(Value::Null, s.parameter_count());
            let rows = s.query_map(params_from_iter(nulls), |r| r.get::<_, String>(3)).expect("query");
            rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
        };
        let find = concat!(
            "SELECT sequence FROM change_events WHERE user_id = 'u'",
            " AND client_change_id IN (SELECT value FROM json_each('[\"a\"]'))"
        );
        assert!(plan(find).contains("change_events_client_change"), "{}", plan(find));
        let load = "SELECT id FROM documents WHERE id IN (SELECT value FROM json_each('[\"a\"]'))";
        assert!(plan(load).contains("sqlite_autoindex_documents_1 (id=?)"), "{}", plan(load));

        // A reader's own rows, a shared collection, a shared document, a shared id
        // prefix: each arm is read through its index, and none scans the table.
        let rules = [("bob", "doc:tasks/*"), ("bob", "doc:notes/n1"), ("bob", "task-*"), ("bob", "doc:team*")];
        let rules = rules.iter().map(|(user, item)| Rule::parse(user, item, "read", true).expect("rule")).collect();
        let view = Acl::new(rules).expect("rules").read_view("bob");
        let selection = select(&view, None);
        let changes = plan(&ScopedRead::change_keys(&selection, false).sql);
        for index in [
            "change_events_owner_sequence (owner_id=? AND sequence>?)",
            "change_events_collection_sequence (collection=? AND sequence>?)",
            "change_events_document_revision (document_id=?)",
            "COVERING INDEX change_events_document_revision (document_id>? AND document_id<?)",
            "change_events_collection_sequence (collection>? AND collection<?)",
            "MERGE (UNION ALL)",
        ] {
            assert!(changes.contains(index), "{index} in {changes}");
        }
        assert!(!changes.contains("SCAN change_events"), "{changes}");
        // Read in windows of the log: the id and collection prefixes through the index in
        // sequence order, the others through their own indexes.
        let keys = ScopedRead::change_keys(&selection, false);
        let windowed = keys.windowed.as_ref().expect("prefix shares have a windowed read");
        let windows = plan(&windowed.sql);
        let scan = "COVERING INDEX change_events_sequence_names (sequence>? AND sequence<?)";
        assert_eq!(windows.matches(scan).count(), 2, "{windows}");
        let own = "change_events_owner_sequence (owner_id=? AND sequence>? AND sequence<?)";
        assert!(windows.contains(own), "{windows}");
        assert!(!windows.contains("SCAN change_events"), "{windows}");
        let probe = plan(&windowed.probe);
        assert_eq!(probe.matches("COVERING INDEX change_events_document_revision").count(), 1, "{probe}");
        let documents = plan(&ScopedRead::documents(&selection, false).sql);
        for index in [
            "documents_user_id (user_id=? AND id>?)",
            "documents_collection_id (collection=? AND id>?)",
            "MERGE (UNION ALL)",
        ] {
            assert!(documents.contains(index), "{index} in {documents}");
        }
        assert!(!documents.contains("SCAN documents"), "{documents}");
        // A reader of nothing but their own: one arm, no merge.
        let own = plan(&ScopedRead::change_keys(&select(&ReadView::owner_only("ann"), None), true).sql);
        assert!(own.contains("change_events_owner_sequence") && !own.contains("SCAN change_events"), "{own}");
    }
}
