//! TLS on the server's port: `https://` and `wss://` with a certificate from a private
//! CA (made by the test), a plain client refused cleanly, a client that does not trust
//! the CA refused by its own handshake, a stalled handshake closed, and the certificate
//! reloaded on SIGHUP in a real server process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sync_testkit::{ServerProcess, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use yawc::{Frame, OpCode, Options, WebSocket};

use crate::common::{TestServer, WAIT, hmac_auth};

/// A rustls client config trusting only `ca_pem`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTPS request; returns the status, the body and the certificate the server
/// presented.
async fn https_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body, presented))
}

/// A plain HTTP/1.1 request on the raw socket; returns everything the server sent.
async fn plain_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await.expect("the server closes").expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

async fn next_json(ws: &mut WebSocket<yawc::MaybeTlsStream<TcpStream>>) -> Value {
    use futures_util::StreamExt as _;
    loop {
        let frame: Frame = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply in time").expect("open");
        if frame.opcode() == OpCode::Text {
            return serde_json::from_slice(frame.payload()).expect("JSON");
        }
    }
}

/// An in-process server with a certificate of a new CA (returned, with the directory of
/// the files), after `adjust` edits its config.
async fn tls_server(
    adjust: impl FnOnce(&mut sync_server::config::Config),
) -> (TestServer, TestCa, sync_testkit::ServerCert, tempfile::TempDir) {
    let ca = TestCa::new("sync test CA").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert = ca.issue_localhost(certs.path(), "server").unwrap();
    let server = TestServer::start_with(|config| {
        config.tls.cert_file = Some(cert.cert_file.clone());
        config.tls.key_file = Some(cert.key_file.clone());
        adjust(config);
    })
    .await;
    (server, ca, cert, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_share_the_port_and_a_plain_client_is_refused_cleanly() {
    use futures_util::SinkExt as _;
    let (server, ca, cert, _certs) = tls_server(|_| {}).await;
    let trusting = client_config(&ca.pem());

    // HTTPS: the health route, with the certificate the config names.
    let (status, body, presented) = https_get(server.addr, Arc::clone(&trusting), "/health").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "healthy");
    assert_eq!(presented, cert.der, "the configured certificate");

    // WSS: authenticate and write a document.
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut ws = WebSocket::connect(url.parse().unwrap())
        .with_options(Options::default())
        .with_connector(TlsConnector::from(Arc::clone(&trusting)))
        .await
        .expect("wss connects with the CA trusted");
    let auth = hmac_auth(&server.api_key, &server.secret, "tls@example.com", None, None);
    ws.send(Frame::text(auth.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "auth_success");
    let create = json!({"type": "create_document", "document": {"id": "over-tls", "content": {"n": 1}}});
    ws.send(Frame::text(create.to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["success"], true, "{reply}");

    // Plain HTTP on the TLS port: one 400 saying so, then the connection closes.
    let answer = plain_request(server.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("this port speaks TLS only"), "{answer}");
    assert!(!answer.contains("healthy"), "nothing is served in the clear: {answer}");
    // A plain WebSocket upgrade gets the same; a plain ws:// client fails to connect.
    let plain_ws = WebSocket::connect(format!("ws://{}/ws", server.addr).parse().unwrap()).await;
    assert!(plain_ws.is_err(), "a plain ws:// client is refused");

    // A client that does not trust the CA fails its own handshake.
    let other_ca = TestCa::new("another CA").unwrap();
    let error = https_get(server.addr, client_config(&other_ca.pem()), "/health").await.unwrap_err();
    assert!(error.to_string().to_lowercase().contains("certificate"), "{error}");

    // And the TLS session goes on meanwhile.
    let get = json!({"type": "get_document", "document_id": "over-tls"});
    ws.send(Frame::text(get.to_string())).await.unwrap();
    let doc = next_json(&mut ws).await;
    assert_eq!(doc["document"]["content"], json!({"n": 1}), "{doc}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_closed_within_the_head_timeout() {
    let (server, ca, _cert, _certs) = tls_server(|config| config.limits.header_read_timeout_secs = 1).await;
    // The first bytes of a TLS record, and then nothing.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the stalled handshake");
    // A proper client is still served.
    let (status, _, _) = https_get(server.addr, client_config(&ca.pem()), "/ready").await.unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_or_half_configured_files_refuse_to_start() {
    let ca = TestCa::new("sync test CA").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let one = ca.issue_localhost(certs.path(), "one").unwrap();
    let two = ca.issue_localhost(certs.path(), "two").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = crate::common::test_config(dir.path());
    config.tls.cert_file = Some(one.cert_file.clone());
    config.tls.key_file = Some(two.key_file.clone());
    let error = sync_server::run(config.clone(), listener, Default::default()).await.unwrap_err();
    assert!(format!("{error:#}").contains("does not fit the certificate"), "{error:#}");
    config.tls.key_file = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = sync_server::run(config, listener, Default::default()).await.unwrap_err();
    assert!(format!("{error:#}").contains("tls.key_file is set") || format!("{error:#}").contains("tls.key_file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let ca = TestCa::new("sync test CA").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let first = ca.issue_localhost(certs.path(), "first").unwrap();
    let live_cert = certs.path().join("live.pem");
    let live_key = certs.path().join("live.key");
    std::fs::copy(&first.cert_file, &live_cert).unwrap();
    std::fs::copy(&first.key_file, &live_key).unwrap();
    let server = ServerProcess::start_sqlite(&[
        ("SYNC_TLS_CERT_FILE", live_cert.to_str().unwrap()),
        ("SYNC_TLS_KEY_FILE", live_key.to_str().unwrap()),
    ])
    .unwrap();
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let trusting = client_config(&ca.pem());
    let (_, _, presented) = https_get(addr, Arc::clone(&trusting), "/health").await.unwrap();
    assert_eq!(presented, first.der);

    let hangup = || {
        let status =
            std::process::Command::new("kill").args(["-HUP", &server.pid().unwrap().to_string()]).status().unwrap();
        assert!(status.success());
    };
    // A renewed certificate: served to new connections after SIGHUP.
    let second = ca.issue_localhost(certs.path(), "second").unwrap();
    std::fs::copy(&second.cert_file, &live_cert).unwrap();
    std::fs::copy(&second.key_file, &live_key).unwrap();
    hangup();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, presented) = https_get(addr, Arc::clone(&trusting), "/health").await.unwrap();
        if presented == second.der {
            break;
        }
        assert!(Instant::now() < deadline, "the renewed certificate is served after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken key file: the reload fails, the certificate in force stays (every
    // connection meanwhile is served with it), the process goes on.
    std::fs::write(&live_key, "not a key").unwrap();
    hangup();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let (status, _, presented) = https_get(addr, Arc::clone(&trusting), "/health").await.unwrap();
        assert_eq!((status, &presented), (200, &second.der));
    }
    assert!(server.is_running());
    // And the next good one is taken (so the broken one was read, and survived).
    let third = ca.issue_localhost(certs.path(), "third").unwrap();
    std::fs::copy(&third.cert_file, &live_cert).unwrap();
    std::fs::copy(&third.key_file, &live_key).unwrap();
    hangup();
    let deadline = Instant::now() + WAIT;
    while https_get(addr, Arc::clone(&trusting), "/health").await.unwrap().2 != third.der {
        assert!(Instant::now() < deadline, "a good certificate is taken after a failed reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
