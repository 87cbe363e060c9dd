//! The server's integration tests, one binary (one link instead of one per file): real
//! servers on port 0 (in-process, or real processes where a crash or a second process is
//! the point), on SQLite and on the test kit's PostgreSQL, spoken to over real WebSockets
//! and HTTP. [`common`] is the shared kit; each other module is one family of behaviour.

mod common;

mod auth;
mod crash;
mod delivery;
mod disk_full;
mod errors;
mod events;
mod fanout;
mod hostile;
mod http;
mod idempotency;
mod isolation;
mod json_patch_suite;
mod merge;
mod messages;
mod multi_process;
mod pages;
mod password_flood;
mod postgres_outage;
mod sharing;
mod shutdown;
mod slowloris;
mod smoke;
mod topics;
