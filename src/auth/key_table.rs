//! API keys made through the admin API, as authentication sees them: a
//! table from digest to identity, swapped whole (`keys::registry` builds
//! it from the ledger database; this layer only reads it).
//!
//! A rotated key has two digests in the table for the length of its grace:
//! the new one, and the previous one with `until` at the grace's end.
//! Expiry and the grace end are checked against the clock at every lookup,
//! so neither waits for a reload.

use super::api_key::KeyDigest;
use super::identity::Identity;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Unix seconds that never come.
pub const NEVER: i64 = i64::MAX;

/// One digest of an API-made key.
#[derive(Debug, Clone)]
pub struct MadeKey {
    pub identity: Arc<Identity>,
    /// Refused from this instant on ([`NEVER`]: no expiry).
    pub expires_at: i64,
    /// The previous secret of a rotation: refused from the grace's end.
    pub until: i64,
    /// Last successful use, unix seconds rounded down to the minute; shared
    /// by both digests of a key and written to the database in batches.
    pub last_used: Arc<AtomicI64>,
}

/// Why an API-made key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MadeKeyRejection {
    Unknown,
    Expired { key_id: String },
    GraceEnded { key_id: String },
}

#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    by_digest: HashMap<KeyDigest, MadeKey, DigestHasher>,
}

/// A digest is the SHA-256 of a random secret: its first 8 bytes are
/// already a uniform hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher;

impl std::hash::BuildHasher for DigestHasher {
    type Hasher = PrefixHasher;
    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

#[derive(Debug, Default)]
pub struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Arrays hash their length first (a usize), then the bytes.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

impl KeyTable {
    pub fn with_capacity(n: usize) -> Self {
        KeyTable {
            by_digest: HashMap::with_capacity_and_hasher(n, DigestHasher),
        }
    }

    pub fn insert(&mut self, digest: KeyDigest, key: MadeKey) {
        self.by_digest.insert(digest, key);
    }

    pub fn remove(&mut self, digest: &KeyDigest) -> Option<MadeKey> {
        self.by_digest.remove(digest)
    }

    pub fn get(&self, digest: &KeyDigest) -> Option<&MadeKey> {
        self.by_digest.get(digest)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &MadeKey> {
        self.by_digest.values()
    }

    /// The identity of a presented digest, if it is valid at `now_unix`.
    /// A success marks the key used this minute (an atomic store at most
    /// once a minute per key: the request path never writes the database).
    pub fn lookup(
        &self,
        digest: &KeyDigest,
        now_unix: i64,
    ) -> Result<Arc<Identity>, MadeKeyRejection> {
        let key = self
            .by_digest
            .get(digest)
            .ok_or(MadeKeyRejection::Unknown)?;
        if now_unix >= key.expires_at {
            return Err(MadeKeyRejection::Expired {
                key_id: key.identity.key_id.clone(),
            });
        }
        if now_unix >= key.until {
            return Err(MadeKeyRejection::GraceEnded {
                key_id: key.identity.key_id.clone(),
            });
        }
        let minute = now_unix - now_unix.rem_euclid(60);
        if key.last_used.load(Ordering::Relaxed) < minute {
            key.last_used.fetch_max(minute, Ordering::Relaxed);
        }
        Ok(Arc::clone(&key.identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::api_key::digest;

    fn made(id: &str, expires_at: i64, until: i64) -> MadeKey {
        MadeKey {
            identity: Arc::new(Identity {
                user: "u".into(),
                tenant: "t".into(),
                roles: vec![],
                key_id: id.into(),
                ..Identity::default()
            }),
            expires_at,
            until,
            last_used: Arc::default(),
        }
    }

    #[test]
    fn expiry_and_grace_are_checked_against_the_clock() {
        let mut table = KeyTable::default();
        table.insert(digest("new"), made("k", 1000, NEVER));
        table.insert(digest("old"), made("k", 1000, 500));
        assert_eq!(
            table.lookup(&digest("new"), 10).map(|i| i.key_id.clone()),
            Ok("k".into())
        );
        assert!(table.lookup(&digest("old"), 499).is_ok());
        assert_eq!(
            table.lookup(&digest("old"), 500),
            Err(MadeKeyRejection::GraceEnded { key_id: "k".into() })
        );
        assert_eq!(
            table.lookup(&digest("new"), 1000),
            Err(MadeKeyRejection::Expired { key_id: "k".into() })
        );
        assert_eq!(
            table.lookup(&digest("x"), 0),
            Err(MadeKeyRejection::Unknown)
        );
    }

    #[test]
    fn a_use_marks_the_minute_once() {
        let mut table = KeyTable::default();
        let key = made("k", NEVER, NEVER);
        let used = Arc::clone(&key.last_used);
        table.insert(digest("s"), key);
        assert!(table.lookup(&digest("s"), 125).is_ok());
        assert_eq!(used.load(Ordering::Relaxed), 120);
        assert!(table.lookup(&digest("s"), 110).is_ok());
        assert_eq!(used.load(Ordering::Relaxed), 120, "never goes back");
    }
}
