//! Test kit for the server's integration tests: a real server on port 0 in a temporary
//! directory, on SQLite or on a fresh database of the test kit's PostgreSQL, credentials,
//! and a small WebSocket client that speaks the protocol.
//!
//! Tests written as `async fn name(backend: Backend)` and listed in [`backend_tests!`]
//! run once per backend, from one source.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sync_server::Config;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use yawc::{Frame, MaybeTlsStream, OpCode, Options, WebSocket};

/// A hex server secret key shared by tests, so API secrets can be derived.
pub(crate) const SECRET_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A running server and what a test needs to reach it.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) api_key: String,
    pub(crate) secret: String,
    pub(crate) admin_key: String,
    pub(crate) admin_secret: String,
}

/// Which store a test server keeps its data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A file in the test's temporary directory.
    Sqlite,
    /// A fresh database on the test kit's PostgreSQL (one server per test binary).
    Postgres,
}

impl Backend {
    /// Whether the backend can run here. Without PostgreSQL the test kit says so loudly
    /// and this is `false`; under `SYNC_REQUIRE_POSTGRES=1` it panics instead.
    pub(crate) fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => sync_testkit::PgServer::shared().is_some(),
        }
    }

    /// A new, empty database: a file in `dir`, or a new PostgreSQL database.
    pub(crate) async fn database_url(self, dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", dir.join("sync.db").display()),
            Backend::Postgres => {
                let server = sync_testkit::PgServer::shared().expect("PostgreSQL is available (checked first)");
                server.create_database().await.expect("a fresh PostgreSQL database")
            }
        }
    }
}

/// Runs each listed test — an `async fn(Backend)` of the calling file — once per backend,
/// as `sqlite::<name>` and `postgres::<name>`. The PostgreSQL variant returns at once when
/// there is no PostgreSQL (the test kit has said why, loudly).
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::common::Backend::Postgres.available() {
                        super::$name($crate::common::Backend::Postgres).await;
                    }
                }
            )+
        }
    };
}
pub(crate) use backend_tests;

/// A config for tests: SQLite in `dir`, no first-start banner, fixed secret key.
pub(crate) fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.join("sync.db").display());
    config.auth.secret_key = Some(SECRET_KEY.to_owned());
    config.auth.bootstrap_credentials = false;
    config.server.port = 0;
    config
}

/// A config for tests on `backend`: a new, empty database, otherwise as [`test_config`].
pub(crate) async fn test_config_on(backend: Backend, dir: &std::path::Path) -> Config {
    let mut config = test_config(dir);
    config.database.url = backend.database_url(dir).await;
    config
}

impl TestServer {
    /// Starts a server on SQLite after `adjust` edits the config.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on_with(Backend::Sqlite, adjust).await
    }

    /// Starts a server on `backend` with the default test config.
    pub(crate) async fn start_on(backend: Backend) -> Self {
        Self::start_on_with(backend, |_| {}).await
    }

    /// Starts a server on `backend` after `adjust` edits the config.
    pub(crate) async fn start_on_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config_on(backend, dir.path()).await;
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts a server on an existing directory and config (for restarts).
    pub(crate) async fn start_in(dir: tempfile::TempDir, config: Config) -> Self {
        let (api_key, secret) = sync_server::generate_credentials(&config, "tests", false).await.expect("credentials");
        let (admin_key, admin_secret) =
            sync_server::generate_credentials(&config, "admin", true).await.expect("admin credentials");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sync_server::run(config.clone(), listener, shutdown.clone()));
        Self { addr, config, shutdown, task: Some(task), dir, api_key, secret, admin_key, admin_secret }
    }

    /// Stops the server and waits for it.
    pub(crate) async fn stop(mut self) -> (tempfile::TempDir, Config) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server run");
        }
        (self.dir, self.config)
    }

    /// The WebSocket URL.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A connected, not yet authenticated client.
    pub(crate) async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// A client authenticated with HMAC credentials as `email`.
    pub(crate) async fn client(&self, email: &str) -> Client {
        let mut client = self.connect().await;
        let reply = client.authenticate(&self.api_key, &self.secret, email, None, None).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        client
    }
}

/// The `authenticate` message for HMAC credentials, signed now.
pub(crate) fn hmac_auth(
    api_key: &str,
    secret: &str,
    email: &str,
    client_id: Option<&str>,
    last_sequence: Option<u64>,
) -> Value {
    let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
    let signature = sync_core::auth::sign(secret, timestamp, email, api_key, b"");
    let mut message = json!({
        "type": "authenticate", "email": email, "api_key": api_key, "signature": signature, "timestamp": timestamp,
    });
    if let Some(id) = client_id {
        message["client_id"] = json!(id);
    }
    if let Some(seq) = last_sequence {
        message["last_sequence"] = json!(seq);
    }
    message
}

/// A raw protocol client.
pub(crate) struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Messages read while looking for a reply (pushes, other replies), still to be
    /// returned by [`Client::recv`] in arrival order.
    backlog: std::collections::VecDeque<Value>,
    next_id: u64,
    pub(crate) user_id: Option<String>,
    pub(crate) client_id: Option<String>,
}

/// How long a test waits for an expected message.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to `url`.
    pub(crate) async fn connect(url: &str) -> Self {
        Self::connect_with(url, Options::default()).await
    }

    /// Connects with explicit WebSocket options (compression, limits).
    pub(crate) async fn connect_with(url: &str, options: Options) -> Self {
        let ws = WebSocket::connect(url.parse().expect("url")).with_options(options).await.expect("connect");
        Self { ws, backlog: Default::default(), next_id: 0, user_id: None, client_id: None }
    }

    /// Sends HMAC `authenticate` and returns the reply.
    pub(crate) async fn authenticate(
        &mut self,
        api_key: &str,
        secret: &str,
        email: &str,
        client_id: Option<&str>,
        last_sequence: Option<u64>,
    ) -> Value {
        self.send(hmac_auth(api_key, secret, email, client_id, last_sequence)).await;
        let reply = self.recv().await;
        if reply["type"] == "auth_success" {
            self.user_id = reply["user_id"].as_str().map(str::to_owned);
            self.client_id = reply["client_id"].as_str().map(str::to_owned);
        }
        reply
    }

    /// Sends a message (or a batch) as one text frame.
    pub(crate) async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// Sends raw text.
    pub(crate) async fn send_text(&mut self, text: String) {
        self.ws.send(Frame::text(text)).await.expect("send");
    }

    /// Sends a message, reporting failure instead of panicking (for tests that expect the
    /// connection to die, such as the crash test).
    pub(crate) async fn try_send(&mut self, message: Value) -> bool {
        self.ws.send(Frame::text(message.to_string())).await.is_ok()
    }

    /// Reads `count` text frames without decoding them and returns their total size
    /// (for tests where the volume, not the content, is the point).
    pub(crate) async fn read_raw(&mut self, count: usize) -> usize {
        let mut bytes = 0;
        let mut read = 0;
        while read < count {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame within the wait");
            let frame = frame.expect("the connection stays open");
            if frame.opcode() == OpCode::Text {
                bytes += frame.payload().len();
                read += 1;
            }
        }
        bytes
    }

    /// Sends a binary frame.
    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Frame::binary(bytes)).await.expect("send");
    }

    /// The next text message (fails the test after [`WAIT`]).
    pub(crate) async fn recv(&mut self) -> Value {
        match self.try_recv(WAIT).await {
            Some(v) => v,
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next text message within `wait`, or `None`.
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        if let Some(message) = self.backlog.pop_front() {
            return Some(message);
        }
        self.read_socket(wait).await
    }

    /// The next text message from the socket itself (not the backlog).
    async fn read_socket(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match frame.opcode() {
                OpCode::Text => {
                    let text = std::str::from_utf8(frame.payload()).expect("utf8");
                    return Some(serde_json::from_str(text).expect("server sent JSON"));
                }
                OpCode::Close => return None,
                _ => continue,
            }
        }
    }

    /// The close code the server sent, waiting up to `wait`; `None` if the socket ended
    /// without a close frame (or did not end).
    pub(crate) async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            if frame.opcode() == OpCode::Close {
                return frame.close_code().map(u16::from);
            }
        }
    }

    /// Skips messages until one of type `kind` arrives.
    pub(crate) async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Sends a message with a fresh `request_id` and returns the reply carrying it
    /// (messages without it, such as pushes, are skipped).
    pub(crate) async fn request(&mut self, mut message: Value) -> Value {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        message["request_id"] = json!(id);
        self.send(message).await;
        match self.find(|m| m["request_id"] == json!(id), WAIT).await {
            Some(reply) => reply,
            None => panic!("no reply to {id} within {WAIT:?}"),
        }
    }

    /// The first message (from the backlog, then the socket) that `matches`; every other
    /// message read meanwhile stays in the backlog, in order. `None` after `wait` or
    /// when the connection ends.
    pub(crate) async fn find(&mut self, matches: impl Fn(&Value) -> bool, wait: Duration) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.read_socket(left).await?;
            if matches(&message) {
                return Some(message);
            }
            self.backlog.push_back(message);
        }
    }

    /// Creates a document and returns the response.
    pub(crate) async fn create(&mut self, id: &str, content: Value) -> Value {
        self.request(json!({"type": "create_document", "document": {"id": id, "content": content}})).await
    }

    /// Sends an update and returns the response.
    pub(crate) async fn update(&mut self, id: &str, ops: Value, base: Option<u64>) -> Value {
        let mut patch = json!({"document_id": id, "patch": ops});
        if let Some(base) = base {
            patch["base_revision"] = json!(base);
        }
        self.request(json!({"type": "update_document", "patch": patch})).await
    }

    /// Fetches a document's current state.
    pub(crate) async fn get(&mut self, id: &str) -> Value {
        self.request(json!({"type": "get_document", "document_id": id})).await
    }
}

impl Client {
    /// A fresh request id (`r<n>`), for messages sent by hand.
    pub(crate) fn next_request_id(&mut self) -> String {
        self.next_id += 1;
        format!("r{}", self.next_id)
    }

    /// Like [`Client::request`], but `None` when the connection ends or nothing answers
    /// within `wait` (for tests that expect the connection to die).
    pub(crate) async fn try_request(&mut self, mut message: Value, wait: Duration) -> Option<Value> {
        let id = self.next_request_id();
        message["request_id"] = json!(id);
        if !self.try_send(message).await {
            return None;
        }
        self.find(|m| m["request_id"] == json!(id), wait).await
    }

    /// Sends `ping` and returns every message that arrived before its `pong`.
    ///
    /// The session drains its push queue before it reads the next frame, so whatever was
    /// queued for this session before the ping was read comes out before the pong: an
    /// empty answer proves that nothing was pushed to it, without waiting on a timer.
    pub(crate) async fn until_pong(&mut self) -> Vec<Value> {
        let id = self.next_request_id();
        self.send(json!({"type": "ping", "request_id": id})).await;
        let mut before = Vec::new();
        loop {
            let message = self.recv().await;
            if message["type"] == "pong" && message["request_id"] == json!(id) {
                return before;
            }
            before.push(message);
        }
    }

    /// Asserts that nothing was pushed to this session (see [`Client::until_pong`]).
    #[track_caller]
    pub(crate) fn assert_nothing(before_pong: &[Value], who: &str) {
        assert!(before_pong.is_empty(), "{who} received unexpected messages: {before_pong:?}");
    }

    /// Sends an `update_document` with an explicit `patch` object and returns the response.
    pub(crate) async fn update_raw(&mut self, patch: Value) -> Value {
        self.request(json!({"type": "update_document", "patch": patch})).await
    }

    /// Deletes a document and returns the response.
    pub(crate) async fn delete(&mut self, id: &str) -> Value {
        self.request(json!({"type": "delete_document", "document_id": id})).await
    }

    /// Creates a document in `collection` and returns the response.
    pub(crate) async fn create_in(&mut self, collection: &str, id: &str, content: Value) -> Value {
        self.request(
            json!({"type": "create_document", "document": {"id": id, "collection": collection, "content": content}}),
        )
        .await
    }

    /// The document's current content (fails the test if it cannot be read).
    pub(crate) async fn content(&mut self, id: &str) -> Value {
        let reply = self.get(id).await;
        assert_eq!(reply["type"], "sync_document", "{reply}");
        reply["document"]["content"].clone()
    }

    /// Sends several messages as one batch frame, each with a fresh `request_id`, and
    /// returns the ids in order.
    pub(crate) async fn send_batch(&mut self, messages: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::with_capacity(messages.len());
        let batch: Vec<Value> = messages
            .into_iter()
            .map(|mut m| {
                let id = self.next_request_id();
                m["request_id"] = json!(id);
                ids.push(id);
                m
            })
            .collect();
        self.send(Value::Array(batch)).await;
        ids
    }

    /// Waits for one reply to each of `ids` (messages with other ids, and pushes, are
    /// skipped) and returns them in the order of `ids`.
    pub(crate) async fn replies(&mut self, ids: &[String]) -> Vec<Value> {
        let mut replies = Vec::with_capacity(ids.len());
        for id in ids {
            match self.find(|m| m["request_id"] == json!(id), WAIT).await {
                Some(reply) => replies.push(reply),
                None => panic!("no reply to {id} within {WAIT:?}"),
            }
        }
        replies
    }

    /// Pages through `get_changes_since` from `after` and returns every event.
    pub(crate) async fn all_changes_since(&mut self, mut after: u64, limit: u64) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..100_000 {
            let page = self.request(json!({"type": "get_changes_since", "last_sequence": after, "limit": limit})).await;
            assert_eq!(page["type"], "changes", "{page}");
            events.extend(page["events"].as_array().expect("events").iter().cloned());
            after = page["latest_sequence"].as_u64().expect("latest_sequence");
            if page["has_more"] != true {
                return events;
            }
        }
        panic!("get_changes_since never finished paging");
    }
}

/// The error code of a reply: `error.code` of a `*_response`, or `code` of an `error`.
pub(crate) fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().or_else(|| reply["code"].as_str()).unwrap_or("")
}

/// Asserts that `reply` is an `error` message with `code`.
#[track_caller]
pub(crate) fn assert_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "an error says what went wrong: {reply}");
}

/// Asserts that `reply` is a refused `*_response` with `code`.
#[track_caller]
pub(crate) fn assert_refused(reply: &Value, kind: &str, code: &str) {
    assert_eq!(reply["type"], kind, "{reply}");
    assert_eq!(reply["success"], false, "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert!(reply.get("sequence").is_none_or(Value::is_null), "a refused change has no sequence: {reply}");
}

/// Asserts that `reply` is a successful `*_response`.
#[track_caller]
pub(crate) fn assert_ok(reply: &Value, kind: &str) {
    assert_eq!(reply["type"], kind, "{reply}");
    assert_eq!(reply["success"], true, "{reply}");
    assert!(reply["error"].is_null(), "{reply}");
}

impl TestServer {
    /// A client authenticated as `email` that resumes from `last_sequence`; returns the
    /// client and its `auth_success`.
    pub(crate) async fn client_resuming(&self, email: &str, last_sequence: u64) -> (Client, Value) {
        let mut client = self.connect().await;
        let reply = client.authenticate(&self.api_key, &self.secret, email, None, Some(last_sequence)).await;
        assert_eq!(reply["type"], "auth_success", "{reply}");
        (client, reply)
    }

    /// A connected client authenticated with the `?token=` query parameter; returns the
    /// client and the first message the server sent.
    pub(crate) async fn connect_with_token(&self, token: &str) -> (Client, Value) {
        let mut client = Client::connect(&format!("{}?token={token}", self.ws_url())).await;
        let first = client.recv().await;
        if first["type"] == "auth_success" {
            client.user_id = first["user_id"].as_str().map(str::to_owned);
            client.client_id = first["client_id"].as_str().map(str::to_owned);
        }
        (client, first)
    }

    /// An HTTP GET without credentials.
    pub(crate) async fn http_get(&self, path: &str) -> HttpResponse {
        http_request(self.addr, "GET", path, &[], b"").await
    }

    /// An HTTP GET signed with the HMAC headers of `api_key`/`secret` as `email`.
    pub(crate) async fn http_get_signed(&self, path: &str, api_key: &str, secret: &str, email: &str) -> HttpResponse {
        let headers = hmac_headers(api_key, secret, email, now_secs(), b"");
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request(self.addr, "GET", path, &headers, b"").await
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    sync_core::Timestamp::now().unix_millis() / 1000
}

/// The HMAC headers of an HTTP request (`X-Api-Key`, `X-Email`, `X-Timestamp`, `X-Signature`).
pub(crate) fn hmac_headers(
    api_key: &str,
    secret: &str,
    email: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("X-Api-Key", api_key.to_owned()),
        ("X-Email", email.to_owned()),
        ("X-Timestamp", timestamp.to_string()),
        ("X-Signature", sync_core::auth::sign(secret, timestamp, email, api_key, body)),
    ]
}

/// An HTTP response: status, headers (lowercased names) and body.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (fails the test if it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client over a TCP stream: one request per connection
/// (`Connection: close`), fixed-length or chunked bodies. Enough for the server's JSON
/// routes without another HTTP client crate.
pub(crate) async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("http connect");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(request.as_bytes()).await.expect("http write");
        stream.write_all(body).await.expect("http write body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("http read");
        raw
    };
    let raw = tokio::time::timeout(WAIT, exchange).await.expect("http response within the wait");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("http header end");
    let head = std::str::from_utf8(&raw[..split]).expect("http head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("chunk size hex");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// base64url without padding (RFC 4648 §5), as JWTs use it.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// HMAC-SHA256 of `message` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A JWT built by hand: base64url(header).base64url(claims).signature, where the
/// signature is HS256 under `key`, or empty when `key` is `None` (an unsigned token).
pub(crate) fn jwt(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    let signing_input =
        format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
    let signature = key.map(|k| base64url(&hmac_sha256(k, signing_input.as_bytes()))).unwrap_or_default();
    format!("{signing_input}.{signature}")
}

/// A free TCP port on 127.0.0.1 (bound and released; for child processes that need a
/// port number up front).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Client {
    /// Every message until the server closes the connection, and the close code (`None`
    /// when the socket ended without a close frame). Fails the test after `wait`.
    pub(crate) async fn recv_until_close(&mut self, wait: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut messages: Vec<Value> = self.backlog.drain(..).collect();
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return (messages, None),
                Err(_) => panic!("the connection did not close within {wait:?}; got {messages:?}"),
            };
            match frame.opcode() {
                OpCode::Text => {
                    let text = std::str::from_utf8(frame.payload()).expect("utf8");
                    messages.push(serde_json::from_str(text).expect("server sent JSON"));
                }
                OpCode::Close => return (messages, frame.close_code().map(u16::from)),
                _ => {}
            }
        }
    }
}

/// The server binary as a child process on a free port, with its log in its directory,
/// killed (SIGKILL) when dropped: for tests where the process itself is the point (a
/// crash, a resource limit).
pub(crate) struct ServerBinary {
    child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl ServerBinary {
    /// Starts `sync-server serve` in `dir` on `database_url` and waits until it is ready.
    pub(crate) async fn start(dir: &std::path::Path, database_url: &str) -> Self {
        Self::start_wrapped(dir, database_url, &[]).await
    }

    /// Like [`ServerBinary::start`], run through `wrapper` (a command that executes its
    /// arguments, such as `prlimit --fsize=…`), whose process becomes the server's.
    pub(crate) async fn start_wrapped(dir: &std::path::Path, database_url: &str, wrapper: &[&str]) -> Self {
        use std::process::{Command, Stdio};
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("server-{port}.log"))).expect("log file");
        let binary = env!("CARGO_BIN_EXE_sync-server");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["serve", "--port", &port.to_string(), "--host", "127.0.0.1"])
            .current_dir(dir)
            .env("DATABASE_URL", database_url)
            .env("SYNC_SECRET_KEY", SECRET_KEY)
            .env("SYNC_BOOTSTRAP_CREDENTIALS", "false")
            .env("RUST_LOG", "warn")
            .env_remove("JWT_SECRET")
            .env_remove("JWT_PUBLIC_KEY_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the server binary");
        let server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if TcpStream::connect(self.addr).await.is_ok() {
                let ready = http_request(self.addr, "GET", "/ready", &[], b"").await;
                if ready.status == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server binary did not become ready on {}", self.addr);
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The WebSocket URL.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Kills the process with SIGKILL (no shutdown code runs) and waits for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerBinary {
    fn drop(&mut self) {
        self.kill();
    }
}
