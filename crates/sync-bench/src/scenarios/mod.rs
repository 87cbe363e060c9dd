//! The scenarios. Each one is bounded in count and time and returns a [`Report`].

pub(crate) mod write;
