//! Every scenario of the benchmark runs once at a tiny size (seconds, not minutes) so it
//! keeps working: the real binary, a real server process it spawns, real sockets. The
//! figures of these runs mean nothing as performance; the checks are that each scenario
//! finishes, reports its figures, and that what the server promises holds (every update
//! acknowledged, every change delivered to every subscriber, every queued change drained).
//! Full-size runs and their figures are in docs/BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `sync-bench <args> --json FILE` and returns the one report it wrote.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_sync-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .current_dir(dir.path())
        .output()
        .expect("run sync-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sync-bench {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
    let report = read_report(&json);
    assert_eq!(report["machine_cores"].as_u64().map(|n| n > 0), Some(true), "{report}");
    assert!(report["git_commit"].is_string(), "{report}");
    assert!(report["host_speed"]["cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
    assert!(stdout.contains(&format!("== {}", report["scenario"].as_str().unwrap_or("?"))), "table: {stdout}");
    report
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the --json file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let report: Value = serde_json::from_str(lines.next().expect("one report")).expect("JSON report");
    assert!(lines.next().is_none(), "one report per scenario: {text}");
    report
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name].as_f64().unwrap_or_else(|| panic!("figure {name} missing: {report}"))
}

fn latency_samples(report: &Value, name: &str) -> u64 {
    let latency = &report["figures"][name];
    for key in ["p50_ms", "p95_ms", "p99_ms", "max_ms"] {
        assert!(latency[key].as_f64().is_some(), "{name}.{key} missing: {report}");
    }
    latency["samples"].as_u64().unwrap_or(0)
}

fn check_write(report: &Value, scenario: &str, backend: &str) {
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["backend"], backend);
    let acked = figure(report, "acknowledged_updates");
    assert!(acked > 0.0, "{report}");
    assert_eq!(figure(report, "refused_updates"), 0.0, "{report}");
    assert!(figure(report, "acknowledged_updates_per_sec") > 0.0, "{report}");
    assert_eq!(latency_samples(report, "ack_latency") as f64, acked, "one latency per acknowledged update");
}

#[test]
fn write_on_sqlite() {
    let report = bench(&["write", "--spawn", "sqlite", "--writers", "4", "--seconds", "1", "--warmup", "0.2"]);
    check_write(&report, "write", "sqlite");
}

#[test]
fn write_on_one_hot_document() {
    // Many writers, so most changes are stale and rebased over the others' (none refused).
    let args = ["write", "--spawn", "sqlite", "--hot", "--writers", "50", "--seconds", "1", "--warmup", "0.2"];
    let report = bench(&args);
    check_write(&report, "write-hot", "sqlite");
}

#[test]
fn write_on_postgres() {
    if !sync_testkit::PgServer::binaries_available() {
        return;
    }
    let report = bench(&["write", "--spawn", "postgres", "--writers", "4", "--seconds", "1", "--warmup", "0.2"]);
    check_write(&report, "write", "postgres");
}

#[test]
fn fanout_delivers_every_change_to_every_subscriber() {
    let args =
        ["fanout", "--spawn", "sqlite", "--subscribers", "20", "--rate", "40", "--seconds", "1", "--warmup", "0.3"];
    let report = bench(&args);
    assert_eq!(figure(&report, "failed_subscribers"), 0.0, "{report}");
    let sent = figure(&report, "changes_sent");
    assert!(sent > 0.0, "{report}");
    assert_eq!(figure(&report, "deliveries"), sent * 20.0, "{report}");
    assert_eq!(figure(&report, "deliveries_expected"), sent * 20.0, "{report}");
    assert_eq!(latency_samples(&report, "delivery_latency") as f64, sent * 20.0);
}

/// Both drives of the topics scenario deliver every message to every subscriber of its
/// topic, and the server's own count (`published.delivered`) agrees.
#[test]
fn topics_deliver_every_message_to_every_subscriber() {
    let closed = ["topics", "--spawn", "sqlite", "--topics", "5", "--subscribers", "4", "--publishers", "2"];
    let open = ["topics", "--spawn", "sqlite", "--topics", "1", "--subscribers", "30", "--rate", "3000"];
    for args in [&closed[..], &open[..]] {
        let args: Vec<&str> = args.iter().copied().chain(["--seconds", "1", "--warmup", "0.3"]).collect();
        let report = bench(&args);
        assert_eq!(report["scenario"], "topics");
        assert_eq!(figure(&report, "failed_subscribers"), 0.0, "{report}");
        assert_eq!(figure(&report, "publishes_refused"), 0.0, "{report}");
        let expected = figure(&report, "deliveries_expected");
        assert!(expected > 0.0, "{report}");
        assert_eq!(figure(&report, "deliveries"), expected, "{report}");
        assert_eq!(figure(&report, "deliveries_server_queued"), expected, "{report}");
        assert_eq!(latency_samples(&report, "delivery_latency") as f64, expected, "one latency per delivery");
    }
}

#[test]
fn connections_are_held_and_measured() {
    let report = bench(&["connections", "--spawn", "sqlite", "--connections", "50", "--hold", "0"]);
    assert_eq!(figure(&report, "held"), 50.0, "{report}");
    assert_eq!(figure(&report, "failed"), 0.0, "{report}");
    assert!(figure(&report, "server_rss_after_kib") > 0.0, "read from /proc of the spawned server: {report}");
    assert!(figure(&report, "connect_and_auth_per_sec") > 0.0, "{report}");
}

#[test]
fn catchup_from_sequence_zero() {
    let report = bench(&["catchup", "--spawn", "sqlite", "--documents", "300", "--page", "100"]);
    assert!(figure(&report, "raw_docs_per_sec") > 0.0, "{report}");
    assert!(figure(&report, "engine_docs_per_sec") > 0.0, "{report}");
    assert!(figure(&report, "raw_bytes_received") > 300.0 * 100.0, "300 documents of ~256 bytes: {report}");
}

#[test]
fn offline_queue_drains() {
    let report = bench(&["offline", "--spawn", "sqlite", "--documents", "20", "--edits", "2"]);
    // 20 creations and 40 edits; unsent edits of a document may be merged into one change.
    let queued = figure(&report, "queued_changes");
    assert!((20.0..=60.0).contains(&queued), "{report}");
    assert!(figure(&report, "drain_seconds") > 0.0, "{report}");
}

#[test]
fn client_writes_locally() {
    let report = bench(&["client-write", "--writes", "200", "--documents", "10"]);
    assert!(figure(&report, "writes_per_sec") > 0.0, "{report}");
    assert!(latency_samples(&report, "create_latency") > 0, "{report}");
    assert!(latency_samples(&report, "update_latency") > 0, "{report}");
}
