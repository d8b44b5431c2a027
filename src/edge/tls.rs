//! Downstream TLS termination (`server.tls`).
//!
//! Pingora's rustls `TlsSettings::build()` reads the certificate and key files
//! itself and panics when they are unreadable or do not match. So the files
//! are parsed here instead — at `check` time (validation) and again when the
//! listener is built — and the listener gets the parsed key through a cert
//! resolver: `build()` then never touches the files and cannot panic.
//! rustls (and Pingora's builder) only speak TLS 1.2 and 1.3.

use crate::config::schema::TlsListenerConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::{CertifiedKey, SingleCertAndKey};
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

/// What is wrong with the configured certificate or key, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
}

impl TlsFileError {
    /// The config field (under `server.tls`) the problem belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            TlsFileError::Cert(_) => "cert_file",
            TlsFileError::Key(_) => "key_file",
        }
    }
}

fn provider() -> Result<Arc<CryptoProvider>, TlsFileError> {
    // rustls 0.23 needs a process-wide provider; Pingora installs `ring` the
    // same way (idempotent).
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| TlsFileError::Key("no TLS crypto provider available".into()))
}

/// Parses the PEM chain and private key and checks that they belong together.
pub fn load_certified_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            TlsFileError::Cert(format!(
                "cannot read a PEM certificate chain from '{cert_file}': {e}"
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsFileError::Cert(format!(
            "no CERTIFICATE block in '{cert_file}'"
        )));
    }
    // The leaf must be a well-formed X.509 certificate, not just base64.
    if let Some(leaf) = chain.first() {
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
            TlsFileError::Cert(format!("'{cert_file}': invalid X.509 certificate: {e}"))
        })?;
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        TlsFileError::Key(format!(
            "cannot read a PEM private key from '{key_file}': {e}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, &*provider()?).map_err(|e| {
        TlsFileError::Key(format!(
            "'{key_file}' is not a usable private key for '{cert_file}': {e}"
        ))
    })
}

/// Listener settings for `server.tls`: the parsed certificate, ALPN h2 then
/// http/1.1 (HTTP/2 is negotiated per connection).
pub fn listener_settings(tls: &TlsListenerConfig) -> Result<TlsSettings, TlsFileError> {
    let key = load_certified_key(&tls.cert_file, &tls.key_file)?;
    let mut settings = TlsSettings::intermediate(&tls.cert_file, &tls.key_file)
        .map_err(|e| TlsFileError::Cert(e.to_string()))?;
    // With a resolver set, `build()` ignores the paths above (no file I/O, no panic).
    settings.set_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    settings.enable_h2();
    Ok(settings)
}
