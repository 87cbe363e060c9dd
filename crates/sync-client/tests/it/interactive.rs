//! The interactive task manager (`examples/interactive_client.rs`) driven through a real
//! terminal: tmux runs the example binary against a private server process, keys go in
//! with `tmux send-keys`, and the screen comes back with `tmux capture-pane`. A second
//! engine in the test process plays "another client" of the same user (or another user
//! sharing tasks; or another device announcing its activity on the personal topic), and
//! a TCP proxy that the test can cut takes the terminal client
//! offline on its own. Needs `tmux`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use sync_client::{SyncError, TopicEvent};
use sync_testkit::ServerProcess;

use crate::common::{self, Proxy};
use crate::sharing::{Sharing, rule};

const EMAIL: &str = "tui@example.com";
/// Longest wait for anything to show up (on screen or in the second engine).
const WAIT: Duration = Duration::from_secs(15);

/// Create, complete, edit and delete with keys; another client sees every change, and its
/// own changes show up live; `q` exits cleanly with everything sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_made_with_keys_sync_and_other_clients_changes_show_live() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let tui = Tui::start(dir.path(), &server.ws_url(), &server.api_key, &server.secret);
    tui.wait_for("the connected header and an empty list", |s| s.contains(" connected ") && s.contains("No tasks yet"))
        .await;

    // Create: title, then priority, then tags.
    tui.keys(&["n"]);
    tui.text("Buy milk");
    tui.keys(&["Enter"]);
    tui.text("high");
    tui.keys(&["Enter"]);
    tui.text("groceries, errands");
    tui.keys(&["Enter"]);
    tui.wait_for_row("Buy milk", "open, high, tagged, synced", &["[ ]", "high", "#groceries #errands", "synced"]).await;

    // Complete it.
    tui.keys(&["Space"]);
    tui.wait_for_row("Buy milk", "done and synced", &["[x]", "synced"]).await;
    let screen = tui.wait_for("nothing pending", |s| s.contains(" 0 pending")).await;
    assert!(screen.contains("1 done"), "{screen}");

    // Another client of the same user has the task as the keys made it.
    let other = common::engine(&server, dir.path(), "other", EMAIL);
    other.wait_for_sync(WAIT).await?;
    let tasks = other.list_documents(Some("tasks")).await?;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let milk = &tasks[0];
    assert_eq!(milk.content["title"], "Buy milk");
    assert_eq!(milk.content["status"], "completed");
    assert_eq!(milk.content["priority"], "high");
    assert_eq!(milk.content["tags"], json!(["groceries", "errands"]));
    assert!(milk.content["created"].as_str().is_some_and(|c| c.ends_with('Z')), "{}", milk.content);

    // Activity: what another device announces on the user's personal topic shows live.
    let mut activity = other.subscribe_personal()?;
    let personal = other.personal_topic().expect("connected");
    let announcement =
        json!({"kind": "task_activity", "device": "phone-1", "action": "added", "title": "Call the plumber"});
    assert_eq!(other.publish(&personal, announcement)?.await?.delivered, 1, "the terminal's session");
    tui.wait_for("the other device's activity", |s| s.contains(r#"activity: device phone-1 added "Call the plumber""#))
        .await;

    // Its new task appears live, then its edit.
    let plumber = other
        .create_document_in(
            "tasks",
            json!({"title": "Call the plumber", "status": "pending", "priority": "low", "tags": ["home"],
                   "created": sync_core::Timestamp::now().to_string()}),
        )
        .await?;
    tui.wait_for_row("Call the plumber", "the other client's task", &["[ ]", "low", "#home", "synced"]).await;
    tui.wait_for("the remote-change status line", |s| s.contains("remote new: Call the plumber")).await;
    other.update_document(&plumber.id, json!({"priority": "high"})).await?;
    tui.wait_for_row("Call the plumber", "the other client's edit", &["high"]).await;
    tui.wait_for("the remote-update status line", |s| s.contains("remote update: Call the plumber")).await;

    // Edit title, priority (high -> low) and tags of the selected (first) task with keys.
    tui.keys(&["e", "C-u"]);
    tui.text("Buy oat milk");
    tui.keys(&["Enter", "p", "t", "C-u"]);
    tui.text("dairy, shop");
    tui.keys(&["Enter"]);
    tui.wait_for_row("Buy oat milk", "the edited task", &["[x]", "low", "#dairy #shop", "synced"]).await;
    // The terminal announced each edit to the user's other devices, in order.
    for action in ["renamed", "priority low", "tags changed"] {
        let event = tokio::time::timeout(WAIT, activity.recv()).await?;
        let Some(TopicEvent::Message(message)) = event else { panic!("expected an announcement, got {event:?}") };
        assert_eq!(message.data["kind"], "task_activity", "{message:?}");
        assert_eq!(
            (message.data["action"].as_str(), message.data["title"].as_str()),
            (Some(action), Some("Buy oat milk"))
        );
        assert_eq!(message.data["device"].as_str().map(str::len), Some(8), "the terminal's device id, shortened");
    }
    common::eventually(WAIT, "the other client sees the edits", || async {
        other.get_document(&milk.id).await.is_ok_and(|d| {
            d.content["title"] == "Buy oat milk"
                && d.content["priority"] == "low"
                && d.content["tags"] == json!(["dairy", "shop"])
                && d.content["status"] == "completed"
        })
    })
    .await;

    // Delete the second task: move down, `d`, confirm with `y`.
    tui.keys(&["j", "d"]);
    tui.wait_for("the delete question", |s| s.contains(r#"Delete "Call the plumber"? y = yes"#)).await;
    tui.keys(&["y"]);
    tui.wait_for("the deleted task gone", |s| row(s, "Call the plumber").is_none() && s.contains("1 done")).await;
    common::eventually(WAIT, "the other client sees the delete", || async {
        matches!(other.get_document(&plumber.id).await, Err(SyncError::NotFound(_)))
    })
    .await;

    // A delete by the other client disappears live too.
    other.delete_document(&milk.id).await?;
    tui.wait_for("the remote delete", |s| row(s, "Buy oat milk").is_none() && s.contains("No tasks yet")).await;
    tui.wait_for("the remote-delete status line", |s| s.contains("remote delete: Buy oat milk")).await;

    // `q` restores the terminal and exits cleanly with nothing left to send.
    tui.keys(&["q"]);
    let screen = tui.wait_for_exit().await;
    assert!(screen.contains("exit status: 0"), "{screen}");
    assert!(screen.contains("interactive_client: all changes synced"), "{screen}");
    other.shutdown().await?;
    Ok(())
}

/// Two users share a task list: once an admin's rule lets the terminal's user read and
/// edit another user's tasks, they appear marked with their owner and a status line says
/// so; an edit made with keys reaches the owner; removing the rule takes them off the
/// screen with a line saying that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_list_shared_by_another_user_shows_live_and_goes_when_revoked() -> anyhow::Result<()> {
    let sharing = Sharing::start()?;
    let dir = tempfile::tempdir()?;
    let alice = sharing.engine("alice", "alice@example.com", None);
    let alice_id = sync_core::auth::user_id_for_email("alice@example.com");
    let plants = alice
        .create_document_in(
            "tasks",
            json!({"title": "Water the plants", "status": "pending", "priority": "medium", "tags": [],
                   "created": sync_core::Timestamp::now().to_string()}),
        )
        .await?;
    alice.wait_for_sync(WAIT).await?;
    let tui = Tui::start(dir.path(), &sharing.server.ws_url(), &sharing.key, &sharing.secret);
    let me = sync_core::auth::user_id_for_email(EMAIL);
    tui.wait_for("connected, with the user id to share with", |s| {
        s.contains(&format!("(user id {me})")) && s.contains("No tasks yet")
    })
    .await;

    assert_eq!(sharing.put_acl(json!([rule(&me, "doc:tasks/*", "*")]))?, 204);
    // The table shortens the owner's id; the status line names it in full.
    let shared_by = format!("(shared by {}…)", &alice_id[..8]);
    tui.wait_for_row("Water the plants", "the shared task, with its owner", &[&shared_by, "synced"]).await;
    tui.wait_for("the shared status line", |s| s.contains(&format!("shared with you by {alice_id}: Water the plants")))
        .await;
    tui.keys(&["p"]);
    common::eventually(WAIT, "alice sees the priority set in the terminal", || async {
        alice.get_document(&plants.id).await.is_ok_and(|d| d.content["priority"] == "high")
    })
    .await;

    assert_eq!(sharing.put_acl(json!([]))?, 204);
    tui.wait_for("the task gone, and a line saying so", |s| {
        row(s, "Water the plants").is_none() && s.contains("no longer shared with you: Water the plants")
    })
    .await;
    tui.keys(&["q"]);
    let screen = tui.wait_for_exit().await;
    assert!(screen.contains("exit status: 0"), "{screen}");
    Ok(())
}

/// Started before its server: says offline, keeps a task pending, sends it when the
/// server appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_offline_and_sends_changes_when_the_server_appears() -> anyhow::Result<()> {
    let mut server = ServerProcess::prepare_sqlite(&[])?;
    let dir = tempfile::tempdir()?;
    let tui = Tui::start(dir.path(), &server.ws_url(), &server.api_key, &server.secret);
    tui.wait_for("the offline header and status", |s| {
        s.contains(" offline ") && s.contains("offline: cannot reach") && s.contains("No tasks yet")
    })
    .await;

    tui.keys(&["n"]);
    tui.text("Written offline");
    tui.keys(&["Enter", "Enter"]); // Enter alone: medium priority.
    tui.text("plane");
    tui.keys(&["Enter"]);
    tui.wait_for_row("Written offline", "the offline task", &["[ ]", "medium", "#plane", "pending"]).await;
    tui.wait_for("the pending count", |s| s.contains(" offline ") && s.contains(" 1 pending")).await;

    server.spawn()?;
    tui.keys(&["s"]); // Retry now instead of after the backoff.
    tui.wait_for("connected", |s| s.contains(" connected ") && s.contains(" 0 pending")).await;
    tui.wait_for_row("Written offline", "the task synced", &["synced"]).await;

    let other = common::engine(&server, dir.path(), "other", EMAIL);
    other.wait_for_sync(WAIT).await?;
    let tasks = other.list_documents(Some("tasks")).await?;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].content["title"], "Written offline");
    assert_eq!(tasks[0].content["priority"], "medium");
    assert_eq!(tasks[0].content["tags"], json!(["plane"]));

    tui.keys(&["q"]);
    let screen = tui.wait_for_exit().await;
    assert!(screen.contains("exit status: 0"), "{screen}");
    other.shutdown().await?;
    Ok(())
}

/// The TUI goes offline alone (its connection runs through a proxy the test cuts) while
/// the other client edits the same field; on reconnecting, the clash shows on the task
/// and in the status line until the user edits the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clashing_offline_edit_shows_a_conflict_until_edited_again() -> anyhow::Result<()> {
    let server = common::server();
    let mut proxy = Proxy::start(&server.addr).await?;
    let dir = tempfile::tempdir()?;
    let tui = Tui::start(dir.path(), &format!("ws://{}/ws", proxy.addr), &server.api_key, &server.secret);
    tui.wait_for("connected", |s| s.contains(" connected ") && s.contains("No tasks yet")).await;
    tui.keys(&["n"]);
    tui.text("Shared task");
    tui.keys(&["Enter", "Enter", "Enter"]);
    tui.wait_for_row("Shared task", "the task synced", &["synced", "medium"]).await;
    let other = common::engine(&server, dir.path(), "other", EMAIL);
    other.wait_for_sync(WAIT).await?;
    let id = other.list_documents(Some("tasks")).await?[0].id.clone();

    proxy.cut().await;
    tui.wait_for("offline", |s| s.contains(" offline ")).await;
    tui.keys(&["e", "C-u"]);
    tui.text("Title from the TUI");
    tui.keys(&["Enter"]);
    tui.wait_for_row("Title from the TUI", "the offline edit", &["pending"]).await;
    other.update_document(&id, json!({"title": "Title from the other client"})).await?;
    other.wait_for_sync(WAIT).await?;

    proxy.restore().await?;
    tui.keys(&["s"]);
    tui.wait_for("the conflict message", |s| s.contains("conflict on Title from the TUI: your edit was kept")).await;
    tui.wait_for("the conflict mark, all sent", |s| {
        s.contains(" connected ")
            && s.contains(" 0 pending")
            && row(s, "Title from the TUI").is_some_and(|r| r.contains("conflict"))
    })
    .await;
    // The later edit won everywhere.
    common::eventually(WAIT, "the other client has the TUI's title", || async {
        other.get_document(&id).await.is_ok_and(|d| d.content["title"] == "Title from the TUI")
    })
    .await;

    // Editing the task again answers the conflict.
    tui.keys(&["p"]);
    tui.wait_for_row("Title from the TUI", "the task edited and synced", &["synced", "high"]).await;

    tui.keys(&["q"]);
    let screen = tui.wait_for_exit().await;
    assert!(screen.contains("exit status: 0"), "{screen}");
    other.shutdown().await?;
    Ok(())
}

/// The example running in a private tmux server, killed on drop. Its socket lives in the
/// test's temporary directory, so nothing is left behind in the user's tmux directory.
struct Tui {
    socket: PathBuf,
}

impl Tui {
    /// Starts the example in a 120x40 terminal.
    fn start(dir: &Path, ws_url: &str, api_key: &str, secret: &str) -> Tui {
        let socket = dir.join("tmux.sock");
        let database = dir.join("tui.db").display().to_string();
        let example = example_binary().display().to_string();
        let tui = Tui { socket };
        // A shell stays in the pane after the program exits and prints its exit status. (With
        // tmux's remain-on-exit instead, tmux 3.3 sometimes drops the program's last output or
        // never reports the status.) With several arguments tmux runs them directly, and `sh -c`
        // takes the program and its arguments as `$0 $@`, so nothing needs quoting.
        let out = tui.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            "120",
            "-y",
            "40",
            "sh",
            "-c",
            r#""$0" "$@"; echo "exit status: $?"; exec sleep 60"#,
            &example,
            "--api-key",
            api_key,
            "--secret",
            secret,
            "--database",
            &database,
            "--user-id",
            EMAIL,
            "--server",
            ws_url,
        ]);
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        tui
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX") // a private server even when the tests run inside tmux
            .output()
            .expect("running tmux (is it installed?)")
    }

    /// Sends keys by tmux name (`Enter`, `Space`, `C-u`, `j`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success(), "send-keys {keys:?}");
    }

    /// Types text literally.
    fn text(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-t", "tui", "-l", text]).status.success(), "send-keys -l {text:?}");
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    /// Polls the screen until `check` holds; fails with the last screen after [`WAIT`].
    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}; the screen:\n{screen}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the table row of `title` to contain every one of `parts`.
    async fn wait_for_row(&self, title: &str, what: &str, parts: &[&str]) {
        self.wait_for(what, |s| row(s, title).is_some_and(|r| parts.iter().all(|p| r.contains(p)))).await;
    }

    /// Waits for the program to exit; returns the final screen, which ends with its exit status.
    async fn wait_for_exit(&self) -> String {
        self.wait_for("the program to exit", |s| s.contains("exit status: ")).await
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        // Kills the session and the example with it, pass or fail.
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The task table's row showing `title`: only rows have a done mark. (The border is not
/// matched, so the check does not depend on how the terminal draws box characters.)
fn row<'s>(screen: &'s str, title: &str) -> Option<&'s str> {
    screen.lines().find(|line| (line.contains("[ ]") || line.contains("[x]")) && line.contains(title))
}

/// The example binary. `cargo test -p sync-client` builds it; a run of the test binary
/// alone (`--test it`) does not, so it is built here when missing or older than its
/// sources. (Not on every run: a nested cargo waits for the build lock of any other cargo
/// using the same target directory, and may build with other features than the outer run.)
fn example_binary() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join("interactive_client")))
        .expect("locating the target directory");
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let built = modified(&path);
    let stale = [
        "interactive_client.rs",
        "interactive_client/app.rs",
        "interactive_client/task.rs",
        "interactive_client/ui.rs",
    ]
    .iter()
    .any(|file| modified(&sources.join(file)) > built);
    if built.is_none() || stale {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "sync-client", "--example", "interactive_client"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the interactive_client example failed");
    }
    path
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
