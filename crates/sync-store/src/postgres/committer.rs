//! The committer: one task per store that writes every queued append, a group at a
//! time, as one statement on its own connection; a refused append writes nothing and does
//! not fail the appends grouped with it.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError};
use sync_core::ChangeEvent;
use tokio::sync::{mpsc, oneshot};

use super::ACQUIRE_TIMEOUT;
use super::plan::{APPEND, Plan};
use crate::{NewChange, StoreError, StoreResult};

/// At most this many appends share one statement, so the first of them is not kept
/// waiting behind an unbounded group.
const GROUP_MAX_COMMANDS: usize = 64;
/// A group stops taking appends once it holds this many changes.
const GROUP_MAX_CHANGES: usize = 4096;
/// A group statement that has not answered after this long is abandoned (its connection
/// closed) and reported as failed; the database rolls it back when the connection drops.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a group is tried again after a deadlock or serialization failure (both leave
/// nothing written).
const TRANSIENT_RETRIES: usize = 3;
/// The SQLSTATE `sync_refuse_moved` raises when expected revisions did not hold.
const MOVED_SQLSTATE: &str = "SY409";

/// A queued append and where its answer goes.
pub(super) struct Command {
    pub(super) batch: Vec<NewChange>,
    pub(super) reply: oneshot::Sender<StoreResult<Vec<u64>>>,
}

impl Command {
    fn answer(self, result: StoreResult<Vec<u64>>) {
        // A send fails only when the caller stopped waiting; the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// The loop that writes every append, one group at a time, on its own connection.
pub(super) struct Committer {
    /// Where to connect.
    connect: PgConnectOptions,
    /// Kept between groups; dropped after a connection error, so the next group opens a
    /// fresh one (while the server is down, that fails at once and the group with it).
    conn: Option<PgConnection>,
}

/// Why a group statement failed, as far as the committer must act on it.
enum Failure {
    /// These documents did not hold their expected revisions (or their ids were taken).
    Moved(Vec<String>),
    /// Deadlock or serialization failure: nothing was written; try again.
    Transient(StoreError),
    /// A value or a constraint was refused; some append of the group is at fault.
    Refused(StoreError),
    /// The connection or the server failed; the outcome of the statement is unknown.
    Broken(StoreError),
}

impl Committer {
    /// A committer that connects with `connect` when it first has a group to write.
    pub(super) fn new(connect: PgConnectOptions) -> Committer {
        Committer { connect, conn: None }
    }

    /// Runs until the store is dropped and the queue is empty.
    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut group = Vec::with_capacity(GROUP_MAX_COMMANDS);
        while let Some(first) = queue.recv().await {
            let mut weight = first.batch.len();
            group.push(first);
            // Everything already waiting shares the statement, and so the WAL flush.
            while group.len() < GROUP_MAX_COMMANDS && weight < GROUP_MAX_CHANGES {
                match queue.try_recv() {
                    Ok(next) => {
                        weight += next.batch.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group).await;
        }
        tracing::debug!("the PostgreSQL committer stopped");
    }

    /// Writes the appends of `group` in one statement and answers each.
    ///
    /// When an append is refused, the others are written again without it: the
    /// statement rolled back as a whole, so nothing of it stands. Each retry removes at
    /// least one append, so this ends.
    async fn commit_group(&mut self, group: &mut Vec<Command>) {
        let mut pending: Vec<Command> = std::mem::take(group);
        let mut transient = 0;
        while !pending.is_empty() {
            let plan = match Plan::build(&pending) {
                Ok(plan) => plan,
                Err((index, error)) => {
                    pending.remove(index).answer(Err(error));
                    continue;
                }
            };
            let outcome = self.execute(&plan).await;
            let refusals = match outcome {
                Ok(base) => {
                    let sequences = plan.sequences(base);
                    for (command, sequences) in pending.drain(..).zip(sequences) {
                        command.answer(Ok(sequences));
                    }
                    return;
                }
                Err(Failure::Moved(ids)) => plan.refusals(&ids),
                Err(Failure::Transient(error)) if transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tracing::debug!(error = %error, attempt = transient, "an append group is tried again");
                    continue;
                }
                Err(Failure::Transient(error)) | Err(Failure::Broken(error)) => {
                    tracing::warn!(error = %error, "an append group failed");
                    for command in pending.drain(..) {
                        command.answer(Err(error.clone()));
                    }
                    return;
                }
                Err(Failure::Refused(_)) => Vec::new(),
            };
            drop(plan);
            if refusals.is_empty() {
                // The statement names no culprit: write the appends one at a time, in order.
                self.one_by_one(pending).await;
                return;
            }
            // Highest index first, so the lower indexes stay valid while removing.
            for (index, error) in refusals.into_iter().rev() {
                pending.remove(index).answer(Err(error));
            }
        }
    }

    /// Writes each append in its own statement, in order: the fallback when a group
    /// failed on something that cannot be traced to one append.
    async fn one_by_one(&mut self, pending: Vec<Command>) {
        let mut pending = pending.into_iter();
        while let Some(command) = pending.next() {
            let single = std::slice::from_ref(&command);
            let result = match Plan::build(single) {
                Err((_, error)) => Err(error),
                Ok(plan) => match self.execute(&plan).await {
                    Ok(base) => Ok(plan.sequences(base).into_iter().next().unwrap_or_default()),
                    Err(Failure::Moved(ids)) => {
                        Err(plan.refusals(&ids).into_iter().next().map_or_else(|| moved_error(ids), |(_, e)| e))
                    }
                    Err(Failure::Refused(error)) => Err(error),
                    Err(Failure::Transient(error)) => Err(error),
                    Err(Failure::Broken(error)) => {
                        // The server is gone: the rest would fail the same way.
                        tracing::warn!(error = %error, "an append failed");
                        command.answer(Err(error.clone()));
                        for rest in pending {
                            rest.answer(Err(error.clone()));
                        }
                        return;
                    }
                },
            };
            command.answer(result);
        }
    }

    /// Runs the statement of `plan`; `Ok` carries the sequence before its first event.
    async fn execute(&mut self, plan: &Plan<'_>) -> Result<i64, Failure> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => {
                let connecting = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.connect));
                let conn = match connecting.await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(Failure::Broken(StoreError::database("cannot connect", e))),
                    Err(_) => {
                        let context = format!("cannot connect within {ACQUIRE_TIMEOUT:?}");
                        return Err(Failure::Broken(StoreError::database_message(context)));
                    }
                };
                self.conn.insert(conn)
            }
        };
        let statement = plan.bind(sqlx::query_scalar::<_, i64>(APPEND)).fetch_one(&mut *conn);
        let result = match tokio::time::timeout(STATEMENT_TIMEOUT, statement).await {
            Ok(result) => result,
            Err(_) => {
                self.discard_connection();
                let context = format!("the database did not answer within {STATEMENT_TIMEOUT:?}");
                return Err(Failure::Broken(StoreError::database_message(context)));
            }
        };
        match result {
            Ok(base) => Ok(base),
            Err(error) => {
                let failure = classify(error, plan);
                if matches!(failure, Failure::Broken(_)) {
                    self.discard_connection();
                }
                Err(failure)
            }
        }
    }

    /// Drops the committer's connection (closing its socket).
    fn discard_connection(&mut self) {
        self.conn = None;
    }
}

/// Sorts a failed group statement into what the committer does next.
fn classify(error: sqlx::Error, plan: &Plan<'_>) -> Failure {
    let appending = |error| StoreError::database("appending changes", error);
    let sqlx::Error::Database(database) = &error else {
        // I/O, TLS, protocol, pool: the connection is not usable, the outcome unknown.
        return Failure::Broken(appending(error));
    };
    let Some(pg) = database.try_downcast_ref::<PgDatabaseError>() else {
        return Failure::Broken(appending(error));
    };
    let code = pg.code();
    if code == MOVED_SQLSTATE {
        return match pg.detail().and_then(|d| serde_json::from_str::<Vec<String>>(d).ok()) {
            Some(ids) => Failure::Moved(ids),
            None => Failure::Broken(StoreError::database("appending changes: unreadable refusal", error)),
        };
    }
    match code.get(..2).unwrap_or_default() {
        // Serialization failure, deadlock: rolled back, nothing written.
        "40" => Failure::Transient(appending(error)),
        // Data exceptions (a value PostgreSQL cannot store), integrity violations,
        // program limits: one of the appends is at fault.
        "22" | "23" | "54" => Failure::Refused(
            constraint_error(pg, plan).unwrap_or_else(|| StoreError::database("cannot store the change", error)),
        ),
        // Everything else — connection exceptions (08), shutdown (57), resources (53),
        // … — says nothing about the appends.
        _ => Failure::Broken(appending(error)),
    }
}

/// The error an append gets for a broken unique constraint, naming the id involved, like
/// the SQLite backend; `None` for any other refused value (the caller reports the
/// driver's error).
fn constraint_error(pg: &PgDatabaseError, plan: &Plan<'_>) -> Option<StoreError> {
    let detail = pg.detail().unwrap_or_default();
    let find = |key: &dyn Fn(&ChangeEvent) -> Option<String>| {
        plan.events.iter().filter_map(|e| key(e.event)).find(|k| detail.contains(&format!("=({k})")))
    };
    match pg.constraint() {
        Some("change_events_client_change") => {
            let found = find(&|e| e.client_change_id.as_ref().map(|c| format!("{}, {c}", e.user_id)));
            let ccid = found.and_then(|k| k.rsplit_once(", ").map(|(_, c)| c.to_owned()));
            Some(StoreError::Duplicate(ccid.unwrap_or_else(|| detail.to_owned())))
        }
        Some("change_events_event_id_key") => {
            Some(StoreError::Duplicate(find(&|e| Some(e.event_id.clone())).unwrap_or_else(|| detail.to_owned())))
        }
        Some("change_events_document_revision") => {
            // Another change already produced this revision of the document.
            let found = find(&|e| Some(format!("{}, {}", e.document_id, e.sync_revision)));
            let id = found.and_then(|k| k.rsplit_once(", ").map(|(id, _)| id.to_owned()));
            Some(StoreError::Conflict(vec![id.unwrap_or_else(|| detail.to_owned())]))
        }
        _ => None,
    }
}

/// The error for documents that moved, when no append of the plan touched them.
fn moved_error(ids: Vec<String>) -> StoreError {
    StoreError::Conflict(ids)
}
