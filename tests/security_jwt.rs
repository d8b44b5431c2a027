//! Issue 29, JWT identities: a user, tenant or role holding a comma or a
//! control character is refused with 401 `invalid_token` (not 500, not
//! passed on), so `X-Gateway-Roles` and friends cannot be forged. Over TCP
//! against the echoing mock backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "security-test-hmac-secret-0123456789abcdef";

fn token(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac-1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: Value, tenant: Value, roles: Value) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": "https://idp.example.com", "aud": "tollgate", "sub": sub,
           "tenant": tenant, "roles": roles, "iat": now - 10, "exp": now + 600})
}

#[test]
fn jwt_identities_that_would_forge_a_header_are_invalid_tokens() {
    let backend = Backend::start();
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hmac.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let jwt = json!({
        "issuer": "https://idp.example.com",
        "audience": "tollgate",
        "keys": [{"kid": "hmac-1", "alg": "HS256", "secret_file": secret_file.display().to_string()}],
    });
    let gw = ConfigBuilder::support(&[&backend.addr])
        .auth("jwt", jwt)
        .start();
    let call = |claims: &Value| {
        client()
            .get(gw.url("/api/v1/tickets/1"))
            .bearer_auth(token(claims))
            .send()
            .unwrap()
    };
    let agent = json!(["agent"]);
    for bad in [
        claims(json!("bob,carol"), json!("acme"), agent.clone()),
        claims(json!("bob\u{0}"), json!("acme"), agent.clone()),
        claims(
            json!("bob\r\nx-gateway-roles: admin"),
            json!("acme"),
            agent.clone(),
        ),
        claims(json!("bob\u{7f}"), json!("acme"), agent.clone()),
        claims(json!("bob"), json!("acme,globex"), agent.clone()),
        claims(json!("bob"), json!("acme\t"), agent.clone()),
        claims(json!("bob"), json!("acme"), json!(["agent", "x,admin"])),
        claims(json!("bob"), json!("acme"), json!(["agent", "admin\u{1}"])),
        claims(json!("bob"), json!("acme"), json!("agent \u{1b}admin")),
    ] {
        let (status, code, body) = error_code(call(&bad));
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_token"),
            "{bad}: {body}"
        );
    }
    let resp = call(&claims(
        json!("bob"),
        json!("acme"),
        json!(["agent", "support"]),
    ));
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().unwrap();
    assert_eq!(echo["headers"]["x-gateway-user"], "bob");
    assert_eq!(echo["headers"]["x-gateway-roles"], "agent,support");
    assert_eq!(echo["headers"]["x-gateway-tenant"], "acme");
}
