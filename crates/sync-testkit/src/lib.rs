//! `sync-testkit`: real parts for tests and benchmarks — a private `sync-server` process
//! in a temporary directory ([`server`]), a private PostgreSQL ([`postgres`]), and a
//! private certificate authority for TLS tests ([`tls`]).
//!
//! Everything started here listens on 127.0.0.1 only and is stopped and removed when
//! its handle is dropped.

#![forbid(unsafe_code)]

pub mod postgres;
pub mod server;
pub mod tls;

pub use postgres::{PgServer, PgSettings};
pub use server::{ServerProcess, server_binary};
pub use tls::{ServerCert, TestCa};
