//! `sync-client`: the offline-first Rust client. A local SQLite database answers every
//! call at once; a background connection keeps it in sync with the server; events tell
//! the application what changed.
//!
//! Module map:
//! - [`engine`]: `SyncEngine`, the public API. It owns the engine's runtime and spawns the
//!   connection task on it.
//! - `shared`: the state the engine and the connection task share (the local database
//!   behind its lock, the events, the connection state, the signals between them).
//! - `connection/`: the background task: reconnect with backoff, authenticate, catch up,
//!   send the outbox, apply what the server sends (one file per concern).
//! - [`topics`]: topic subscriptions (bounded queues the application drains) and the
//!   registry the connection task renews them from.
//! - [`local`]: the local SQLite database; [`events`]: callbacks and streams;
//!   [`config`]: options; [`error`]: `SyncError`.
//! - [`ffi`]: the C ABI, the only module allowed `unsafe`.
//!
//! Dependencies point one way: `engine` → `shared` ← `connection`, and `engine` →
//! `connection` only to spawn it; `shared` and `connection` → `local`, `events`, `topics`,
//! `config`; those four → `error` only; `ffi` → `engine` and the public types.

#![deny(unsafe_code)]

pub mod config;
mod connection;
pub mod engine;
pub mod error;
pub mod events;
pub mod ffi;
pub mod local;
mod shared;
pub mod topics;

pub use config::{Auth, SyncConfig, SyncConfigBuilder};
pub use engine::SyncEngine;
pub use error::{Result, SyncError};
pub use events::{EventDispatcher, EventStream, EventType, SyncEvent};
pub use local::{DocStatus, Document};
pub use sync_core::protocol::Published;
pub use topics::{Gap, Publishing, Subscription, TopicEvent, TopicMessage};
