//! sync-core's integration tests, one binary: access control rules, the seeded convergence simulator, the
//! RFC 6902 test suite, the property tests of patch, rebase and protocol, the protocol's
//! decoding tables, and the check that the crate depends on no I/O. [`common`] holds the
//! random generators they share.

mod common;

mod acl;
mod convergence;
mod json_patch_suite;
mod no_io_dependencies;
mod properties;
mod protocol;
