//! Certificates for TLS tests: a private CA and server certificates it signs, written as
//! PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A private certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, as PEM files, and the certificate's DER bytes (to
/// tell which certificate a server presented).
pub struct ServerCert {
    /// The certificate chain file (the leaf).
    pub cert_file: PathBuf,
    /// The private key file (PKCS#8).
    pub key_file: PathBuf,
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_pem(&self, path: &Path) -> anyhow::Result<PathBuf> {
        std::fs::write(path, self.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_owned())
    }

    /// Issues a certificate for `localhost` and `127.0.0.1`, written to
    /// `<dir>/<name>.pem` and `<dir>/<name>.key`.
    pub fn issue_localhost(&self, dir: &Path, name: &str) -> anyhow::Result<ServerCert> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).with_context(|| format!("writing {}", cert_file.display()))?;
        std::fs::write(&key_file, key.serialize_pem()).with_context(|| format!("writing {}", key_file.display()))?;
        Ok(ServerCert { cert_file, key_file, der: cert.der().to_vec() })
    }
}
