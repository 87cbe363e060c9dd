//! `GET /metrics`: the server's counters, gauges and histograms in the Prometheus text
//! format (the `metrics` facade, rendered by `metrics-exporter-prometheus`).
//!
//! Every name is listed here, once, with its help text; docs/OPERATIONS.md lists them for
//! operators. Names follow Prometheus conventions: `_total` for counters, base units
//! (`_seconds`, `_bytes`), labels of few values (a message type, an error code, an
//! authentication method — never a user, document or topic).
//!
//! Counters and histograms are recorded where things happen; gauges that describe the
//! present (connections, sessions, topics, the log's position) are read when scraped.
//! The recorder is the process's global one, installed by the first server the process
//! runs: several servers in one process (the tests) share it.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// WebSocket connections open (authenticated or not).
pub(crate) const CONNECTIONS: &str = "sync_connections";
/// Sessions by `state`: `authenticated`, `unauthenticated`.
pub(crate) const SESSIONS: &str = "sync_sessions";
/// Client messages received, by `type`.
pub(crate) const MESSAGES_RECEIVED: &str = "sync_messages_received_total";
/// Messages made for sessions, by `type` (a push is made once for every session it
/// reaches; [`PUSHES`] and [`TOPIC_DELIVERIES`] count per session).
pub(crate) const MESSAGES_SENT: &str = "sync_messages_sent_total";
/// Document pushes queued to sessions (one per session reached).
pub(crate) const PUSHES: &str = "sync_document_pushes_total";
/// Changes committed, by `kind` (`create`, `update`, `delete`, `event`).
pub(crate) const CHANGES_COMMITTED: &str = "sync_changes_committed_total";
/// Changes refused, by `reason` (the error code).
pub(crate) const CHANGES_REFUSED: &str = "sync_changes_refused_total";
/// Committed updates that overwrote part of a concurrent change.
pub(crate) const CONFLICTS: &str = "sync_conflicts_total";
/// Changes per committed batch (one transaction).
pub(crate) const COMMIT_BATCH_SIZE: &str = "sync_commit_batch_changes";
/// From a batch's hand-over to the store to its commit being durable.
pub(crate) const COMMIT_SECONDS: &str = "sync_commit_duration_seconds";
/// From a change entering the write queue to its answer and pushes being queued.
pub(crate) const WRITE_TO_PUSH_SECONDS: &str = "sync_write_to_push_seconds";
/// Messages waiting in each session's queue, sampled at every scrape.
pub(crate) const SESSION_QUEUE_DEPTH: &str = "sync_session_queue_depth";
/// Sessions disconnected because their queue was full (a client that reads too slowly).
pub(crate) const SLOW_SESSIONS: &str = "sync_slow_sessions_disconnected_total";
/// Authentication failures, by `method` (`hmac`, `token`, `jwt`).
pub(crate) const AUTH_FAILURES: &str = "sync_auth_failures_total";
/// Requests refused by the per-user rate limit, by `path` (`websocket`, `events`, `topics`).
pub(crate) const RATE_LIMITED: &str = "sync_rate_limited_total";
/// Topic messages published (over the WebSocket or REST).
pub(crate) const TOPIC_MESSAGES: &str = "sync_topic_messages_total";
/// Topic messages queued to sessions (one per session reached).
pub(crate) const TOPIC_DELIVERIES: &str = "sync_topic_deliveries_total";
/// Topics with a subscriber or held history.
pub(crate) const TOPICS: &str = "sync_topics";
/// Topic subscriptions held by sessions.
pub(crate) const SUBSCRIPTIONS: &str = "sync_topic_subscriptions";
/// The latest sequence delivered to sessions.
pub(crate) const LATEST_SEQUENCE: &str = "sync_latest_sequence";
/// Store connections by `state` (`in_use`, `idle`; PostgreSQL only).
pub(crate) const STORE_CONNECTIONS: &str = "sync_store_connections";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once) and returns its handle; `None` when another
/// recorder was installed first (an embedding program's own), and `/metrics` then says so.
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let sizes = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
            let depths = [0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_SIZE.into()), &sizes))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SESSION_QUEUE_DEPTH.into()), &depths))
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: GET /metrics has nothing to show");
                return None;
            }
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_gauge!(CONNECTIONS, "WebSocket connections open (authenticated or not).");
    describe_gauge!(SESSIONS, "WebSocket sessions by state (authenticated, unauthenticated).");
    describe_counter!(MESSAGES_RECEIVED, "Client messages received, by type.");
    describe_counter!(MESSAGES_SENT, "Messages made for sessions, by type (a push once for all its sessions).");
    describe_counter!(PUSHES, "Document pushes queued to sessions (one per session reached).");
    describe_counter!(CHANGES_COMMITTED, "Changes committed, by kind.");
    describe_counter!(CHANGES_REFUSED, "Changes refused, by reason (error code).");
    describe_counter!(CONFLICTS, "Committed updates that overwrote part of a concurrent change.");
    describe_histogram!(COMMIT_BATCH_SIZE, "Changes per committed batch (one transaction).");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Time for a batch's commit to be durable.");
    describe_histogram!(
        WRITE_TO_PUSH_SECONDS,
        Unit::Seconds,
        "From a change entering the write queue to its answer and pushes being queued."
    );
    describe_histogram!(SESSION_QUEUE_DEPTH, "Messages waiting in each session's queue, sampled at every scrape.");
    describe_counter!(SLOW_SESSIONS, "Sessions disconnected because their queue was full.");
    describe_counter!(AUTH_FAILURES, "Authentication failures, by method.");
    describe_counter!(RATE_LIMITED, "Requests refused by the per-user rate limit, by path.");
    describe_counter!(TOPIC_MESSAGES, "Topic messages published (WebSocket or REST).");
    describe_counter!(TOPIC_DELIVERIES, "Topic messages queued to sessions (one per session reached).");
    describe_gauge!(TOPICS, "Topics with a subscriber or held history.");
    describe_gauge!(SUBSCRIPTIONS, "Topic subscriptions held by sessions.");
    describe_gauge!(LATEST_SEQUENCE, "The latest sequence delivered to sessions.");
    describe_gauge!(STORE_CONNECTIONS, "Store connections by state (PostgreSQL).");
}

/// The text of `GET /metrics`: the gauges of the present, read now, then everything.
pub(crate) fn render(state: &AppState, handle: &PrometheusHandle) -> String {
    let connections = state.connections.load(std::sync::atomic::Ordering::Relaxed);
    let authenticated = state.hub.session_count();
    gauge!(CONNECTIONS).set(connections as f64);
    gauge!(SESSIONS, "state" => "authenticated").set(authenticated as f64);
    gauge!(SESSIONS, "state" => "unauthenticated").set(connections.saturating_sub(authenticated) as f64);
    let (topics, subscriptions) = state.topics.counts();
    gauge!(TOPICS).set(topics as f64);
    gauge!(SUBSCRIPTIONS).set(subscriptions as f64);
    gauge!(LATEST_SEQUENCE).set(state.hub.delivered() as f64);
    let depth = metrics::histogram!(SESSION_QUEUE_DEPTH);
    for queued in state.hub.queue_depths() {
        depth.record(queued as f64);
    }
    if let Some((in_use, idle)) = state.store.pool_use() {
        gauge!(STORE_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
        gauge!(STORE_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    }
    handle.run_upkeep();
    handle.render()
}
