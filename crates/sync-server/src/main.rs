//! The `sync-server` binary: parses the command line and runs the server.

/// mimalloc: the server allocates many small JSON values per message, where glibc's
/// allocator cost about a quarter of the CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sync_server::main()
}
