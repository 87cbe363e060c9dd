//! `sync-server`: one process serving HTTP and WebSocket on one port, storing every
//! change durably, merging concurrent edits with `sync-core`, and pushing changes to
//! every session that may read them.
//!
//! Module map:
//! - [`cli`]: the command line; [`config`]: configuration and its precedence.
//! - [`app`]: start-up, shared state, graceful shutdown; [`http`]: HTTP routes and the
//!   WebSocket upgrade; [`session`]: one connection; [`handlers`]: one file per message.
//! - [`writer`]: the write path (decide, group commit, deliver); [`hub`]: sessions and
//!   ordered fan-out; [`queue`]: each session's bounded outbound queue.
//! - [`auth`]: credentials; [`ratelimit`]: per-user token buckets; [`monitor`]: the
//!   colored activity log; [`backend`]: the configured store.
//!
//! The binary is thin: `main` parses the command line and calls [`app::run`] with a
//! listener and a shutdown token; tests call the same function on port 0.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod handlers;
pub mod http;
pub mod hub;
pub mod monitor;
pub mod queue;
pub mod ratelimit;
pub mod session;
pub mod writer;

pub use app::run;
pub use config::Config;
