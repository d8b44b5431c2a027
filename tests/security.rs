//! Issue 29: the holes found probing the gateway as an attacker with an
//! agent's key would, each sent over TCP against the mock backend (which
//! echoes what it received), asserting the gateway's answer AND what the
//! backend saw: spoofed identity and forwarding headers under any
//! spelling, path tricks (`;`, reserved escapes, rewrites that cannot be
//! represented), `Connection` naming framing headers, client-minted metric
//! labels, identity values that would forge a list header, bare
//! `Authorization`, and admin-token guessing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;
use std::time::Duration;

/// A raw HTTP/1.1 request (exact bytes: header case and `_` preserved);
/// returns the status and the JSON body.
fn send(addr: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "Connection: close\r\n\r\n";
    let answer = raw_request(addr, req.as_bytes());
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn get(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("X-API-Key", BOB_KEY)];
    all.extend_from_slice(headers);
    send(&gw.addr, "GET", target, &all)
}

/// The support config without health checks, so the backend's request
/// count moves only when a request reaches it.
fn quiet_config(backend: &Backend) -> ConfigBuilder {
    ConfigBuilder::support(&[&backend.addr]).with_pool("support", Pool::no_health_check)
}

/// A backend, a gateway on `quiet_config`, and the backend's request count
/// before the test's first request.
fn quiet() -> (Backend, Gateway, u64) {
    let backend = Backend::start();
    let gw = quiet_config(&backend).start();
    let before = backend.served();
    (backend, gw, before)
}

/// Nothing but the two stats calls reached the backend since `before`
/// (each `served()` call counts itself).
fn assert_untouched(backend: &Backend, before: u64) {
    assert_eq!(
        backend.served(),
        before + 1,
        "a request reached the backend"
    );
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// The backend's view of the headers, names folded as a CGI backend
/// folds them (lower case, `_` as `-`), every value kept.
fn folded_headers(echo: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in echo["headers"].as_object().unwrap() {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        match value {
            Value::Array(items) => {
                for v in items {
                    out.push((folded.clone(), v.as_str().unwrap_or("").to_string()));
                }
            }
            v => out.push((folded, v.as_str().unwrap_or("").to_string())),
        }
    }
    out
}

fn values_of(seen: &[(String, String)], name: &str) -> Vec<String> {
    seen.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn identity_and_forwarding_headers_cannot_be_spoofed_under_any_spelling() {
    let backend = Backend::start();
    let gw = ConfigBuilder::support(&[&backend.addr]).start();
    let spoofs: &[(&str, &str)] = &[
        ("X_Gateway_User", "carol"),
        ("X-Gateway_User", "carol"),
        ("x_gateway-user", "carol"),
        ("X_GATEWAY_ROLES", "admin"),
        ("X_Gateway-Roles", "admin"),
        ("X_Gateway_Tenant", "globex"),
        ("X-Gateway-Tenant", "globex"),
        ("x_gateway_key_id", "root-1"),
        ("X-Gateway-Anything", "x"),
        ("X-Forwarded-For", "10.9.9.9"),
        ("X_Forwarded_For", "10.9.9.9"),
        ("X-Forwarded-Host", "evil.example"),
        ("X_Forwarded_Proto", "https"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Forwarded", "for=10.9.9.9;proto=https"),
        ("X-Real-IP", "10.9.9.9"),
        ("X_Real_Ip", "10.9.9.9"),
        ("X-Original-URL", "/api/v1/users/1"),
        ("X_Rewrite_Url", "/api/v1/users/1"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("x_http_method_override", "DELETE"),
        ("X_Request_Id", "forged"),
        ("Content_Length", "5"),
        ("Transfer_Encoding", "chunked"),
        // Not the gateway's: passes (the documented choice).
        ("X_Custom_Thing", "kept"),
    ];
    let (status, echo) = get(&gw, "/api/v1/tickets/1", spoofs);
    assert_eq!(status, 200, "{echo}");
    let seen = folded_headers(&echo);
    let one = |name: &str| {
        let v = values_of(&seen, name);
        assert_eq!(v.len(), 1, "{name}: {v:?} in {seen:?}");
        v[0].clone()
    };
    assert_eq!(one("x-gateway-user"), "bob");
    assert_eq!(one("x-gateway-roles"), "agent");
    assert_eq!(one("x-gateway-tenant"), "acme");
    assert_eq!(one("x-gateway-key-id"), "bob-1");
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "http");
    assert_eq!(one("x-forwarded-host"), gw.addr);
    assert_ne!(one("x-request-id"), "forged");
    assert_eq!(one("x-custom-thing"), "kept");
    for gone in [
        "x-gateway-anything",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-api-key",
        "transfer-encoding",
    ] {
        assert!(
            values_of(&seen, gone).is_empty(),
            "{gone} reached the backend: {seen:?}"
        );
    }
    // No header the backend sees carries an `_` spelling of a protected name.
    let raw_names: Vec<&String> = echo["headers"].as_object().unwrap().keys().collect();
    assert!(
        raw_names
            .iter()
            .all(|n| !n.contains('_') || *n == "x_custom_thing"),
        "{raw_names:?}"
    );
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/v1/tickets/1");
}

#[test]
fn semicolons_and_reserved_escapes_never_act_as_separators() {
    let (backend, gw, before) = quiet();
    // Tomcat/Spring-style backends strip `;...` before dot segments: each
    // of these would be /api/v1/users/1 (admin only) or alice's tickets.
    for target in [
        "/api/v1/tickets/..;/users/1",
        "/api/v1/tickets/..%3B/users/1",
        "/api/v1/tickets/..%3b/users/1",
        "/api/v1/tickets/%2e%2e%3b/users/1",
        "/api/v1/tickets/%2E%2E;/users/1",
        "/api/v1/tickets/..;/agents/alice/tickets",
        "/api/v1/tickets/..;jsessionid=x/users/1",
        "/api/v1/tickets/1;a=b",
        "/api/v1/tickets/1%3Ba=b",
        "/api/v1/agents/bob;x/tickets",
        "/api/v1/tickets/a%zz",
    ] {
        let (status, body) = get(&gw, target, &[]);
        assert_eq!(
            (status, code(&body)),
            (400, "bad_request"),
            "{target}: {body}"
        );
    }
    // A raw `\` (a separator to some backends) is refused, by the gateway
    // or already by the HTTP parser.
    let (status, _) = get(&gw, "/api/v1/tickets/a\\..\\..\\users\\1", &[]);
    assert_eq!(status, 400);
    assert_untouched(&backend, before);

    // Reserved characters stay encoded (upper-case hex), unreserved ones
    // are decoded: the backend sees the path the route was matched on.
    for (target, expected) in [
        (
            "/api/v1/tickets/a%3fb%23c%2C",
            "/api/v1/tickets/a%3Fb%23c%2C",
        ),
        ("/api/v1/tickets/%2e%2e%3F/1", "/api/v1/tickets/..%3F/1"),
        ("/api/v1/tickets/x/%2E%2e/%7e1", "/api/v1/tickets/~1"),
        ("/api/v1/tickets/100%25", "/api/v1/tickets/100%25"),
        ("/api/v1/tickets/a%40b?q=%2F", "/api/v1/tickets/a%40b"),
    ] {
        let (status, echo) = get(&gw, target, &[]);
        assert_eq!(status, 200, "{target}: {echo}");
        assert_eq!(echo["path"], expected, "{target}");
    }
    // Dot segments still resolve before authorisation.
    let (status, body) = get(&gw, "/api/v1/tickets/%2e%2e/users/1", &[]);
    assert_eq!((status, code(&body)), (403, "forbidden"));
}

#[test]
fn max_uri_bytes_has_a_ceiling_and_long_rewrites_reach_the_backend_exactly() {
    // The probe needed max_uri_bytes >= ~21,900: refused now.
    let (exit, out, err) = ConfigBuilder::support(&["127.0.0.1:1"])
        .max_uri_bytes(65000)
        .check();
    assert_eq!(exit, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("server.max_uri_bytes: must be at most 16384"),
        "{out}{err}"
    );

    // At the ceiling, the worst re-encoding (`"` → `%22`, 3x) still fits:
    // the normalised path goes upstream, never the raw one.
    let backend = Backend::start();
    let gw = ConfigBuilder::support(&[&backend.addr])
        .max_uri_bytes(16384)
        .max_header_bytes(65536)
        .start();
    let quotes = "\"".repeat(16_000);
    let target = format!("/api/v1/users/1/%2e%2e/%2e%2e/tickets/{quotes}");
    let (status, echo) = get(&gw, &target, &[]);
    assert_eq!(status, 200, "{echo}");
    assert_eq!(
        echo["path"].as_str().unwrap(),
        format!("/api/v1/tickets/{}", "%22".repeat(16_000))
    );
    let (status, body) = get(&gw, &format!("/api/v1/tickets/{}", "a".repeat(16_400)), &[]);
    assert_eq!((status, code(&body)), (414, "uri_too_long"));
}

#[test]
fn the_backend_receives_exactly_the_normalised_path_the_route_matched() {
    let backend = Backend::start();
    let gw = ConfigBuilder::support(&[&backend.addr]).start();
    // Each listed piece as likely as the generated one.
    let listed = [
        "..", ".", "%2e%2E", ".%2e", ";", "%3B", "%2F", "%5c", "%3f", "%23", "%25", "%2541", "%41",
        "%20", "\"", "%C3%A9", "%zz", "tickets", "users",
    ];
    let piece = prop_oneof![
        listed.len() as u32 => prop::sample::select(listed.to_vec()).prop_map(str::to_string),
        1 => "[a-z0-9:@!$&'()*+,=~_-]{1,4}",
    ];
    let segment = prop::collection::vec(piece, 0..3).prop_map(|p| p.concat());
    let path = (
        prop::collection::vec(segment, 0..6),
        any::<bool>(),
        prop_oneof![Just("/api/v1/tickets/"), Just("/api/v1/agents/bob/")],
    )
        .prop_map(|(segs, slash, prefix)| {
            let mut p = format!("{prefix}{}", segs.join("/"));
            if slash {
                p.push('/');
            }
            p
        });
    let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(&path, |target| {
            let (status, echo) = get(&gw, &target, &[]);
            match tollgate::router::normalize(&target) {
                Err(_) => prop_assert_eq!(status, 400, "{} -> {}", target, echo),
                Ok(normal) => {
                    if status == 200 {
                        prop_assert_eq!(
                            echo["path"].as_str().unwrap_or("?"),
                            normal.encoded.as_str(),
                            "{}",
                            target
                        );
                    } else {
                        prop_assert!(
                            [403, 404, 405, 429].contains(&status),
                            "{target}: {status} {echo}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn connection_naming_a_framing_header_is_refused() {
    let framing = [
        "content-length",
        "close, Content-Length",
        "Transfer-Encoding",
        "keep-alive, host",
        "content_length",
    ];
    let (backend, gw, before) = quiet();
    for connection in framing {
        let raw = format!(
            "POST /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nConnection: {connection}\r\nContent-Length: 5\r\n\r\nhello"
        );
        let answer = raw_request(&gw.addr, raw.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{connection}: {answer}");
        assert!(answer.contains("\"bad_request\""), "{answer}");
    }
    assert_untouched(&backend, before);
}

#[test]
fn client_methods_never_become_metric_labels() {
    let backend = Backend::start();
    let gw = ConfigBuilder::support(&[&backend.addr]).start();
    let long = "Z".repeat(300);
    for method in ["ZZRT12345", "ZZRT67890", long.as_str(), "get"] {
        let (status, _) = send(&gw.addr, method, "/nope", &[]);
        assert!(status >= 400, "{method}: {status}");
    }
    let (status, _) = get(&gw, "/api/v1/tickets/1", &[]);
    assert_eq!(status, 200);
    // Metrics are recorded in the logging phase, after the answer is sent.
    let metrics = poll_until(
        Duration::from_secs(5),
        || gw.metrics(),
        |m| m.contains("method=\"GET\""),
    );
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("method=\"other\"")),
        "{requests:?}"
    );
    assert!(requests.iter().any(|l| l.contains("method=\"GET\"")));
    for line in &requests {
        assert!(
            !line.contains("ZZRT") && !line.contains("ZZZZ") && !line.contains("method=\"get\""),
            "{line}"
        );
        let route = line
            .split("route=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(["none", "tickets"].contains(&route), "{line}");
    }
}

#[test]
fn authorization_without_the_bearer_scheme_is_refused() {
    let (backend, gw, before) = quiet();
    for value in [
        BOB_KEY.to_string(),
        format!("Basic {BOB_KEY}"),
        format!("Token {BOB_KEY}"),
        "Bearer".to_string(),
    ] {
        let (status, body) = send(
            &gw.addr,
            "GET",
            "/api/v1/tickets/1",
            &[("Authorization", &value)],
        );
        assert_eq!((status, code(&body)), (401, "invalid_api_key"), "{value}");
    }
    assert_untouched(&backend, before);
    let bearer = format!("Bearer {BOB_KEY}");
    let (status, echo) = send(
        &gw.addr,
        "GET",
        "/api/v1/tickets/1",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-gateway-user"], "bob");
    assert!(echo["headers"].get("authorization").is_none());
}

#[test]
fn api_key_identities_that_would_forge_a_list_header_are_config_errors() {
    let forged = [
        TestKey {
            id: "forged-1",
            key: "forged-key-1",
            user: "bob,carol",
            roles: &["agent", "x,admin"],
            ..BOB
        },
        TestKey {
            id: "forged-2",
            key: "forged-key-2",
            user: "bob\x07",
            tenant: "acme\r\nx",
            ..BOB
        },
    ];
    assert_check_reports(
        ConfigBuilder::support(&["127.0.0.1:1"])
            .keys_first(&forged)
            .check(),
        &[
            "auth.api_keys[0].user: must not contain a comma",
            "auth.api_keys[0].roles[1]: must not contain a comma",
            "auth.api_keys[1].user: must not contain a control character",
            "auth.api_keys[1].tenant: must not contain a control character",
        ],
    );
}

#[test]
fn admin_token_guesses_are_locked_out_per_ip() {
    let backend = Backend::start();
    let gw = ConfigBuilder::support(&[&backend.addr])
        .failed_auth_per_ip_per_minute(3)
        .start();
    let admin = |token: &str| {
        client()
            .get(gw.admin_url("/admin/config"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    for guess in ["guess-1", "guess-2", "guess-3"] {
        assert_eq!(admin(guess).status(), 401);
    }
    // Locked out: even the right token is refused, so a guess that would
    // have been right cannot be confirmed.
    let resp = admin(ADMIN_TOKEN);
    assert_eq!(resp.status(), 429);
    let retry = retry_after(&resp);
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, code, _) = error_code(resp);
    assert_eq!(code, "rate_limited");
    // Health and metrics need no token and stay open; the proxy listener
    // keeps its own count.
    assert_eq!(
        client()
            .get(gw.admin_url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(get(&gw, "/api/v1/tickets/1", &[]).0, 200);
}
