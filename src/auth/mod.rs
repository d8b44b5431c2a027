//! Authentication: turns the presented credential into an [`Identity`].
//! API keys come from `X-API-Key` or `Authorization: Bearer <key>`; a bearer
//! value with the compact JWS shape (two dots) is a JWT when `auth.jwt` is
//! configured.

pub mod api_key;
pub mod identity;
pub mod jwt;
pub mod jwt_cache;
pub mod jwt_config;
pub mod key_policy;
pub mod key_table;

pub use api_key::KeyIndex;
use api_key::KeyRejection;
pub use identity::{CredentialKind, Identity};
use jwt::{JwtError, JwtVerifier};
pub use key_policy::KeyPolicy;
use key_table::{KeyTable, MadeKeyRejection};
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
    /// `subject` and `kid` are read from the (rejected, so untrusted) token.
    InvalidToken {
        reason: &'static str,
        subject: Option<String>,
        kid: Option<String>,
    },
    TokenExpired {
        subject: Option<String>,
        kid: Option<String>,
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
            AuthFailure::InvalidToken { subject, kid, .. }
            | AuthFailure::TokenExpired { subject, kid } => subject.as_deref().or(kid.as_deref()),
            AuthFailure::Missing => None,
        }
    }

    /// The JWT `kid` (or API key id) involved, if known.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            AuthFailure::InvalidApiKey { key_id, .. } => key_id.as_deref(),
            AuthFailure::InvalidToken { kid, .. } | AuthFailure::TokenExpired { kid, .. } => {
                kid.as_deref()
            }
            AuthFailure::Missing => None,
        }
    }

    /// Whether this counts towards the credential-stuffing guard: a wrong
    /// credential was presented. Missing credentials are not an attempt.
    pub fn is_attempt(&self) -> bool {
        !matches!(self, AuthFailure::Missing)
    }
}

#[derive(Debug)]
pub struct Authenticator {
    keys: Arc<KeyIndex>,
    jwt: Option<JwtVerifier>,
    jwt_cache: jwt_cache::JwtCache,
}

/// The credential as presented; borrowed, never copied or logged.
enum Credential<'a> {
    ApiKey(&'a str),
    Jwt(&'a str),
    /// `Authorization` without the `Bearer` scheme.
    Unsupported,
}

fn presented(req: &RequestHeader, jwt_enabled: bool) -> Option<Credential<'_>> {
    if let Some(v) = req.headers.get("x-api-key") {
        return Some(Credential::ApiKey(v.to_str().unwrap_or("")));
    }
    let auth = req.headers.get(http::header::AUTHORIZATION)?;
    let value = auth.to_str().unwrap_or("");
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = rest.trim();
            // Generated API keys are `tg_` + hex (no dots), so
            // the shape alone decides; without `auth.jwt` it is just a key.
            if jwt_enabled && (jwt::looks_like_jwt(token) || looks_like_jwe(token)) {
                Some(Credential::Jwt(token))
            } else {
                Some(Credential::ApiKey(token))
            }
        }
        // A bare key (no scheme) or another scheme is refused, never
        // looked up: `Authorization` is only ever `Bearer <credential>`.
        _ => Some(Credential::Unsupported),
    }
}

/// Compact JWE (five parts). Not accepted, but answered as a token
/// (`invalid_token`, reason `jwe_not_supported`) rather than as an unknown
/// API key, so the client learns what is wrong.
fn looks_like_jwe(bearer: &str) -> bool {
    bearer.bytes().filter(|&b| b == b'.').count() == 4
}

/// JWT rejections for the client (401 code) and the audit log (reason, the
/// token's `sub` and `kid`: untrusted and length-capped, never the token).
fn jwt_failure(e: JwtError) -> AuthFailure {
    match e {
        JwtError::Expired { sub, kid } => AuthFailure::TokenExpired { subject: sub, kid },
        JwtError::Invalid { reason, sub, kid } => AuthFailure::InvalidToken {
            reason,
            subject: sub,
            kid,
        },
    }
}

fn made_failure(r: MadeKeyRejection) -> AuthFailure {
    match r {
        MadeKeyRejection::Unknown => AuthFailure::InvalidApiKey {
            reason: "unknown_api_key",
            key_id: None,
        },
        MadeKeyRejection::Expired { key_id } => AuthFailure::InvalidApiKey {
            reason: "expired_api_key",
            key_id: Some(key_id),
        },
        MadeKeyRejection::GraceEnded { key_id } => AuthFailure::InvalidApiKey {
            reason: "rotated_api_key",
            key_id: Some(key_id),
        },
    }
}

impl Authenticator {
    pub fn new(keys: KeyIndex) -> Self {
        Self {
            keys: Arc::new(keys),
            jwt: None,
            jwt_cache: jwt_cache::JwtCache::default(),
        }
    }

    /// The configured API keys.
    pub fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    /// The key index, shared: a reload's parse reuses its identities.
    pub fn shared_keys(&self) -> Arc<KeyIndex> {
        Arc::clone(&self.keys)
    }

    /// Enables `Authorization: Bearer <jwt>`.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// `made`: the API-made keys (`keys::registry`), consulted after the
    /// file's keys with the same digest: one hash, at most two in-memory
    /// lookups, never a database read.
    pub fn authenticate(
        &self,
        req: &RequestHeader,
        now_unix: i64,
        made: Option<&KeyTable>,
    ) -> Result<Arc<Identity>, AuthFailure> {
        match presented(req, self.jwt.is_some()).ok_or(AuthFailure::Missing)? {
            Credential::Jwt(token) => {
                let Some(verifier) = &self.jwt else {
                    return Err(AuthFailure::InvalidToken {
                        reason: jwt::reason::MALFORMED,
                        subject: None,
                        kid: None,
                    });
                };
                let now = u64::try_from(now_unix).unwrap_or(0);
                let digest = jwt_cache::token_digest(token);
                if let Some(identity) = self.jwt_cache.get(&digest, now) {
                    return Ok(identity);
                }
                let id = verifier.verify(token, now).map_err(jwt_failure)?;
                let identity = Arc::new(Identity {
                    user: id.user,
                    tenant: id.tenant,
                    roles: id.roles,
                    key_id: id.kid,
                    credential: identity::CredentialKind::Jwt,
                    policy: None,
                });
                self.jwt_cache
                    .insert(digest, identity.clone(), id.valid_until);
                Ok(identity)
            }
            Credential::Unsupported => Err(AuthFailure::InvalidApiKey {
                reason: "unsupported_auth_scheme",
                key_id: None,
            }),
            Credential::ApiKey(key) => {
                let digest = api_key::digest(key);
                match self.keys.lookup_digest(&digest, now_unix) {
                    Err(KeyRejection::Unknown) => match made {
                        Some(made) => made.lookup(&digest, now_unix).map_err(made_failure),
                        None => Err(made_failure(MadeKeyRejection::Unknown)),
                    },
                    Err(KeyRejection::Expired { key_id }) => Err(AuthFailure::InvalidApiKey {
                        reason: "expired_api_key",
                        key_id: Some(key_id),
                    }),
                    Ok(identity) => Ok(identity),
                }
            }
        }
    }
}
