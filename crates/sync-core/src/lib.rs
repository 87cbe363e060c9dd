//! `sync-core`: the shared model, wire protocol, JSON Patch and merge rules of the sync
//! system. It does no I/O and depends on no async runtime, database or network crate, so
//! the server and every client run exactly the same decisions.
//!
//! Module map:
//! - [`mod@pointer`]: JSON Pointer (RFC 6901).
//! - [`patch`]: JSON Patch (RFC 6902) apply/inverse, diff, and RFC 7396 merge as a patch.
//! - [`transform`]: the rebase of a patch over concurrent changes (PROTOCOL.md §7).
//! - [`model`]: documents, change events, ids, timestamps.
//! - [`canonical`]: canonical JSON and the content hash.
//! - [`vclock`]: vector clocks.
//! - [`protocol`]: every message of the wire protocol, with decoding and encoding.
//! - [`replica`]: one document on a client: confirmed state, pending changes, rebase.
//! - [`error`]: the error codes shared by WebSocket and HTTP.
//! - [`acl`]: access control rules, and what one user may read.
//! - [`auth`]: HMAC signing, key generation, user ids from emails.
//! - [`topic`]: topic names, subscription patterns, personal topics.
//!
//! # Two replicas, one concurrent edit
//!
//! Two replicas start from the same revision. One change reaches the server first; the
//! other is rebased over it with [`transform::rebase`], and both replicas end equal:
//!
//! ```
//! use serde_json::json;
//! use sync_core::patch::{apply, merge_diff};
//! use sync_core::transform::{rebase, Policy};
//!
//! let base = json!({"title": "Groceries", "items": ["milk"], "done": false});
//!
//! // Replica A appends an item; replica B marks the list done. Both are offline.
//! let a = vec![sync_core::patch::PatchOp::Add {
//!     path: "/items/-".parse().unwrap(),
//!     value: json!("eggs"),
//! }];
//! let b = merge_diff(&base, &json!({"done": true}));
//!
//! // A reaches the server first and is committed as is.
//! let mut server = base.clone();
//! apply(&mut server, &a).unwrap();
//!
//! // B arrives based on the old revision: the server rebases it over A.
//! let rebased = rebase(&base, &b, &a, Policy::LastWriterWins).unwrap();
//! assert!(rebased.conflicts.is_empty());
//! apply(&mut server, &rebased.patch).unwrap();
//!
//! // Replica A receives B's applied patch; replica B receives A's and drops its own
//! // pending edit once the server acknowledges it. Both now hold the server's state.
//! let mut replica_a = base.clone();
//! apply(&mut replica_a, &a).unwrap();
//! apply(&mut replica_a, &rebased.patch).unwrap();
//! let mut replica_b = base.clone();
//! apply(&mut replica_b, &a).unwrap();
//! apply(&mut replica_b, &rebased.patch).unwrap();
//!
//! assert_eq!(replica_a, server);
//! assert_eq!(replica_b, server);
//! assert_eq!(server, json!({"title": "Groceries", "items": ["milk", "eggs"], "done": true}));
//! ```

#![forbid(unsafe_code)]

pub mod acl;
pub mod auth;
pub mod canonical;
pub mod error;
pub mod model;
pub mod patch;
pub mod pointer;
pub mod protocol;
pub mod replica;
pub mod topic;
pub mod transform;
pub mod vclock;

pub use error::{ErrorBody, ErrorCode};
pub use model::{ChangeEvent, ChangeKind, Document, Timestamp};
pub use patch::{Patch, PatchError, PatchOp};
pub use pointer::JsonPointer;
pub use transform::{Conflict, Policy, Rebased};
