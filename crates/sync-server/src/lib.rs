//! `sync-server`: one process serving HTTP and WebSocket on one port, storing every
//! change durably, merging concurrent edits with `sync-core`, and pushing changes to
//! every session that may read them.
//!
//! Module map (the modules are private; `docs/ARCHITECTURE.md` draws their dependencies):
//! - `cli`: the command line and logging; `config`: configuration and its precedence.
//! - `app`: start-up, shared state, graceful shutdown; `accept`: the accept loop (header
//!   read timeout, the cap on unauthenticated connections); `http`: HTTP routes and the
//!   WebSocket upgrade.
//! - `session`: one connection's life; `connection`: its socket and ordered output;
//!   `authenticated`: what authentication creates (identity, hub registration, queue);
//!   `handlers`: one file per message that is not a change.
//! - `writer`: the write path (decide, group commit, answers, delivery); `hub`: sessions
//!   and ordered fan-out; `queue`: each session's bounded outbound queue.
//! - `topics`: publish/subscribe — subscriptions, wildcards, history for recovery, and
//!   the fan-out into the same session queues; `topics_http`: its admin REST routes
//!   (`POST /api/sync/publish`, `/api/sync/broadcast`).
//! - `events`: the event-log HTTP API (`GET`/`POST /events`) over the change log and
//!   the write path.
//! - `access`: replacing the access rules (`/acl`, the CLI) and putting them in force;
//!   the rules themselves are `sync_core::acl`, held by the hub.
//! - `auth`: credentials; `ratelimit`: per-user token buckets; `monitor`: the activity
//!   log as a `tracing` layer; `backend`: the configured store; `wire`: messages as frames.
//!
//! The binary is thin: `main` parses the command line and calls [`run`] with a listener
//! and a shutdown token; tests call the same function on port 0. The public surface is
//! what they use: [`run`], [`Config`] (and its sections in [`config`]), and the command
//! line's entry points [`main`], [`generate_credentials`] and [`create_token`].

#![forbid(unsafe_code)]

mod accept;
mod access;
mod app;
mod auth;
mod authenticated;
mod backend;
mod cli;
pub mod config;
mod connection;
mod events;
mod handlers;
mod http;
mod hub;
mod monitor;
mod queue;
mod ratelimit;
mod session;
mod state;
mod topics;
mod topics_http;
mod wire;
mod writer;

pub use app::run;
pub use cli::{create_token, generate_credentials, main};
pub use config::Config;
