//! Architecture invariant: `sync-core` depends on no async runtime, database or network
//! crate. This reads the resolved dependency tree with `cargo tree` and fails on any of them.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "futures",
    "mio",
    "hyper",
    "reqwest",
    "axum",
    "tungstenite",
    "tokio-tungstenite",
    "yawc",
    "rusqlite",
    "libsqlite3-sys",
    "sqlx",
    "postgres",
    "tokio-postgres",
    "async-nats",
    "socket2",
];

#[test]
fn sync_core_has_no_runtime_database_or_network_dependency() {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "-p", "sync-core", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"serde_json"), "cargo tree output looks wrong:\n{tree}");
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(f)).collect();
    assert!(found.is_empty(), "sync-core must stay free of I/O crates, found {found:?} in:\n{tree}");
}
