//! `sync-client`: the offline-first Rust client. A local SQLite database answers every
//! call at once; a background connection keeps it in sync with the server; events tell
//! the application what changed.
//!
//! Module map: [`engine`] (the public API), [`config`] (options), [`events`]
//! (callbacks and streams), [`local`] (the local database), [`error`], and [`ffi`], the
//! C ABI (the only module allowed `unsafe`).

#![deny(unsafe_code)]

pub mod config;
mod connection;
pub mod engine;
pub mod error;
pub mod events;
pub mod ffi;
pub mod local;
mod shared;

pub use config::{Auth, SyncConfig, SyncConfigBuilder};
pub use engine::SyncEngine;
pub use error::{Result, SyncError};
pub use events::{EventDispatcher, EventStream, EventType, SyncEvent};
pub use local::{DocStatus, Document};
