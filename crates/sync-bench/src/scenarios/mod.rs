//! The scenarios. Each one is bounded in count and time and returns a [`Report`]
//! (`soak` checks durability rather than measuring speed).
//!
//! [`Report`]: crate::report::Report

pub(crate) mod catchup;
pub(crate) mod client_write;
pub(crate) mod connections;
pub(crate) mod fanout;
pub(crate) mod offline;
pub(crate) mod shared;
pub(crate) mod soak;
pub(crate) mod topics;
pub(crate) mod write;
