//! A stored API key (never its secret: the SHA-256 digest only) and the
//! JSON the admin API shows of it (never the digest either).

use crate::auth::api_key::{KeyDigest, KeyEntry};
use serde_json::{json, Value};
use std::sync::Arc;

/// Micro-dollars per dollar (budgets are kept as integers).
pub const MICRO_USD_PER_USD: u64 = 1_000_000;

/// A key's own limits (DESIGN §5 body: `models`, `rate_limit`, `budgets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The models the key may call; `None`: every model its roles allow.
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
    pub micro_usd_per_month: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: String,
    pub digest: KeyDigest,
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub policy: KeyPolicy,
    pub note: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The secret before the last rotation, valid until `previous_until`.
    pub previous_digest: Option<KeyDigest>,
    pub previous_until: Option<i64>,
    /// Increases with every change of any key (the database's counter):
    /// instances reload the rows above the version they have.
    pub version: i64,
    /// Coarse to the minute.
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Rotating,
    Revoked,
    Expired,
}

impl KeyState {
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Rotating => "rotating",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
        }
    }
}

pub fn rfc3339(unix: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

fn time_or_null(unix: Option<i64>) -> Value {
    unix.map_or(Value::Null, rfc3339)
}

/// Dollars of an integer micro-dollar amount, as a JSON number.
fn usd(micro: u64) -> Value {
    // Exact for every amount below 2^53 micro-dollars.
    json!(micro as f64 / MICRO_USD_PER_USD as f64)
}

impl KeyPolicy {
    /// The policy authentication carries on the key's identity, enforced
    /// by the same code as the file's keys' (`None`: nothing set).
    pub fn enforced(&self) -> Option<Arc<crate::auth::KeyPolicy>> {
        use crate::auth::key_policy::{KeyBudgets, KeyRateLimit};
        let policy = crate::auth::KeyPolicy {
            models: self.models.clone().map(Vec::into_boxed_slice),
            rate_limit: self.requests_per_minute.map(|n| KeyRateLimit {
                requests_per_minute: n,
                enforce: true,
            }),
            budgets: (self.tokens_per_day.is_some() || self.micro_usd_per_month.is_some())
                .then_some(KeyBudgets {
                    tokens_per_day: self.tokens_per_day,
                    micro_usd_per_month: self.micro_usd_per_month,
                    enforce: true,
                }),
        };
        (!policy.is_empty()).then(|| Arc::new(policy))
    }

    pub fn rate_limit_json(&self) -> Value {
        self.requests_per_minute
            .map_or(Value::Null, |n| json!({ "requests_per_minute": n }))
    }

    pub fn budgets_json(&self) -> Value {
        if self.tokens_per_day.is_none() && self.micro_usd_per_month.is_none() {
            return Value::Null;
        }
        json!({
            "tokens_per_day": self.tokens_per_day,
            "usd_per_month": self.micro_usd_per_month.map(usd),
        })
    }
}

impl StoredKey {
    pub fn state(&self, now_unix: i64) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|e| now_unix >= e) {
            KeyState::Expired
        } else if self.previous_until.is_some_and(|u| now_unix < u) {
            KeyState::Rotating
        } else {
            KeyState::Active
        }
    }

    /// The listing's view: everything but the digests.
    pub fn to_json(&self, now_unix: i64) -> Value {
        let state = self.state(now_unix);
        let mut v = json!({
            "id": self.id,
            "user": self.user,
            "tenant": self.tenant,
            "roles": self.roles,
            "models": self.policy.models,
            "rate_limit": self.policy.rate_limit_json(),
            "budgets": self.policy.budgets_json(),
            "note": self.note,
            "source": "api",
            "state": state.name(),
            "created_at": rfc3339(self.created_at),
            "expires_at": time_or_null(self.expires_at),
            "last_used_at": time_or_null(self.last_used_at),
            "revoked_at": time_or_null(self.revoked_at),
        });
        if state == KeyState::Rotating {
            v["grace_ends_at"] = time_or_null(self.previous_until);
        }
        v
    }
}

/// A key of the configuration file, as the listing shows it.
pub fn config_key_json(entry: &KeyEntry, now_unix: i64) -> Value {
    let expired = entry.expires_at.is_some_and(|e| now_unix >= e);
    json!({
        "id": entry.identity.key_id,
        "user": entry.identity.user,
        "tenant": entry.identity.tenant,
        "roles": entry.identity.roles,
        "models": null,
        "rate_limit": null,
        "budgets": null,
        "note": null,
        "source": "config",
        "state": if expired { "expired" } else { "active" },
        "created_at": null,
        "expires_at": time_or_null(entry.expires_at),
        "last_used_at": null,
    })
}

#[cfg(test)]
pub(crate) fn sample(id: &str, secret: &str) -> StoredKey {
    StoredKey {
        id: id.into(),
        digest: crate::auth::api_key::digest(secret),
        user: "bob".into(),
        tenant: "acme".into(),
        roles: vec!["agent".into()],
        policy: KeyPolicy::default(),
        note: String::new(),
        created_at: 1_000,
        expires_at: None,
        revoked_at: None,
        previous_digest: None,
        previous_until: None,
        version: 1,
        last_used_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_never_shows_a_digest_and_names_the_state() {
        let mut k = sample("key_1", "s");
        k.policy.micro_usd_per_month = Some(12_500_000);
        let v = k.to_json(2_000);
        assert_eq!(v["state"], "active");
        assert_eq!(v["budgets"]["usd_per_month"], 12.5);
        assert_eq!(v["created_at"], "1970-01-01T00:16:40Z");
        let text = v.to_string();
        assert!(!text.contains(&hex::encode(k.digest)));
        assert!(!text.contains("digest") && !text.contains("sha256"));
        k.previous_digest = Some(k.digest);
        k.previous_until = Some(3_000);
        assert_eq!(k.state(2_999), KeyState::Rotating);
        assert_eq!(k.state(3_000), KeyState::Active);
        k.expires_at = Some(2_500);
        assert_eq!(k.state(2_500), KeyState::Expired);
        k.revoked_at = Some(2_000);
        assert_eq!(k.state(0), KeyState::Revoked);
    }
}
