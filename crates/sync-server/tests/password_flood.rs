//! A flood of bearer-token authentications with a valid token id and wrong secrets: each
//! one is answered with `auth_error`, the server's memory grows by no more than its
//! password checks may hold (Argon2's memory cost times the checks that run at once),
//! and another user's writes go on meanwhile.
//!
//! The server runs in this process, so its memory is this process's: the test reads the
//! peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`). That is why this
//! file holds this one test, and why its two backends take turns.

mod common;

use common::{Backend, Client, TestServer, assert_ok};
use futures_util::future::join_all;
use serde_json::json;

/// Authentications sent at once.
const FLOOD: usize = 150;
/// Argon2 checks the server runs at once.
const CONCURRENT: usize = 2;
/// What the rest of the flood may cost besides the checks: its 150 connections on both
/// ends, measured at about 5 MiB, with room. (Without a limit on the checks, the flood
/// grows memory by 2-3 GiB: 19 MiB for each check running at once.)
const OTHER_KIB: u64 = 16 * 1024;

/// How long one authentication of the flood may wait for its answer.
const FLOOD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The backends take turns: both measure this process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).expect("the field is in the status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB")
}

/// Sets the peak resident set (`VmHWM`) back to the current one.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident set");
}

async fn a_flood_of_wrong_token_secrets_is_answered_within_bounded_memory(backend: Backend) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start_on_with(backend, |config| {
        config.limits.password_checks = CONCURRENT;
        config.limits.password_check_queue = 16;
    })
    .await;
    let user = "flood-victim";
    let token = sync_server::cli::create_token(&server.config, user, None, false).await.expect("create token");
    let (id, _secret) = token.rsplit_once('_').expect("sts_<id>_<secret>");
    let wrong = |n: usize| json!({"type": "authenticate", "user_id": user, "auth_token": format!("{id}_{n:064x}")});
    let mut bystander = server.client("bystander@example.com").await;
    assert_ok(&bystander.create("before", json!({"n": 0})).await, "document_created_response");

    // One check first, so that what the first one sets up for good (a blocking thread,
    // the allocator's arena) is not counted as growth.
    let mut first = server.connect().await;
    first.send(wrong(FLOOD)).await;
    assert_eq!(first.recv().await["reason"], "invalid credentials");

    reset_peak();
    let before = status_kib("VmRSS");
    let url = server.ws_url();
    let flood = (0..FLOOD).map(|n| {
        let (url, message) = (url.clone(), wrong(n));
        async move {
            let mut client = Client::connect(&url).await;
            client.send(message).await;
            // A generous wait: only a hang guard, it does not judge speed.
            client.try_recv(FLOOD_WAIT).await.expect("every authentication is answered")
        }
    });
    let during = bystander.create("during", json!({"n": 1}));
    let (replies, created) = tokio::join!(join_all(flood), during);
    let grown = status_kib("VmHWM").saturating_sub(before);

    assert_ok(&created, "document_created_response");
    let mut checked = 0;
    for reply in &replies {
        assert_eq!(reply["type"], "auth_error", "{reply}");
        match reply["reason"].as_str() {
            Some("invalid credentials") => checked += 1,
            // Refused at once: as many checks as the queue holds were waiting.
            Some("server error") => {}
            _ => panic!("unexpected reason: {reply}"),
        }
    }
    let argon2_kib = u64::from(argon2::Params::DEFAULT_M_COST);
    let bound = CONCURRENT as u64 * argon2_kib + OTHER_KIB;
    eprintln!("{FLOOD} wrong secrets: {checked} checked, the rest refused; peak memory grew by {grown} KiB");
    assert!(grown <= bound, "peak memory grew by {grown} KiB; the bound is {bound} KiB");

    // The right secret still works, and so does the bystander.
    let mut owner = server.connect().await;
    owner.send(json!({"type": "authenticate", "user_id": user, "auth_token": token})).await;
    assert_eq!(owner.recv().await["type"], "auth_success");
    assert_ok(&bystander.create("after", json!({"n": 2})).await, "document_created_response");
    server.stop().await;
}

common::backend_tests!(a_flood_of_wrong_token_secrets_is_answered_within_bounded_memory);
