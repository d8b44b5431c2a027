//! API keys, stored as SHA-256 digests only.
//!
//! Every presented key costs exactly one hash and one map lookup, whether it
//! is unknown, expired or malformed, so responses do not leak which case
//! applied through timing. The table is keyed by digest; the final equality
//! check on the digest is constant-time.

use super::identity::Identity;
use hashbrown::HashTable;
use sha2::{Digest, Sha256};
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

#[derive(Debug, Clone)]
struct KeyRecord {
    digest: KeyDigest,
    identity: Arc<Identity>,
    /// Unix seconds; the key is refused from this instant on.
    /// [`NEVER`] for a key without expiry.
    expires_at: i64,
}

const NEVER: i64 = i64::MAX;

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
/// running gateway keeps (the file's entries are compiled into it as they
/// are parsed), so its size per key is what a large key set costs.
///
/// Records sit in file order in one vector (48 bytes each); the hash table
/// holds only their positions (4 bytes a slot). A digest is the SHA-256 of
/// a secret, uniformly distributed, so its first 8 bytes are its hash: no
/// hasher runs on a lookup.
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    records: Vec<KeyRecord>,
    by_digest: HashTable<u32>,
}

fn slot_hash(digest: &KeyDigest) -> u64 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(prefix)
}

impl KeyIndex {
    pub fn with_capacity(keys: usize) -> Self {
        Self {
            records: Vec::with_capacity(keys),
            by_digest: HashTable::with_capacity(keys),
        }
    }

    /// Adds a key; false (and nothing added) if its digest is already in.
    pub fn insert(
        &mut self,
        digest: KeyDigest,
        identity: Identity,
        expires_at: Option<i64>,
    ) -> bool {
        self.insert_reusing(digest, identity, expires_at, None)
    }

    /// As [`insert`](Self::insert), sharing the identity of `previous` (the
    /// index a reload replaces) when it is unchanged: reloading 100,000 keys
    /// then allocates a new table, not 100,000 identities next to the old
    /// ones.
    pub fn insert_reusing(
        &mut self,
        digest: KeyDigest,
        identity: Identity,
        expires_at: Option<i64>,
        previous: Option<&KeyIndex>,
    ) -> bool {
        if self.record(&digest).is_some() {
            return false;
        }
        let Ok(position) = u32::try_from(self.records.len()) else {
            return false;
        };
        let identity = previous
            .and_then(|p| p.record(&digest))
            .filter(|old| *old.identity == identity)
            .map(|old| Arc::clone(&old.identity))
            .unwrap_or_else(|| Arc::new(identity));
        self.records.push(KeyRecord {
            digest,
            identity,
            expires_at: expires_at.unwrap_or(NEVER),
        });
        let records = &self.records;
        self.by_digest
            .insert_unique(slot_hash(&digest), position, |p| {
                slot_hash(&records[*p as usize].digest)
            });
        true
    }

    pub fn contains(&self, digest: &KeyDigest) -> bool {
        self.record(digest).is_some()
    }

    fn record(&self, digest: &KeyDigest) -> Option<&KeyRecord> {
        self.by_digest
            .find(slot_hash(digest), |p| {
                self.records.get(*p as usize).map(|r| &r.digest) == Some(digest)
            })
            .and_then(|p| self.records.get(*p as usize))
    }

    /// The key id of the `position`-th key of the file.
    pub fn key_id_at(&self, position: usize) -> Option<&str> {
        self.records
            .get(position)
            .map(|r| r.identity.key_id.as_str())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Gives back the spare capacity a file with fewer keys than announced
    /// left behind.
    pub fn shrink_to_fit(&mut self) {
        self.records.shrink_to_fit();
        let records = &self.records;
        self.by_digest
            .shrink_to_fit(|p| slot_hash(&records[*p as usize].digest));
    }

    pub fn lookup(&self, presented: &str, now_unix: i64) -> Result<Arc<Identity>, KeyRejection> {
        self.lookup_digest(&digest(presented), now_unix)
    }

    /// As [`lookup`](Self::lookup), for a digest already computed.
    pub fn lookup_digest(
        &self,
        presented_digest: &KeyDigest,
        now_unix: i64,
    ) -> Result<Arc<Identity>, KeyRejection> {
        let presented_digest = *presented_digest;
        let record = self
            .record(&presented_digest)
            .filter(|r| bool::from(r.digest.ct_eq(&presented_digest)))
            .ok_or(KeyRejection::Unknown)?;
        if now_unix >= record.expires_at {
            return Err(KeyRejection::Expired {
                key_id: record.identity.key_id.clone(),
            });
        }
        Ok(record.identity.clone())
    }

    /// Whether a key of the file has this id (a linear scan: for the
    /// admin API's rare writes, not the request path).
    pub fn has_id(&self, key_id: &str) -> bool {
        self.records.iter().any(|r| r.identity.key_id == key_id)
    }

    /// The identity of the key with id `key_id` (a scan: admin use only).
    pub fn identity_of(&self, key_id: &str) -> Option<Arc<Identity>> {
        self.records
            .iter()
            .find(|r| r.identity.key_id == key_id)
            .map(|r| Arc::clone(&r.identity))
    }

    /// Every key, in file order.
    pub fn entries(&self) -> Vec<KeyEntry> {
        self.records
            .iter()
            .map(|r| KeyEntry {
                digest: r.digest,
                identity: Arc::clone(&r.identity),
                expires_at: (r.expires_at != NEVER).then_some(r.expires_at),
            })
            .collect()
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
            ..Identity::default()
        }
    }

    #[test]
    fn finds_known_key_and_refuses_others() {
        let mut idx = KeyIndex::default();
        idx.insert(digest("secret-1"), ident("k1"), None);
        idx.insert(digest("secret-2"), ident("k2"), Some(100));
        assert_eq!(idx.lookup("secret-1", 50).unwrap().key_id, "k1");
        assert_eq!(idx.lookup("nope", 50), Err(KeyRejection::Unknown));
        assert_eq!(
            idx.identity_of("k2").map(|i| i.key_id.clone()),
            Some("k2".into())
        );
        assert!(idx.identity_of("k3").is_none());
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
    fn a_second_entry_for_the_same_digest_is_refused() {
        let mut idx = KeyIndex::with_capacity(1);
        assert!(idx.insert(digest("s"), ident("k1"), None));
        assert!(!idx.insert(digest("s"), ident("k2"), None));
        assert_eq!(idx.len(), 1);
        assert_eq!(
            idx.lookup("s", 0).map(|i| i.key_id.clone()),
            Ok("k1".into())
        );
        // Grows past its capacity and still finds every key.
        for i in 0..1000 {
            assert!(idx.insert(digest(&format!("x{i}")), ident(&format!("x{i}")), None));
        }
        idx.shrink_to_fit();
        for i in 0..1000 {
            assert!(idx.lookup(&format!("x{i}"), 0).is_ok());
        }
        assert_eq!(idx.key_id_at(1), Some("x0"));
    }

    #[test]
    fn generated_keys_match_their_digest() {
        let (key, hex_digest) = generate_key();
        assert!(key.starts_with("tg_"));
        assert_eq!(parse_digest_hex(&hex_digest), Some(digest(&key)));
        assert_ne!(generate_key().0, key);
    }
}
