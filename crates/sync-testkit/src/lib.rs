//! `sync-testkit`: real parts for tests and benchmarks — a private `sync-server` process
//! in a temporary directory (and, as they arrive, a private PostgreSQL and nats-server).
//!
//! Everything started here listens on 127.0.0.1 only and is stopped and removed when
//! its handle is dropped.

#![forbid(unsafe_code)]

pub mod server;

pub use server::{ServerProcess, server_binary};
