//! Verified JWTs, by the SHA-256 of the token, until they expire.
//!
//! RS256/ES256 verification costs tens of microseconds per request; clients
//! reuse one token for many calls, so a hit (one hash, one lookup) replaces
//! the signature check. The cache lives in the config snapshot: a reload
//! (rotated or removed keys) starts from an empty one. Bounded: when full it
//! is cleared rather than grown, so hostile token floods cost memory only up
//! to the bound (and only validly signed tokens are ever stored).

use super::api_key::{digest, KeyDigest};
use super::identity::Identity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const MAX_ENTRIES: usize = 16 * 1024;

/// The verified identity and the unix second it stops being valid.
type Entry = (Arc<Identity>, u64);

#[derive(Debug, Default)]
pub struct JwtCache {
    entries: Mutex<HashMap<KeyDigest, Entry>>,
}

/// Tokens are keyed like API keys: by their SHA-256.
pub fn token_digest(token: &str) -> KeyDigest {
    digest(token)
}

impl JwtCache {
    /// The identity of a token verified before, if it has not expired.
    pub fn get(&self, key: &KeyDigest, now_unix: u64) -> Option<Arc<Identity>> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((identity, valid_until)) if now_unix < *valid_until => Some(identity.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: KeyDigest, identity: Arc<Identity>, valid_until: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (identity, valid_until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Arc<Identity> {
        Arc::new(Identity {
            user: "u".into(),
            tenant: "t".into(),
            roles: vec![],
            key_id: "k".into(),
            ..Identity::default()
        })
    }

    fn held(cache: &JwtCache) -> usize {
        cache.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    #[test]
    fn hits_until_expiry_then_forgets() {
        let cache = JwtCache::default();
        let d = token_digest("a.b.c");
        cache.insert(d, who(), 100);
        assert!(cache.get(&d, 99).is_some());
        assert!(cache.get(&d, 100).is_none(), "never past expiry");
        assert_eq!(held(&cache), 0, "expired entries are dropped");
        assert!(cache.get(&token_digest("a.b.d"), 0).is_none());
    }

    #[test]
    fn bounded() {
        let cache = JwtCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            cache.insert(token_digest(&format!("t{i}")), who(), u64::MAX);
        }
        assert!(held(&cache) <= MAX_ENTRIES);
    }
}
