//! A lean protocol client for load generation: one WebSocket, HMAC authentication,
//! JSON in and out.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use yawc::{Frame, MaybeTlsStream, OpCode, Options, WebSocket};

/// Credentials for HMAC authentication.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    /// `rpa_…`.
    pub(crate) api_key: String,
    /// `rps_…`.
    pub(crate) secret: String,
}

/// One connection.
pub(crate) struct BenchClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl BenchClient {
    /// Connects to `url` (optionally from a given local address).
    pub(crate) async fn connect(url: &str, local: Option<std::net::IpAddr>, compression: bool) -> anyhow::Result<Self> {
        // Small buffers: the connections scenario holds tens of thousands of these.
        let options = Options::default()
            .with_read_buffer_capacity(1024)
            .with_write_buffer_capacity(1024)
            .with_no_delay()
            .with_limits(64 << 20, 64 << 20);
        let options = if compression { options.with_low_latency_compression() } else { options };
        let mut builder = WebSocket::connect(url.parse().context("websocket url")?).with_options(options);
        if let Some(ip) = local {
            builder = builder.with_local_address(ip);
        }
        let ws = builder.await.with_context(|| format!("connecting to {url}"))?;
        Ok(Self { ws })
    }

    /// Authenticates as `email`; returns the `auth_success` message.
    pub(crate) async fn authenticate(
        &mut self,
        credentials: &Credentials,
        email: &str,
        last_sequence: Option<u64>,
    ) -> anyhow::Result<Value> {
        let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
        let signature = sync_core::auth::sign(&credentials.secret, timestamp, email, &credentials.api_key, b"");
        let mut message = json!({
            "type": "authenticate", "email": email, "api_key": credentials.api_key,
            "signature": signature, "timestamp": timestamp,
        });
        if let Some(seq) = last_sequence {
            message["last_sequence"] = json!(seq);
        }
        self.send(&message).await?;
        let reply = self.recv(Duration::from_secs(30)).await?;
        if reply["type"] != "auth_success" {
            bail!("authentication failed: {reply}");
        }
        Ok(reply)
    }

    /// Sends one message.
    pub(crate) async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send_text(message.to_string()).await
    }

    /// Sends raw text.
    pub(crate) async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Frame::text(text)).await.context("sending")
    }

    /// Sends raw texts, one frame each, with one flush.
    pub(crate) async fn send_texts(&mut self, texts: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
        for text in texts {
            self.ws.feed(Frame::text(text)).await.context("sending")?;
        }
        self.ws.flush().await.context("sending")
    }

    /// The next text message as raw bytes.
    pub(crate) async fn recv_raw(&mut self, wait: Duration) -> anyhow::Result<bytes::Bytes> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
                .await
                .context("timed out waiting for the server")?
                .context("connection closed")?;
            match frame.opcode() {
                OpCode::Text => return Ok(frame.into_payload()),
                OpCode::Close => bail!("server closed the connection: {:?}", frame.close_reason().ok().flatten()),
                _ => continue,
            }
        }
    }

    /// Skips messages until one of type `kind` arrives.
    pub(crate) async fn recv_type(&mut self, kind: &str, wait: Duration) -> anyhow::Result<Value> {
        loop {
            let message = self.recv(wait).await?;
            if message["type"] == kind {
                return Ok(message);
            }
        }
    }

    /// Pages through `get_changes_since` from `after`, `limit` at a time, to the end of
    /// the log; returns the events and the bytes received.
    pub(crate) async fn page_changes(&mut self, mut after: u64, limit: u32) -> anyhow::Result<(usize, usize)> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(rename = "type")]
            kind: String,
            events: Option<Vec<serde::de::IgnoredAny>>,
            latest_sequence: Option<u64>,
            has_more: Option<bool>,
        }
        let (mut events, mut bytes) = (0, 0);
        loop {
            self.send(&json!({"type": "get_changes_since", "last_sequence": after, "limit": limit})).await?;
            let page: Page = loop {
                let raw = self.recv_raw(Duration::from_secs(60)).await?;
                bytes += raw.len();
                let page: Page = serde_json::from_slice(&raw).context("parsing a page")?;
                if page.kind == "changes" {
                    break page;
                }
            };
            events += page.events.map_or(0, |e| e.len());
            after = page.latest_sequence.unwrap_or(after);
            if page.has_more != Some(true) {
                return Ok((events, bytes));
            }
        }
    }

    /// The next text message, parsed.
    pub(crate) async fn recv(&mut self, wait: Duration) -> anyhow::Result<Value> {
        let bytes = self.recv_raw(wait).await?;
        serde_json::from_slice(&bytes).context("server sent invalid JSON")
    }
}
