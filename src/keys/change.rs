//! What each keys operation does to a stored key: pure, so both databases
//! apply exactly the same rules inside their transactions.

use super::record::{KeyPolicy, StoredKey};
use super::request::PatchKey;
use crate::auth::api_key::KeyDigest;

/// A key about to be created (its secret already generated and hashed).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub digest: KeyDigest,
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub expires_at: Option<i64>,
    pub policy: KeyPolicy,
    pub note: String,
}

#[derive(Debug, Clone)]
pub enum Operation {
    Create(Box<NewKey>),
    Patch(Box<PatchKey>),
    /// New secret, same id; the old one valid `grace_seconds` more.
    Rotate {
        digest: KeyDigest,
        grace_seconds: u64,
    },
    Revoke,
}

impl Operation {
    /// For the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create(_) => "create",
            Operation::Patch(_) => "update",
            Operation::Rotate { .. } => "rotate",
            Operation::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("no such key")]
    NotFound,
    #[error("the key is revoked")]
    Revoked,
    #[error("a key with this id exists")]
    IdTaken,
}

/// The key after `op`, stamped with `version`; `None` when nothing changes
/// (revoking a revoked key).
pub fn apply(
    op: &Operation,
    current: Option<&StoredKey>,
    now_unix: i64,
    version: i64,
) -> Result<Option<StoredKey>, ChangeError> {
    let mut key = match (op, current) {
        (Operation::Create(new), None) => {
            let new = new.as_ref().clone();
            return Ok(Some(StoredKey {
                id: new.id,
                digest: new.digest,
                user: new.user,
                tenant: new.tenant,
                roles: new.roles,
                policy: new.policy,
                note: new.note,
                created_at: now_unix,
                expires_at: new.expires_at,
                revoked_at: None,
                previous_digest: None,
                previous_until: None,
                version,
                last_used_at: None,
            }));
        }
        (Operation::Create(_), Some(_)) => return Err(ChangeError::IdTaken),
        (_, None) => return Err(ChangeError::NotFound),
        (Operation::Revoke, Some(k)) if k.revoked_at.is_some() => return Ok(None),
        (_, Some(k)) if k.revoked_at.is_some() => return Err(ChangeError::Revoked),
        (_, Some(k)) => k.clone(),
    };
    match op {
        Operation::Create(_) => {}
        Operation::Patch(p) => {
            if let Some(roles) = &p.roles {
                key.roles = roles.clone();
            }
            if let Some(models) = &p.models {
                key.policy.models = models.clone();
            }
            if let Some(rpm) = p.requests_per_minute {
                key.policy.requests_per_minute = rpm;
            }
            if let Some(budgets) = p.budgets {
                let (tokens, usd) = budgets.unwrap_or_default();
                key.policy.tokens_per_day = tokens;
                key.policy.micro_usd_per_month = usd;
            }
            if let Some(expires_at) = p.expires_at {
                key.expires_at = expires_at;
            }
            if let Some(note) = &p.note {
                key.note = note.clone();
            }
        }
        Operation::Rotate {
            digest,
            grace_seconds,
        } => {
            // A grace still running for an older secret ends now: only
            // the secret just replaced gets one.
            let grace = i64::try_from(*grace_seconds).unwrap_or(i64::MAX);
            (key.previous_digest, key.previous_until) = if grace > 0 {
                (Some(key.digest), Some(now_unix.saturating_add(grace)))
            } else {
                (None, None)
            };
            key.digest = *digest;
        }
        Operation::Revoke => {
            key.revoked_at = Some(now_unix);
            key.previous_digest = None;
            key.previous_until = None;
        }
    }
    key.version = version;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::api_key::digest;
    use crate::keys::record::sample;

    /// `key` after `op` at `now` as `version`, which must change it.
    fn applied(op: &Operation, key: &StoredKey, now: i64, version: i64) -> StoredKey {
        match apply(op, Some(key), now, version) {
            Ok(Some(changed)) => changed,
            other => panic!("{} gave {other:?}", op.name()),
        }
    }

    fn rotate(secret: &str, grace_seconds: u64) -> Operation {
        Operation::Rotate {
            digest: digest(secret),
            grace_seconds,
        }
    }

    #[test]
    fn rotating_during_a_grace_ends_the_earlier_grace() {
        let k = sample("key_1", "s1");
        let once = applied(&rotate("s2", 60), &k, 100, 2);
        assert_eq!(once.digest, digest("s2"));
        assert_eq!(once.previous_digest, Some(digest("s1")));
        assert_eq!(once.previous_until, Some(160));
        assert_eq!(once.version, 2);
        let twice = applied(&rotate("s3", 0), &once, 110, 3);
        assert_eq!(twice.digest, digest("s3"));
        assert_eq!(twice.previous_digest, None, "s1 and s2 end at once");
    }

    #[test]
    fn revoked_keys_stay_revoked() {
        let k = sample("key_1", "s1");
        let revoked = applied(&Operation::Revoke, &k, 100, 2);
        assert_eq!(revoked.revoked_at, Some(100));
        assert_eq!(apply(&Operation::Revoke, Some(&revoked), 200, 3), Ok(None));
        let rotate = rotate("s2", 0);
        assert_eq!(
            apply(&rotate, Some(&revoked), 200, 3),
            Err(ChangeError::Revoked)
        );
        assert_eq!(apply(&rotate, None, 200, 3), Err(ChangeError::NotFound));
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let mut k = sample("key_1", "s1");
        k.note = "old".into();
        k.policy.requests_per_minute = Some(5);
        let patch = PatchKey {
            budgets: Some(Some((Some(10), None))),
            requests_per_minute: Some(None),
            ..PatchKey::default()
        };
        let p = applied(&Operation::Patch(Box::new(patch)), &k, 100, 9);
        assert_eq!(p.note, "old");
        assert_eq!(p.policy.requests_per_minute, None);
        assert_eq!(p.policy.tokens_per_day, Some(10));
        assert_eq!(p.digest, k.digest);
    }
}
