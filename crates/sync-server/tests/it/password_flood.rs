//! A flood of bearer-token authentications with a valid token id and wrong secrets: each
//! one is answered with `auth_error`, the server's memory grows by no more than its
//! password checks may hold (Argon2's memory cost times the checks that run at once),
//! and another user's writes go on meanwhile.
//!
//! The server is a process of its own (the test kit's), so that its peak resident set
//! (`VmHWM`, reset through `/proc/<pid>/clear_refs`) is its alone, whatever other tests
//! of this binary do meanwhile.

use futures_util::future::join_all;
use serde_json::json;
use sync_testkit::ServerProcess;

use crate::common::{self, Backend, Client, SECRET_KEY, assert_ok};

/// Authentications sent at once.
const FLOOD: usize = 150;
/// Argon2 checks the server runs at once.
const CONCURRENT: usize = 2;
/// What the rest of the flood may cost besides the checks: its 150 connections, with
/// room. (Without a limit on the checks, the flood grows memory by 2-3 GiB: 19 MiB for
/// each check running at once.)
const OTHER_KIB: u64 = 16 * 1024;

/// How long one authentication of the flood may wait for its answer.
const FLOOD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the process status");
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).expect("the field is in the status");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB")
}

/// Sets the peak resident set (`VmHWM`) of `pid` back to its current one.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting the peak resident set");
}

async fn a_flood_of_wrong_token_secrets_is_answered_within_bounded_memory(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = backend.database_url(dir.path()).await;
    let env = [("SYNC_PASSWORD_CHECKS", "2"), ("SYNC_PASSWORD_CHECK_QUEUE", "16")];
    let server = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || ServerProcess::start(&url, None, &env)).await.unwrap().expect("server")
    };
    let pid = server.pid().expect("pid");
    let mut config = sync_server::Config::default();
    config.database.url = url;
    config.auth.secret_key = Some(SECRET_KEY.to_owned());
    let user = "flood-victim";
    let token = sync_server::create_token(&config, user, None, false).await.expect("create token");
    let (id, _secret) = token.rsplit_once('_').expect("sts_<id>_<secret>");
    let wrong = |n: usize| json!({"type": "authenticate", "user_id": user, "auth_token": format!("{id}_{n:064x}")});
    let url = server.ws_url();
    let mut bystander = Client::connect(&url).await;
    let reply = bystander.authenticate(&server.api_key, &server.secret, "bystander@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    assert_ok(&bystander.create("before", json!({"n": 0})).await, "document_created_response");

    // One check first, so that what the first one sets up for good (a blocking thread,
    // the allocator's arena) is not counted as growth.
    let mut first = Client::connect(&url).await;
    first.send(wrong(FLOOD)).await;
    assert_eq!(first.recv().await["reason"], "invalid credentials");

    reset_peak(pid);
    let before = status_kib(pid, "VmRSS");
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
    let grown = status_kib(pid, "VmHWM").saturating_sub(before);

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
    let mut owner = Client::connect(&url).await;
    owner.send(json!({"type": "authenticate", "user_id": user, "auth_token": token})).await;
    assert_eq!(owner.recv().await["type"], "auth_success");
    assert_ok(&bystander.create("after", json!({"n": 2})).await, "document_created_response");
    drop(server);
    drop(dir);
}

common::backend_tests!(a_flood_of_wrong_token_secrets_is_answered_within_bounded_memory);
