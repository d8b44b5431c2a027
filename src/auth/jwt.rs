//! JWT bearer-token verification (RFC 7519), hardened along RFC 8725.
//!
//! Pure: no I/O and no clock. The config layer reads key files and env secrets
//! and hands over bytes; [`JwtVerifier::verify`] takes `now_unix` so behaviour
//! is deterministic and testable.
//!
//! Hardening:
//! - The algorithm belongs to the configured key (chosen by `kid`); the header
//!   `alg` must equal it exactly. This rules out `none` (any letter case) and
//!   HMAC/RSA key confusion.
//! - A token without `kid` is accepted only when exactly one key is configured.
//! - `crit` is rejected: we implement no JWS extensions (RFC 7515 §4.1.11).
//!   `jku`, `x5u`, `jwk` and `x5c` are ignored and never fetched.
//! - Only compact JWS (three parts) is accepted; JWE and JSON serialisation are not.
//! - Claim names in [`ClaimNames`] are top-level claim names (no dotted paths).
//!
//! Errors carry the token's `sub` and `kid` (untrusted, length-capped) for the
//! audit log, never the token itself.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// Leeway the config layer should use when `leeway_seconds` is absent.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// Real access tokens are a few KiB; the cap bounds base64/JSON work on hostile input.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Untrusted strings copied into errors for the audit log are capped (in chars).
const MAX_AUDIT_LEN: usize = 128;

/// Machine-readable rejection reasons (`JwtError::reason`), for audit logs and metric labels.
pub mod reason {
    pub const EXPIRED: &str = "expired";
    pub const MALFORMED: &str = "malformed";
    pub const TOO_LARGE: &str = "too_large";
    pub const JWE_NOT_SUPPORTED: &str = "jwe_not_supported";
    pub const UNKNOWN_CRIT: &str = "unknown_crit";
    pub const MISSING_KID: &str = "missing_kid";
    pub const UNKNOWN_KID: &str = "unknown_kid";
    pub const ALG_MISMATCH: &str = "alg_mismatch";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const BAD_ISSUER: &str = "bad_issuer";
    pub const BAD_AUDIENCE: &str = "bad_audience";
    pub const MISSING_EXP: &str = "missing_exp";
    pub const MISSING_IAT: &str = "missing_iat";
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    pub const IAT_IN_FUTURE: &str = "iat_in_future";
    pub const LIFETIME_TOO_LONG: &str = "lifetime_too_long";
    pub const MISSING_CLAIM: &str = "missing_claim";
    /// A claim is present but has the wrong JSON type (e.g. `exp` as a string).
    pub const INVALID_CLAIM: &str = "invalid_claim";
    /// The user, tenant or a role holds a comma, a control character or
    /// surrounding white space: it could not be passed on unambiguously.
    pub const INVALID_IDENTITY: &str = "invalid_identity";

    /// Every reason, e.g. to pre-register metric label values.
    pub const ALL: &[&str] = &[
        EXPIRED,
        MALFORMED,
        TOO_LARGE,
        JWE_NOT_SUPPORTED,
        UNKNOWN_CRIT,
        MISSING_KID,
        UNKNOWN_KID,
        ALG_MISMATCH,
        BAD_SIGNATURE,
        BAD_ISSUER,
        BAD_AUDIENCE,
        MISSING_EXP,
        MISSING_IAT,
        NOT_YET_VALID,
        IAT_IN_FUTURE,
        LIFETIME_TOO_LONG,
        MISSING_CLAIM,
        INVALID_CLAIM,
        INVALID_IDENTITY,
    ];
}

/// The algorithms we accept, with their JWA names (RFC 7518 §3.1).
const SUPPORTED_ALGS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
];

/// Parses a configured algorithm name (case-sensitive JWA name). Only the nine
/// supported algorithms are accepted; `none` and PS* are not.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED_ALGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, alg)| *alg)
}

fn algorithm_name(alg: Algorithm) -> Option<&'static str> {
    SUPPORTED_ALGS
        .iter()
        .find(|(_, a)| *a == alg)
        .map(|(n, _)| *n)
}

/// True when `bearer` has the compact JWS shape (exactly two '.'); anything
/// else is treated as an API key by the caller.
pub fn looks_like_jwt(bearer: &str) -> bool {
    bearer.bytes().filter(|&b| b == b'.').count() == 2
}

/// Key bytes as read by the config layer.
#[derive(Clone)]
pub enum KeyMaterial {
    /// SPKI `PUBLIC KEY` PEM (or PKCS#1 `RSA PUBLIC KEY` for RS*).
    PublicPem(Vec<u8>),
    /// HMAC secret; at least as long as the hash output (RFC 7518 §3.2).
    Secret(Vec<u8>),
}

// Manual Debug so secrets never reach logs.
impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PublicPem(pem) => write!(f, "PublicPem({} bytes)", pem.len()),
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtKeySpec {
    pub kid: String,
    pub alg: Algorithm,
    pub material: KeyMaterial,
}

/// Names of the top-level claims mapped into [`JwtIdentity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub user: String,
    pub tenant: String,
    pub roles: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            user: "sub".to_owned(),
            tenant: "tenant".to_owned(),
            roles: "roles".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u64,
    /// When set, `iat` is required and `exp - iat` may not exceed it.
    pub max_lifetime_seconds: Option<u64>,
    pub keys: Vec<JwtKeySpec>,
    pub claims: ClaimNames,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("jwt: no keys configured")]
    NoKeys,
    #[error("jwt: {0} must not be empty")]
    Empty(&'static str),
    #[error("jwt: duplicate key id `{0}`")]
    DuplicateKid(String),
    #[error("jwt key `{kid}`: {detail}")]
    Key { kid: String, detail: String },
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// Value of the `claims.user` claim.
    pub user: String,
    /// Value of the `claims.tenant` claim.
    pub tenant: String,
    /// `claims.roles`: a string array, or one string split on spaces/commas; empty if absent.
    pub roles: Vec<String>,
    /// The `sub` claim; empty if the token has none.
    pub sub: String,
    /// Id of the configured key that verified the token (trusted; equals the
    /// header `kid` when the token had one).
    pub kid: String,
    /// Unix second from which the token is refused as expired (`exp` plus
    /// leeway): the limit for caching this verification.
    pub valid_until: u64,
}

/// Why a token was rejected. `sub`/`kid` are read from the token when possible
/// and are untrusted: log them, never authorise with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Validly signed and otherwise acceptable, but past `exp` (+ leeway).
    #[error("jwt expired")]
    Expired {
        sub: Option<String>,
        kid: Option<String>,
    },
    #[error("jwt invalid: {reason}")]
    Invalid {
        reason: &'static str,
        sub: Option<String>,
        kid: Option<String>,
    },
}

impl JwtError {
    /// One of [`reason::ALL`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired { .. } => reason::EXPIRED,
            Self::Invalid { reason, .. } => reason,
        }
    }

    pub fn sub(&self) -> Option<&str> {
        match self {
            Self::Expired { sub, .. } | Self::Invalid { sub, .. } => sub.as_deref(),
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match self {
            Self::Expired { kid, .. } | Self::Invalid { kid, .. } => kid.as_deref(),
        }
    }
}

struct VerifyKey {
    kid: String,
    alg: Algorithm,
    alg_name: &'static str,
    key: DecodingKey,
}

/// Verifies bearer JWTs against the configured keys. Build once per config
/// load (keys are parsed here), then share it; `verify` is `&self`.
pub struct JwtVerifier {
    issuer: String,
    audience: String,
    leeway: u64,
    max_lifetime: Option<u64>,
    keys: Vec<VerifyKey>,
    claims: ClaimNames,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Only the fields we act on; unknown ones (`jku`, `x5u`, `jwk`, `x5c`, ...) are ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    // Presence alone matters, so the value is not parsed.
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

impl JwtVerifier {
    pub fn new(settings: JwtSettings) -> Result<Self, JwtConfigError> {
        let required = [
            ("issuer", &settings.issuer),
            ("audience", &settings.audience),
            ("claims.user", &settings.claims.user),
            ("claims.tenant", &settings.claims.tenant),
            ("claims.roles", &settings.claims.roles),
        ];
        if let Some((name, _)) = required.iter().find(|(_, v)| v.is_empty()) {
            return Err(JwtConfigError::Empty(name));
        }
        if settings.keys.is_empty() {
            return Err(JwtConfigError::NoKeys);
        }
        let mut keys: Vec<VerifyKey> = Vec::with_capacity(settings.keys.len());
        for spec in settings.keys {
            if keys.iter().any(|k| k.kid == spec.kid) {
                return Err(JwtConfigError::DuplicateKid(spec.kid));
            }
            keys.push(build_key(spec)?);
        }
        Ok(Self {
            issuer: settings.issuer,
            audience: settings.audience,
            leeway: settings.leeway_seconds,
            max_lifetime: settings.max_lifetime_seconds,
            keys,
            claims: settings.claims,
        })
    }

    pub fn verify(&self, token: &str, now_unix: u64) -> Result<JwtIdentity, JwtError> {
        let invalid = |reason, sub: Option<&str>, kid: Option<&str>| JwtError::Invalid {
            reason,
            sub: audit(sub),
            kid: audit(kid),
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(reason::TOO_LARGE, None, None));
        }
        let (header_b64, payload_b64, signature) =
            split_compact(token).map_err(|r| invalid(r, None, None))?;
        let header: RawHeader =
            decode_part(header_b64).ok_or_else(|| invalid(reason::MALFORMED, None, None))?;
        let kid = header.kid.as_deref();
        // Parsed before the signature check only so rejections can name `sub`.
        let claims: Map<String, Value> =
            decode_part(payload_b64).ok_or_else(|| invalid(reason::MALFORMED, None, kid))?;
        let sub = claims.get("sub").and_then(Value::as_str);
        // Both parts plus the '.' between them, as a slice of the original token.
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];

        self.check(&header, signing_input, signature, &claims, now_unix)
            .map_err(|r| match r {
                reason::EXPIRED => JwtError::Expired {
                    sub: audit(sub),
                    kid: audit(kid),
                },
                r => invalid(r, sub, kid),
            })
    }

    fn check(
        &self,
        header: &RawHeader,
        signing_input: &str,
        signature: &str,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<JwtIdentity, &'static str> {
        if header.crit.is_some() {
            return Err(reason::UNKNOWN_CRIT);
        }
        let key = self.select_key(header.kid.as_deref())?;
        // The key dictates the algorithm; the header may only agree (RFC 8725 §3.1).
        if header.alg != key.alg_name {
            return Err(reason::ALG_MISMATCH);
        }
        match jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key.key, key.alg) {
            Ok(true) => {}
            _ => return Err(reason::BAD_SIGNATURE),
        }

        // From here on the claims are authenticated.
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(reason::BAD_ISSUER);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(reason::BAD_AUDIENCE);
        }

        let exp = numeric_date(claims, "exp")?.ok_or(reason::MISSING_EXP)?;
        let nbf = numeric_date(claims, "nbf")?;
        let iat = numeric_date(claims, "iat")?;
        let latest_ok = now.saturating_add(self.leeway);
        if let Some(max) = self.max_lifetime {
            let iat = iat.ok_or(reason::MISSING_IAT)?;
            if exp.saturating_sub(iat) > max {
                return Err(reason::LIFETIME_TOO_LONG);
            }
        }
        if iat.is_some_and(|iat| iat > latest_ok) {
            return Err(reason::IAT_IN_FUTURE);
        }
        if nbf.is_some_and(|nbf| nbf > latest_ok) {
            return Err(reason::NOT_YET_VALID);
        }

        let identity = JwtIdentity {
            user: required_str(claims, &self.claims.user)?,
            tenant: required_str(claims, &self.claims.tenant)?,
            roles: roles(claims.get(&self.claims.roles))?,
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            kid: key.kid.clone(),
            valid_until: exp.saturating_add(self.leeway).saturating_add(1),
        };
        let values = [&identity.user, &identity.tenant];
        if values
            .into_iter()
            .chain(identity.roles.iter())
            .any(|v| crate::auth::identity::value_problem(v).is_some())
        {
            return Err(reason::INVALID_IDENTITY);
        }
        // Checked last so `Expired` means "fine except for age": the client should refresh.
        if exp.saturating_add(self.leeway) < now {
            return Err(reason::EXPIRED);
        }
        Ok(identity)
    }

    fn select_key(&self, kid: Option<&str>) -> Result<&VerifyKey, &'static str> {
        match (kid, self.keys.as_slice()) {
            (Some(kid), keys) => keys
                .iter()
                .find(|k| k.kid == kid)
                .ok_or(reason::UNKNOWN_KID),
            // Without a kid only an unambiguous choice is safe.
            (None, [only]) => Ok(only),
            (None, _) => Err(reason::MISSING_KID),
        }
    }
}

fn build_key(spec: JwtKeySpec) -> Result<VerifyKey, JwtConfigError> {
    let fail = |detail: String| JwtConfigError::Key {
        kid: spec.kid.clone(),
        detail,
    };
    if spec.kid.is_empty() {
        return Err(fail("kid must not be empty".to_owned()));
    }
    let alg_name = algorithm_name(spec.alg)
        .ok_or_else(|| fail(format!("unsupported algorithm {:?}", spec.alg)))?;
    let key = match (&spec.material, hmac_min_len(spec.alg)) {
        (KeyMaterial::Secret(secret), Some(min_len)) => {
            if secret.len() < min_len {
                return Err(fail(format!(
                    "{alg_name} secret must be at least {min_len} bytes, got {}",
                    secret.len()
                )));
            }
            DecodingKey::from_secret(secret)
        }
        (KeyMaterial::PublicPem(_), Some(_)) => {
            return Err(fail(format!("{alg_name} needs a secret, not a PEM key")));
        }
        (KeyMaterial::Secret(_), None) => {
            return Err(fail(format!(
                "{alg_name} needs a public key PEM, not a secret"
            )));
        }
        (KeyMaterial::PublicPem(pem), None) => {
            public_key(spec.alg, pem).map_err(|e| fail(format!("{alg_name} public key: {e}")))?
        }
    };
    Ok(VerifyKey {
        kid: spec.kid,
        alg: spec.alg,
        alg_name,
        key,
    })
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
/// `None` for asymmetric algorithms.
fn hmac_min_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

// DER encodings of the named-curve OIDs in an EC SubjectPublicKeyInfo.
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn public_key(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let (label, der) = pem_block(pem).ok_or("not a readable PEM file")?;
    // jsonwebtoken would accept a private key here and then fail every signature.
    match label {
        "PUBLIC KEY" => {}
        "RSA PUBLIC KEY"
            if matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => {}
        other if other.contains("PRIVATE") => {
            return Err("PEM holds a private key; configure the public key".to_owned());
        }
        other => return Err(format!("unsupported PEM block `{other}`")),
    }
    // A key on the wrong curve would parse but never verify.
    let curve_ok = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let key = match alg {
        Algorithm::ES256 if !curve_ok(OID_P256) => return Err("not a P-256 key".to_owned()),
        Algorithm::ES384 if !curve_ok(OID_P384) => return Err("not a P-384 key".to_owned()),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    };
    key.map_err(|e| format!("wrong key type or bad PEM ({e})"))
}

/// Label and DER body of the first PEM block.
fn pem_block(pem: &[u8]) -> Option<(&str, Vec<u8>)> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?;
    let mut body = String::new();
    for line in lines {
        if line.starts_with("-----END ") {
            return STANDARD.decode(&body).ok().map(|der| (label, der));
        }
        body.push_str(line);
    }
    None
}

/// Splits a compact JWS into header, payload and signature (base64url text).
fn split_compact(token: &str) -> Result<(&str, &str, &str), &'static str> {
    match token.bytes().filter(|&b| b == b'.').count() {
        2 => {}
        4 => return Err(reason::JWE_NOT_SUPPORTED),
        _ => return Err(reason::MALFORMED),
    }
    let mut parts = token.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        // The signature may be empty (unsigned tokens); it then fails as alg_mismatch.
        (Some(h), Some(p), Some(s)) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(reason::MALFORMED),
    }
}

/// base64url (unpadded, per RFC 7515) then JSON.
fn decode_part<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A NumericDate claim (RFC 7519 §2): absent → `None`; fractions truncate,
/// negatives clamp to 0; non-numbers are invalid.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            // `as` saturates, so huge values become u64::MAX and negatives 0.
            Some(secs) if secs.is_finite() => Ok(Some(secs as u64)),
            _ => Err(reason::INVALID_CLAIM),
        },
    }
}

fn required_str(claims: &Map<String, Value>, name: &str) -> Result<String, &'static str> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) | Some(Value::String(_)) => Err(reason::MISSING_CLAIM),
        Some(_) => Err(reason::INVALID_CLAIM),
    }
}

fn roles(value: Option<&Value>) -> Result<Vec<String>, &'static str> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        // OAuth-style `scope` strings are space separated; some IdPs use commas.
        Some(Value::String(s)) => Ok(s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(reason::INVALID_CLAIM))
            .filter(|r| r.map_or(true, |r| !r.is_empty()))
            .map(|r| r.map(str::to_owned))
            .collect(),
        Some(_) => Err(reason::INVALID_CLAIM),
    }
}

/// Copies an untrusted value for the audit log, capped so a hostile token
/// cannot flood logs.
fn audit(value: Option<&str>) -> Option<String> {
    value.map(|v| v.chars().take(MAX_AUDIT_LEN).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com";
    const AUD: &str = "tollgate";
    const HMAC_SECRET: &[u8] = b"test-only-hmac-secret-0123456789abcdef";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn pem_key(kid: &str, alg: Algorithm, file: &str) -> JwtKeySpec {
        JwtKeySpec {
            kid: kid.to_owned(),
            alg,
            material: KeyMaterial::PublicPem(fixture(file)),
        }
    }

    fn hmac_key(kid: &str, alg: Algorithm, secret: &[u8]) -> JwtKeySpec {
        JwtKeySpec {
            kid: kid.to_owned(),
            alg,
            material: KeyMaterial::Secret(secret.to_vec()),
        }
    }

    fn all_keys() -> Vec<JwtKeySpec> {
        vec![
            pem_key("rsa-1", Algorithm::RS256, "rsa-1.pub.pem"),
            pem_key("ec-1", Algorithm::ES256, "ec-1.pub.pem"),
            pem_key("ed-1", Algorithm::EdDSA, "ed-1.pub.pem"),
            hmac_key("hmac-1", Algorithm::HS256, HMAC_SECRET),
        ]
    }

    fn settings(keys: Vec<JwtKeySpec>) -> JwtSettings {
        JwtSettings {
            issuer: ISS.to_owned(),
            audience: AUD.to_owned(),
            leeway_seconds: 30,
            max_lifetime_seconds: Some(3600),
            keys,
            claims: ClaimNames::default(),
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(settings(all_keys())).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "user-1", "tenant": "acme",
            "roles": ["agent", "admin"], "iat": NOW - 10, "exp": NOW + 600,
        })
    }

    /// The standard claims with one claim replaced, signed as `alg`, verified at `NOW`.
    fn verify_with_claim(alg: Algorithm, key: &str, value: Value) -> Result<JwtIdentity, JwtError> {
        let mut c = claims();
        c[key] = value;
        verifier().verify(&sign(alg, &c), NOW)
    }
    fn encoding_key(alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                EncodingKey::from_rsa_pem(&fixture("rsa-1.key.pem")).unwrap()
            }
            Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture("ec-1.key.pem")).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture("ed-1.key.pem")).unwrap(),
            _ => EncodingKey::from_secret(HMAC_SECRET),
        }
    }

    fn kid_for(alg: Algorithm) -> &'static str {
        match alg {
            Algorithm::RS256 => "rsa-1",
            Algorithm::ES256 => "ec-1",
            Algorithm::EdDSA => "ed-1",
            _ => "hmac-1",
        }
    }

    fn sign(alg: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid_for(alg).to_owned());
        jsonwebtoken::encode(&header, claims, &encoding_key(alg)).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Hand-built token with an arbitrary header; signed with `key` as `alg` if given.
    fn raw_token(header: &Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match key {
            Some((key, alg)) => jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap(),
            None => String::new(),
        };
        format!("{input}.{sig}")
    }

    fn reason_of<T: fmt::Debug>(result: Result<T, JwtError>) -> &'static str {
        match result {
            Err(JwtError::Invalid { reason, .. }) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// One algorithm of each key family the test verifier holds.
    const EVERY_KEY_ALG: [Algorithm; 4] = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];

    fn config_err(keys: Vec<JwtKeySpec>) -> String {
        JwtVerifier::new(settings(keys)).unwrap_err().to_string()
    }

    #[test]
    fn valid_tokens_for_each_algorithm() {
        let v = verifier();
        for alg in EVERY_KEY_ALG {
            let id = v.verify(&sign(alg, &claims()), NOW).unwrap();
            assert_eq!(
                id,
                JwtIdentity {
                    user: "user-1".into(),
                    tenant: "acme".into(),
                    roles: vec!["agent".into(), "admin".into()],
                    sub: "user-1".into(),
                    kid: kid_for(alg).into(),
                    valid_until: NOW + 600 + 30 + 1,
                },
                "{alg:?}"
            );
        }
    }

    #[test]
    fn other_rsa_and_hmac_sizes() {
        let long_secret = [7u8; 64];
        let v = JwtVerifier::new(settings(vec![
            pem_key("rsa-512", Algorithm::RS512, "rsa-1.pub.pem"),
            hmac_key("hs-512", Algorithm::HS512, &long_secret),
        ]))
        .unwrap();
        let mut header = Header::new(Algorithm::RS512);
        header.kid = Some("rsa-512".into());
        let rs = jsonwebtoken::encode(&header, &claims(), &encoding_key(Algorithm::RS512)).unwrap();
        assert!(v.verify(&rs, NOW).is_ok());
        let header = json!({"alg": "HS512", "kid": "hs-512"});
        let key = EncodingKey::from_secret(&long_secret);
        let hs = raw_token(&header, &claims(), Some((&key, Algorithm::HS512)));
        assert!(v.verify(&hs, NOW).is_ok());
    }

    #[test]
    fn expired_only_past_leeway() {
        let v = verifier();
        let mut c = claims();
        c["exp"] = json!(NOW - 30);
        assert!(v.verify(&sign(Algorithm::RS256, &c), NOW).is_ok());
        c["exp"] = json!(NOW - 31);
        let err = v.verify(&sign(Algorithm::RS256, &c), NOW).unwrap_err();
        assert_eq!(
            err,
            JwtError::Expired {
                sub: Some("user-1".into()),
                kid: Some("rsa-1".into())
            }
        );
        assert_eq!(err.reason(), reason::EXPIRED);
    }

    #[test]
    fn expired_with_bad_signature_is_invalid() {
        let mut c = claims();
        c["exp"] = json!(NOW - 1000);
        let token = sign(Algorithm::HS256, &c);
        let forged = format!("{}AAAA", &token[..token.len() - 4]);
        assert_eq!(
            reason_of(verifier().verify(&forged, NOW)),
            reason::BAD_SIGNATURE
        );
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let with = |key: &str, value: Value| verify_with_claim(Algorithm::ES256, key, value);
        assert_eq!(reason_of(with("aud", json!("other"))), reason::BAD_AUDIENCE);
        assert_eq!(
            reason_of(with("aud", json!(["a", "b"]))),
            reason::BAD_AUDIENCE
        );
        assert_eq!(reason_of(with("aud", json!(null))), reason::BAD_AUDIENCE);
        assert!(with("aud", json!(["other", AUD])).is_ok());
        assert_eq!(
            reason_of(with("iss", json!("https://evil.example.com"))),
            reason::BAD_ISSUER
        );
        assert_eq!(reason_of(with("iss", json!(null))), reason::BAD_ISSUER);
    }

    #[test]
    fn forged_signature_and_payload_rejected() {
        let v = verifier();
        for alg in EVERY_KEY_ALG {
            let token = sign(alg, &claims());
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig_bytes[0] ^= 0x01;
            let forged = format!("{input}.{}", b64(&sig_bytes));
            assert_eq!(
                reason_of(v.verify(&forged, NOW)),
                reason::BAD_SIGNATURE,
                "{alg:?}"
            );

            let mut c = claims();
            c["roles"] = json!(["superadmin"]);
            let (header, _) = input.split_once('.').unwrap();
            let tampered = format!("{header}.{}.{sig}", b64(c.to_string().as_bytes()));
            assert_eq!(
                reason_of(v.verify(&tampered, NOW)),
                reason::BAD_SIGNATURE,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn alg_none_in_any_case_rejected() {
        let single = JwtVerifier::new(settings(vec![hmac_key(
            "hmac-1",
            Algorithm::HS256,
            HMAC_SECRET,
        )]))
        .unwrap();
        for alg in ["none", "NONE", "None", "nOnE"] {
            let with_kid = raw_token(&json!({"alg": alg, "kid": "hmac-1"}), &claims(), None);
            assert_eq!(
                reason_of(verifier().verify(&with_kid, NOW)),
                reason::ALG_MISMATCH
            );
            let no_kid = raw_token(&json!({"alg": alg}), &claims(), None);
            assert_eq!(reason_of(single.verify(&no_kid, NOW)), reason::ALG_MISMATCH);
        }
    }

    #[test]
    fn hmac_with_rsa_public_key_as_secret_rejected() {
        let secret = EncodingKey::from_secret(&fixture("rsa-1.pub.pem"));
        let hs = raw_token(
            &json!({"alg": "HS256", "kid": "rsa-1"}),
            &claims(),
            Some((&secret, Algorithm::HS256)),
        );
        assert_eq!(reason_of(verifier().verify(&hs, NOW)), reason::ALG_MISMATCH);
        // Claiming the right alg does not help: the MAC is no RSA signature.
        let rs = raw_token(
            &json!({"alg": "RS256", "kid": "rsa-1"}),
            &claims(),
            Some((&secret, Algorithm::HS256)),
        );
        assert_eq!(
            reason_of(verifier().verify(&rs, NOW)),
            reason::BAD_SIGNATURE
        );
    }

    /// Why `v` refuses these claims signed with the HS256 test key.
    fn hs256_reason(v: &JwtVerifier, c: &Value) -> &'static str {
        reason_of(v.verify(&sign(Algorithm::HS256, c), NOW))
    }

    /// Why the verifier refuses a token with these header and claims,
    /// signed with `alg`'s test key.
    fn signed_reason(header: &Value, alg: Algorithm) -> &'static str {
        let token = raw_token(header, &claims(), Some((&encoding_key(alg), alg)));
        reason_of(verifier().verify(&token, NOW))
    }

    #[test]
    fn alg_must_match_key_even_between_asymmetric_algs() {
        // A valid ES256 signature presented under the RSA kid.
        assert_eq!(
            signed_reason(&json!({"alg": "ES256", "kid": "rsa-1"}), Algorithm::ES256),
            reason::ALG_MISMATCH
        );
    }

    #[test]
    fn kid_selection() {
        let v = verifier();
        let key = encoding_key(Algorithm::HS256);
        let unknown = raw_token(
            &json!({"alg": "HS256", "kid": "hmac-2"}),
            &claims(),
            Some((&key, Algorithm::HS256)),
        );
        let err = v.verify(&unknown, NOW).unwrap_err();
        assert_eq!(err.reason(), reason::UNKNOWN_KID);
        assert_eq!(err.kid(), Some("hmac-2"));
        assert_eq!(err.sub(), Some("user-1"));

        let no_kid = raw_token(
            &json!({"alg": "HS256"}),
            &claims(),
            Some((&key, Algorithm::HS256)),
        );
        assert_eq!(reason_of(v.verify(&no_kid, NOW)), reason::MISSING_KID);
        let single = JwtVerifier::new(settings(vec![hmac_key(
            "hmac-1",
            Algorithm::HS256,
            HMAC_SECRET,
        )]))
        .unwrap();
        let id = single.verify(&no_kid, NOW).unwrap();
        assert_eq!((id.user.as_str(), id.kid.as_str()), ("user-1", "hmac-1"));
    }

    #[test]
    fn key_url_headers_are_ignored() {
        let attacker = EncodingKey::from_secret(b"attacker-controlled-secret-0123456789");
        let header = json!({
            "alg": "HS256", "kid": "hmac-1",
            "jku": "https://evil.example.com/jwks", "x5u": "https://evil.example.com/cert",
            "jwk": {"kty": "oct", "k": b64(b"attacker-controlled-secret-0123456789")},
            "x5c": ["AAAA"],
        });
        let forged = raw_token(&header, &claims(), Some((&attacker, Algorithm::HS256)));
        assert_eq!(
            reason_of(verifier().verify(&forged, NOW)),
            reason::BAD_SIGNATURE
        );
        let genuine = raw_token(
            &header,
            &claims(),
            Some((&encoding_key(Algorithm::HS256), Algorithm::HS256)),
        );
        assert!(verifier().verify(&genuine, NOW).is_ok());
    }

    #[test]
    fn time_claims() {
        let v = verifier();
        let with = |key: &str, value: Value| verify_with_claim(Algorithm::HS256, key, value);
        assert!(with("nbf", json!(NOW + 30)).is_ok());
        assert_eq!(
            reason_of(with("nbf", json!(NOW + 31))),
            reason::NOT_YET_VALID
        );
        assert!(with("iat", json!(NOW + 30)).is_ok());
        assert_eq!(
            reason_of(with("iat", json!(NOW + 31))),
            reason::IAT_IN_FUTURE
        );
        assert_eq!(reason_of(with("exp", json!("soon"))), reason::INVALID_CLAIM);
        assert!(with("exp", json!((NOW + 60) as f64 + 0.5)).is_ok());

        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(hs256_reason(&v, &c), reason::MISSING_EXP);
    }

    #[test]
    fn lifetime_limit() {
        let v = verifier();
        let mut c = claims();
        c["iat"] = json!(NOW - 100);
        c["exp"] = json!(NOW - 100 + 3600);
        assert!(v.verify(&sign(Algorithm::HS256, &c), NOW).is_ok());
        c["exp"] = json!(NOW - 100 + 3601);
        assert_eq!(hs256_reason(&v, &c), reason::LIFETIME_TOO_LONG);
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(hs256_reason(&v, &c), reason::MISSING_IAT);

        let mut s = settings(all_keys());
        s.max_lifetime_seconds = None;
        let unlimited = JwtVerifier::new(s).unwrap();
        c["exp"] = json!(NOW + 86_400 * 365);
        assert!(unlimited.verify(&sign(Algorithm::HS256, &c), NOW).is_ok());
    }

    #[test]
    fn crit_header_rejected() {
        let header = json!({"alg": "HS256", "kid": "hmac-1", "crit": ["exp"], "exp": NOW + 60});
        assert_eq!(
            signed_reason(&header, Algorithm::HS256),
            reason::UNKNOWN_CRIT
        );
    }

    #[test]
    fn non_jws_inputs_rejected() {
        let v = verifier();
        let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d";
        assert_eq!(reason_of(v.verify(jwe, NOW)), reason::JWE_NOT_SUPPORTED);
        let token = sign(Algorithm::HS256, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let json_serialised = json!({
            "payload": parts[1],
            "signatures": [{"protected": parts[0], "signature": parts[2]}],
        })
        .to_string();
        assert_eq!(
            reason_of(v.verify(&json_serialised, NOW)),
            reason::MALFORMED
        );

        let header_no_alg = format!("{}.{}.", b64(br#"{"kid":"hmac-1"}"#), parts[1]);
        let kid_not_string = format!("{}.{}.", b64(br#"{"alg":"HS256","kid":7}"#), parts[1]);
        let padded_header = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
        let payload_not_object = format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]);
        for garbage in [
            "",
            "garbage",
            "a.b",
            "..",
            "a.b.c",
            "!!!.???.***",
            &header_no_alg,
            &kid_not_string,
            &padded_header,
            &payload_not_object,
        ] {
            assert_eq!(
                reason_of(v.verify(garbage, NOW)),
                reason::MALFORMED,
                "{garbage:?}"
            );
        }
        let huge = format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_LEN), parts[2]);
        assert_eq!(reason_of(v.verify(&huge, NOW)), reason::TOO_LARGE);
    }

    #[test]
    fn roles_claim_shapes() {
        let v = verifier();
        let roles_of = |value: Option<Value>| {
            let mut c = claims();
            match value {
                Some(value) => c["roles"] = value,
                None => {
                    c.as_object_mut().unwrap().remove("roles");
                }
            }
            v.verify(&sign(Algorithm::HS256, &c), NOW)
                .map(|id| id.roles)
        };
        assert_eq!(roles_of(Some(json!(["a", "b"]))).unwrap(), ["a", "b"]);
        assert_eq!(
            roles_of(Some(json!("a b,c ,, d"))).unwrap(),
            ["a", "b", "c", "d"]
        );
        assert!(roles_of(None).unwrap().is_empty());
        assert_eq!(
            reason_of(roles_of(Some(json!(["a", 1])))),
            reason::INVALID_CLAIM
        );
        assert_eq!(reason_of(roles_of(Some(json!(42)))), reason::INVALID_CLAIM);
    }

    #[test]
    fn identity_claims_required() {
        let v = verifier();
        for (claim, value) in [("sub", None), ("sub", Some(json!(""))), ("tenant", None)] {
            let mut c = claims();
            match value {
                Some(value) => c[claim] = value,
                None => {
                    c.as_object_mut().unwrap().remove(claim);
                }
            }
            let result = v.verify(&sign(Algorithm::HS256, &c), NOW);
            assert_eq!(reason_of(result), reason::MISSING_CLAIM, "{claim}");
        }
        let mut c = claims();
        c["tenant"] = json!(12);
        assert_eq!(hs256_reason(&v, &c), reason::INVALID_CLAIM);
    }

    #[test]
    fn identity_values_that_would_forge_a_header_are_invalid() {
        let v = verifier();
        let cases = [
            ("sub", json!("bob,carol")),
            ("sub", json!("bob\u{0}")),
            ("sub", json!("bob\r\nx-gateway-roles: admin")),
            ("tenant", json!("acme,globex")),
            ("tenant", json!(" acme")),
            ("roles", json!(["agent", "x,admin"])),
            ("roles", json!(["agent\u{7}"])),
            ("roles", json!("agent \u{1}admin")),
        ];
        for (claim, value) in cases {
            let mut c = claims();
            c[claim] = value.clone();
            let result = v.verify(&sign(Algorithm::HS256, &c), NOW);
            assert_eq!(
                reason_of(result),
                reason::INVALID_IDENTITY,
                "{claim}: {value}"
            );
        }
        let mut c = claims();
        c["roles"] = json!(["agent", ""]);
        let id = v.verify(&sign(Algorithm::HS256, &c), NOW).unwrap();
        assert_eq!(id.roles, ["agent"]);
    }

    #[test]
    fn custom_claim_names() {
        let mut s = settings(all_keys());
        s.claims = ClaimNames {
            user: "email".into(),
            tenant: "org".into(),
            roles: "scope".into(),
        };
        let v = JwtVerifier::new(s).unwrap();
        let mut c = claims();
        c["email"] = json!("a@example.com");
        c["org"] = json!("org-9");
        c["scope"] = json!("read write");
        let id = v.verify(&sign(Algorithm::HS256, &c), NOW).unwrap();
        assert_eq!(
            (id.user.as_str(), id.tenant.as_str(), id.sub.as_str()),
            ("a@example.com", "org-9", "user-1")
        );
        assert_eq!(id.roles, ["read", "write"]);
    }

    #[test]
    fn errors_cap_untrusted_fields_and_never_echo_the_token() {
        let mut c = claims();
        c["sub"] = json!("x".repeat(1000));
        c["aud"] = json!("other");
        let token = sign(Algorithm::HS256, &c);
        let err = verifier().verify(&token, NOW).unwrap_err();
        assert_eq!(err.sub().map(str::len), Some(MAX_AUDIT_LEN));
        let signature = token.rsplit('.').next().unwrap();
        assert!(!format!("{err:?} {err}").contains(signature));
    }

    #[test]
    fn config_rejects_bad_keys_naming_the_kid() {
        let cases = [
            (pem_key("k1", Algorithm::RS256, "ec-1.pub.pem"), "k1"),
            (pem_key("k2", Algorithm::ES256, "rsa-1.pub.pem"), "k2"),
            (pem_key("k3", Algorithm::ES256, "ed-1.pub.pem"), "k3"),
            (pem_key("k4", Algorithm::EdDSA, "rsa-1.pub.pem"), "k4"),
            (pem_key("k5", Algorithm::ES384, "ec-1.pub.pem"), "P-384"),
            (pem_key("k6", Algorithm::RS256, "rsa-1.key.pem"), "private"),
            (
                pem_key("k7", Algorithm::HS256, "rsa-1.pub.pem"),
                "needs a secret",
            ),
            (
                hmac_key("k8", Algorithm::RS256, HMAC_SECRET),
                "needs a public key",
            ),
            (hmac_key("k9", Algorithm::HS256, b""), "at least 32 bytes"),
            (
                hmac_key("k10", Algorithm::HS256, &[1; 31]),
                "at least 32 bytes",
            ),
            (
                hmac_key("k11", Algorithm::PS256, HMAC_SECRET),
                "unsupported",
            ),
            (
                JwtKeySpec {
                    kid: "k12".into(),
                    alg: Algorithm::RS256,
                    material: KeyMaterial::PublicPem(
                        b"-----BEGIN PUBLIC KEY-----\nnope\n".to_vec(),
                    ),
                },
                "PEM",
            ),
        ];
        for (spec, expected) in cases {
            let kid = spec.kid.clone();
            let msg = config_err(vec![spec]);
            assert!(msg.contains(&format!("`{kid}`")), "{msg}");
            assert!(msg.contains(expected), "{msg}");
        }
    }

    #[test]
    fn config_rejects_structural_problems() {
        assert!(config_err(vec![]).contains("no keys"));
        let dup = vec![
            hmac_key("same", Algorithm::HS256, HMAC_SECRET),
            pem_key("same", Algorithm::RS256, "rsa-1.pub.pem"),
        ];
        assert!(config_err(dup).contains("duplicate key id `same`"));
        assert!(config_err(vec![hmac_key("", Algorithm::HS256, HMAC_SECRET)]).contains("kid"));
        let mut s = settings(all_keys());
        s.audience.clear();
        assert!(JwtVerifier::new(s)
            .unwrap_err()
            .to_string()
            .contains("audience"));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let spec = hmac_key("hmac-1", Algorithm::HS256, HMAC_SECRET);
        let printed = format!("{spec:?} {:?}", verifier());
        assert!(!printed.contains("test-only-hmac-secret"));
        assert!(printed.contains("hmac-1"));
    }

    #[test]
    fn parse_algorithm_accepts_only_the_supported_names() {
        for (name, alg) in SUPPORTED_ALGS {
            assert_eq!(parse_algorithm(name), Some(alg));
        }
        for name in ["none", "NONE", "rs256", "PS256", "HS256 ", ""] {
            assert_eq!(parse_algorithm(name), None, "{name:?}");
        }
    }

    #[test]
    fn looks_like_jwt_counts_dots() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(looks_like_jwt(".."));
        assert!(!looks_like_jwt("tg_live_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d.e"));
    }

    #[test]
    fn verifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwtVerifier>();
        assert_send_sync::<JwtError>();
    }
}
