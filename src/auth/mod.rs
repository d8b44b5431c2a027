//! Authentication: turns the presented credential into an [`Identity`].
//! API keys come from `X-API-Key` or `Authorization: Bearer <key>`.

pub mod api_key;
pub mod identity;
pub mod jwt;

use api_key::{KeyIndex, KeyRejection};
pub use identity::Identity;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// Why authentication failed: mapped to a 401 code for the client, and a
/// finer reason (plus whatever non-secret id was learnt) for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    InvalidApiKey {
        reason: &'static str,
        key_id: Option<String>,
    },
    InvalidToken {
        reason: &'static str,
        subject: Option<String>,
    },
    TokenExpired {
        subject: Option<String>,
    },
}

impl AuthFailure {
    /// Short reason for logs and the `tollgate_auth_failures_total` label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_credentials",
            AuthFailure::InvalidApiKey { reason, .. }
            | AuthFailure::InvalidToken { reason, .. } => reason,
            AuthFailure::TokenExpired { .. } => "token_expired",
        }
    }

    /// The key id or token subject, if one is known (never the secret).
    pub fn principal(&self) -> Option<&str> {
        match self {
            AuthFailure::InvalidApiKey { key_id, .. } => key_id.as_deref(),
            AuthFailure::InvalidToken { subject, .. } | AuthFailure::TokenExpired { subject } => {
                subject.as_deref()
            }
            AuthFailure::Missing => None,
        }
    }
}

#[derive(Debug)]
pub struct Authenticator {
    keys: KeyIndex,
}

/// The credential as presented; borrowed, never copied or logged.
enum Credential<'a> {
    ApiKey(&'a str),
}

fn presented(req: &RequestHeader) -> Option<Credential<'_>> {
    if let Some(v) = req.headers.get("x-api-key") {
        return Some(Credential::ApiKey(v.to_str().unwrap_or("")));
    }
    let auth = req.headers.get(http::header::AUTHORIZATION)?;
    let value = auth.to_str().unwrap_or("");
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        // Another scheme is still hashed and looked up below, so a
        // malformed header costs the same as an unknown key.
        _ => value,
    };
    Some(Credential::ApiKey(token))
}

impl Authenticator {
    pub fn new(keys: KeyIndex) -> Self {
        Self { keys }
    }

    pub fn authenticate(
        &self,
        req: &RequestHeader,
        now_unix: i64,
    ) -> Result<Arc<Identity>, AuthFailure> {
        match presented(req).ok_or(AuthFailure::Missing)? {
            Credential::ApiKey(key) => self.keys.lookup(key, now_unix).map_err(|r| match r {
                KeyRejection::Unknown => AuthFailure::InvalidApiKey {
                    reason: "unknown_api_key",
                    key_id: None,
                },
                KeyRejection::Expired { key_id } => AuthFailure::InvalidApiKey {
                    reason: "expired_api_key",
                    key_id: Some(key_id),
                },
            }),
        }
    }
}
