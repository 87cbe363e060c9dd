//! TLS on the server's port: `https://` and `wss://` with a PEM certificate and key
//! (`[tls]`), read again on SIGHUP.
//!
//! Guarantees:
//! - with TLS configured the port speaks TLS only; a client that speaks plain HTTP to it
//!   gets one `400` that says so (in plain HTTP, the only thing it can read) and the
//!   connection closes — nothing else is served in the clear;
//! - the TLS handshake is held to the same deadline as a request head
//!   (`limits.header_read_timeout_secs`): a socket that opens a handshake and stalls
//!   holds nothing for long;
//! - a reload that fails (a missing file, a key that does not match) keeps the
//!   certificate in force and logs why; connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsSection;

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The body of the answer to a plain-HTTP request on the TLS port.
const PLAIN_HTTP_BODY: &str =
    r#"{"error":{"code":"invalid_message","message":"this port speaks TLS only: use https:// or wss://"}}"#;

/// How long a refused plain-HTTP connection is drained before it closes, so that its
/// request, unread, does not turn the close into a reset that loses the answer.
const PLAIN_HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

fn plain_http_answer() -> String {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
}

/// The certificate in force, and where it is read from.
pub(crate) struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl Tls {
    /// Reads the configured files; `None` when TLS is not configured.
    pub(crate) fn from_config(section: &TlsSection) -> anyhow::Result<Option<Arc<Tls>>> {
        let (cert_file, key_file) = match (&section.cert_file, &section.key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(_), None) => bail!("tls.cert_file is set but tls.key_file is not (SYNC_TLS_KEY_FILE)"),
            (None, Some(_)) => bail!("tls.key_file is set but tls.cert_file is not (SYNC_TLS_CERT_FILE)"),
        };
        let acceptor = load(&cert_file, &key_file)?;
        Ok(Some(Arc::new(Tls { cert_file, key_file, current: RwLock::new(acceptor) })))
    }

    /// Reads the files again; on failure the certificate in force stays.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let acceptor = load(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs the server side of the handshake. A connection whose first byte is not a TLS
    /// handshake (plain HTTP) is answered with a `400` that says to use TLS, and closed:
    /// `Ok(None)`.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<Option<TlsStream<TcpStream>>> {
        let mut first = [0u8; 1];
        let read = tcp.peek(&mut first).await?;
        if read == 0 {
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain(tcp).await;
            return Ok(None);
        }
        self.acceptor().accept(tcp).await.map(Some)
    }
}

/// Answers a plain-HTTP client that TLS is needed, then reads (and drops) what it sent,
/// for a bounded time and amount, before closing.
async fn refuse_plain(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt as _;
    if tcp.write_all(plain_http_answer().as_bytes()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = 64usize << 10;
        while left > 0 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(PLAIN_HTTP_DRAIN, drain).await;
}

/// Reads a certificate chain and its key into an acceptor for HTTP/1.1.
fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("cannot read the certificate file {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_file.display()))?;
    if certs.is_empty() {
        bail!("{}: holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!("cannot read a private key from {} (PKCS#8, PKCS#1 or SEC1 PEM)", key_file.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("the key {} does not fit the certificate {}", key_file.display(), cert_file.display())
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reloads the certificate on every SIGHUP, for the process's life.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(tls: Arc<Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    match tls.reload() {
                        Ok(()) => tracing::info!(cert = %tls.cert_file.display(), "SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(
                            error = format!("{e:#}"),
                            "SIGHUP: cannot reload the TLS certificate; the one in force stays"
                        ),
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot catch SIGHUP; the TLS certificate reloads only on restart"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_well_formed() {
        let text = plain_http_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_message");
    }
}
