//! sync-store's integration tests, in one binary (one link instead of one per file):
//! each backend against the conformance suite, plus what only that backend has.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod common;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
