//! `GET /metrics` in the Prometheus text format, read from a server process of its own
//! (the counters are the process's): what a client does shows in the counters, the
//! histograms have buckets, the gauges describe the present, and the route can be kept
//! to admins.

use std::collections::BTreeMap;

use serde_json::json;
use sync_testkit::ServerProcess;

use crate::common::{Client, assert_ok, hmac_auth, hmac_headers, http_request, now_secs};

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &ServerProcess, headers: &[(&str, &str)]) -> (u16, String) {
    let response = http_request(server.addr.parse().unwrap(), "GET", "/metrics", headers, b"").await;
    (response.status, String::from_utf8_lossy(&response.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_do_shows_in_the_metrics() {
    let server = ServerProcess::start_sqlite(&[]).unwrap();
    let url = server.ws_url();
    let mut laptop = Client::connect(&url).await;
    assert_eq!(
        laptop.authenticate(&server.api_key, &server.secret, "m@example.com", None, None).await["type"],
        "auth_success"
    );
    let mut phone = Client::connect(&url).await;
    assert_eq!(
        phone.authenticate(&server.api_key, &server.secret, "m@example.com", None, None).await["type"],
        "auth_success"
    );
    for i in 0..3 {
        assert_ok(&laptop.create(&format!("d{i}"), json!({"i": i})).await, "document_created_response");
    }
    let missing = laptop.update("nope", json!([{"op": "add", "path": "/x", "value": 1}]), None).await;
    assert_eq!(missing["error"]["code"], "document_not_found", "{missing}");
    // A wrong secret: one authentication failure by HMAC.
    let mut stranger = Client::connect(&url).await;
    stranger.send(hmac_auth(&server.api_key, "rps_wrong", "m@example.com", None, None)).await;
    assert_eq!(stranger.recv().await["type"], "auth_error");
    // A topic message to the phone.
    assert_eq!(phone.request(json!({"type": "subscribe", "topic": "news"})).await["type"], "subscribed");
    assert_eq!(laptop.request(json!({"type": "publish", "topic": "news", "data": 1})).await["type"], "published");
    assert_eq!(phone.recv_type("data").await["data"], 1);

    let (status, text) = scrape(&server, &[]).await;
    assert_eq!(status, 200, "{text}");
    let got = samples(&text);
    let value = |name: &str| got.get(name).copied().unwrap_or_else(|| panic!("no sample {name} in:\n{text}"));
    assert_eq!(value(r#"sync_changes_committed_total{kind="create"}"#), 3.0);
    assert_eq!(value(r#"sync_changes_refused_total{reason="document_not_found"}"#), 1.0);
    assert_eq!(value(r#"sync_auth_failures_total{method="hmac"}"#), 1.0);
    assert_eq!(value(r#"sync_messages_received_total{type="create_document"}"#), 3.0);
    assert_eq!(value("sync_document_pushes_total"), 3.0, "each create pushed to the phone");
    assert_eq!(value(r#"sync_sessions{state="authenticated"}"#), 2.0);
    assert_eq!(value("sync_topic_messages_total"), 1.0);
    assert_eq!(value("sync_topic_deliveries_total"), 1.0);
    assert_eq!(value("sync_topic_subscriptions"), 1.0);
    assert_eq!(value("sync_latest_sequence"), 3.0);
    assert!(value("sync_commit_duration_seconds_count") >= 1.0);
    assert_eq!(value("sync_write_to_push_seconds_count"), 4.0, "three commits and a refusal decided by the write path");
    assert!(got.keys().any(|k| k.starts_with("sync_commit_duration_seconds_bucket{le=")), "a histogram:\n{text}");
    assert!(text.contains("# TYPE sync_changes_committed_total counter"), "{text}");
    assert!(text.contains("# HELP sync_connections "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_can_be_kept_to_admins() {
    let server = ServerProcess::start_sqlite(&[("SYNC_METRICS_REQUIRE_ADMIN", "true")]).unwrap();
    let (status, body) = scrape(&server, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "the JSON error: {body}");
    let headers = hmac_headers(&server.api_key, &server.secret, "admin@example.com", now_secs(), b"");
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, text) = scrape(&server, &headers).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("sync_connections"), "{text}");
}
