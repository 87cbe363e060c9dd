//! The client's integration tests, linked into one test binary (one link of the client,
//! the test kit and their dependencies instead of one per file): the API as documented,
//! offline-first behaviour, sharing between users, the checked-in C header, the C/C++
//! SDK, and the interactive example in a real terminal, against private `sync-server`
//! processes.

mod api;
mod c_header;
mod c_sdk;
mod common;
mod interactive;
mod offline;
mod sharing;
mod tls;
mod topics;
