//! An interactive task manager in the terminal, built on the sync client: create, edit,
//! complete and delete tasks with a priority and tags; see which tasks the server has
//! (synced / pending / conflict), whether the client is connected, and other clients'
//! changes as they arrive. It works offline: changes are kept locally and sent later.
//!
//! ```sh
//! cargo run -p sync-client --example interactive_client -- \
//!     --api-key rpa_… --secret rps_… --user-id user@example.com \
//!     [--database tasks.db] [--server ws://localhost:8080/ws]
//! ```
//!
//! The secret may come from `SYNC_API_SECRET` instead; `--api-key` also takes a bearer
//! token (`sts_…`) or a JWT, with `--user-id` then the user id. Run two of them on two
//! databases to watch changes travel. Keys are listed at the bottom of the screen.
//!
//! Tasks are documents in the `tasks` collection:
//! `{"title", "status": "pending"|"completed", "priority": "low"|"medium"|"high", "tags": [..], "created": <RFC 3339>}`.
//! The client syncs only that collection (partial sync).
//!
//! Sharing: two users share their task lists when an admin grants access with a rule
//! naming the other user's id (the header shows it once connected: `(user id <id>)`; for
//! an API key it is derived from the email):
//!
//! ```sh
//! sync-server acl add --user <bob's user id> --item 'doc:tasks/*' --action '*'   # read and edit
//! # (a running server reads rules changed by the CLI within `auth.acl_reload_secs`)
//! # or, over HTTP with admin credentials: PUT /acl {"rules":[{"user":"<id>","item":"doc:tasks/*","action":"read","allow":true}]}
//! ```
//!
//! `doc:tasks/*` covers the tasks of every owner; the document's owner always keeps full
//! access. The other user's tasks then appear live, marked `(shared by <owner id>…)`, with a
//! status line saying so; when the rule is removed they disappear, with a line saying that
//! too (an edit not yet sent to them is dropped).
//!
//! Activity: every change made with keys is announced on the user's personal topic
//! (`user.<id>`, a live topic only that user's sessions receive), and the activity line
//! shows what the user's other devices announce (`activity: device 1a2b3c4d completed
//! "Buy milk"`). Announcements are live: one made offline is not sent.
//!
//! Files in `interactive_client/`: `task.rs` (the document shape), `app.rs` (keys and
//! events), `ui.rs` (drawing).

// A crate root finds modules next to itself, so the helpers' folder is named explicitly.
#[path = "interactive_client/app.rs"]
mod app;
#[path = "interactive_client/task.rs"]
mod task;
#[path = "interactive_client/ui.rs"]
mod ui;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use crossterm::event::{self, Event, KeyEventKind};
use sync_client::{Auth, SyncConfig, SyncEngine};

use crate::app::App;

/// How often the screen takes in engine events when no key is pressed.
const TICK: Duration = Duration::from_millis(100);

/// Terminal task manager on the sync client: offline-first, with live updates.
#[derive(Parser)]
struct Args {
    /// API key (`rpa_…`), or a bearer token (`sts_…`) or JWT.
    #[arg(long)]
    api_key: String,
    /// Secret of the API key (`rps_…`).
    #[arg(long, env = "SYNC_API_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Local database (a path or `sqlite:` URL; created when missing).
    #[arg(long, default_value = "tasks.db")]
    database: String,
    /// The user: the email the API key belongs to, or the user id of a token.
    #[arg(long, default_value = "user@example.com")]
    user_id: String,
    /// Server WebSocket URL.
    #[arg(long, default_value = "ws://localhost:8080/ws")]
    server: String,
    /// `wss://` with a private CA: a PEM file of CA certificates to trust.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.api_key.starts_with("rpa_") && args.secret.is_none() {
        anyhow::bail!("an API key (rpa_…) needs its secret: pass --secret or set SYNC_API_SECRET");
    }
    let auth = Auth::from_credential(&args.api_key, args.secret.clone())?;
    let mut config = SyncConfig::new(&args.database, &args.server, &args.user_id, auth);
    // A person is watching the connection indicator: retry at least every 5 s (`s` retries now).
    config.backoff_max = Duration::from_secs(5);
    // Only tasks are shown, so only tasks are synced (and shared to this user).
    config.collections = Some(vec![task::COLLECTION.to_owned()]);
    config.tls_ca_file = args.ca_file.clone();
    let engine = SyncEngine::with_config(config).context("starting the sync engine")?;

    let outcome = run(&engine, &args).await;

    // The terminal is back to normal here, so progress can be printed.
    if engine.is_connected() && engine.pending_count().unwrap_or(0) > 0 {
        let _ = engine.wait_for_sync(Duration::from_secs(3)).await;
    }
    match engine.pending_count() {
        Ok(0) => println!("interactive_client: all changes synced"),
        Ok(n) => println!("interactive_client: {n} change(s) not sent yet; kept in {} for next time", args.database),
        Err(e) => eprintln!("interactive_client: cannot read the local database: {e}"),
    }
    engine.shutdown().await?;
    outcome
}

/// Runs the UI until `q`; the terminal is restored however this returns (or panics).
async fn run(engine: &SyncEngine, args: &Args) -> anyhow::Result<()> {
    // Made before the terminal changes, so that a failure half-way through setup restores too.
    let _restore = RestoreTerminal;
    // Raw mode and the alternate screen, plus a panic hook that restores the terminal
    // before the panic message is printed.
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut app = App::new(engine, &args.user_id, &args.server).await?;
    while !app.should_quit() {
        terminal.draw(|frame| ui::render(frame, &mut app))?;
        // Blocking for up to one tick is fine: this runtime has no other task, and the
        // engine does its network work on its own runtime.
        if event::poll(TICK)?
            && let Event::Key(key) = event::read()?
            && key.kind == KeyEventKind::Press
        {
            app.on_key(key).await;
        }
        app.tick().await;
    }
    Ok(())
}

/// Leaves raw mode and the alternate screen when dropped.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
