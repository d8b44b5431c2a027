//! The API-made keys every instance holds in memory: the whole set, so
//! authentication never reads the database (an unknown key costs one hash
//! and two map lookups, and floods of random keys never reach PostgreSQL).
//!
//! Changes are applied copy-on-write: the table authentication reads is
//! swapped whole (`ArcSwap`), so a request sees one consistent table.
//! Each key id remembers the version applied, so a row arriving twice or
//! late (this instance's own write, then its notification) is applied
//! once and never goes back. The watermark for "reload above" moves only
//! with full reads from the database, never with this instance's own
//! writes, so a change another instance committed in between is not
//! skipped.

use super::record::StoredKey;
use crate::auth::api_key::{KeyDigest, KeyIndex};
use crate::auth::identity::{CredentialKind, Identity};
use crate::auth::key_table::{KeyTable, MadeKey, NEVER};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Applied {
    version: i64,
    digests: [Option<KeyDigest>; 2],
    last_used: Arc<AtomicI64>,
    /// The last use already written to the database.
    flushed: i64,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Applied>,
    /// Every row up to this version has been read from the database.
    watermark: i64,
}

#[derive(Debug, Default)]
pub struct KeyRegistry {
    table: ArcSwap<KeyTable>,
    inner: Mutex<Inner>,
}

impl KeyRegistry {
    pub fn new() -> KeyRegistry {
        KeyRegistry::default()
    }

    /// The table authentication reads (one `ArcSwap` load).
    pub fn table(&self) -> Arc<KeyTable> {
        self.table.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while applying leaves the map as it was before the
        // swap: the state is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watermark(&self) -> i64 {
        self.lock().watermark
    }

    /// How many keys (ids) are loaded, revoked ones included.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies rows read from the database above the watermark (all of
    /// them: the watermark moves to the highest version).
    pub fn apply_loaded(&self, keys: &[StoredKey], skip_id: &dyn Fn(&str) -> bool) {
        self.apply(keys, true, skip_id);
    }

    /// Applies this instance's own write at once.
    pub fn apply_written(&self, key: &StoredKey) {
        self.apply(std::slice::from_ref(key), false, &|_| false);
    }

    fn apply(&self, keys: &[StoredKey], loaded: bool, skip_id: &dyn Fn(&str) -> bool) {
        let mut inner = self.lock();
        if loaded {
            if let Some(max) = keys.iter().map(|k| k.version).max() {
                inner.watermark = inner.watermark.max(max);
            }
        }
        let fresh: Vec<&StoredKey> = keys
            .iter()
            .filter(|k| inner.by_id.get(&k.id).is_none_or(|a| a.version < k.version))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let current = self.table.load();
        let mut table = if current.is_empty() {
            KeyTable::with_capacity(keys.len())
        } else {
            KeyTable::clone(&current)
        };
        for key in fresh {
            if skip_id(&key.id) {
                tracing::error!(
                    key_id = %key.id,
                    "an API-made key has the id of a key in the configuration file: left out"
                );
                continue;
            }
            let last_used = match inner.by_id.get(&key.id) {
                Some(old) => {
                    for d in old.digests.iter().flatten() {
                        table.remove(d);
                    }
                    Arc::clone(&old.last_used)
                }
                None => Arc::new(AtomicI64::new(key.last_used_at.unwrap_or(0))),
            };
            let flushed = key.last_used_at.unwrap_or(0);
            let mut digests = [None, None];
            if key.revoked_at.is_none() {
                let identity = Arc::new(Identity {
                    user: key.user.clone(),
                    tenant: key.tenant.clone(),
                    roles: key.roles.clone(),
                    key_id: key.id.clone(),
                    credential: CredentialKind::ApiKey,
                    policy: key.policy.enforced(),
                });
                let made = MadeKey {
                    identity,
                    expires_at: key.expires_at.unwrap_or(NEVER),
                    until: NEVER,
                    last_used: Arc::clone(&last_used),
                };
                if let (Some(prev), Some(until)) = (key.previous_digest, key.previous_until) {
                    table.insert(
                        prev,
                        MadeKey {
                            until,
                            ..made.clone()
                        },
                    );
                    digests[1] = Some(prev);
                }
                table.insert(key.digest, made);
                digests[0] = Some(key.digest);
            }
            inner.by_id.insert(
                key.id.clone(),
                Applied {
                    version: key.version,
                    digests,
                    last_used,
                    flushed,
                },
            );
        }
        self.table.store(Arc::new(table));
    }

    /// The file's keys (position, id) whose id an API-made key has: a
    /// reload bringing one in is refused (an id names one key).
    pub fn clashing_ids(&self, file: &KeyIndex) -> Vec<(usize, String)> {
        let inner = self.lock();
        if inner.by_id.is_empty() {
            return Vec::new();
        }
        file.entries()
            .iter()
            .enumerate()
            .filter(|(_, e)| inner.by_id.contains_key(e.identity.key_id.as_str()))
            .map(|(i, e)| (i, e.identity.key_id.clone()))
            .collect()
    }

    /// Keys used since their last use was written: `(id, minute)`, marked
    /// written. Given back with [`unflushed`](Self::unflushed) if the write fails.
    pub fn take_used(&self) -> Vec<(String, i64)> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (id, applied) in inner.by_id.iter_mut() {
            let used = applied.last_used.load(Ordering::Relaxed);
            if used > applied.flushed {
                applied.flushed = used;
                out.push((id.clone(), used));
            }
        }
        out
    }

    /// A batch of last uses that could not be written: tried again later.
    pub fn unflushed(&self, used: &[(String, i64)]) {
        let mut inner = self.lock();
        for (id, _) in used {
            if let Some(applied) = inner.by_id.get_mut(id) {
                applied.flushed = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::api_key::digest;
    use crate::auth::key_table::MadeKeyRejection;
    use crate::keys::record::sample;

    fn key_id(r: &KeyRegistry, secret: &str, now: i64) -> Result<String, MadeKeyRejection> {
        r.table()
            .lookup(&digest(secret), now)
            .map(|i| i.key_id.clone())
    }

    #[test]
    fn rotation_revocation_and_stale_rows() {
        let r = KeyRegistry::new();
        let k1 = sample("key_1", "s1");
        r.apply_loaded(&[k1.clone(), sample("key_2", "s2")], &|_| false);
        assert_eq!(r.watermark(), 1);
        assert_eq!(key_id(&r, "s1", 0), Ok("key_1".into()));
        let mut rotated = k1.clone();
        rotated.digest = digest("s1b");
        rotated.previous_digest = Some(digest("s1"));
        rotated.previous_until = Some(100);
        rotated.version = 5;
        r.apply_written(&rotated);
        assert_eq!(r.watermark(), 1, "own writes do not move the watermark");
        assert_eq!(key_id(&r, "s1b", 50), Ok("key_1".into()));
        assert_eq!(key_id(&r, "s1", 50), Ok("key_1".into()));
        assert!(matches!(
            key_id(&r, "s1", 100),
            Err(MadeKeyRejection::GraceEnded { .. })
        ));
        // The same row again, or an older one, changes nothing.
        r.apply_loaded(&[k1.clone(), rotated.clone()], &|_| false);
        assert_eq!(key_id(&r, "s1b", 50), Ok("key_1".into()));
        assert_eq!(r.watermark(), 5);
        let mut revoked = rotated.clone();
        revoked.revoked_at = Some(60);
        revoked.previous_digest = None;
        revoked.version = 6;
        r.apply_loaded(&[revoked], &|_| false);
        assert_eq!(key_id(&r, "s1b", 61), Err(MadeKeyRejection::Unknown));
        assert_eq!(key_id(&r, "s1", 61), Err(MadeKeyRejection::Unknown));
        assert_eq!(key_id(&r, "s2", 61), Ok("key_2".into()));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_stored_policy_is_carried_on_the_identity() {
        let r = KeyRegistry::new();
        let mut k = sample("key_1", "s1");
        k.policy.models = Some(vec!["m".into()]);
        k.policy.requests_per_minute = Some(5);
        r.apply_loaded(&[k, sample("key_2", "s2")], &|_| false);
        let table = r.table();
        let limited = table
            .lookup(&digest("s1"), 0)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(limited.allows_model("m") && !limited.allows_model("other"));
        let rate = limited.policy.as_ref().and_then(|p| p.rate_limit);
        assert_eq!(rate.map(|r| r.requests_per_minute), Some(5));
        assert_eq!(limited.api_key_id(), Some("key_1"));
        let open = table
            .lookup(&digest("s2"), 0)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(open.policy.is_none(), "no policy, nothing carried");
    }

    #[test]
    fn ids_of_the_file_are_left_out_and_uses_are_taken_once() {
        let r = KeyRegistry::new();
        r.apply_loaded(&[sample("cfg", "s0"), sample("key_1", "s1")], &|id| {
            id == "cfg"
        });
        assert_eq!(key_id(&r, "s0", 0), Err(MadeKeyRejection::Unknown));
        assert!(r.table().lookup(&digest("s1"), 130).is_ok());
        assert_eq!(r.take_used(), vec![("key_1".to_string(), 120)]);
        assert!(r.take_used().is_empty());
        r.unflushed(&[("key_1".to_string(), 120)]);
        assert_eq!(r.take_used().len(), 1);
    }
}
