//! The README's example, runnable:
//!
//! ```sh
//! SYNC_API_SECRET=rps_… cargo run -p sync-client --example quickstart -- \
//!     sqlite:client.db?mode=rwc ws://localhost:8080/ws rpa_… user@example.com
//! ```
//!
//! It creates a document, merges an update into it, waits until the server has both,
//! and prints the events it received.

use std::time::Duration;

use serde_json::json;
use sync_client::SyncEngine;
use sync_client::events::{EventDispatcher, EventType};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let (database, server) = (arg(1, "sqlite:client.db?mode=rwc"), arg(2, "ws://localhost:8080/ws"));
    let (api_key, user) = (arg(3, "rpa_your_api_key_here"), arg(4, "user@example.com"));

    let engine = SyncEngine::new(
        &database, // local database URL or plain path; created when missing
        &server,   // server
        &api_key,  // API key (with the secret in SYNC_API_SECRET), or a bearer token / JWT
        &user,     // user (email)
    )
    .await?;
    let doc = engine
        .create_document(json!({"title": "My Document", "status": "pending",
            "priority": "medium", "tags": ["work"]}))
        .await?;
    engine.update_document(doc.id.clone(), json!({"status": "completed"})).await?; // merges: title stays

    let events: EventDispatcher = engine.event_dispatcher();
    events.register_callback(
        |event_type, document_id, title, _content, _error, numeric_data, _boolean_data, _context| match event_type {
            EventType::DocumentCreated => {
                println!("New document: {} ({})", title.unwrap_or("untitled"), document_id.unwrap_or("?"))
            }
            EventType::SyncCompleted => println!("Synced {numeric_data} documents"),
            EventType::ConnectionSucceeded => println!("Connected"),
            _ => {}
        },
        std::ptr::null_mut(), // context
        None,                 // filter (None = all events)
    )?;

    engine.wait_for_sync(Duration::from_secs(10)).await?;
    let processed = events.process_events()?;
    let now = engine.get_document(&doc.id).await?;
    println!("content: {}", now.content);
    println!(
        "processed {processed} events; pending {}; synced up to #{}",
        engine.pending_count()?,
        engine.last_synced_sequence()
    );
    engine.shutdown().await?;
    Ok(())
}
