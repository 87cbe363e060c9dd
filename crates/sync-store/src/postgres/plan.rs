//! A group of appends as the arrays of one statement: the statement, the rows it binds,
//! and which append a refusal belongs to. A change the group itself contradicts refuses
//! its append before anything is sent.

use std::collections::HashMap;
use std::ops::Range;

use sqlx::Postgres;
use sync_core::{ChangeEvent, Document, Timestamp};

use super::committer::Command;
use super::to_json;
use crate::StoreError;
use crate::params::sql_int;

/// One group of appends as one statement. `$1`–`$12` are the documents (one row per
/// document, its state after the group, and the revision the database must hold before
/// it: 0 for a create); `$13`–`$24` are the events in order, and `$25` the owner of each
/// event's document (the author, `user_id`, may be another user).
///
/// `checked` raises (rolling everything back) when an update found another revision or
/// a create found the id taken. Only then does `counter` take the counter row — its
/// one-time filter waits for the check — so the row is locked for the event inserts and
/// the commit only. The events get `base + 1 …` in array order.
pub(super) const APPEND: &str = "\
WITH doc_in AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[],
                         $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[])
        AS t(id, user_id, collection, title, content, sync_revision, vector_clock, content_hash,
             created_at, updated_at, deleted_at, expected)
), updated AS (
    UPDATE documents AS d SET title = n.title,
        content = n.content::jsonb, sync_revision = n.sync_revision, vector_clock = n.vector_clock::jsonb,
        content_hash = n.content_hash, updated_at = n.updated_at, deleted_at = n.deleted_at
    FROM doc_in AS n
    WHERE n.expected > 0 AND d.id = n.id AND d.sync_revision = n.expected
    RETURNING d.id
), inserted AS (
    INSERT INTO documents (id, user_id, collection, title, content, sync_revision, vector_clock, content_hash,
                           created_at, updated_at, deleted_at)
    SELECT id, user_id, collection, title, content::jsonb, sync_revision, vector_clock::jsonb, content_hash,
           created_at, updated_at, deleted_at
    FROM doc_in WHERE expected = 0
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), checked AS (
    SELECT sync_refuse_moved(array_agg(n.id)) AS ok FROM doc_in AS n
    WHERE n.id NOT IN (SELECT id FROM updated UNION ALL SELECT id FROM inserted)
), counter AS (
    UPDATE counters SET value = value + cardinality($13::text[])
    WHERE name = 'change_events' AND (SELECT ok FROM checked)
    RETURNING value - cardinality($13::text[]) AS base
), events AS (
    INSERT INTO change_events (sequence, event_id, document_id, collection, user_id, client_id, event_type,
                               forward_patch, reverse_patch, sync_revision, created_at, client_change_id,
                               content_hash, owner_id)
    SELECT counter.base + e.ord, e.event_id, e.document_id, e.collection, e.user_id, e.client_id, e.event_type,
           e.forward_patch::jsonb, e.reverse_patch::jsonb, e.sync_revision, e.created_at, e.client_change_id,
           e.content_hash, e.owner_id
    FROM counter, UNNEST($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                         $19::text[], $20::text[], $21::int8[], $22::int8[], $23::text[], $24::text[],
                         $25::text[])
        WITH ORDINALITY AS e(event_id, document_id, collection, user_id, client_id, event_type, forward_patch,
                             reverse_patch, sync_revision, created_at, client_change_id, content_hash, owner_id,
                             ord)
)
SELECT base FROM counter";

/// A group of appends as the arrays of one statement.
pub(super) struct Plan<'a> {
    /// One row per document: its state after the group.
    docs: Vec<DocRow<'a>>,
    /// Events in order; event `k` gets sequence `base + k + 1`.
    pub(super) events: Vec<EventRow<'a>>,
    /// Which events belong to which append.
    ranges: Vec<Range<usize>>,
}

/// A document as the group leaves it.
struct DocRow<'a> {
    document: &'a Document,
    /// The revision the database must hold first (0: the id must be new).
    expected: i64,
    /// The append whose change touches the database's copy first: a refusal of this
    /// document is that append's.
    owner: usize,
    revision: i64,
    content: String,
    clock: String,
}

/// A change event to insert.
pub(super) struct EventRow<'a> {
    pub(super) event: &'a ChangeEvent,
    /// The owner of the event's document.
    owner: &'a str,
    revision: i64,
    forward: Option<String>,
    reverse: Option<String>,
}

impl<'a> Plan<'a> {
    /// Lays the appends out as rows. A change that the group itself contradicts (a
    /// revision another change of the group did not produce, an id or client change id
    /// used twice) refuses its append: `Err((index, error))`, like the SQLite backend,
    /// whose statements see the earlier changes of the transaction.
    pub(super) fn build(commands: &'a [Command]) -> Result<Plan<'a>, (usize, StoreError)> {
        let changes: usize = commands.iter().map(|c| c.batch.len()).sum();
        let mut plan = Plan { docs: Vec::new(), events: Vec::with_capacity(changes), ranges: Vec::new() };
        // Document id → (row, revision after the group's changes so far).
        let mut docs: HashMap<&'a str, (usize, u64)> = HashMap::new();
        let mut event_ids: HashMap<&'a str, ()> = HashMap::new();
        let mut client_changes: HashMap<(&'a str, &'a str), ()> = HashMap::new();
        for (index, command) in commands.iter().enumerate() {
            let refuse = |error| (index, error);
            let start = plan.events.len();
            let mut conflicts: Vec<String> = Vec::new();
            for change in &command.batch {
                let document = &change.document;
                let revision = sql_int(document.sync_revision, "revision").map_err(refuse)?;
                let content = to_json(&document.content).map_err(refuse)?;
                let clock = to_json(&document.vector_clock).map_err(refuse)?;
                match docs.get_mut(document.id.as_str()) {
                    Some((row, current)) => {
                        if change.expected_revision == 0 {
                            return Err(refuse(StoreError::Duplicate(document.id.clone())));
                        }
                        if change.expected_revision != *current {
                            // Keep checking: the write path reloads every moved document at once.
                            if !conflicts.contains(&document.id) {
                                conflicts.push(document.id.clone());
                            }
                            continue;
                        }
                        *current = document.sync_revision;
                        let slot = &mut plan.docs[*row];
                        slot.document = document;
                        slot.revision = revision;
                        slot.content = content;
                        slot.clock = clock;
                    }
                    None => {
                        let expected = sql_int(change.expected_revision, "revision").map_err(refuse)?;
                        docs.insert(&document.id, (plan.docs.len(), document.sync_revision));
                        plan.docs.push(DocRow { document, expected, owner: index, revision, content, clock });
                    }
                }
                let event = &change.event;
                if event_ids.insert(&event.event_id, ()).is_some() {
                    return Err(refuse(StoreError::Duplicate(event.event_id.clone())));
                }
                if let Some(ccid) = &event.client_change_id
                    && client_changes.insert((&event.user_id, ccid), ()).is_some()
                {
                    return Err(refuse(StoreError::Duplicate(ccid.clone())));
                }
                plan.events.push(EventRow {
                    event,
                    owner: &document.user_id,
                    revision: sql_int(event.sync_revision, "revision").map_err(refuse)?,
                    forward: event.forward_patch.as_ref().map(to_json).transpose().map_err(refuse)?,
                    reverse: event.reverse_patch.as_ref().map(to_json).transpose().map_err(refuse)?,
                });
            }
            if !conflicts.is_empty() {
                return Err(refuse(StoreError::Conflict(conflicts)));
            }
            plan.ranges.push(start..plan.events.len());
        }
        Ok(plan)
    }

    /// The sequences of each append, given the sequence before the first event.
    pub(super) fn sequences(&self, base: i64) -> Vec<Vec<u64>> {
        let base = base.unsigned_abs();
        self.ranges.iter().map(|range| range.clone().map(|k| base + k as u64 + 1).collect()).collect()
    }

    /// The appends refused because these documents moved, by index, in index order: an
    /// update that found another revision is a `Conflict` naming every such document of
    /// the append; a create that found the id taken is a `Duplicate`.
    pub(super) fn refusals(&self, moved: &[String]) -> Vec<(usize, StoreError)> {
        let mut by_owner: std::collections::BTreeMap<usize, (Vec<String>, Option<String>)> = Default::default();
        for row in self.docs.iter().filter(|row| moved.contains(&row.document.id)) {
            let entry = by_owner.entry(row.owner).or_default();
            if row.expected == 0 {
                entry.1.get_or_insert_with(|| row.document.id.clone());
            } else {
                entry.0.push(row.document.id.clone());
            }
        }
        by_owner
            .into_iter()
            .map(|(owner, (conflicts, duplicate))| match duplicate {
                Some(id) => (owner, StoreError::Duplicate(id)),
                None => (owner, StoreError::Conflict(conflicts)),
            })
            .collect()
    }

    /// Binds the arrays of [`APPEND`].
    pub(super) fn bind<'q>(&'q self, query: AppendQuery<'q>) -> AppendQuery<'q> {
        let docs = &self.docs;
        let events = &self.events;
        let texts = |values: Vec<&'q str>| values;
        query
            .bind(texts(docs.iter().map(|r| r.document.id.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.user_id.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.collection.as_str()).collect()))
            .bind(docs.iter().map(|r| r.document.title.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(texts(docs.iter().map(|r| r.content.as_str()).collect()))
            .bind(docs.iter().map(|r| r.revision).collect::<Vec<i64>>())
            .bind(texts(docs.iter().map(|r| r.clock.as_str()).collect()))
            .bind(texts(docs.iter().map(|r| r.document.content_hash.as_str()).collect()))
            .bind(docs.iter().map(|r| r.document.created_at.unix_millis()).collect::<Vec<i64>>())
            .bind(docs.iter().map(|r| r.document.updated_at.unix_millis()).collect::<Vec<i64>>())
            .bind(docs.iter().map(|r| r.document.deleted_at.map(Timestamp::unix_millis)).collect::<Vec<Option<i64>>>())
            .bind(docs.iter().map(|r| r.expected).collect::<Vec<i64>>())
            .bind(texts(events.iter().map(|r| r.event.event_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.document_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.collection.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.user_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.client_id.as_str()).collect()))
            .bind(texts(events.iter().map(|r| r.event.event_type.as_str()).collect()))
            .bind(events.iter().map(|r| r.forward.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.reverse.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.revision).collect::<Vec<i64>>())
            .bind(events.iter().map(|r| r.event.created_at.unix_millis()).collect::<Vec<i64>>())
            .bind(events.iter().map(|r| r.event.client_change_id.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(events.iter().map(|r| r.event.content_hash.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(texts(events.iter().map(|r| r.owner).collect()))
    }
}

/// The group statement with its arguments.
pub(super) type AppendQuery<'q> = sqlx::query::QueryScalar<'q, Postgres, i64, sqlx::postgres::PgArguments>;
