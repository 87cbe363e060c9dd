//! The reads of a scope (`changes_since`, `list_documents`), built from the arms
//! `scope` chose: one statement per chunk, its keys chosen first and only those rows read.

use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Postgres, Row};
use sync_core::Document;
use sync_core::acl::ReadView;

use super::decode::document_from_row;
use super::{db, unsigned};
use crate::params::{sql_bound, sql_limit};
use crate::rows::{self, corrupt};
use crate::scope::{FeedWalk, ListWalk, Selection, Stop, Table, arm_conditions, in_collections};
use crate::{ChangePage, StoreResult};

/// A read of a scope as one statement, run once per chunk: `$1` the key to read after,
/// `$2` the collections filter (NULL for every collection), `$3` the chunk's size, `$4`…
/// the values of the arms.
///
/// Each arm is ordered by the key and limited to the chunk's size itself, and the arms
/// are `UNION ALL`ed in a subquery ordered by the key with the same LIMIT: PostgreSQL
/// reads them as a Merge Append of index scans in key order and stops at the LIMIT. (An
/// arm with a WHERE cannot be pulled up into the append, so without its own ORDER BY and
/// LIMIT PostgreSQL read every later row of each arm and sorted them: 27 ms a chunk of
/// 501 in a shared collection of 100,000 changes, against 0.25 ms this way.) The
/// keys go into an array first (with a row two arms select twice, once per arm: the
/// array's length is how many candidates the chunk read), and only the rows of those keys
/// are then read and their JSON turned into text (see `changes_since` in mod.rs for why).
pub(super) struct ScopedRead {
    /// Built from constant text and numbered parameters only: every value is bound.
    sql: Arc<str>,
    values: Vec<String>,
}

impl ScopedRead {
    /// The read of `change_events`: the newest sequence (the counter), the number of
    /// candidates, then the event columns and `owner_id` (NULL when there are none).
    pub(super) fn changes(selection: &Selection, filtered: bool) -> ScopedRead {
        let keys = keys(selection, filtered, Table::Changes, "sequence", "change_events", "sequence > $1");
        let sql = format!(
            concat!(
                "SELECT c.value, cardinality(p.keys), e.* FROM counters AS c CROSS JOIN ({}) AS p",
                " LEFT JOIN LATERAL (SELECT ",
                event_columns!(),
                ", owner_id FROM change_events WHERE sequence = ANY(p.keys)) AS e ON TRUE",
                " WHERE c.name = 'change_events' ORDER BY e.sequence"
            ),
            keys.0
        );
        ScopedRead { sql: sql.into(), values: keys.1 }
    }

    /// The read of `documents`: the document columns (NULL when there are none), then the
    /// number of candidates.
    pub(super) fn documents(selection: &Selection, filtered: bool) -> ScopedRead {
        let keys = keys(selection, filtered, Table::Documents, "id", "documents", "id > $1");
        let sql = format!(
            concat!(
                "SELECT d.*, cardinality(p.keys) FROM ({}) AS p LEFT JOIN LATERAL (SELECT ",
                document_columns!(),
                " FROM documents WHERE id = ANY(p.keys)) AS d ON TRUE ORDER BY d.id"
            ),
            keys.0
        );
        ScopedRead { sql: sql.into(), values: keys.1 }
    }
}

/// `SELECT ARRAY(…) AS keys`: the chunk's keys in order, and the values of the arms.
/// `filtered`: whether the read has a collections filter (without one, no arm mentions
/// `collection` beyond its own condition, so an arm on an id range can be index-only).
fn keys(
    selection: &Selection,
    filtered: bool,
    table: Table,
    key: &str,
    from: &str,
    after: &str,
) -> (String, Vec<String>) {
    let filter = " AND ($2::text[] IS NULL OR collection = ANY($2::text[]))";
    let select = format!("SELECT {key} FROM {from} WHERE {after}");
    let (arms, values) = match selection {
        Selection::All => (vec![format!("{select}{}", if filtered { filter } else { "" })], Vec::new()),
        Selection::Arms(arms) => {
            let (conditions, values) = arm_conditions(arms, table, 4, '$');
            let arms = arms
                .iter()
                .zip(conditions)
                .map(|(arm, condition)| {
                    let filter = if filtered && arm.needs_collection_filter() { filter } else { "" };
                    format!("({select} AND {condition}{filter} ORDER BY {key} LIMIT $3)")
                })
                .collect();
            (arms, values)
        }
    };
    let sql =
        format!("SELECT ARRAY(SELECT {key} FROM ({}) AS u ORDER BY {key} LIMIT $3) AS keys", arms.join(" UNION ALL "));
    (sql, values)
}

/// What a scoped read filters by: the reader's view and the collections filter.
pub(super) struct Filter<'a> {
    pub(super) view: &'a ReadView,
    pub(super) collections: Option<&'a [String]>,
}

impl Filter<'_> {
    fn admits(&self, owner: &str, collection: &str, id: &str) -> bool {
        in_collections(self.collections, collection) && self.view.may_read(owner, collection, id)
    }
}

/// One `changes_since` page. Each chunk is one statement, and so one snapshot with its
/// counter; a later chunk's snapshot holds everything an earlier one saw (sequences
/// become visible in order), so the last chunk's counter is the page's newest sequence.
pub(super) async fn read_changes(
    pool: &PgPool,
    read: &ScopedRead,
    filter: &Filter<'_>,
    after: u64,
    limit: usize,
) -> StoreResult<ChangePage> {
    let mut walk = FeedWalk::new(after, limit);
    let (stop, latest) = 'walk: loop {
        let asked = walk.chunk();
        let query = sqlx::query(AssertSqlSafe(Arc::clone(&read.sql))).bind(sql_bound(walk.cursor()));
        let rows = bind(query, filter, asked, &read.values).fetch_all(pool).await.map_err(db("reading changes"))?;
        let mut latest = 0;
        let mut count = 0;
        for row in &rows {
            let value: i64 = row.try_get(0).map_err(|e| corrupt("the change_events counter".to_owned(), e))?;
            latest = unsigned(value, "latest sequence")?;
            let candidates: i32 = row.try_get(1).map_err(|e| corrupt("the candidate count".to_owned(), e))?;
            count = usize::try_from(candidates).unwrap_or_default();
            let sequence: Option<i64> = row.try_get(2).map_err(|e| corrupt("change event sequence".to_owned(), e))?;
            let Some(sequence) = sequence else { continue };
            let sequence = unsigned(sequence, "change event sequence")?;
            if !walk.candidate(sequence) {
                continue;
            }
            let what = |column: &str| format!("change event {sequence}: {column}");
            let id = column_str(row, 4, || what("document_id"))?;
            let collection = column_str(row, 5, || what("collection"))?;
            let owner = column_str(row, 15, || what("owner_id"))?;
            // The patches are decoded only for the rows the reader may see.
            if filter.admits(owner, collection, id) && walk.keep(rows::event(row, 2)?) {
                break 'walk (Stop::Full, latest);
            }
        }
        if let Some(stop) = walk.after_chunk(count, asked) {
            break (stop, latest);
        }
    };
    Ok(walk.finish(stop, latest))
}

/// One `list_documents` page.
pub(super) async fn read_documents(
    pool: &PgPool,
    read: &ScopedRead,
    filter: &Filter<'_>,
    after_id: String,
    limit: usize,
) -> StoreResult<Vec<Document>> {
    let mut walk = ListWalk::new(after_id, limit);
    if limit == 0 {
        return Ok(walk.finish());
    }
    loop {
        let asked = walk.chunk();
        let query = sqlx::query(AssertSqlSafe(Arc::clone(&read.sql))).bind(walk.cursor().to_owned());
        let rows = bind(query, filter, asked, &read.values).fetch_all(pool).await.map_err(db("listing documents"))?;
        let mut count = 0;
        for row in &rows {
            let candidates: i32 = row.try_get(11).map_err(|e| corrupt("the candidate count".to_owned(), e))?;
            count = usize::try_from(candidates).unwrap_or_default();
            let id: Option<&str> = row.try_get(0).map_err(|e| corrupt("documents.id".to_owned(), e))?;
            let Some(id) = id else { continue };
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

/// A statement and the parameters bound so far.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Binds the parameters of a [`ScopedRead`] after `$1`, which `query` has.
fn bind<'q>(query: PgQuery<'q>, filter: &Filter<'_>, chunk: usize, values: &'q [String]) -> PgQuery<'q> {
    let mut query = query.bind(filter.collections.map(<[String]>::to_vec)).bind(sql_limit(chunk));
    for value in values {
        query = query.bind(value.as_str());
    }
    query
}

/// A text column read in place, for the columns a row is filtered by.
fn column_str(row: &PgRow, index: usize, what: impl FnOnce() -> String) -> StoreResult<&str> {
    row.try_get(index).map_err(|e| corrupt(what(), e))
}
