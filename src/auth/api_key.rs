//! API keys, stored as SHA-256 digests only.
//!
//! Every presented key costs exactly one hash and one map lookup, whether it
//! is unknown, expired or malformed, so responses do not leak which case
//! applied through timing. The map is keyed by digest; the final equality
//! check on the digest is constant-time.

use super::identity::Identity;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub type KeyDigest = [u8; 32];

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

pub fn parse_digest_hex(hex_digest: &str) -> Option<KeyDigest> {
    let bytes = hex::decode(hex_digest).ok()?;
    bytes.try_into().ok()
}

#[derive(Debug)]
struct KeyRecord {
    digest: KeyDigest,
    identity: Arc<Identity>,
    /// Unix seconds; the key is refused from this instant on.
    expires_at: Option<i64>,
}

/// Why a presented key was refused (for the audit log, never the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Expired { key_id: String },
}

#[derive(Debug, Default)]
pub struct KeyIndex {
    by_digest: HashMap<KeyDigest, KeyRecord>,
}

impl KeyIndex {
    pub fn insert(&mut self, digest: KeyDigest, identity: Identity, expires_at: Option<i64>) {
        self.by_digest.insert(
            digest,
            KeyRecord {
                digest,
                identity: Arc::new(identity),
                expires_at,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    pub fn lookup(&self, presented: &str, now_unix: i64) -> Result<Arc<Identity>, KeyRejection> {
        let presented_digest = digest(presented);
        let record = self
            .by_digest
            .get(&presented_digest)
            .filter(|r| bool::from(r.digest.ct_eq(&presented_digest)))
            .ok_or(KeyRejection::Unknown)?;
        match record.expires_at {
            Some(at) if now_unix >= at => Err(KeyRejection::Expired {
                key_id: record.identity.key_id.clone(),
            }),
            _ => Ok(record.identity.clone()),
        }
    }
}

/// A new random API key (256 bits, URL-safe) and its digest in hex.
pub fn generate_key() -> (String, String) {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let key = format!("tg_{}", hex::encode(raw));
    let digest_hex = hex::encode(digest(&key));
    (key, digest_hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(id: &str) -> Identity {
        Identity {
            user: "alice".into(),
            tenant: "acme".into(),
            roles: vec!["agent".into()],
            key_id: id.into(),
        }
    }

    #[test]
    fn finds_known_key_and_refuses_others() {
        let mut idx = KeyIndex::default();
        idx.insert(digest("secret-1"), ident("k1"), None);
        idx.insert(digest("secret-2"), ident("k2"), Some(100));
        assert_eq!(idx.lookup("secret-1", 50).unwrap().key_id, "k1");
        assert_eq!(idx.lookup("nope", 50), Err(KeyRejection::Unknown));
        assert_eq!(idx.lookup("secret-2", 99).unwrap().key_id, "k2");
        assert_eq!(
            idx.lookup("secret-2", 100),
            Err(KeyRejection::Expired {
                key_id: "k2".into()
            })
        );
    }

    #[test]
    fn generated_keys_match_their_digest() {
        let (key, hex_digest) = generate_key();
        assert!(key.starts_with("tg_"));
        assert_eq!(parse_digest_hex(&hex_digest), Some(digest(&key)));
        assert_ne!(generate_key().0, key);
    }
}
