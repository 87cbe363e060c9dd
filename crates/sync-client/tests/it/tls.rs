//! `wss://` to a server whose certificate a private CA signed: the Rust engine and the C
//! SDK connect when told to trust the CA (`tls_ca_file`), and sync; an engine that is not
//! told never connects, and keeps its changes for later.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sync_client::{SyncConfig, SyncEngine};
use sync_testkit::{ServerProcess, TestCa};

use crate::common;

struct TlsServer {
    server: ServerProcess,
    ca_file: std::path::PathBuf,
    _certs: tempfile::TempDir,
}

fn tls_server() -> TlsServer {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("client test CA").unwrap();
    let cert = ca.issue_localhost(certs.path(), "server").unwrap();
    let ca_file = ca.write_pem(&certs.path().join("ca.pem")).unwrap();
    let server = ServerProcess::start_sqlite(&[
        ("SYNC_TLS_CERT_FILE", cert.cert_file.to_str().unwrap()),
        ("SYNC_TLS_KEY_FILE", cert.key_file.to_str().unwrap()),
    ])
    .unwrap();
    assert!(server.ws_url().starts_with("wss://localhost:"), "{}", server.ws_url());
    TlsServer { server, ca_file, _certs: certs }
}

fn config(tls: &TlsServer, dir: &std::path::Path, name: &str, trust: bool) -> SyncConfig {
    let mut config =
        common::config(&tls.server.ws_url(), &tls.server.api_key, &tls.server.secret, dir, name, "tls@example.com");
    if trust {
        config.tls_ca_file = Some(tls.ca_file.clone());
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_sync_over_wss_with_a_private_ca() -> anyhow::Result<()> {
    let tls = tls_server();
    let dir = tempfile::tempdir()?;
    let laptop = SyncEngine::with_config(config(&tls, dir.path(), "laptop", true))?;
    let phone = SyncEngine::with_config(config(&tls, dir.path(), "phone", true))?;
    let doc = laptop.create_document(json!({"title": "over wss"})).await?;
    laptop.wait_for_sync(Duration::from_secs(20)).await?;
    common::eventually(Duration::from_secs(20), "the phone gets the laptop's document over wss", || async {
        phone.get_document(&doc.id).await.is_ok_and(|d| d.content["title"] == "over wss")
    })
    .await;

    // Not told to trust the CA: never connected, the change stays pending.
    let stranger = SyncEngine::with_config(config(&tls, dir.path(), "stranger", false))?;
    stranger.create_document(json!({"title": "kept for later"})).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        assert!(!stranger.is_connected(), "a client that does not trust the CA must not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stranger.pending_count()?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_sdk_connects_over_wss_with_the_tls_ca_file_option() -> anyhow::Result<()> {
    let tls = tls_server();
    let dir = tempfile::tempdir()?;
    let examples = crate::c_sdk::examples();
    let options = json!({"tls_ca_file": tls.ca_file}).to_string();
    let output = Command::new(examples.join("events"))
        .arg(format!("sqlite:{}?mode=rwc", dir.path().join("c.db").display()))
        .args([tls.server.ws_url(), "tls@example.com".into(), tls.server.api_key.clone(), tls.server.secret.clone()])
        .args(["4", options.as_str()])
        .output()?;
    let out = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{out}");
    let rust = SyncEngine::with_config(config(&tls, dir.path(), "rust", true))?;
    common::eventually(Duration::from_secs(20), "the C engine's document reached the server over wss", || async {
        rust.list_documents(None).await.is_ok_and(|docs| docs.iter().any(|d| d.content["title"] == "events from C"))
    })
    .await;
    Ok(())
}
