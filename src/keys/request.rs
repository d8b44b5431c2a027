//! The keys API's request bodies, parsed strictly: malformed JSON, an
//! unknown field, a wrong type or a bad value is a [`BadField`] naming the
//! field (answered 400 `invalid_request`).
//!
//! Parsed by hand from a `serde_json::Value` rather than derived: serde's
//! type errors say "expected u32 at line 1 column 30", not which field.

use super::record::{KeyPolicy, MICRO_USD_PER_USD};
use crate::auth::identity::value_problem;
use crate::config::formats::parse_rfc3339;
use serde_json::{Map, Value};

/// Longest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest user, tenant, role or model name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most roles / models on one key.
pub const MAX_LIST: usize = 64;
/// Longest rotation grace: a week.
pub const MAX_GRACE_SECONDS: u64 = 7 * 86_400;
/// Largest per-key request rate.
pub const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadField {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> BadField {
    BadField {
        field: field.into(),
        message: message.into(),
    }
}

/// `POST /admin/keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateKey {
    pub user: String,
    /// `None`: a tenant-bound admin token's own tenant.
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    pub expires_at: Option<i64>,
    pub policy: KeyPolicy,
    pub note: String,
}

/// A field of `PATCH`: absent (unchanged) or the new value (`None`: cleared).
pub type Change<T> = Option<Option<T>>;

/// `PATCH /admin/keys/{id}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchKey {
    pub roles: Option<Vec<String>>,
    pub models: Change<Vec<String>>,
    pub requests_per_minute: Change<u32>,
    /// `budgets` replaces both budget fields at once.
    pub budgets: Change<(Option<u64>, Option<u64>)>,
    pub expires_at: Change<i64>,
    pub note: Option<String>,
}

/// `POST /admin/keys/{id}/rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateKey {
    pub grace_seconds: u64,
}

fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, BadField> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("body", "must be a JSON object"));
    };
    check_fields(&map, "", allowed)?;
    Ok(map)
}

fn check_fields(map: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> Result<(), BadField> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(bad(
            format!("{prefix}{unknown}"),
            format!("unknown field (expected one of: {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn name(field: &str, v: &Value) -> Result<String, BadField> {
    let s = v.as_str().ok_or_else(|| bad(field, "must be a string"))?;
    if let Some(problem) = value_problem(s) {
        return Err(bad(field, problem));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(bad(field, format!("longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(s.to_string())
}

fn names(field: &str, v: &Value) -> Result<Vec<String>, BadField> {
    let items = v
        .as_array()
        .ok_or_else(|| bad(field, "must be an array of strings"))?;
    if items.len() > MAX_LIST {
        return Err(bad(field, format!("at most {MAX_LIST} entries")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = name(&format!("{field}[{i}]"), item)?;
        if out.contains(&n) {
            return Err(bad(format!("{field}[{i}]"), "listed twice"));
        }
        out.push(n);
    }
    Ok(out)
}

fn expiry(v: &Value, now_unix: i64) -> Result<Option<i64>, BadField> {
    if v.is_null() {
        return Ok(None);
    }
    let s = v
        .as_str()
        .ok_or_else(|| bad("expires_at", "must be an RFC 3339 timestamp string or null"))?;
    let at = parse_rfc3339(s).ok_or_else(|| {
        bad(
            "expires_at",
            format!("'{s}' is not an RFC 3339 timestamp like 2027-06-30T00:00:00Z"),
        )
    })?;
    if at <= now_unix {
        return Err(bad("expires_at", "must be in the future"));
    }
    Ok(Some(at))
}

fn note(v: &Value) -> Result<String, BadField> {
    let s = v.as_str().ok_or_else(|| bad("note", "must be a string"))?;
    if s.len() > MAX_NOTE_BYTES {
        return Err(bad("note", format!("longer than {MAX_NOTE_BYTES} bytes")));
    }
    // Notes reach logs and the page: no line breaks or escapes.
    if s.chars().any(char::is_control) {
        return Err(bad("note", "must not contain a control character"));
    }
    Ok(s.to_string())
}

fn positive_int(field: &str, v: &Value, max: u64) -> Result<u64, BadField> {
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(field, format!("must be an integer from 1 to {max}"))),
    }
}

fn rate_limit(v: &Value) -> Result<Option<u32>, BadField> {
    if v.is_null() {
        return Ok(None);
    }
    let map = v.as_object().ok_or_else(|| {
        bad(
            "rate_limit",
            "must be an object {\"requests_per_minute\": N} or null",
        )
    })?;
    check_fields(map, "rate_limit.", &["requests_per_minute"])?;
    let rpm = map
        .get("requests_per_minute")
        .ok_or_else(|| bad("rate_limit.requests_per_minute", "required"))?;
    let n = positive_int(
        "rate_limit.requests_per_minute",
        rpm,
        MAX_REQUESTS_PER_MINUTE,
    )?;
    Ok(u32::try_from(n).ok())
}

type Budgets = (Option<u64>, Option<u64>);

fn budgets(v: &Value) -> Result<Option<Budgets>, BadField> {
    if v.is_null() {
        return Ok(None);
    }
    let map = v
        .as_object()
        .ok_or_else(|| bad("budgets", "must be an object or null"))?;
    check_fields(map, "budgets.", &["tokens_per_day", "usd_per_month"])?;
    let tokens = match map.get("tokens_per_day") {
        None | Some(Value::Null) => None,
        Some(t) => Some(positive_int("budgets.tokens_per_day", t, i64::MAX as u64)?),
    };
    let usd = match map.get("usd_per_month") {
        None | Some(Value::Null) => None,
        Some(u) => {
            let dollars = u
                .as_f64()
                .filter(|d| d.is_finite() && *d > 0.0 && *d <= 1e9)
                .ok_or_else(|| {
                    bad(
                        "budgets.usd_per_month",
                        "must be a number above 0 (at most 1e9)",
                    )
                })?;
            Some((dollars * MICRO_USD_PER_USD as f64).round() as u64)
        }
    };
    if tokens.is_none() && usd.is_none() {
        return Err(bad(
            "budgets",
            "give tokens_per_day, usd_per_month or both (or null for none)",
        ));
    }
    Ok(Some((tokens, usd)))
}

fn models(v: &Value) -> Result<Option<Vec<String>>, BadField> {
    if v.is_null() {
        return Ok(None);
    }
    names("models", v).map(Some)
}

const CREATE_FIELDS: &[&str] = &[
    "user",
    "tenant",
    "roles",
    "expires_at",
    "models",
    "rate_limit",
    "budgets",
    "note",
];

impl CreateKey {
    pub fn parse(body: &[u8], now_unix: i64) -> Result<CreateKey, BadField> {
        let map = object(body, CREATE_FIELDS)?;
        let get = |f: &str| map.get(f);
        let user = name("user", get("user").ok_or_else(|| bad("user", "required"))?)?;
        let tenant = get("tenant").map(|t| name("tenant", t)).transpose()?;
        let roles = names(
            "roles",
            get("roles").ok_or_else(|| bad("roles", "required"))?,
        )?;
        let expires_at = get("expires_at")
            .map(|e| expiry(e, now_unix))
            .transpose()?
            .flatten();
        let (tokens_per_day, micro_usd_per_month) = get("budgets")
            .map(budgets)
            .transpose()?
            .flatten()
            .unwrap_or_default();
        let policy = KeyPolicy {
            models: get("models").map(models).transpose()?.flatten(),
            requests_per_minute: get("rate_limit").map(rate_limit).transpose()?.flatten(),
            tokens_per_day,
            micro_usd_per_month,
        };
        let note = get("note").map(note).transpose()?.unwrap_or_default();
        Ok(CreateKey {
            user,
            tenant,
            roles,
            expires_at,
            policy,
            note,
        })
    }
}

const PATCH_FIELDS: &[&str] = &[
    "roles",
    "models",
    "rate_limit",
    "budgets",
    "expires_at",
    "note",
];

impl PatchKey {
    pub fn parse(body: &[u8], now_unix: i64) -> Result<PatchKey, BadField> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
        if let Some(fixed) = ["user", "tenant", "id"]
            .into_iter()
            .find(|f| value.get(f).is_some())
        {
            return Err(bad(fixed, "cannot be changed: create a new key"));
        }
        let map = object(body, PATCH_FIELDS)?;
        if map.is_empty() {
            return Err(bad(
                "body",
                format!("nothing to change (fields: {})", PATCH_FIELDS.join(", ")),
            ));
        }
        let get = |f: &str| map.get(f);
        Ok(PatchKey {
            roles: get("roles").map(|r| names("roles", r)).transpose()?,
            models: get("models").map(models).transpose()?,
            requests_per_minute: get("rate_limit").map(rate_limit).transpose()?,
            budgets: get("budgets").map(budgets).transpose()?,
            expires_at: get("expires_at").map(|e| expiry(e, now_unix)).transpose()?,
            note: get("note")
                .map(|n| {
                    if n.is_null() {
                        Ok(String::new())
                    } else {
                        note(n)
                    }
                })
                .transpose()?,
        })
    }
}

impl RotateKey {
    /// An empty body is a rotation without grace.
    pub fn parse(body: &[u8]) -> Result<RotateKey, BadField> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(RotateKey { grace_seconds: 0 });
        }
        let map = object(body, &["grace_seconds"])?;
        let grace_seconds = match map.get("grace_seconds") {
            None => 0,
            Some(v) => v
                .as_u64()
                .filter(|g| *g <= MAX_GRACE_SECONDS)
                .ok_or_else(|| {
                    bad(
                        "grace_seconds",
                        format!("must be an integer from 0 to {MAX_GRACE_SECONDS}"),
                    )
                })?,
        };
        Ok(RotateKey { grace_seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn field_of(body: &str) -> String {
        match CreateKey::parse(body.as_bytes(), NOW) {
            Err(e) => e.field,
            Ok(k) => panic!("accepted: {k:?}"),
        }
    }

    #[test]
    fn a_full_create_body_is_parsed() {
        let k = CreateKey::parse(
            br#"{"user":"bob","tenant":"acme","roles":["agent"],"expires_at":"2030-01-01T00:00:00Z",
                "models":["support-fast"],"rate_limit":{"requests_per_minute":60},
                "budgets":{"tokens_per_day":1000,"usd_per_month":2.5},"note":"support bot"}"#,
            NOW,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.user, "bob");
        assert_eq!(k.tenant.as_deref(), Some("acme"));
        assert_eq!(k.expires_at, Some(1_893_456_000));
        assert_eq!(k.policy.requests_per_minute, Some(60));
        assert_eq!(k.policy.tokens_per_day, Some(1000));
        assert_eq!(k.policy.micro_usd_per_month, Some(2_500_000));
        assert_eq!(k.policy.models, Some(vec!["support-fast".into()]));
        assert_eq!(k.note, "support bot");
    }

    #[test]
    fn every_bad_create_body_names_its_field() {
        let long_note = format!(r#"{{"user":"u","roles":[],"note":"{}"}}"#, "x".repeat(1025));
        for (body, field) in [
            ("{", "body"),
            ("[]", "body"),
            (r#"{"user":"u","roles":[],"colour":"red"}"#, "colour"),
            (r#"{"roles":[]}"#, "user"),
            (r#"{"user":"u"}"#, "roles"),
            (r#"{"user":"a,b","roles":[]}"#, "user"),
            (r#"{"user":"u","tenant":" t","roles":[]}"#, "tenant"),
            (r#"{"user":"u","roles":["ok","x,admin"]}"#, "roles[1]"),
            (r#"{"user":"u","roles":"agent"}"#, "roles"),
            (
                r#"{"user":"u","roles":[],"expires_at":"tomorrow"}"#,
                "expires_at",
            ),
            (
                r#"{"user":"u","roles":[],"expires_at":"2001-01-01T00:00:00Z"}"#,
                "expires_at",
            ),
            (r#"{"user":"u","roles":[],"expires_at":5}"#, "expires_at"),
            (long_note.as_str(), "note"),
            (r#"{"user":"u","roles":[],"note":"a\nb"}"#, "note"),
            (
                r#"{"user":"u","roles":[],"rate_limit":{"requests_per_minute":0}}"#,
                "rate_limit.requests_per_minute",
            ),
            (
                r#"{"user":"u","roles":[],"rate_limit":{"rpm":5}}"#,
                "rate_limit.rpm",
            ),
            (r#"{"user":"u","roles":[],"budgets":{}}"#, "budgets"),
            (
                r#"{"user":"u","roles":[],"budgets":{"usd_per_month":-1}}"#,
                "budgets.usd_per_month",
            ),
            (
                r#"{"user":"u","roles":[],"budgets":{"tokens_per_day":"many"}}"#,
                "budgets.tokens_per_day",
            ),
            (r#"{"user":"u","roles":[],"models":[""]}"#, "models[0]"),
            (r#"{"user":"u","roles":[],"models":["a","a"]}"#, "models[1]"),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
    }

    #[test]
    fn patch_and_rotate_bodies() {
        let p = PatchKey::parse(br#"{"note":null,"rate_limit":null,"roles":["admin"]}"#, NOW)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.note.as_deref(), Some(""));
        assert_eq!(p.requests_per_minute, Some(None));
        assert_eq!(p.models, None);
        assert_eq!(p.roles, Some(vec!["admin".into()]));
        for (body, field) in [
            (r#"{"tenant":"globex"}"#, "tenant"),
            (r#"{}"#, "body"),
            (r#"{"grace_seconds":5}"#, "grace_seconds"),
        ] {
            assert_eq!(
                PatchKey::parse(body.as_bytes(), NOW).map_err(|e| e.field),
                Err(field.to_string())
            );
        }
        assert_eq!(RotateKey::parse(b"").map(|r| r.grace_seconds), Ok(0));
        assert_eq!(
            RotateKey::parse(br#"{"grace_seconds":2}"#).map(|r| r.grace_seconds),
            Ok(2)
        );
        for body in [
            r#"{"grace_seconds":-1}"#,
            r#"{"grace_seconds":999999999}"#,
            r#"{"grace":1}"#,
        ] {
            assert!(RotateKey::parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
