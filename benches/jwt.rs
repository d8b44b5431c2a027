//! `JwtVerifier::verify` on valid tokens: the per-request cost of JWT auth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tollgate::auth::jwt::{ClaimNames, JwtKeySpec, JwtSettings, JwtVerifier, KeyMaterial};

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"bench-only-hmac-secret-0123456789abcdef";

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "iss": "https://idp.example.com", "aud": "tollgate", "sub": "user-1",
        "tenant": "acme", "roles": ["agent", "admin"], "iat": NOW - 10, "exp": NOW + 600,
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let verifier = JwtVerifier::new(JwtSettings {
        issuer: "https://idp.example.com".into(),
        audience: "tollgate".into(),
        leeway_seconds: 30,
        max_lifetime_seconds: Some(3600),
        keys: vec![
            JwtKeySpec {
                kid: "rsa-1".into(),
                alg: Algorithm::RS256,
                material: KeyMaterial::PublicPem(
                    include_bytes!("../tests/fixtures/jwt/rsa-1.pub.pem").to_vec(),
                ),
            },
            JwtKeySpec {
                kid: "hmac-1".into(),
                alg: Algorithm::HS256,
                material: KeyMaterial::Secret(SECRET.to_vec()),
            },
        ],
        claims: ClaimNames::default(),
    })
    .unwrap();

    let rsa_key =
        EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/jwt/rsa-1.key.pem")).unwrap();
    let cases = [
        ("verify_rs256", token(Algorithm::RS256, "rsa-1", &rsa_key)),
        (
            "verify_hs256",
            token(
                Algorithm::HS256,
                "hmac-1",
                &EncodingKey::from_secret(SECRET),
            ),
        ),
    ];
    let mut group = c.benchmark_group("jwt");
    for (name, token) in &cases {
        verifier.verify(token, NOW).unwrap();
        group.bench_function(*name, |b| {
            b.iter(|| verifier.verify(black_box(token), black_box(NOW)))
        });
    }
    // The whole authentication step as a request sees it: header parsing,
    // JWT shape detection, verification, identity construction.
    let config = format!(
        r#"
server: {{ listen: ["127.0.0.1:1"], admin_listen: "127.0.0.1:2" }}
auth:
  jwt:
    issuer: "https://idp.example.com"
    audience: tollgate
    max_lifetime_seconds: 3600
    keys:
      - {{ kid: rsa-1, alg: RS256, public_key_file: "{dir}/tests/fixtures/jwt/rsa-1.pub.pem" }}
"#,
        dir = env!("CARGO_MANIFEST_DIR")
    );
    let snapshot =
        tollgate::config::load::load_snapshot_from_str(&config, "bench.yaml", 1, None).unwrap();
    let mut req = pingora::http::RequestHeader::build("GET", b"/api/v1/tickets/1", None).unwrap();
    req.insert_header("authorization", format!("Bearer {}", cases[0].1))
        .unwrap();
    snapshot.auth.authenticate(&req, NOW as i64, None).unwrap();
    // After the first call the verification is served from the JWT cache.
    group.bench_function("authenticate_rs256_cached", |b| {
        b.iter(|| {
            snapshot
                .auth
                .authenticate(black_box(&req), NOW as i64, None)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
