//! `wss://` with extra trusted CA certificates ([`crate::SyncConfig::tls_ca_file`]): the
//! public web roots plus the certificates of that PEM file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_rustls::TlsConnector;

use crate::error::{Result, SyncError};

/// A connector trusting the web roots and every certificate in `ca_file`.
pub(super) fn connector(ca_file: &Path) -> Result<TlsConnector> {
    let unreadable = |e: &dyn std::fmt::Display| {
        SyncError::Config(format!("cannot read CA certificates from {}: {e}", ca_file.display()))
    };
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
        added += 1;
    }
    if added == 0 {
        return Err(unreadable(&"no PEM `BEGIN CERTIFICATE` block"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
