//! JWT authentication, the credential-stuffing guard and the audit log,
//! over real TCP against a real `tollgate run` process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const ISS: &str = "https://idp.example.com";
const AUD: &str = "tollgate";
const HMAC_SECRET: &str = "jwt-test-hmac-secret-0123456789abcdefXYZ";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `auth.jwt` with four keys: RSA, EC (its public key in
/// `ec_public_key_file`), Ed25519, and HMAC (its secret in `secret_file`).
fn jwt_section(ec_public_key_file: &str, secret_file: &std::path::Path) -> Value {
    json!({
        "issuer": ISS,
        "audience": AUD,
        "max_lifetime_seconds": 3600,
        "keys": [
            {"kid": "rsa-1", "alg": "RS256", "public_key_file": fixture_path("rsa-1.pub.pem")},
            {"kid": "ec-1", "alg": "ES256", "public_key_file": ec_public_key_file},
            {"kid": "ed-1", "alg": "EdDSA", "public_key_file": fixture_path("ed-1.pub.pem")},
            {"kid": "hmac-1", "alg": "HS256", "secret_file": secret_file.display().to_string()},
        ],
    })
}

/// The support config on `peer` plus `auth.jwt` and the stuffing guard.
/// The HMAC secret is in a file under `secrets` (kept alive by the caller).
fn jwt_config(peer: &str, secrets: &tempfile::TempDir, failed_auth_limit: u32) -> ConfigBuilder {
    let secret_file = secrets.path().join("hmac-1.secret");
    // Trailing newline as `echo` writes it: not part of the secret.
    std::fs::write(&secret_file, format!("{HMAC_SECRET}\n")).unwrap();
    ConfigBuilder::support(&[peer])
        .auth(
            "jwt",
            jwt_section(&fixture_path("ec-1.pub.pem"), &secret_file),
        )
        .failed_auth_per_ip_per_minute(failed_auth_limit)
}

fn start(failed_auth_limit: u32) -> (Backend, Gateway, tempfile::TempDir) {
    let backend = Backend::start();
    let secrets = tempfile::tempdir().unwrap();
    let gw = jwt_config(&backend.addr, &secrets, failed_auth_limit).start();
    (backend, gw, secrets)
}

fn claims(sub: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({
        "iss": ISS, "aud": AUD, "sub": sub, "tenant": "acme", "roles": roles,
        "iat": now - 10, "exp": now + 600,
    })
}

fn key_for(alg: Algorithm) -> (EncodingKey, &'static str) {
    match alg {
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&fixture("rsa-1.key.pem")).unwrap(),
            "rsa-1",
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&fixture("ec-1.key.pem")).unwrap(),
            "ec-1",
        ),
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(&fixture("ed-1.key.pem")).unwrap(),
            "ed-1",
        ),
        _ => (EncodingKey::from_secret(HMAC_SECRET.as_bytes()), "hmac-1"),
    }
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    let (key, kid) = key_for(alg);
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token with an arbitrary header, signed with `key` under `alg`.
fn sign_raw(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::blocking::Response {
    client()
        .get(gw.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .unwrap()
}

#[test]
fn valid_tokens_of_every_algorithm_are_accepted_with_their_identity() {
    let (_b, gw, _s) = start(1000);
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
        (Algorithm::HS256, "hmac-1"),
    ] {
        let token = sign(alg, &claims("jwt-alice", &["agent", "admin"]));
        let resp = get(&gw, "/api/v1/tickets/1", &token);
        assert_eq!(resp.status(), 200, "{alg:?}");
        let echo: Value = resp.json().unwrap();
        let h = &echo["headers"];
        assert_eq!(h["x-gateway-user"], "jwt-alice", "{alg:?}");
        assert_eq!(h["x-gateway-tenant"], "acme");
        assert_eq!(h["x-gateway-roles"], "agent,admin");
        assert_eq!(h["x-gateway-key-id"], kid);
        assert!(h.get("authorization").is_none(), "token not forwarded");
    }
    // API keys keep working beside JWTs, in both headers.
    let resp = get(&gw, "/api/v1/tickets/1", BOB_KEY);
    assert_eq!(resp.status(), 200);
}

#[test]
fn bad_tokens_are_refused_with_invalid_token_or_token_expired() {
    let (_b, gw, _s) = start(1000);
    let now = now();
    let good = claims("jwt-mallory", &["agent"]);
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let rsa_public_as_secret = EncodingKey::from_secret(&fixture("rsa-1.pub.pem"));
    let hmac = EncodingKey::from_secret(HMAC_SECRET.as_bytes());
    let valid = sign(Algorithm::RS256, &good);
    let parts: Vec<&str> = valid.split('.').collect();
    let forged_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(json!({"roles": ["admin"]}))),
        parts[2]
    );
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"})),
            b64(&good)
        )
    };

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign(
                Algorithm::RS256,
                &with(json!({"iat": now - 7200, "exp": now - 3600})),
            ),
            "token_expired",
        ),
        (
            "wrong aud",
            sign(Algorithm::ES256, &with(json!({"aud": "someone-else"}))),
            "invalid_token",
        ),
        (
            "wrong iss",
            sign(
                Algorithm::RS256,
                &with(json!({"iss": "https://evil.example"})),
            ),
            "invalid_token",
        ),
        ("forged payload", forged_payload, "invalid_token"),
        ("alg none", unsigned("none"), "invalid_token"),
        ("alg NONE", unsigned("NONE"), "invalid_token"),
        ("alg None", unsigned("None"), "invalid_token"),
        (
            "HS256 with the RSA public key as secret",
            sign_raw(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
                &good,
                Algorithm::HS256,
                &rsa_public_as_secret,
            ),
            "invalid_token",
        ),
        (
            "unknown kid",
            sign_raw(
                &json!({"alg": "HS256", "kid": "nobody"}),
                &good,
                Algorithm::HS256,
                &hmac,
            ),
            "invalid_token",
        ),
        (
            "nbf in the future",
            sign(Algorithm::HS256, &with(json!({"nbf": now + 3600}))),
            "invalid_token",
        ),
        (
            "lifetime over the maximum",
            sign(
                Algorithm::HS256,
                &with(json!({"iat": now, "exp": now + 7200})),
            ),
            "invalid_token",
        ),
        (
            "unknown crit",
            sign_raw(
                &json!({"alg": "HS256", "kid": "hmac-1", "crit": ["exp"]}),
                &good,
                Algorithm::HS256,
                &hmac,
            ),
            "invalid_token",
        ),
        (
            "JWE",
            format!(
                "{}.AAAA.BBBB.CCCC.DDDD",
                b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rsa-1"}))
            ),
            "invalid_token",
        ),
        ("garbage", "abc.def.ghi".to_string(), "invalid_token"),
        (
            "wrong HMAC secret",
            sign_raw(
                &json!({"alg": "HS256", "kid": "hmac-1"}),
                &good,
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-of-sufficient-length-000"),
            ),
            "invalid_token",
        ),
    ];
    for (name, token, code) in &cases {
        let resp = get(&gw, "/api/v1/tickets/1", token);
        assert_eq!(
            resp.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"tollgate\", error=\"invalid_token\"",
            "{name}"
        );
        let (status, got, body) = error_code(resp);
        assert_eq!((status, got.as_str()), (401, *code), "{name}: {body}");
    }

    // Audit lines name the subject, never the token.
    let audit: Vec<Value> = gw
        .access_log()
        .into_iter()
        .filter(|l| l["log"] == "audit")
        .collect();
    assert!(audit.len() >= cases.len(), "{audit:?}");
    let expired = audit
        .iter()
        .find(|l| l["reason"] == "token_expired")
        .expect("expired audit line");
    assert_eq!(expired["event"], "authentication_failed");
    assert_eq!(expired["principal"], "jwt-mallory");
    assert_eq!(expired["key_id"], "rsa-1");
    assert_eq!(expired["client_ip"], "127.0.0.1");
    assert!(audit.iter().any(|l| l["reason"] == "bad_signature"));
    assert!(audit.iter().any(|l| l["reason"] == "alg_mismatch"));
    assert!(audit.iter().any(|l| l["reason"] == "unknown_kid"));
    assert!(audit.iter().any(|l| l["reason"] == "jwe_not_supported"));

    // No secret reaches any output: tokens, HMAC secret, API keys.
    get(&gw, "/api/v1/tickets/1", "not-a-valid-key");
    let output = gw.all_output();
    for (name, token, _) in &cases {
        assert!(!output.contains(token.as_str()), "token '{name}' leaked");
        if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(!output.contains(sig), "signature of '{name}' leaked");
        }
    }
    for secret in [HMAC_SECRET, BOB_KEY, "not-a-valid-key", valid.as_str()] {
        assert!(!output.contains(secret), "secret leaked: {secret}");
    }
}

#[test]
fn jwt_roles_are_enforced_like_key_roles() {
    let (_b, gw, _s) = start(1000);
    let agent = sign(Algorithm::RS256, &claims("jwt-bob", &["agent"]));
    let admin = sign(Algorithm::ES256, &claims("jwt-root", &["admin"]));
    let norole = sign(Algorithm::HS256, &claims("jwt-nobody", &[]));

    assert_error!(get(&gw, "/api/v1/users/7", &agent), 403, "forbidden");
    assert_eq!(get(&gw, "/api/v1/users/7", &admin).status(), 200);
    // Owner rule: {agent} must be the token's user.
    assert_eq!(
        get(&gw, "/api/v1/agents/jwt-bob/tickets", &agent).status(),
        200
    );
    assert_error!(
        get(&gw, "/api/v1/agents/alice/tickets", &agent),
        403,
        "forbidden"
    );
    assert_error!(get(&gw, "/api/v1/tickets/1", &norole), 403, "forbidden");

    let denied = gw
        .logged("event", "authorization_denied")
        .expect("denial audited");
    assert_eq!(denied["principal"], "rsa-1");
    assert_eq!(denied["user"], "jwt-bob");
}

#[test]
fn repeated_failures_block_the_ip_even_for_valid_credentials() {
    let limit = 30;
    let (_b, gw, _s) = start(limit);
    let c = client();
    for i in 0..limit {
        let resp = c
            .get(gw.url("/api/v1/tickets/1"))
            .header("X-API-Key", format!("guess-{i}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    // Missing credentials are not attempts; they do not change the outcome.
    for (name, key) in [
        ("guess", Some("guess-x")),
        ("valid key", Some(BOB_KEY)),
        ("none", None),
    ] {
        let mut req = c.get(gw.url("/api/v1/tickets/1"));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().unwrap();
        let retry = retry_after(&resp);
        assert!((1..=60).contains(&retry), "{name}: retry-after {retry}");
        assert!(resp.headers().contains_key("ratelimit-policy"), "{name}");
        assert_error!(resp, 429, "rate_limited", "{name}");
    }
    // A valid JWT is refused as well.
    let token = sign(Algorithm::RS256, &claims("jwt-alice", &["agent"]));
    assert_eq!(get(&gw, "/api/v1/tickets/1", &token).status(), 429);

    // Another client address is not affected.
    let other = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let resp = other
        .get(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);

    let blocked = gw
        .logged("event", "authentication_blocked")
        .expect("block audited");
    assert_eq!(blocked["reason"], "too_many_failed_auth");
    assert_eq!(blocked["client_ip"], "127.0.0.1");
    assert!(!gw.all_output().contains(BOB_KEY));
}

#[test]
fn reload_does_not_reset_the_failed_auth_counter() {
    let limit = 3;
    let (backend, gw, secrets) = start(limit);
    for i in 0..limit {
        assert_eq!(
            get(&gw, "/api/v1/tickets/1", &format!("guess-{i}")).status(),
            401
        );
    }
    assert_eq!(get(&gw, "/api/v1/tickets/1", BOB_KEY).status(), 429);
    // Same config, new generation.
    gw.rewrite_config(&jwt_config(&backend.addr, &secrets, limit).render());
    let reload = gw.reload();
    assert_eq!(reload.status(), 200);
    assert_eq!(get(&gw, "/api/v1/tickets/1", BOB_KEY).status(), 429);
}

#[test]
fn check_reports_unusable_jwt_keys_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too-short").unwrap();
    // A private key where the public key belongs, and a short secret.
    let (code, stdout, stderr) = ConfigBuilder::support(&["127.0.0.1:9001"])
        .auth("jwt", jwt_section(&fixture_path("ec-1.key.pem"), &short))
        .failed_auth_per_ip_per_minute(20)
        .check();
    let text = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("auth.jwt.keys[1].public_key_file")
            || text.contains("auth.jwt.keys[3].secret_file"),
        "{text}"
    );
    assert!(!text.contains("too-short"), "secret printed: {text}");
}
