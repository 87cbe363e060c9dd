//! The C/C++ SDK end to end: `scripts/build_dist.sh` writes a distribution, the C, C++
//! and events examples are compiled against it with make (and one with CMake through the
//! package config), and run against a live server process: documents created from C
//! reach a Rust engine, remote changes reach C callbacks and C++ lambdas, updates merge,
//! deletes propagate, an engine created while the server is down connects later, options
//! (partial sync) are checked and honoured, topic messages reach C callbacks and C++
//! lambdas, and the C examples run clean under valgrind.
//!
//! Needs gcc, g++, make, cmake and valgrind (`.ci/run` installs what is missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use sync_client::SyncError;

use crate::common;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: cannot run ({e}); is it installed?"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The distribution and examples, built once for every test of this binary.
pub(crate) fn examples() -> PathBuf {
    static BUILT: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let examples = build(dir.path());
            (dir, examples)
        })
        .1
        .clone()
}

/// Builds the distribution and the examples.
fn build(dir: &Path) -> PathBuf {
    let dist = dir.join("dist");
    run(
        Command::new("bash")
            .arg(repo().join("scripts/build_dist.sh"))
            .env("PROFILE", "debug")
            .env("DIST", &dist)
            .env("CARGO", env!("CARGO")),
        "build_dist.sh",
    );
    for path in [
        "include/sync_client.h",
        "include/sync_client_events.h",
        "include/sync_client.hpp",
        "lib/libsync_client.a",
        "lib/libsync_client.so",
    ] {
        assert!(dist.join(path).is_file(), "dist/{path} missing");
    }
    let examples = dist.join("examples");
    run(Command::new("make").arg("-s").arg("-C").arg(&examples).arg("CFLAGS=-O0 -Wall -Wextra -Werror"), "make");
    // The CMake package config: find_package(sync_client) + target_link_libraries.
    let build = dir.join("cmake-build");
    run(Command::new("cmake").arg("-S").arg(&examples).arg("-B").arg(&build), "cmake configure");
    run(Command::new("cmake").arg("--build").arg(&build).arg("--target").arg("basic"), "cmake build");
    let usage = Command::new(build.join("basic")).output().expect("running the CMake-built example");
    assert_eq!(usage.status.code(), Some(64), "the CMake-built example runs and prints its usage");
    examples
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_and_cpp_examples_against_a_live_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let examples = examples();
    let mut server = sync_testkit::ServerProcess::prepare_sqlite(&[])?;
    let (url, key, secret) = (server.ws_url(), server.api_key.clone(), server.secret.clone());
    let args = |name: &str| -> Vec<String> {
        vec![
            format!("sqlite:{}?mode=rwc", dir.path().join(format!("{name}.db")).display()),
            url.clone(),
            "me@example.com".into(),
            key.clone(),
            secret.clone(),
        ]
    };

    // Created while the server is down: the C engine connects once it is up.
    let early = Command::new(examples.join("basic"))
        .args(args("early"))
        .arg("30")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.spawn()?;
    let early = early.wait_with_output()?;
    assert!(early.status.success() && text(&early).contains("synced"), "{}", text(&early));

    // Documents created, merged, patched and deleted from C reach a Rust engine.
    let basic = run(Command::new(examples.join("basic")).args(args("c")), "basic");
    let out = text(&basic);
    assert!(out.contains("null rejected: invalid input: document_id is NULL"), "{out}");
    assert!(out.contains("bad json rejected: invalid input"), "{out}");
    assert!(
        out.contains(r#"bad options rejected: configuration error: collections: "No Caps": "#),
        "a bad collection name is refused, named:\n{out}"
    );
    let me = sync_core::auth::user_id_for_email("me@example.com");
    assert!(out.contains(&format!("user {me}\n")), "the user id the server knows, once connected:\n{out}");
    assert!(out.contains(&format!(r#""owner":"{me}""#)), "documents name their owner:\n{out}");
    let created = out.lines().find_map(|l| l.strip_prefix("created ")).expect("created id").to_owned();
    let deleted = out.lines().find_map(|l| l.strip_prefix("deleted ")).expect("deleted id").to_owned();
    let rust = common::engine(&server, dir.path(), "rust", "me@example.com");
    rust.wait_for_sync(Duration::from_secs(20)).await?;
    assert_eq!(
        rust.get_document(&created).await?.content,
        json!({"title": "from C", "count": 2, "tags": ["c", "sdk"]})
    );
    assert!(matches!(rust.get_document(&deleted).await, Err(SyncError::NotFound(_))), "the delete from C propagated");

    // C++: the same through SyncClient::sync_engine.
    let cpp = run(Command::new(examples.join("basic_cpp")).args(args("cpp")), "basic_cpp");
    let out = text(&cpp);
    assert!(out.contains("synced") && out.contains("not found (-5)"), "{out}");
    assert!(
        out.contains(r#"bad options rejected (-1): sync_engine_create_with_options: invalid input: options_json: unknown option "sync_everything""#),
        "{out}"
    );
    assert!(out.contains(&format!("user {me}\n")), "{out}");
    assert!(out.contains(r#"topic delivered 1 received {"from":"c++"}"#), "the C++ topic round trip:\n{out}");
    assert!(out.contains("bad topic rejected (-1): publish: invalid input: topic \"cpp.*\""), "{out}");
    let cpp_id = out.lines().find_map(|l| l.strip_prefix("created ")).expect("created id").to_owned();
    common::eventually(Duration::from_secs(20), "rust sees the C++ document", || async {
        rust.get_document(&cpp_id).await.is_ok_and(|d| d.content["lang"] == "c++" && d.content["count"] == 2)
    })
    .await;

    // Remote changes reach C callbacks and C++ lambdas.
    let events_c =
        Command::new(examples.join("events")).args(args("events")).arg("8").stdout(Stdio::piped()).spawn()?;
    let events_cpp =
        Command::new(examples.join("events_cpp")).args(args("events-cpp")).arg("8").stdout(Stdio::piped()).spawn()?;
    // Partial sync from C: only the tasks collection.
    let events_tasks = Command::new(examples.join("events"))
        .args(args("events-tasks"))
        .args(["8", r#"{"collections":["tasks"]}"#])
        .stdout(Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let task = rust.create_document_in("tasks", json!({"title": "a task from rust"})).await?;
    let remote = rust.create_document(json!({"title": "made in rust", "n": 1})).await?;
    rust.update_document(&remote.id, json!({"n": 2})).await?;
    rust.wait_for_sync(Duration::from_secs(10)).await?;
    let rated = json!([{"uuid": "c-ev-1", "itemUuid": remote.id, "action": "rated", "payload": {"stars": 5}}]);
    let (status, reply) = common::post_events(&server.addr, &key, &secret, "me@example.com", &rated)?;
    assert_eq!((status, &reply["results"][0]["status"]), (200, &json!("applied")), "{reply}");
    common::eventually(Duration::from_secs(10), "rust follows the application event", || async {
        rust.get_document(&remote.id).await.is_ok_and(|d| d.revision == 3)
    })
    .await;
    rust.delete_document(&remote.id).await?;
    rust.wait_for_sync(Duration::from_secs(10)).await?;
    let (events_c, events_cpp) = (events_c.wait_with_output()?, events_cpp.wait_with_output()?);
    let (out_c, out_cpp) = (text(&events_c), text(&events_cpp));
    let out_tasks = text(&events_tasks.wait_with_output()?);
    let task_line = format!("EVENT document_created id={} title=a task from rust remote=1", task.id);
    assert!(out_tasks.contains(&task_line), "the tasks-only C engine gets the task:\n{out_tasks}");
    assert!(out_c.contains(&task_line), "and so does the C engine that syncs everything:\n{out_c}");
    assert!(!out_tasks.contains(&remote.id), "the tasks-only C engine never hears of other collections:\n{out_tasks}");
    for kind in ["document_created", "document_updated", "document_deleted"] {
        let line = format!("EVENT {kind} id={}", remote.id);
        assert!(out_c.lines().any(|l| l.starts_with(&line) && l.contains("remote=1")), "C missed {kind}:\n{out_c}");
        assert!(
            out_cpp.lines().any(|l| l.starts_with(&line) && l.contains("via=cpp")),
            "C++ missed {kind}:\n{out_cpp}"
        );
    }
    let rated =
        format!("EVENT application_event id={} title=made in rust remote=1 n=3 action=rated author={me}", remote.id);
    assert!(
        out_c.lines().any(|l| l.starts_with(&rated) && l.ends_with(r#"payload={"stars":5}"#)),
        "C gets the application event with its action, author and payload:\n{out_c}"
    );
    assert!(
        out_cpp
            .lines()
            .any(|l| l.contains(&format!("application_event id={}", remote.id)) && l.contains("action=rated")),
        "C++ gets the application event:\n{out_cpp}"
    );
    assert!(out_c.contains("EVENT document_created id=") && out_c.contains("title=events from C remote=0"), "{out_c}");
    assert!(out_c.contains("created-count="), "{out_c}");
    Ok(())
}

#[test]
fn c_example_is_clean_under_valgrind() {
    let dir = tempfile::tempdir().unwrap();
    let examples = examples();
    let server = sync_testkit::ServerProcess::start_sqlite(&[]).unwrap();
    let output = Command::new("valgrind")
        .args(["--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=9"])
        .arg(examples.join("basic"))
        .arg(format!("sqlite:{}?mode=rwc", dir.path().join("vg.db").display()))
        .args([server.ws_url(), "me@example.com".into(), server.api_key.clone(), server.secret.clone(), "60".into()])
        .output()
        .expect("running valgrind; is it installed?");
    let out = text(&output);
    assert!(output.status.success(), "valgrind reported errors or the example failed:\n{out}");
    assert!(out.contains("ERROR SUMMARY: 0 errors"), "{out}");
    assert!(out.contains("definitely lost: 0 bytes") || out.contains("no leaks are possible"), "{out}");
    assert!(out.contains("synced"), "{out}");
}

/// Topics from C, run under valgrind: a message from another user reaches the C
/// callback on the thread that processes events, and the callback answers with a publish;
/// the user's other device reaches the C program's personal subscription; invalid names
/// and a NULL callback are refused; a callback unsubscribes itself, after which its id is
/// unknown; and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_topic_callbacks_against_a_live_server_clean_under_valgrind() -> anyhow::Result<()> {
    use std::io::BufRead;

    const WAIT: Duration = Duration::from_secs(90);
    let dir = tempfile::tempdir()?;
    let examples = examples();
    let server = sync_testkit::ServerProcess::start_sqlite(&[])?;
    let other = common::engine(&server, dir.path(), "other", "other@example.com");
    let device = common::engine(&server, dir.path(), "device", "me@example.com");
    other.wait_for_sync(Duration::from_secs(20)).await?;
    device.wait_for_sync(Duration::from_secs(20)).await?;
    let mut replies = other.subscribe("sdk.chat.reply").await?;

    let mut child = Reaped(Some(
        Command::new("valgrind")
            .args(["--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=9"])
            .arg(examples.join("topics"))
            .arg(format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display()))
            .args([server.ws_url(), "me@example.com".into(), server.api_key.clone(), server.secret.clone()])
            .args(["120", "sdk.chat"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running valgrind; is it installed?"),
    ));
    let stdout = child.0.as_mut().and_then(|c| c.stdout.take()).expect("piped stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while !seen.iter().any(|l: &String| l.starts_with("subscribed sdk.chat")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the C program did not subscribe within {WAIT:?}:\n{}", seen.join("\n")),
        }
    }

    let me = sync_core::auth::user_id_for_email("me@example.com");
    let them = sync_core::auth::user_id_for_email("other@example.com");
    assert_eq!(other.publish("sdk.chat", json!({"n": 1}))?.await?.delivered, 1);
    let reply = match tokio::time::timeout(WAIT, replies.recv()).await? {
        Some(sync_client::TopicEvent::Message(m)) => m,
        other => panic!("expected the C program's reply, got {other:?}"),
    };
    assert_eq!(reply.data, json!({"echo": {"n": 1}}), "the callback published its answer");
    assert_eq!(reply.from.as_deref(), Some(me.as_str()));
    let personal = device.personal_topic().expect("connected");
    assert_eq!(device.publish(&personal, json!({"hello": "from rust"}))?.await?.delivered, 1);
    assert_eq!(other.publish("sdk.chat", json!({"stop": true}))?.await?.delivered, 1);

    let running = child.0.take().expect("the child");
    let output = tokio::task::spawn_blocking(move || running.wait_with_output()).await??;
    reader.join().expect("the reader thread");
    seen.extend(lines.try_iter());
    let out = format!("{}\n{}", seen.join("\n"), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the C program or valgrind failed ({}):\n{out}", output.status);
    for expected in [
        "bad publish rejected (-1): invalid input: topic \"news.*\"".to_owned(),
        "bad pattern rejected (-1): invalid input: topic \"a..b\"".to_owned(),
        "null callback rejected (-1)".to_owned(),
        format!(r#"TOPIC message sub=sdk.chat topic=sdk.chat from={them} offset=0 missed=0 data={{"n":1}}"#),
        "replied delivered=1 offset=0".to_owned(),
        format!(r#"TOPIC personal message topic=user.{me} from={me} data={{"hello":"from rust"}}"#),
        "unsubscribed 0".to_owned(),
        "unsubscribe again: -5".to_owned(),
        "stopped".to_owned(),
        "ERROR SUMMARY: 0 errors".to_owned(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(out.contains("definitely lost: 0 bytes") || out.contains("no leaks are possible"), "{out}");
    Ok(())
}

/// A child process killed and waited for if the test fails before waiting for it.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
