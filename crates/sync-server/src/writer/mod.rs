//! The write path: one task drains queued changes, decides them with `sync-core`,
//! commits them in one transaction (group commit), then delivers responses and pushes
//! through the hub in sequence order.
//!
//! Guarantees:
//! - a change is acknowledged only after its batch is durable;
//! - a `client_change_id` already committed is answered with the original result and
//!   not applied again (also when the repeat is in the same batch);
//! - the cache holds decided state — committed, or in a batch on its way to the store —
//!   so a batch can be decided while earlier ones commit; when a commit fails, what that
//!   batch and every batch decided after it touched is evicted;
//! - if another server process changed a document underneath, or took an id (the store
//!   reports a conflict or a duplicate), the batch is decided again from fresh state;
//! - batches reach the store in the order they were decided, so sequences follow that
//!   order and deliveries go out in sequence order;
//! - users take turns ([`queue`]), and a batch is closed once the work its changes will
//!   cost reaches `limits.max_rebase_work` (what one stale change may cost at most), so
//!   one user's flood of costly changes delays another user's change by about one
//!   such change per user ahead of it, not by the whole flood.

mod answers;
mod cache;
mod decide;
mod queue;
mod request;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use sync_core::patch::parse_patch;
use sync_core::protocol::ServerMessage;
use sync_core::transform::Policy;
use sync_core::{ChangeEvent, ChangeKind, ErrorBody, ErrorCode, Timestamp};
use sync_store::{NewChange, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use answers::{Made, Summary};
use cache::{DocCache, HistEntry};
use decide::{Ctx, Decided, Intervening};
pub(crate) use queue::{WriteReceiver, WriteSender, write_queue};
pub(crate) use request::{AppEvent, Merge, WriteOp, WriteRequest};

use crate::backend::AnyStore;
use crate::config::Config;
use crate::hub::{Committed, Delivery, Hub};
use crate::monitor::{activity, describe_ops};
use crate::wire::encode;
use sync_core::acl::Action;

/// Counters of the write path, kept as it goes. The server logs them when it stops; they
/// are what an operator's view of the write path (the metrics and dashboard to come)
/// reads, rather than counting the activity events again.
#[derive(Debug, Default)]
pub(crate) struct WriteStats {
    pub(crate) committed: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Transactions committed.
    pub(crate) batches: AtomicU64,
    /// Batches whose commit failed (nothing of them was applied).
    pub(crate) failed_batches: AtomicU64,
}

/// Runs the write path until `shutdown` is cancelled, then commits what is queued and returns.
pub(crate) async fn run(
    mut rx: WriteReceiver,
    store: AnyStore,
    hub: Arc<Hub>,
    config: Arc<Config>,
    stats: Arc<WriteStats>,
    shutdown: CancellationToken,
) {
    // Another server process may write to a shared database. A batch decided on the
    // uncommitted state of an earlier batch expects the revision that batch would
    // produce; if the earlier batch is refused because another process wrote the
    // document, that process has produced the very same revision number, the store's
    // check passes, and the later batch would commit on content that never existed.
    // So there, a batch that touches a document of a batch in flight waits for it.
    let shared = store.shared_with_other_processes();
    let mut writer = Writer { store, hub, cache: DocCache::new(config.write.cache_documents), config, stats };
    let max_batch = writer.config.write.max_batch.max(1);
    let depth = writer.config.write.pipeline.max(1);
    let batch_work = writer.config.limits.max_rebase_work.max(1);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut retry: VecDeque<(Vec<WriteRequest>, usize)> = VecDeque::new();
    // A batch waiting for the batches in flight that touch its documents.
    let mut held: Option<Vec<WriteRequest>> = None;
    let mut accepting = true;
    loop {
        // Retries run alone, after everything in flight has settled, so they are decided
        // on committed state only.
        if in_flight.is_empty()
            && let Some((batch, attempt)) = retry.pop_front()
        {
            writer.start(batch, attempt, &mut in_flight).await;
            continue;
        }
        if retry.is_empty()
            && let Some(batch) = held.take()
        {
            if overlaps(&batch, &in_flight) {
                held = Some(batch);
            } else {
                writer.start(batch, 1, &mut in_flight).await;
                continue;
            }
        }
        if !accepting && in_flight.is_empty() && retry.is_empty() && held.is_none() {
            break;
        }
        tokio::select! {
            biased;
            done = commit_of(&mut in_flight), if !in_flight.is_empty() => {
                if let Some(flight) = in_flight.pop_front() {
                    writer.settle(flight, done, &mut in_flight, &mut retry);
                }
            }
            request = rx.recv(), if accepting && retry.is_empty() && held.is_none() && in_flight.len() < depth => {
                let Some(first) = request else {
                    accepting = false;
                    continue;
                };
                let mut work = writer.cost(&first);
                let mut batch = vec![first];
                while batch.len() < max_batch && work < batch_work {
                    match rx.try_recv() {
                        Some(request) => {
                            work = work.saturating_add(writer.cost(&request));
                            batch.push(request);
                        }
                        None => break,
                    }
                }
                if shared && overlaps(&batch, &in_flight) {
                    held = Some(batch);
                    continue;
                }
                writer.start(batch, 1, &mut in_flight).await;
            }
            () = shutdown.cancelled(), if accepting => {
                // Finish in-flight writes: what is already queued is committed and answered.
                rx.close();
            }
        }
    }
}

/// Whether a request of `batch` names a document that a batch in flight touched.
fn overlaps(batch: &[WriteRequest], in_flight: &VecDeque<InFlight>) -> bool {
    if in_flight.is_empty() {
        return false;
    }
    let pending: HashSet<&str> = in_flight.iter().flat_map(|f| f.prepared.touched.iter().map(String::as_str)).collect();
    batch.iter().any(|request| request.op.document_id().is_some_and(|id| pending.contains(id)))
}

/// A store append, polled by the write path's own task.
type Commit = Pin<Box<dyn Future<Output = Result<Vec<u64>, StoreError>> + Send>>;

/// A batch whose commit is under way.
struct InFlight {
    prepared: Prepared,
    /// Not a spawned task: the writer polls it first when it is created, so that batches
    /// take their places in the store's queue in the order they were decided. Spawned
    /// tasks may start in any order (a task spawned later can run first), and a later
    /// batch would then commit first, with lower sequences, and be delivered after them.
    commit: Commit,
    /// The commit's result once it finished (a later batch may finish first).
    result: Option<Result<Vec<u64>, StoreError>>,
    attempt: usize,
    span: tracing::Span,
    /// When the commit was handed to the store.
    started: std::time::Instant,
}

/// Drives every commit in flight and returns the oldest one's result once it is in.
async fn commit_of(in_flight: &mut VecDeque<InFlight>) -> Result<Vec<u64>, StoreError> {
    std::future::poll_fn(|cx| {
        for flight in in_flight.iter_mut().filter(|f| f.result.is_none()) {
            if let Poll::Ready(result) = flight.commit.as_mut().poll(cx) {
                flight.result = Some(result);
            }
        }
        match in_flight.front_mut().and_then(|f| f.result.take()) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    })
    .await
}

struct Writer {
    store: AnyStore,
    hub: Arc<Hub>,
    cache: DocCache,
    config: Arc<Config>,
    stats: Arc<WriteStats>,
}

/// A decided batch: the requests, what became of each, and the documents it touched.
struct Prepared {
    batch: Vec<WriteRequest>,
    outcomes: Vec<Outcome>,
    touched: Vec<String>,
}

/// What became of one request in a batch.
enum Outcome {
    /// To commit; index into the batch's changes.
    Commit(usize, Box<Summary>),
    /// Already committed earlier (repeated `client_change_id`).
    Repeat(Box<ChangeEvent>),
    /// Repeats a `client_change_id` decided earlier in this batch: answered like it.
    SameAs(usize),
    /// Refused.
    Refused(ErrorBody),
}

/// How often a batch is decided again because the store moved underneath it. Each such
/// refusal means another server process committed to the same documents first, so the
/// system as a whole made progress; a document written hot from several processes can
/// lose a few rounds in a row, and a client should not see an error for that.
const MAX_ATTEMPTS: usize = 20;

impl Writer {
    /// What deciding `request` will cost, as far as the cache tells before it is decided:
    /// an update's ops times the revisions it is behind (plus one), else one step. An
    /// update of a document not cached counts its ops only.
    fn cost(&self, request: &WriteRequest) -> u64 {
        let WriteOp::Update(update) = &request.op else {
            return 1;
        };
        let ops = (update.patch.len() as u64).max(1);
        let behind = self
            .cache
            .peek(&update.document_id)
            .and_then(|cached| Some(cached.doc.sync_revision.saturating_sub(update.base_revision?)))
            .unwrap_or(0);
        ops.saturating_mul(behind.saturating_add(1))
    }

    /// Decides a batch and starts its commit (queued behind the commits in flight).
    async fn start(&mut self, batch: Vec<WriteRequest>, attempt: usize, in_flight: &mut VecDeque<InFlight>) {
        // A batch's span covers its decision here and its delivery in `settle`.
        let span = tracing::debug_span!("batch", changes = batch.len(), attempt);
        match self.prepare(batch).instrument(span.clone()).await {
            Ok((prepared, changes)) => {
                let store = self.store.clone();
                let started = std::time::Instant::now();
                let mut commit: Commit = Box::pin(async move {
                    if changes.is_empty() { Ok(Vec::new()) } else { store.append_batch(changes).await }
                });
                // The first poll queues the batch in the store, behind the ones before it.
                let first = std::future::poll_fn(|cx| Poll::Ready(commit.as_mut().poll(cx))).await;
                let result = match first {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                };
                in_flight.push_back(InFlight { prepared, commit, result, attempt, span, started });
            }
            Err((batch, err)) => span.in_scope(|| self.refuse_all(&batch, &err)),
        }
    }

    /// Handles the result of the oldest commit: deliver, retry or refuse.
    fn settle(
        &mut self,
        flight: InFlight,
        result: Result<Vec<u64>, StoreError>,
        in_flight: &mut VecDeque<InFlight>,
        retry: &mut VecDeque<(Vec<WriteRequest>, usize)>,
    ) {
        let span = flight.span.clone();
        let _entered = span.enter();
        match result {
            Ok(sequences) => {
                metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(flight.started.elapsed().as_secs_f64());
                metrics::histogram!(crate::metrics::COMMIT_BATCH_SIZE).record(sequences.len() as f64);
                let queued: Vec<std::time::Instant> = flight.prepared.batch.iter().map(|r| r.queued).collect();
                let deliveries = self.deliveries(flight.prepared, &sequences);
                self.hub.deliver(deliveries);
                let latency = metrics::histogram!(crate::metrics::WRITE_TO_PUSH_SECONDS);
                for queued in queued {
                    latency.record(queued.elapsed().as_secs_f64());
                }
            }
            Err(err) => {
                // Batches decided after this one may rest on its uncommitted state: forget
                // everything they touched. The store refuses any that really did (their
                // expected revisions no longer match), and those come back here.
                self.cache.evict(&flight.prepared.touched);
                for later in in_flight.iter() {
                    self.cache.evict(&later.prepared.touched);
                }
                match err {
                    StoreError::Conflict(_) | StoreError::Duplicate(_) if flight.attempt < MAX_ATTEMPTS => {
                        // Another server process wrote these documents, or took an id or
                        // a client change id first: decide again on what is stored now
                        // (a repeat is then answered with the stored result).
                        tracing::debug!(
                            error = %err,
                            attempt = flight.attempt,
                            "the store moved underneath the batch; deciding again"
                        );
                        retry.push_back((flight.prepared.batch, flight.attempt + 1));
                    }
                    err => self.refuse_all(&flight.prepared.batch, &err),
                }
            }
        }
    }

    fn refuse_all(&mut self, batch: &[WriteRequest], err: &StoreError) {
        tracing::error!(error = %err, changes = batch.len(), "commit failed; nothing of the batch was applied");
        self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        let body = ErrorBody::new(ErrorCode::ServerError, "the change could not be stored; retry later");
        let deliveries = batch.iter().map(|r| refusal(r, body.clone())).collect();
        self.hub.deliver(deliveries);
    }

    /// Decides a batch against the cache (updating it provisionally); returns what the
    /// answers need and the changes to store.
    async fn prepare(
        &mut self,
        batch: Vec<WriteRequest>,
    ) -> Result<(Prepared, Vec<NewChange>), (Vec<WriteRequest>, StoreError)> {
        match self.decide_batch(&batch).await {
            Ok((outcomes, changes, touched)) => Ok((Prepared { batch, outcomes, touched }, changes)),
            Err(err) => Err((batch, err)),
        }
    }

    async fn decide_batch(
        &mut self,
        batch: &[WriteRequest],
    ) -> Result<(Vec<Outcome>, Vec<NewChange>, Vec<String>), StoreError> {
        // Ids the batch touches (a create without an id gets a fresh one now).
        let ids: Vec<String> = batch
            .iter()
            .map(|r| match &r.op {
                WriteOp::Create(c) => decide::create_id(c),
                WriteOp::Update(u) => u.document_id.clone(),
                WriteOp::Delete(d) => d.document_id.clone(),
                WriteOp::Revert(r) => r.document_id.clone(),
                WriteOp::Merge(m) => m.document_id.clone(),
                WriteOp::Event(e) => e.document_id.clone(),
            })
            .collect();
        let missing: Vec<String> =
            ids.iter().filter(|id| !self.cache.contains(id)).cloned().collect::<HashSet<_>>().into_iter().collect();
        if !missing.is_empty() {
            for doc in self.store.load_documents(missing).await? {
                self.cache.insert_loaded(doc);
            }
        }
        let repeats = self.committed_client_changes(batch).await?;

        let now = Timestamp::now();
        // One set of rules decides the whole batch.
        let acl = self.hub.acl();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut changes: Vec<NewChange> = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        let mut seen_in_batch: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, (request, id)) in batch.iter().zip(&ids).enumerate() {
            if let Some(ccid) = request.op.client_change_id() {
                if let Some(event) = repeats.get(&(request.user_id.clone(), ccid.to_owned())) {
                    outcomes.push(Outcome::Repeat(Box::new(event.clone())));
                    continue;
                }
                if let Some(&first) = seen_in_batch.get(&(request.user_id.as_str(), ccid)) {
                    outcomes.push(Outcome::SameAs(first));
                    continue;
                }
                seen_in_batch.insert((request.user_id.as_str(), ccid), i);
            }
            let ctx = Ctx {
                user_id: &request.user_id,
                client_id: &request.client_id,
                acl: &acl,
                now,
                max_document_bytes: self.config.limits.max_document_bytes,
                max_depth: self.config.limits.max_depth,
            };
            let decided = self.decide(request, id, &ctx).await?;
            let decided = decided.and_then(|d| decide::check_storable(&d.change).map(|()| d));
            match decided {
                Ok(decided) => {
                    // The change goes to the store and the document to the cache; the
                    // answer needs only a summary (the full document only for creates
                    // and conflicts, which send it).
                    let summary = Summary::of(&decided);
                    self.cache.apply(Arc::clone(&decided.change.document), decided.update);
                    touched.push(id.clone());
                    outcomes.push(Outcome::Commit(changes.len(), Box::new(summary)));
                    changes.push(decided.change);
                }
                Err(body) => outcomes.push(Outcome::Refused(body)),
            }
        }
        Ok((outcomes, changes, touched))
    }

    /// The answers and pushes of a committed batch, in request order.
    fn deliveries(&mut self, prepared: Prepared, sequences: &[u64]) -> Vec<Delivery> {
        let Prepared { batch, outcomes, .. } = prepared;
        self.stats.batches.fetch_add(u64::from(!sequences.is_empty()), Ordering::Relaxed);
        let mut deliveries = Vec::with_capacity(batch.len());
        // Each committed answer, so a repeat of its client_change_id in the same batch gets it too.
        let mut answers: Vec<Option<(ServerMessage, u64)>> = vec![None; batch.len()];
        for (i, (request, outcome)) in batch.iter().zip(outcomes).enumerate() {
            match outcome {
                Outcome::Commit(index, summary) => {
                    let sequence = sequences.get(index).copied().unwrap_or_default();
                    self.cache.mark_committed(&summary.document_id, summary.revision);
                    self.stats.committed.fetch_add(1, Ordering::Relaxed);
                    log_commit(request, &summary, sequence);
                    let answer = summary.response(sequence);
                    let reply = encode(&answer, request.request_id.clone());
                    answers[i] = Some((answer, sequence));
                    let change = Arc::new(Committed {
                        sequence,
                        user_id: summary.user_id.clone(),
                        collection: summary.collection.clone(),
                        document_id: summary.document_id.clone(),
                        push: encode(&summary.push(sequence), None),
                        conflict: summary.conflict_push(),
                    });
                    deliveries.push(Delivery::Commit { change, reply: Some((request.reply_to.clone(), reply)) });
                }
                Outcome::Repeat(event) => {
                    let message = answers::repeated(&request.op, &event);
                    let frame = encode(&message, request.request_id.clone());
                    deliveries.push(Delivery::Reply {
                        to: request.reply_to.clone(),
                        frame,
                        sequence: Some(event.sequence),
                    });
                }
                Outcome::SameAs(first) => {
                    let (message, sequence) = match &answers[first] {
                        Some((answer, sequence)) => (answer.clone(), Some(*sequence)),
                        None => (
                            request.op.refused(ErrorBody::new(
                                ErrorCode::InvalidMessage,
                                "repeats the client_change_id of a refused change",
                            )),
                            None,
                        ),
                    };
                    let frame = encode(&message, request.request_id.clone());
                    deliveries.push(Delivery::Reply { to: request.reply_to.clone(), frame, sequence });
                }
                Outcome::Refused(body) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    activity!("REFUSED", "{} from {}: {body}", request.user_id, request.client_id);
                    deliveries.push(refusal(request, body));
                }
            }
        }
        deliveries
    }

    /// Committed changes repeating a `client_change_id` of this batch, by (user, id).
    async fn committed_client_changes(
        &self,
        batch: &[WriteRequest],
    ) -> Result<HashMap<(String, String), ChangeEvent>, StoreError> {
        let mut by_user: HashMap<&str, Vec<String>> = HashMap::new();
        for request in batch {
            if let Some(ccid) = request.op.client_change_id() {
                by_user.entry(&request.user_id).or_default().push(ccid.to_owned());
            }
        }
        let mut found = HashMap::new();
        for (user, ids) in by_user {
            for event in self.store.find_client_changes(user.to_owned(), ids).await? {
                if let Some(ccid) = event.client_change_id.clone() {
                    found.insert((user.to_owned(), ccid), event);
                }
            }
        }
        Ok(found)
    }

    /// Decides one request against the cache (loading history when a rebase needs it).
    async fn decide(
        &mut self,
        request: &WriteRequest,
        id: &str,
        ctx: &Ctx<'_>,
    ) -> Result<Result<Decided, ErrorBody>, StoreError> {
        // History first (it may need the store); then decide against a borrowed document.
        let max_work = self.config.limits.max_rebase_work;
        let intervening = match &request.op {
            WriteOp::Update(update) => {
                // Only the stale changes of a writer who may update the document are
                // carried (anyone else's is refused below, without reading history for it).
                let stale = self.cache.get(id).filter(|c| decide::may(&c.doc, ctx, Action::Update)).and_then(|c| {
                    let base = decide::rebase_base(&c.doc, update)?;
                    Some((base, decide::within_rebase_budget(&c.doc, update, base, max_work)))
                });
                match stale {
                    None => Intervening::None,
                    Some((_, Err(over_budget))) => return Ok(Err(over_budget)),
                    Some((base, Ok(()))) => {
                        let crossed = self.history_since(id, base).await?;
                        if let Err(over_budget) = decide::within_rebase_work(update, &crossed, max_work) {
                            return Ok(Err(over_budget));
                        }
                        Intervening::Updates(crossed)
                    }
                }
            }
            _ => Intervening::None,
        };
        let revert_target = match &request.op {
            WriteOp::Revert(revert) => match self.revert_target(id, revert.to_revision, ctx).await? {
                Ok(target) => target,
                Err(refused) => return Ok(Err(refused)),
            },
            _ => None,
        };
        let config = &self.config;
        let policy = |collection: &str| -> Policy { config.policy_for(collection) };
        let doc = self.cache.get(id).map(|c| &*c.doc);
        Ok(match &request.op {
            WriteOp::Create(create) => {
                let collection = create.document.collection.as_deref().unwrap_or(sync_core::model::DEFAULT_COLLECTION);
                decide::create(id, doc, create, ctx, policy(collection))
            }
            WriteOp::Delete(delete) => {
                decide::delete(doc, delete, ctx, doc.map_or(config.default_policy, |d| policy(&d.collection)))
            }
            WriteOp::Update(update) => decide::update(
                doc,
                intervening,
                update,
                ctx,
                doc.map_or(config.default_policy, |d| policy(&d.collection)),
            ),
            WriteOp::Revert(revert) => decide::revert(
                doc,
                revert,
                revert_target.as_ref(),
                ctx,
                doc.map_or(config.default_policy, |d| policy(&d.collection)),
            ),
            WriteOp::Merge(merge) => {
                decide::merge(doc, merge, ctx, doc.map_or(config.default_policy, |d| policy(&d.collection)))
            }
            WriteOp::Event(event) => {
                decide::app_event(doc, event, ctx, doc.map_or(config.default_policy, |d| policy(&d.collection)))
            }
        })
    }

    /// The content of `id` at `revision`, for a `revert_document` by a writer who may
    /// update it (`None` for anyone else, and for a document that is not there: the
    /// decision refuses those without reading history). The work is bounded before the
    /// history is read, by the revisions to undo, and after, by their ops, both against
    /// `limits.max_rebase_work`. Only committed revisions are read: a revert to a
    /// revision still on its way to the store is refused (retry).
    async fn revert_target(
        &mut self,
        id: &str,
        revision: u64,
        ctx: &Ctx<'_>,
    ) -> Result<Result<Option<serde_json::Value>, ErrorBody>, StoreError> {
        let max_work = self.config.limits.max_rebase_work;
        let Some(current) = self.cache.get(id).map(|c| Arc::clone(&c.doc)) else {
            return Ok(Ok(None));
        };
        if current.deleted_at.is_some() || !decide::may(&current, ctx, Action::Update) {
            return Ok(Ok(None));
        }
        let refuse = |code, message: String| Ok(Err(ErrorBody::new(code, message)));
        if revision == 0 || revision > current.sync_revision {
            return refuse(
                ErrorCode::InvalidMessage,
                format!("document {id:?} has no revision {revision} (latest is {})", current.sync_revision),
            );
        }
        if revision == current.sync_revision {
            return Ok(Ok(Some(current.content.clone())));
        }
        let crossed = current.sync_revision - revision;
        if crossed > max_work {
            return refuse(
                ErrorCode::VersionMismatch,
                format!("revision {revision} is {crossed} revisions back, more than the limit of {max_work}"),
            );
        }
        let Some(stored) = self.store.load_documents(vec![id.to_owned()]).await?.pop() else {
            return refuse(ErrorCode::VersionMismatch, "the document is not committed yet; retry".into());
        };
        if stored.sync_revision < revision {
            return refuse(ErrorCode::VersionMismatch, format!("revision {revision} is not committed yet; retry"));
        }
        let events = self.store.document_changes(id.to_owned(), revision - 1, Some(stored.sync_revision)).await?;
        let ops: u64 = events
            .iter()
            .filter(|e| e.sync_revision > revision)
            .map(|e| e.reverse_patch.as_ref().and_then(|p| p.as_array()).map_or(1, |ops| ops.len() as u64))
            .sum();
        if ops > max_work {
            return refuse(
                ErrorCode::VersionMismatch,
                format!(
                    "undoing the {crossed} revisions after {revision} takes {ops} ops, more than the limit of {max_work}"
                ),
            );
        }
        match crate::rewind::rewind(stored, revision, &events) {
            Ok(past) => Ok(Ok(Some(past.content))),
            Err(message) => {
                tracing::error!(%message, document = id, revision, "rebuilding a past revision failed");
                refuse(ErrorCode::ServerError, "the document's history is unreadable".into())
            }
        }
    }

    /// The updates after `base`, from the cache or the store.
    async fn history_since(&mut self, id: &str, base: u64) -> Result<Vec<HistEntry>, StoreError> {
        if let Some(entries) = self.cache.get(id).and_then(|c| c.since(base)) {
            return Ok(entries);
        }
        let events = self.store.document_changes(id.to_owned(), base, None).await?;
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            let revision = event.sync_revision;
            if let ChangeKind::Custom(_) = event.event_type {
                // An application event changed no content: an empty patch both ways.
                let empty = Arc::new(Vec::new());
                entries.push(HistEntry { revision, forward: Arc::clone(&empty), reverse: empty });
                continue;
            }
            if event.event_type != ChangeKind::Update {
                continue;
            }
            let parse = |v: Option<serde_json::Value>| {
                parse_patch(v.unwrap_or(serde_json::Value::Array(Vec::new())))
                    .map(Arc::new)
                    .map_err(|e| StoreError::corrupt(format!("stored patch of {id} r{revision}"), e))
            };
            entries.push(HistEntry {
                revision,
                forward: parse(event.forward_patch)?,
                reverse: parse(event.reverse_patch)?,
            });
        }
        self.cache.prepend_history(id, entries.clone());
        // The cache may be ahead of what was just read only by changes of this batch,
        // which are already in its history.
        Ok(self.cache.get(id).and_then(|c| c.since(base)).unwrap_or(entries))
    }
}

/// Logs a committed change and the conflicts it met.
fn log_commit(request: &WriteRequest, summary: &Summary, sequence: u64) {
    let ops = match &summary.made {
        Made::Update { forward, .. } => forward.as_slice(),
        _ => &[],
    };
    metrics::counter!(crate::metrics::CHANGES_COMMITTED, "kind" => summary.kind()).increment(1);
    activity!(
        "COMMIT",
        sequence,
        "#{sequence} {} {} r{} by {} {}",
        summary.kind(),
        summary.document_id,
        summary.revision,
        request.client_id,
        describe_ops(ops)
    );
    if let Some(conflicts) = summary.conflicts() {
        if !conflicts.list.is_empty() {
            metrics::counter!(crate::metrics::CONFLICTS).increment(1);
        }
        for conflict in &conflicts.list {
            activity!(
                "CONFLICT",
                sequence,
                "{} {} {} at #{sequence}: {:?}, {:?} ({:?})",
                summary.document_id,
                conflict.op,
                conflict.path,
                conflict.reason,
                conflict.resolution,
                conflicts.policy
            );
        }
    }
}

fn refusal(request: &WriteRequest, body: ErrorBody) -> Delivery {
    metrics::counter!(crate::metrics::CHANGES_REFUSED, "reason" => body.code.as_str()).increment(1);
    let frame = encode(&request.op.refused(body), request.request_id.clone());
    Delivery::Reply { to: request.reply_to.clone(), frame, sequence: None }
}
