//! Upstream TLS for `tls: true` pools: certificate + hostname verification,
//! an optional per-pool CA (`ca_file`) and optional certificate pins
//! (`pins_sha256`).
//!
//! Pins. Pingora 0.9.1 (rustls) has no pinning hook: its verifier is built
//! inside the connector, and the post-handshake hook is OpenSSL-only. What it
//! does expose, in `connected_to_upstream`, is `SslDigest::cert_digest`: the
//! SHA-256 of the peer's leaf certificate (DER). So pins are checked there,
//! on every fresh or reused connection, against that digest.
//! DEVIATION from DESIGN §3 ("SPKI sha256"): a pin is the SHA-256 of the
//! whole leaf certificate (`openssl x509 -in cert.pem -outform DER |
//! sha256sum`), not of its SubjectPublicKeyInfo, because the rustls digest
//! carries no certificate bytes to extract the SPKI from. Re-issuing a
//! certificate with the same key therefore needs a pin update.
//!
//! Isolation. Pingora's connection-reuse hash ignores `options.ca`, so two
//! pools reaching the same address and SNI with different CAs or pins could
//! share a connection verified under the other's rules. Each pool's TLS
//! policy therefore gets its own `group_key` (part of that hash), which also
//! keys the pin registry read by [`verify_pins`].

use crate::config::schema::UpstreamConfig;
use once_cell::sync::Lazy;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::upstreams::peer::{HttpPeer, Scheme};
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Pin = [u8; 32];

/// Pin sets by `group_key`. Entries are added per distinct pool TLS policy
/// (config-defined, so the map stays tiny) and never removed: a pooled
/// connection may outlive the config that created it.
static PIN_SETS: Lazy<RwLock<HashMap<u64, Arc<[Pin]>>>> = Lazy::new(Default::default);

/// A pool's upstream TLS policy, computed once per pool build.
pub struct UpstreamTls {
    ca: Option<Arc<[WrappedX509]>>,
    group_key: u64,
}

impl UpstreamTls {
    /// Reads `ca_file` and parses `pins_sha256`. Errors name the field.
    pub fn load(upstream: &UpstreamConfig) -> Result<UpstreamTls, String> {
        if !upstream.tls {
            return Ok(UpstreamTls {
                ca: None,
                group_key: 0,
            });
        }
        let mut policy = Sha256::new();
        let ca = match &upstream.ca_file {
            Some(file) => {
                let ders = load_ca_file(file).map_err(|e| format!("ca_file: {e}"))?;
                for der in &ders {
                    policy.update(Sha256::digest(der));
                }
                Some(
                    ders.into_iter()
                        .map(|der| WrappedX509::new(der, parse_x509))
                        .collect::<Vec<_>>()
                        .into(),
                )
            }
            None => None,
        };
        let mut pins = Vec::with_capacity(upstream.pins_sha256.len());
        for (i, pin) in upstream.pins_sha256.iter().enumerate() {
            let bytes = hex::decode(pin.trim())
                .ok()
                .and_then(|b| Pin::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("pins_sha256[{i}]: not a SHA-256 hex digest"))?;
            pins.push(bytes);
        }
        pins.sort_unstable();
        policy.update(b"pins");
        for pin in &pins {
            policy.update(pin);
        }
        let digest = policy.finalize();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        // 0 is Pingora's default group: keep it for "no special policy".
        let group_key = u64::from_be_bytes(key).max(1);
        PIN_SETS
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group_key)
            .or_insert_with(|| pins.into());
        Ok(UpstreamTls { ca, group_key })
    }

    /// Applies the policy to a peer template. Verification of the chain and
    /// of the name is Pingora's default; `sni` defaults to the peer's IP
    /// because Pingora skips ALL verification when the SNI is empty.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if peer.scheme != Scheme::HTTPS {
            return;
        }
        if peer.sni.is_empty() {
            peer.sni = peer
                ._address
                .as_inet()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
        }
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.ca = self.ca.clone();
        peer.group_key = self.group_key;
    }
}

/// Every certificate in a PEM file, each checked to be parseable X.509
/// (Pingora's `parse_x509` panics on bad DER).
fn load_ca_file(file: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read PEM certificates from '{file}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("no CERTIFICATE block in '{file}'"));
    }
    certs
        .into_iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .map(|_| c.to_vec())
                .map_err(|e| format!("'{file}': invalid X.509 certificate: {e}"))
        })
        .collect()
}

/// Checks the upstream connection's leaf certificate against the pins of
/// the peer's pool (none configured → accepted). Called from
/// `ProxyHttp::connected_to_upstream`; a mismatch fails the request as an
/// upstream TLS failure (502 `upstream_error`).
pub fn verify_pins(peer: &HttpPeer, digest: Option<&Digest>) -> Result<()> {
    if peer.scheme != Scheme::HTTPS || peer.group_key == 0 {
        return Ok(());
    }
    let pins = PIN_SETS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&peer.group_key)
        .cloned();
    let Some(pins) = pins else {
        // Not a group we created: no pins to enforce.
        return Ok(());
    };
    if pins.is_empty() {
        return Ok(());
    }
    let presented = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|s| s.cert_digest.as_slice());
    if presented.is_some_and(|cert| pins.iter().any(|pin| pin.as_slice() == cert)) {
        return Ok(());
    }
    let mut e = Error::explain(
        TLSHandshakeFailure,
        format!("upstream {peer}: certificate does not match any pins_sha256"),
    );
    e.esource = ErrorSource::Upstream;
    Err(e)
}
