//! Core gateway behaviour over real TCP: a real `tollgate run` process in
//! front of real `tollgate mock-backend` processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn setup() -> (Backend, Gateway) {
    setup_with(|config| config)
}

/// A backend and a gateway on the support config as `change` leaves it.
fn setup_with(change: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> (Backend, Gateway) {
    let backend = Backend::start();
    let gw = change(ConfigBuilder::support(&[&backend.addr])).start();
    (backend, gw)
}

#[test]
fn unauthenticated_requests_get_401_with_challenge() {
    let (_b, gw) = setup();
    let c = client();
    let cases = [
        (None, "missing_credentials"),
        (Some("definitely-not-a-key"), "invalid_api_key"),
        (Some(CAROL_KEY), "invalid_api_key"),
    ];
    for (key, code) in cases {
        let mut req = c.get(gw.url("/api/v1/tickets/1"));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().unwrap();
        let header_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(
            resp.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"tollgate\""
        );
        let (status, got, body) = error_code(resp);
        assert_eq!((status, got.as_str()), (401, code), "{key:?}");
        assert_eq!(body["error"]["request_id"].as_str().unwrap(), header_id);
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    // Bearer form works for API keys too.
    let ok = c
        .get(gw.url("/api/v1/tickets/1"))
        .header("Authorization", format!("Bearer {BOB_KEY}"))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn roles_and_owner_rules() {
    let (_b, gw) = setup();
    let c = client();
    let get = |key: &str, path: &str| c.get(gw.url(path)).header("X-API-Key", key).send().unwrap();

    assert_eq!(get(BOB_KEY, "/api/v1/agents/bob/tickets").status(), 200);
    assert_error!(
        get(BOB_KEY, "/api/v1/agents/alice/tickets"),
        403,
        "forbidden",
        "owner rule"
    );
    assert_error!(
        get(BOB_KEY, "/api/v1/users/7"),
        403,
        "forbidden",
        "role rule"
    );
    assert_eq!(
        get(ROOT_KEY, "/api/v1/agents/alice/tickets").status(),
        200,
        "admin bypass"
    );
    assert_eq!(get(ROOT_KEY, "/api/v1/users/7").status(), 200);
}

#[test]
fn identity_headers_are_trusted_and_spoofs_stripped() {
    let (_b, gw) = setup();
    let spoofs = [
        ("X-Gateway-User", "root"),
        ("X-Gateway-Roles", "admin"),
        ("X-Gateway-Anything", "spoof"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("X-Secret-Hop", "must-not-pass"),
        ("X-Request-Id", "client-id-123"),
    ];
    let resp = gw.get_with("/api/v1/tickets/1?x=1", BOB_KEY, &spoofs);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "client-id-123");
    assert!(resp.headers()["server-timing"]
        .to_str()
        .unwrap()
        .starts_with("gateway;dur="));
    let echo: Value = resp.json().unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-gateway-user"], "bob");
    assert_eq!(h["x-gateway-tenant"], "acme");
    assert_eq!(h["x-gateway-roles"], "agent");
    assert_eq!(h["x-gateway-key-id"], "bob-1");
    assert_eq!(h["x-request-id"], "client-id-123");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.get("x-gateway-anything").is_none());
    assert!(h.get("x-api-key").is_none());
    assert!(h.get("authorization").is_none());
    assert!(h.get("x-secret-hop").is_none());
    assert!(h["traceparent"].as_str().unwrap().starts_with("00-"));
    assert_eq!(echo["path"], "/api/v1/tickets/1");
    assert_eq!(echo["query"], "x=1");
}

/// A GET of `target` as written (HTTP clients normalise dot segments
/// themselves) as the holder of `key`; the whole answer.
fn raw_get(addr: &str, target: &str, key: &str) -> String {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    raw_request(addr, req.as_bytes())
}

#[test]
fn path_traversal_cannot_escape_a_route() {
    let (_b, gw) = setup();
    // Raw requests: HTTP clients normalise dot segments themselves.
    for path in [
        "/api/v1/agents/bob/../../users/1",
        "/api/v1/agents/bob/%2e%2e/%2e%2e/users/1",
        "/api/v1/tickets/../users/1",
    ] {
        let resp = raw_get(&gw.addr, path, BOB_KEY);
        assert!(resp.starts_with("HTTP/1.1 403"), "{path}: {resp}");
        assert!(resp.contains("\"forbidden\""));
    }
    // An admin reaching the normalised path gets it, normalised upstream.
    let resp = raw_get(&gw.addr, "/api/v1/agents/x/../../users/1", ROOT_KEY);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/api/v1/users/1\""), "{resp}");
    // Encoded separators are refused outright.
    let resp = raw_get(&gw.addr, "/api/v1/tickets/a%2f..%2f..%2fusers", BOB_KEY);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[test]
fn request_smuggling_shapes_get_400_and_close() {
    let (backend, gw) = setup();
    let before = backend.served();
    let attempts = [
        format!("POST /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/users/1 HTTP/1.1\r\nHost: x\r\n\r\n"),
        format!("POST /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nContent-Length: 3\r\nContent-Length: 7\r\n\r\nabcdefg"),
    ];
    for req in attempts {
        let resp = raw_request(&gw.addr, req.as_bytes());
        let head = resp
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        // Pingora itself may refuse the second shape before us; both are 400.
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        if resp.contains("\"error\"") {
            assert!(resp.contains("\"bad_request\""), "{resp}");
            assert!(head.contains("connection: close"), "{resp}");
        }
    }
    assert_eq!(
        backend.served(),
        before + 1,
        "nothing but the stats call reached the backend"
    );
}

#[test]
fn not_found_method_not_allowed_and_body_too_large_are_json() {
    let (_b, gw) = setup();
    let c = client();
    let resp = c
        .get(gw.url("/nope"))
        .header("X-API-Key", BOB_KEY)
        .send()
        .unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    let body = assert_error!(resp, 404, "no_route");
    assert!(!body["error"]["request_id"].as_str().unwrap().is_empty());

    let resp = c
        .delete(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .send()
        .unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST, PATCH");
    assert_error!(resp, 405, "method_not_allowed");

    let resp = c
        .post(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .body(vec![b'x'; 5000])
        .send()
        .unwrap();
    assert_error!(resp, 413, "body_too_large");

    // Chunked: no Content-Length up front, counted as it streams.
    let chunk = "x".repeat(3000);
    let req = format!(
        "POST /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let resp = raw_request(&gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"body_too_large\""), "{resp}");

    // Within the limit, a body passes through.
    let resp = c
        .post(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .body("hello")
        .send()
        .unwrap();
    let echo: Value = resp.json().unwrap();
    assert_eq!(echo["body"], "hello");
}

#[test]
fn uri_and_header_limits() {
    let (_b, gw) = setup();
    let long = format!("/api/v1/tickets/{}", "a".repeat(9000));
    let resp = gw.get(&long, BOB_KEY);
    assert_error!(resp, 414, "uri_too_long");
    let resp = client()
        .get(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .header("X-Big", "v".repeat(40_000))
        .send()
        .unwrap();
    assert_error!(resp, 431, "headers_too_large");
}

#[test]
fn round_robin_spreads_over_peers() {
    let a = Backend::start();
    let b = Backend::start();
    let gw = ConfigBuilder::support(&[&a.addr, &b.addr]).start();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let echo: Value = gw.get("/api/v1/tickets/1", BOB_KEY).json().unwrap();
        *seen
            .entry(echo["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 8), "{seen:?}");
}

#[test]
fn failing_health_check_removes_a_peer_and_recovery_restores_it() {
    let a = Backend::start();
    let b = Backend::start();
    let gw = ConfigBuilder::support(&[&a.addr, &b.addr]).start();
    let c = client();
    let backend_of = || -> String {
        let echo: Value = c
            .get(gw.url("/api/v1/tickets/1"))
            .header("X-API-Key", ROOT_KEY)
            .send()
            .unwrap()
            .json()
            .unwrap();
        echo["backend"].as_str().unwrap().to_string()
    };
    b.set_health(false);
    // interval 200 ms × unhealthy_after 2 = 400 ms; allow scheduling slack.
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..10 {
        assert_eq!(
            backend_of(),
            a.addr,
            "unhealthy peer still receives traffic"
        );
    }
    b.set_health(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while Instant::now() < deadline && !back {
        back = (0..4).any(|_| backend_of() == b.addr);
    }
    assert!(back, "recovered peer never received traffic again");
}

#[test]
fn all_peers_down_gives_503_and_connect_failure_502_and_slow_504() {
    let a = Backend::start();
    let gw = ConfigBuilder::support(&[&a.addr]).start();
    a.set_health(false);
    std::thread::sleep(Duration::from_millis(1000));
    let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
    assert!(resp.headers().contains_key("retry-after"));
    assert_error!(resp, 503, "upstream_unavailable");

    // A peer that refuses connections (no health check to hide it).
    let dead = free_addr();
    let gw2 = ConfigBuilder::support(&[&dead])
        .with_pool("support", Pool::no_health_check)
        .start();
    assert_error!(gw2.get("/api/v1/tickets/1", BOB_KEY), 502, "upstream_error");

    // read_ms is 2000: a 3 s answer times out.
    let slow = Backend::start();
    let gw3 = ConfigBuilder::support(&[&slow.addr]).start();
    assert_error!(
        gw3.get_with("/api/v1/tickets/1", BOB_KEY, &[("x-mock-delay-ms", "3000")]),
        504,
        "upstream_timeout"
    );
}

#[test]
fn rate_limit_refuses_the_eleventh_request_per_user() {
    let (_b, gw) = setup();
    let c = client();
    let get = |key: &str| {
        c.get(gw.url("/api/v1/limited/x"))
            .header("X-API-Key", key)
            .send()
            .unwrap()
    };
    for i in 0..10 {
        let resp = get(BOB_KEY);
        assert_eq!(resp.status(), 200, "request {}", i + 1);
        assert_eq!(resp.headers()["ratelimit-policy"], "\"limited\";q=10;w=60");
        let rl = resp.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            rl.starts_with(&format!("\"limited\";r={};t=", 9 - i)),
            "{rl}"
        );
    }
    let resp = get(BOB_KEY);
    let retry = retry_after(&resp);
    assert!((1..=60).contains(&retry));
    assert!(resp.headers().contains_key("ratelimit"));
    assert!(resp.headers().contains_key("ratelimit-policy"));
    let body = assert_error!(resp, 429, "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit");
    // Another user is unaffected.
    assert_eq!(get(ROOT_KEY).status(), 200);
}

#[test]
fn admin_endpoints_and_metrics() {
    let (_b, gw) = setup();
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/healthz")).send().unwrap().status(),
        200
    );
    assert_eq!(c.get(gw.admin_url("/readyz")).send().unwrap().status(), 200);
    c.get(gw.url("/api/v1/tickets/1"))
        .header("X-API-Key", BOB_KEY)
        .send()
        .unwrap();
    // `logging` runs just after the answer is sent: poll briefly.
    let wanted = "tollgate_requests_total{method=\"GET\",route=\"tickets\",status=\"200\"}";
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut metrics = String::new();
    while Instant::now() < deadline && !metrics.contains(wanted) {
        metrics = c
            .get(gw.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
    }
    assert!(
        metrics
            .contains("tollgate_requests_total{method=\"GET\",route=\"tickets\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_upstream_peer_healthy"));
    // /admin needs the token, and never shows digests.
    assert_eq!(
        c.get(gw.admin_url("/admin/config"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let config = c
        .get(gw.admin_url("/admin/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(config.contains("<redacted>"));
    assert!(!config.contains(&sha(BOB_KEY)));
    // The key list is rebuilt from the compiled index (the parsed list is
    // not kept): every key is there, in file order, digests redacted.
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let keys = config["config"]["auth"]["api_keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "{keys:?}");
    assert_eq!(keys[0]["id"], "bob-1", "{keys:?}");
    assert_eq!(keys[0]["user"], "bob");
    assert!(keys.iter().all(|k| k["sha256"] == "<redacted>"), "{keys:?}");
}

#[test]
fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let (_b, gw) = setup();
    for key in [BOB_KEY, "wrong-secret-key-value"] {
        gw.get("/api/v1/tickets/1", key);
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines = gw.access_log();
    let access: Vec<_> = lines.iter().filter(|l| l["log"] == "access").collect();
    assert_eq!(access.len(), 2, "{lines:?}");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["user"], "bob");
    assert_eq!(access[1]["error_code"], "invalid_api_key");
    let audit: Vec<_> = lines.iter().filter(|l| l["log"] == "audit").collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["reason"], "unknown_api_key");
    let output = gw.all_output();
    assert!(!output.contains(BOB_KEY));
    assert!(!output.contains("wrong-secret-key-value"));
}

#[test]
fn stalled_request_body_gets_408() {
    let (_backend, gw) = setup_with(|c| c.body_timeout_ms(500));
    // Announce 10 bytes, send 3, then stall.
    let req = format!(
        "POST /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nContent-Length: 10\r\n\r\nabc"
    );
    let started = Instant::now();
    let resp = raw_request(&gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("\"request_timeout\""), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn consistent_hashing_keeps_a_user_on_one_peer() {
    let a = Backend::start();
    let b = Backend::start();
    let gw = ConfigBuilder::support(&[&a.addr, &b.addr])
        .with_pool("support", |p| p.selection("consistent_hash"))
        .start();
    let backend_for = |key: &str| -> String {
        let echo: Value = gw.get("/api/v1/tickets/1", key).json().unwrap();
        echo["backend"].as_str().unwrap().to_string()
    };
    for key in [BOB_KEY, ALICE_KEY, ROOT_KEY] {
        let first = backend_for(key);
        for _ in 0..8 {
            assert_eq!(
                backend_for(key),
                first,
                "a user's requests stay on one peer"
            );
        }
    }
}

#[test]
fn connections_per_ip_are_capped() {
    use std::io::{Read, Write};
    let (_backend, gw) = setup_with(|c| c.max_connections_per_ip(2));
    let request =
        format!("GET /api/v1/tickets/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\n\r\n");
    // Reads one answer; Err or empty when the gateway closed the connection.
    let ask = |s: &mut std::net::TcpStream| -> String {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        if s.write_all(request.as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 8192];
        match s.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        }
    };
    let mut first = std::net::TcpStream::connect(&gw.addr).unwrap();
    let mut second = std::net::TcpStream::connect(&gw.addr).unwrap();
    assert!(ask(&mut first).starts_with("HTTP/1.1 200"));
    assert!(ask(&mut second).starts_with("HTTP/1.1 200"));
    let mut third = std::net::TcpStream::connect(&gw.addr).unwrap();
    assert_eq!(
        ask(&mut third),
        "",
        "a third keep-alive connection is closed"
    );
    // Both kept-alive connections still work; closing one frees a slot.
    assert!(ask(&mut first).starts_with("HTTP/1.1 200"));
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = std::net::TcpStream::connect(&gw.addr).unwrap();
    assert!(ask(&mut fourth).starts_with("HTTP/1.1 200"));
}

#[test]
fn reload_reports_changes_that_need_a_restart() {
    let (_b, gw) = setup();
    gw.rewrite_config(&ConfigBuilder::support(&[&_b.addr]).threads(1).render());
    let resp = gw.reload();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["generation"], 2);
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .starts_with("server.threads changed"));
    // The rest of the new config is live.
    assert_eq!(gw.get("/api/v1/tickets/1", BOB_KEY).status(), 200);
}

#[test]
fn pid_file_is_written_and_removed_on_stop() {
    let (_backend, mut gw) = setup_with(|c| c.pid_file("{dir}/run/tollgate.pid"));
    let path = gw.dir.path().join("run/tollgate.pid");
    let pid = std::fs::read_to_string(&path).unwrap();
    assert_eq!(pid.trim(), gw.pid().to_string());
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!path.exists());
}
