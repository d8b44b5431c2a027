//! One alert receiver as configured (`alerts.webhooks[]`), compiled: its
//! URL, signing key, scopes and thresholds; and the signature of a body.

use crate::config::schema::{BudgetScope, WebhookConfig};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// `X-Tollgate-Signature`'s value for `body`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Webhook {
    /// Holds the receiver's credential (chat webhooks): never logged.
    url: String,
    secret: Vec<u8>,
    scopes: Vec<BudgetScope>,
    /// Ascending, deduplicated.
    pub thresholds: Vec<f64>,
    pub retry_for: Duration,
    pub timeout: Duration,
    /// A digest of the URL: names the receiver in claims and logs.
    pub id: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Reads the signing key from `secret_env` (validation said it is set).
    pub fn compile(config: &WebhookConfig) -> Result<Webhook, String> {
        let secret = std::env::var(&config.secret_env)
            .map_err(|_| format!("secret_env: {} is not set", config.secret_env))?;
        let mut thresholds = config.thresholds.clone();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        let url = config.url.expose().clone();
        let id = hex::encode(&Sha256::digest(url.as_bytes())[..6]);
        Ok(Webhook {
            url,
            secret: secret.into_bytes(),
            scopes: config.scopes.clone(),
            thresholds,
            retry_for: Duration::from_secs(config.retry_for_seconds),
            timeout: Duration::from_millis(config.timeout_ms),
            id,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn sign(&self, body: &[u8]) -> String {
        signature(&self.secret, body)
    }

    /// Whether crossings of budgets of scope `kind` (`"user"`, ...) go here.
    pub fn watches(&self, kind: &str) -> bool {
        self.scopes.iter().any(|s| {
            kind == match s {
                BudgetScope::User => "user",
                BudgetScope::Tenant => "tenant",
                BudgetScope::Key => "key",
                BudgetScope::Conversation => "conversation",
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
