//! The writer thread: the only write connection, the sequence counter, and group commit
//! (every command already queued shares one transaction and one fsync; a refused command
//! writes nothing and does not fail the others).

use std::sync::mpsc;

use rusqlite::{Connection, ErrorCode, params};
use serde::Serialize;
use sync_core::acl::Acl;
use sync_core::{ChangeEvent, Timestamp};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::db;
use crate::params::{sql_int, sql_limit};
use crate::rows::{acl_history_json, rule_columns};
use crate::{ApiCredential, NewChange, StoreError, StoreResult, TokenRecord};

/// At most this many commands share one transaction, so the first of them is not kept
/// waiting behind an unbounded group.
const GROUP_MAX_COMMANDS: usize = 64;
/// A group stops taking commands once it holds this many changes.
const GROUP_MAX_CHANGES: usize = 4096;

/// A JSON encoding buffer larger than this is released after use rather than kept.
const MAX_RETAINED_BUFFER: usize = 1 << 20;

const INSERT_DOCUMENT: &str = concat!(
    "INSERT INTO documents (",
    document_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (id) DO NOTHING"
);

/// Sets only the columns a change can move: an UPDATE that names an indexed column
/// rewrites that index entry even when the value is the same (`documents_user_id` here).
/// Binds the same twelve values as the insert; `?2`, `?3` and `?9` are not used.
const UPDATE_DOCUMENT: &str = "UPDATE documents SET title = ?4, content = ?5, sync_revision = ?6, \
     vector_clock = ?7, content_hash = ?8, updated_at = ?10, deleted_at = ?11 \
     WHERE id = ?1 AND sync_revision = ?12";

/// The event's columns, then `owner_id`: the owner of its document, which the author
/// (`user_id`) need not be.
const INSERT_EVENT: &str = concat!(
    "INSERT INTO change_events (",
    event_columns!(),
    ", owner_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
);

/// Records a list of rules in the history, as the next version.
const RECORD_ACL_VERSION: &str = "INSERT INTO acl_versions (version, sequence, rules) \
     VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM acl_versions), ?1, ?2)";

/// Deletes the oldest lists beyond `?1` lists or `?2` bytes in all, never the newest.
const PRUNE_ACL_VERSIONS: &str = "DELETE FROM acl_versions WHERE version IN (\
     SELECT version FROM (SELECT version, \
         ROW_NUMBER() OVER (ORDER BY version DESC) AS n, \
         SUM(length(CAST(rules AS BLOB))) OVER (ORDER BY version DESC) AS total \
       FROM acl_versions) \
     WHERE n > 1 AND (n > ?1 OR total > ?2))";

/// A queued write and where its answer goes.
pub(super) struct Envelope {
    pub(super) request: Request,
    pub(super) responder: Responder,
    /// Held while queued; released when the writer takes the command.
    pub(super) _slot: OwnedSemaphorePermit,
}

/// A write the writer thread performs.
pub(super) enum Request {
    Append(Vec<NewChange>),
    EnsureUser { user_id: String, email: Option<String> },
    CreateApiCredential(ApiCredential),
    CreateToken(TokenRecord),
    AckCursor { user_id: String, client_id: String, sequence: i64 },
    SetAcl(Acl),
}

impl Request {
    /// How much the request weighs against [`GROUP_MAX_CHANGES`].
    fn weight(&self) -> usize {
        match self {
            Request::Append(batch) => batch.len(),
            _ => 1,
        }
    }
}

pub(super) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Where a command's answer goes: every command answers either sequences or nothing.
pub(super) enum Responder {
    Sequences(Reply<Vec<u64>>),
    Unit(Reply<()>),
}

impl Responder {
    fn send(self, result: StoreResult<Vec<u64>>) {
        // A send fails only when the caller stopped waiting; the write stands regardless.
        match self {
            Responder::Sequences(reply) => {
                let _ = reply.send(result);
            }
            Responder::Unit(reply) => {
                let _ = reply.send(result.map(drop));
            }
        }
    }
}

/// Why a group transaction did not commit.
enum GroupFailure {
    /// The command at this index was refused (conflict, duplicate, bad value, …); the
    /// transaction was rolled back, and the other commands may run again without it.
    Refused(usize, StoreError),
    /// The transaction could not begin or commit; no command of the group is written.
    Broken(StoreError),
}

/// The writer thread's state: the only write connection and the sequence counter.
pub(super) struct Writer {
    conn: Connection,
    /// The sequence the next committed change gets. Advanced only by commands that
    /// succeed, and reset when a group fails to commit, so sequences stay gap-free.
    next_sequence: u64,
    /// Reused JSON encoding buffers: content and vector clock, then the two patches.
    json: [Vec<u8>; 2],
}

impl Writer {
    /// The writer of `conn`, whose next committed change gets `next_sequence`.
    pub(super) fn new(conn: Connection, next_sequence: u64) -> Writer {
        Writer { conn, next_sequence, json: [Vec::new(), Vec::new()] }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Envelope>) {
        let mut group = Vec::with_capacity(GROUP_MAX_COMMANDS);
        while let Ok(first) = queue.recv() {
            let mut weight = first.request.weight();
            group.push(first);
            // Everything already waiting shares the transaction, and so the fsync.
            while group.len() < GROUP_MAX_COMMANDS && weight < GROUP_MAX_CHANGES {
                match queue.try_recv() {
                    Ok(next) => {
                        weight += next.request.weight();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
        tracing::debug!("the SQLite writer stopped");
    }

    /// Runs the commands of `group` in one transaction and answers each after the commit.
    ///
    /// Refusals are rare (the write path decides against current state), so the group
    /// runs without savepoints: a savepoint makes SQLite copy every page it touches into a
    /// statement journal, which cost about a sixth of the write time. When a command is
    /// refused, the transaction is rolled back, that command gets its error, and the rest
    /// run again without it. The commands before it see the same state again, so its
    /// refusal still stands; each retry removes one command, so this ends.
    fn commit_group(&mut self, group: &mut Vec<Envelope>) {
        // The queue slots are free from here: the commands have left the channel.
        let mut pending: Vec<(Request, Responder)> = group.drain(..).map(|e| (e.request, e.responder)).collect();
        while !pending.is_empty() {
            match self.try_group(&pending) {
                Ok(results) => {
                    for ((_, responder), result) in pending.into_iter().zip(results) {
                        responder.send(Ok(result));
                    }
                    return;
                }
                Err(GroupFailure::Refused(index, error)) => {
                    let (_, responder) = pending.remove(index);
                    responder.send(Err(error));
                }
                Err(GroupFailure::Broken(error)) => {
                    tracing::warn!(error = %error, "a write transaction failed");
                    for (_, responder) in pending {
                        responder.send(Err(error.clone()));
                    }
                    return;
                }
            }
        }
    }

    /// One attempt at a group: every command, then the commit. On failure nothing is
    /// written and the sequence counter is back where it was.
    fn try_group(&mut self, pending: &[(Request, Responder)]) -> Result<Vec<Vec<u64>>, GroupFailure> {
        let start = self.next_sequence;
        self.exec("BEGIN IMMEDIATE")
            .map_err(|e| GroupFailure::Broken(StoreError::database("cannot begin a write", e)))?;
        let mut results = Vec::with_capacity(pending.len());
        for (index, (request, _)) in pending.iter().enumerate() {
            let result = match request {
                Request::Append(batch) => self.append(batch),
                other => self.apply_small(other).map(|()| Vec::new()),
            };
            match result {
                Ok(sequences) => results.push(sequences),
                Err(error) => {
                    self.abandon(start);
                    return Err(GroupFailure::Refused(index, error));
                }
            }
        }
        if let Err(e) = self.exec("COMMIT") {
            self.abandon(start);
            return Err(GroupFailure::Broken(StoreError::database("commit failed", e)));
        }
        Ok(results)
    }

    /// Rolls the open transaction back and resets the sequence counter to `start`.
    fn abandon(&mut self, start: u64) {
        // SQLite has already rolled back after some errors (disk full, I/O).
        if !self.conn.is_autocommit()
            && let Err(e) = self.exec("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback after a failed write failed");
        }
        self.next_sequence = start;
    }

    /// Writes one batch of decided changes. Advances `next_sequence` only on success.
    fn append(&mut self, batch: &[NewChange]) -> StoreResult<Vec<u64>> {
        let Writer { conn, next_sequence, json } = self;
        let [first, second] = json;
        let mut insert_document = conn.prepare_cached(INSERT_DOCUMENT).map_err(db("preparing a document insert"))?;
        let mut update_document = conn.prepare_cached(UPDATE_DOCUMENT).map_err(db("preparing a document update"))?;
        let mut insert_event = conn.prepare_cached(INSERT_EVENT).map_err(db("preparing an event insert"))?;

        let mut sequence = *next_sequence;
        let mut sequences = Vec::with_capacity(batch.len());
        let mut conflicts: Vec<String> = Vec::new();
        for change in batch {
            let document = &change.document;
            let revision = sql_int(document.sync_revision, "revision")?;
            let content = encode(first, &document.content)?;
            let clock = encode(second, &document.vector_clock)?;
            let deleted_at = document.deleted_at.map(Timestamp::unix_millis);
            let expected = sql_int(change.expected_revision, "revision")?;
            let (created_at, updated_at) = (document.created_at.unix_millis(), document.updated_at.unix_millis());
            // One parameter array for both statements: the insert binds the first eleven.
            let values: [&dyn rusqlite::ToSql; 12] = [
                &document.id,
                &document.user_id,
                &document.collection,
                &document.title,
                &content,
                &revision,
                &clock,
                &document.content_hash,
                &created_at,
                &updated_at,
                &deleted_at,
                &expected,
            ];
            if change.expected_revision == 0 {
                let inserted = insert_document.execute(&values[..11]).map_err(db("inserting a document"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(document.id.clone()));
                }
            } else {
                let updated = update_document.execute(&values[..]).map_err(db("updating a document"))?;
                if updated == 0 {
                    // Keep checking the rest: the write path reloads every moved document at once.
                    if !conflicts.contains(&document.id) {
                        conflicts.push(document.id.clone());
                    }
                    continue;
                }
            }
            if !conflicts.is_empty() {
                // The batch will be refused; its events need not be written.
                continue;
            }

            let event = &change.event;
            let forward = event.forward_patch.as_ref().map(|p| encode(first, p)).transpose()?;
            let reverse = event.reverse_patch.as_ref().map(|p| encode(second, p)).transpose()?;
            let event_revision = sql_int(event.sync_revision, "revision")?;
            let inserted = insert_event.execute(params![
                sql_int(sequence, "sequence")?,
                event.event_id,
                event.document_id,
                event.collection,
                event.user_id,
                event.client_id,
                event.event_type.as_str(),
                forward,
                reverse,
                event_revision,
                event.created_at.unix_millis(),
                event.client_change_id,
                event.content_hash,
                document.user_id,
            ]);
            if let Err(e) = inserted {
                return Err(event_insert_error(e, event));
            }
            sequences.push(sequence);
            sequence += 1;
        }
        release_large(first);
        release_large(second);
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict(conflicts));
        }
        *next_sequence = sequence;
        Ok(sequences)
    }

    /// The writes other than change batches: one statement each.
    fn apply_small(&mut self, request: &Request) -> StoreResult<()> {
        match request {
            Request::Append(_) => Ok(()),
            Request::EnsureUser { user_id, email } => {
                let sql = "INSERT OR IGNORE INTO users (id, email, created_at) VALUES (?1, ?2, ?3)";
                self.conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![user_id, email, Timestamp::now().unix_millis()]))
                    .map_err(db("creating a user"))?;
                Ok(())
            }
            Request::CreateApiCredential(c) => {
                let sql = "INSERT INTO api_credentials (api_key, name, is_admin, created_at, revoked_at) \
                           VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (api_key) DO NOTHING";
                let inserted = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![c.api_key, c.name, c.is_admin, c.created_at, c.revoked_at]))
                    .map_err(db("creating an API credential"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(c.api_key.clone()));
                }
                Ok(())
            }
            Request::SetAcl(acl) => {
                self.conn.execute("DELETE FROM acl_rules", []).map_err(db("replacing the access rules"))?;
                let sql =
                    "INSERT INTO acl_rules (position, user_pattern, item, action, allow) VALUES (?1, ?2, ?3, ?4, ?5)";
                let mut insert = self.conn.prepare_cached(sql).map_err(db("replacing the access rules"))?;
                for (position, rule) in acl.rules().iter().enumerate() {
                    let (user, item, action, allow) = rule_columns(rule);
                    insert
                        .execute(params![sql_int(position as u64, "rule position")?, user, item, action, allow])
                        .map_err(db("replacing the access rules"))?;
                }
                // Changes earlier in this group commit with it, before the rules: the
                // newest sequence is the one before the next.
                let latest = sql_int(self.next_sequence.saturating_sub(1), "sequence")?;
                let rules = acl_history_json(acl)?;
                self.conn
                    .prepare_cached(RECORD_ACL_VERSION)
                    .and_then(|mut s| s.execute(params![latest, rules]))
                    .map_err(db("recording the access rules"))?;
                self.conn
                    .prepare_cached(PRUNE_ACL_VERSIONS)
                    .and_then(|mut s| {
                        s.execute(params![sql_limit(crate::ACL_HISTORY_VERSIONS), sql_limit(crate::ACL_HISTORY_BYTES)])
                    })
                    .map_err(db("trimming the access rules' history"))?;
                Ok(())
            }
            Request::CreateToken(t) => {
                let sql = "INSERT INTO tokens (id, user_id, hash, is_admin, created_at, expires_at) \
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING";
                let inserted = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| {
                        s.execute(params![t.id, t.user_id, t.hash, t.is_admin, t.created_at, t.expires_at])
                    })
                    .map_err(db("creating a token"))?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate(t.id.clone()));
                }
                Ok(())
            }
            Request::AckCursor { user_id, client_id, sequence } => {
                // The WHERE keeps a late or repeated acknowledgement from moving the cursor back.
                let sql = "INSERT INTO client_cursors (user_id, client_id, sequence, updated_at) VALUES (?1, ?2, ?3, ?4) \
                           ON CONFLICT (user_id, client_id) DO UPDATE \
                           SET sequence = excluded.sequence, updated_at = excluded.updated_at \
                           WHERE excluded.sequence >= client_cursors.sequence";
                self.conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![user_id, client_id, sequence, Timestamp::now().unix_millis()]))
                    .map_err(db("acknowledging a cursor"))?;
                Ok(())
            }
        }
    }

    /// Runs a statement without parameters or rows (transaction control).
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }
}

/// Names the unique constraint a change event broke.
fn event_insert_error(error: rusqlite::Error, event: &ChangeEvent) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &error
        && failure.code == ErrorCode::ConstraintViolation
    {
        // SQLite names the columns of the violated index: "UNIQUE constraint failed:
        // change_events.user_id, change_events.client_change_id".
        if message.contains("client_change_id") {
            let id = event.client_change_id.clone().unwrap_or_default();
            return StoreError::Duplicate(id);
        }
        if message.contains("event_id") {
            return StoreError::Duplicate(event.event_id.clone());
        }
        if message.contains("sync_revision") {
            // Another change already produced this revision of the document.
            return StoreError::Conflict(vec![event.document_id.clone()]);
        }
    }
    StoreError::database("inserting a change event", error)
}

/// Serialises `value` into `buffer` (reused across rows) and returns it as text.
fn encode<'b, T: Serialize + ?Sized>(buffer: &'b mut Vec<u8>, value: &T) -> StoreResult<&'b str> {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, value).map_err(|e| StoreError::database("encoding JSON", e))?;
    // serde_json writes UTF-8, so this never fails; the message is enough if it does.
    std::str::from_utf8(buffer).map_err(|e| StoreError::database_message(format!("encoding JSON: {e}")))
}

/// Drops a buffer that grew for one unusually large value, so it is not kept forever.
fn release_large(buffer: &mut Vec<u8>) {
    if buffer.capacity() > MAX_RETAINED_BUFFER {
        *buffer = Vec::new();
    }
}
