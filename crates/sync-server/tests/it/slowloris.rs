//! Sockets that hold the server without finishing a request (slowloris): a connection
//! that does not send a complete request head within the header read timeout is closed —
//! whether it sent nothing, part of a request, a header line now and then, or finished a
//! request and then idled on keep-alive — and `/health` answers meanwhile; beyond
//! `limits.max_unauthenticated`, a new connection closes the oldest unauthenticated one
//! (an idle socket, or a WebSocket that has not authenticated, which gets 1013), so a
//! fresh health check or client still gets in, and authenticated sessions are untouched.
//! A request head too large to hold (over 64 KiB) is answered 431.
//!
//! The server is a process of its own (the test kit's), as an attacker would meet it.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use sync_testkit::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{self, Client};

/// Idle sockets each test opens.
const SOCKETS: usize = 50;

/// How long a socket the server should close may take to be closed: a guard against a
/// hang, far above any timeout under test; it does not judge speed.
const BOUND: Duration = Duration::from_secs(20);

/// Reads until the server closes the socket (end of stream or reset); `true` when that
/// happened within `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, closed).await.is_ok()
}

/// Sends a header line every 200 ms, as a slowloris client does to look alive, until the
/// server closes the socket; `true` when that happened within `bound`.
async fn trickle_until_closed(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
            let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                return;
            }
        }
    };
    tokio::time::timeout(bound, closed).await.is_ok()
}

/// The part of a request a slowloris client sends before it stalls.
fn partial_request(addr: &str) -> String {
    format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n")
}

async fn start(env: &'static [(&'static str, &'static str)]) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start_sqlite(env)).await.unwrap().expect("server")
}

async fn health(server: &ServerProcess) -> u16 {
    let addr = server.addr.parse().expect("address");
    let response = common::http_request(addr, "GET", "/health", &[], b"").await;
    if response.status == 200 {
        assert_eq!(response.json()["status"], "healthy");
    }
    response.status
}

/// How a slow socket behaves.
#[derive(Clone, Copy, Debug)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends part of a request head and stops.
    Partial,
    /// Sends part of a request head, then a header line now and then.
    Trickle,
    /// Sends a whole request, reads the answer, then idles on the kept-alive connection.
    KeptAlive,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_requests_are_closed_after_the_header_read_timeout() {
    let server = start(&[("SYNC_HEADER_READ_TIMEOUT_SECS", "2")]).await;
    let kinds = [Slow::Silent, Slow::Partial, Slow::Trickle, Slow::KeptAlive];
    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let kind = kinds[i % kinds.len()];
        let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
        match kind {
            Slow::Silent => {}
            Slow::Partial | Slow::Trickle => {
                stream.write_all(partial_request(&server.addr).as_bytes()).await.expect("write");
            }
            Slow::KeptAlive => {
                let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
                stream.write_all(request.as_bytes()).await.expect("write");
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&answer).contains("healthy") {
                    let n = stream.read(&mut buf).await.expect("read the answer");
                    assert!(n > 0, "the first request on a kept-alive connection is answered");
                    answer.extend_from_slice(&buf[..n]);
                }
            }
        }
        sockets.push((kind, stream));
    }

    // Meanwhile the server answers, over HTTP and over a WebSocket.
    assert_eq!(health(&server).await, 200, "/health answers while {SOCKETS} slow sockets are open");
    let mut client = Client::connect(&server.ws_url()).await;
    let reply = client.authenticate(&server.api_key, &server.secret, "patient@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");

    // Every slow socket is closed by the server.
    let closed = join_all(sockets.iter_mut().map(|(kind, stream)| async move {
        let closed = match kind {
            Slow::Trickle => trickle_until_closed(stream, BOUND).await,
            _ => closed_within(stream, BOUND).await,
        };
        (*kind, closed)
    }))
    .await;
    let open: Vec<Slow> = closed.iter().filter(|(_, closed)| !closed).map(|(kind, _)| *kind).collect();
    assert!(open.is_empty(), "{} slow sockets still open after {BOUND:?}: {open:?}", open.len());

    // The authenticated session was not touched, and the server still answers.
    assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(health(&server).await, 200);

    // A head too large to hold is refused at once, not read on and on.
    let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
    let huge = format!("GET /health HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n", server.addr, "a".repeat(100 << 10));
    // The server may close before it has read everything; the answer is what counts.
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "a 100 KiB head is answered 431: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_unauthenticated_a_new_connection_closes_the_oldest() {
    const MAX: usize = 10;
    // A header read timeout far beyond the test's bound: every close seen here is the cap's.
    let server = start(&[("SYNC_MAX_UNAUTHENTICATED", "10"), ("SYNC_HEADER_READ_TIMEOUT_SECS", "600")]).await;

    // Authenticated sessions do not count against the cap.
    let mut sessions = Vec::new();
    for n in 0..MAX + 2 {
        let mut client = Client::connect(&server.ws_url()).await;
        let email = format!("member{n}@example.com");
        let reply = client.authenticate(&server.api_key, &server.secret, &email, None, None).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        sessions.push(client);
    }
    // The oldest unauthenticated connection: a WebSocket that has not authenticated yet.
    let mut waiting = Client::connect(&server.ws_url()).await;

    // Then idle sockets, one after the other (the server admits them in that order).
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let mut stream = TcpStream::connect(&server.addr).await.expect("connect");
        stream.write_all(partial_request(&server.addr).as_bytes()).await.expect("write");
        sockets.push(stream);
    }

    // The waiting WebSocket was pushed out, with a close code that says to retry.
    assert_eq!(waiting.close_code(BOUND).await, Some(1013), "the unauthenticated WebSocket is closed with 1013");
    // So were the oldest idle sockets; the newest MAX are kept.
    let evicted = SOCKETS - MAX;
    let closed = join_all(sockets[..evicted].iter_mut().map(|stream| closed_within(stream, BOUND))).await;
    let still_open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(still_open, 0, "{still_open} of the {evicted} oldest idle sockets are still open after {BOUND:?}");
    let kept =
        join_all(sockets[evicted..].iter_mut().map(|stream| closed_within(stream, Duration::from_millis(500)))).await;
    assert!(kept.iter().all(|closed| !closed), "the newest {MAX} idle sockets are kept: {kept:?}");

    // A fresh connection gets in and is answered: it takes the oldest idle socket's place.
    assert_eq!(health(&server).await, 200, "/health answers with the unauthenticated connections at the cap");
    assert!(closed_within(&mut sockets[evicted], BOUND).await, "the oldest kept socket made room for it");
    // So does a fresh client, which then authenticates.
    let mut fresh = Client::connect(&server.ws_url()).await;
    let reply = fresh.authenticate(&server.api_key, &server.secret, "fresh@example.com", None, None).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");

    // The authenticated sessions were never touched.
    for client in &mut sessions {
        assert_eq!(client.request(json!({"type": "ping"})).await["type"], "pong");
    }
}
