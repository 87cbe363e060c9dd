//! Integers as SQL parameters, the same way for both backends: both store sequences and
//! revisions as signed 64-bit integers (SQLite's INTEGER, PostgreSQL's BIGINT).

use crate::{StoreError, StoreResult};

/// A `u64` to store: beyond `i64::MAX` it cannot be, and that is refused.
pub(crate) fn sql_int(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::database_message(format!("{what} {value} is beyond the stored range")))
}

/// A `u64` bound of a query (a sequence or revision to read after or before). Nothing
/// stored is above `i64::MAX`, so a larger bound selects the same rows as `i64::MAX`: a
/// client's `last_sequence` of 2^64 − 1 reads an empty page instead of failing.
pub(crate) fn sql_bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A page size as a SQL LIMIT (larger than any table can hold becomes "no limit").
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
