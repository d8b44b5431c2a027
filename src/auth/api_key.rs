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
    identity: Arc<Identity>,
    /// Unix seconds; the key is refused from this instant on.
    expires_at: Option<i64>,
    /// Position in the file, to list keys in file order.
    ordinal: u32,
}

/// Why a presented key was refused (for the audit log, never the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Expired { key_id: String },
}

/// One configured key as the index holds it (admin API listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub digest: KeyDigest,
    pub identity: Arc<Identity>,
    pub expires_at: Option<i64>,
}

/// The configured keys by digest. This is the only copy of the key list a
/// running gateway keeps (the parsed file's list is dropped after compiling),
/// so its size per key is what a large key set costs.
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_digest: HashMap<KeyDigest, KeyRecord>,
}

impl KeyIndex {
    pub fn with_capacity(keys: usize) -> Self {
        Self {
            by_digest: HashMap::with_capacity(keys),
        }
    }

    pub fn insert(&mut self, digest: KeyDigest, identity: Identity, expires_at: Option<i64>) {
        self.insert_reusing(digest, identity, expires_at, None);
    }

    /// As [`insert`](Self::insert), sharing the identity of `previous` (the
    /// index a reload replaces) when it is unchanged: reloading 100,000 keys
    /// then allocates a new map, not 100,000 identities next to the old ones.
    pub fn insert_reusing(
        &mut self,
        digest: KeyDigest,
        identity: Identity,
        expires_at: Option<i64>,
        previous: Option<&KeyIndex>,
    ) {
        let identity = previous
            .and_then(|p| p.by_digest.get(&digest))
            .filter(|old| *old.identity == identity)
            .map(|old| Arc::clone(&old.identity))
            .unwrap_or_else(|| Arc::new(identity));
        let ordinal = u32::try_from(self.by_digest.len()).unwrap_or(u32::MAX);
        self.by_digest.insert(
            digest,
            KeyRecord {
                identity,
                expires_at,
                ordinal,
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
        let (_, record) = self
            .by_digest
            .get_key_value(&presented_digest)
            .filter(|(stored, _)| bool::from(stored.ct_eq(&presented_digest)))
            .ok_or(KeyRejection::Unknown)?;
        match record.expires_at {
            Some(at) if now_unix >= at => Err(KeyRejection::Expired {
                key_id: record.identity.key_id.clone(),
            }),
            _ => Ok(record.identity.clone()),
        }
    }

    /// Every key, in file order.
    pub fn entries(&self) -> Vec<KeyEntry> {
        let mut entries: Vec<(u32, KeyEntry)> = self
            .by_digest
            .iter()
            .map(|(digest, r)| {
                let entry = KeyEntry {
                    digest: *digest,
                    identity: Arc::clone(&r.identity),
                    expires_at: r.expires_at,
                };
                (r.ordinal, entry)
            })
            .collect();
        entries.sort_unstable_by_key(|(ordinal, _)| *ordinal);
        entries.into_iter().map(|(_, e)| e).collect()
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
    fn reload_shares_unchanged_identities_and_lists_in_file_order() {
        let mut old = KeyIndex::default();
        old.insert(digest("s1"), ident("k1"), None);
        old.insert(digest("s2"), ident("k2"), None);
        let mut new = KeyIndex::with_capacity(3);
        new.insert_reusing(digest("s3"), ident("k3"), Some(7), Some(&old));
        new.insert_reusing(digest("s2"), ident("k2"), None, Some(&old));
        let mut changed = ident("k1");
        changed.roles = vec!["admin".into()];
        new.insert_reusing(digest("s1"), changed, None, Some(&old));
        let shared = |s: &str| {
            Arc::ptr_eq(
                &old.lookup(s, 0).unwrap_or_else(|e| panic!("{e:?}")),
                &new.lookup(s, 0).unwrap_or_else(|e| panic!("{e:?}")),
            )
        };
        assert!(shared("s2"));
        assert!(!shared("s1"), "a changed identity is not shared");
        let ids: Vec<String> = new
            .entries()
            .iter()
            .map(|e| e.identity.key_id.clone())
            .collect();
        assert_eq!(ids, ["k3", "k2", "k1"]);
        assert_eq!(new.entries()[0].expires_at, Some(7));
        assert_eq!(new.entries()[0].digest, digest("s3"));
    }

    #[test]
    fn generated_keys_match_their_digest() {
        let (key, hex_digest) = generate_key();
        assert!(key.starts_with("tg_"));
        assert_eq!(parse_digest_hex(&hex_digest), Some(digest(&key)));
        assert_ne!(generate_key().0, key);
    }
}
