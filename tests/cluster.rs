//! Cluster mode: two real gateway processes sharing one real `redis-server`
//! (started per test on a free loopback port, `--save '' --appendonly no`).
//! Request limits, token budgets and the stuffing lockout are shared;
//! Redis failures follow `store.on_store_error`; reservations of a killed
//! instance expire. Skipped with a printed reason only when redis-server is
//! not installed (`make test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The config both instances of a test run: a support pool and an LLM pool
/// on `backend`, counters in `redis`, `on_store_error` as given; bob and
/// alice may spend 2,000 tokens a day.
fn config(backend: &Backend, redis: &Redis, on_error: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .keys(&[BOB, ALICE])
        .pool("support", Pool::new(&[&backend.addr]).timeouts(300, 2000))
        .pool("llm", Pool::new(&[&backend.addr]).timeouts(300, 1000))
        .route(
            Route::http("limited", "/api/v1/limited/**", &["GET"], "support")
                .roles(&["agent"])
                .rate_limit(10),
        )
        .route(Route::http("tickets", "/api/v1/tickets/**", &["GET"], "support").roles(&["agent"]))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent"]))
        .route(
            Route::llm("chat-limited", "/openai/limited/chat/completions")
                .roles(&["agent"])
                .rate_limit(4),
        )
        .model(Model::new("m", "llm", 0.15, 0.6, 100))
        .default_rate_limit(100_000)
        .budget(Budget::user().tokens_per_day(2000))
        .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
        .redis_timeouts(50, 100)
        .on_store_error(on_error)
        .access_log("off")
}

fn pair(config: &ConfigBuilder) -> (Gateway, Gateway) {
    let template = config.render();
    (Gateway::start(&template), Gateway::start(&template))
}

/// Redis, a backend and two gateways on `config` of them as `change`
/// leaves it; `None` when redis-server is missing.
fn cluster(
    on_error: &str,
    change: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Option<(Redis, Backend, Gateway, Gateway)> {
    let redis = Redis::start()?;
    let backend = Backend::start();
    let (a, b) = pair(&change(config(&backend, &redis, on_error)));
    Some((redis, backend, a, b))
}

/// A chat call for the model `m`.
fn ask(gw: &Gateway, key: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    chat(gw, key, &chat_body("m", json!({})), headers)
}

/// How many scripts (`EVALSHA`) Redis has run since its statistics were reset.
fn scripts_run(redis: &Redis) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "info", "commandstats"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn reset_redis_stats(redis: &Redis) {
    let status = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "config", "resetstat"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli");
    assert!(status.success());
}

/// Tokens this instance's ledger recorded for `user` (its own calls only).
fn ledger_tokens(gw: &Gateway, user: &str) -> u64 {
    let conn = rusqlite::Connection::open(gw.dir.path().join("usage.db")).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE user_id = ?1",
        [user],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v.unsigned_abs())
    .unwrap_or(0)
}

/// Fixed windows are UTC minutes: start a rate test early in one.
fn away_from_minute_edge() {
    let second = unix_millis() / 1000 % 60;
    if second >= 45 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
}

fn assert_store_errors_counted(gw: &Gateway) {
    let metrics = gw.metrics();
    assert!(
        metrics.contains("tollgate_store_errors_total{store=\"redis\"}"),
        "{metrics}"
    );
}

/// The shared counter and the two ledgers agree, and the budget held.
fn assert_spend_is_shared(a: &Gateway, b: &Gateway, user: &str) {
    // The ledger writer flushes in batches: wait until both sums match.
    let mut last = (0, 0, 0);
    let agreed = eventually(Duration::from_secs(5), || {
        let shared = usage_of(a, user)["tokens_day"].as_u64().unwrap_or(0);
        last = (shared, ledger_tokens(a, user), ledger_tokens(b, user));
        shared > 0 && shared == last.1 + last.2
    });
    assert!(
        agreed,
        "shared {} != ledgers {} + {}",
        last.0, last.1, last.2
    );
    assert!(last.0 <= 2000, "budget overspent: {}", last.0);
    assert!(last.1 > 0 && last.2 > 0, "both instances served: {last:?}");
    let other = usage_of(b, user);
    assert_eq!(other["tokens_day"].as_u64(), Some(last.0));
    assert_eq!(other["store"], "redis");
}

#[test]
fn ten_per_minute_route_admits_ten_across_both_instances() {
    let Some((_redis, _backend, a, b)) = cluster("deny", |c| c) else {
        return;
    };
    away_from_minute_edge();
    let mut admitted = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = gw.get("/api/v1/limited/x", BOB_KEY);
        match resp.status().as_u16() {
            200 => admitted += 1,
            429 => assert_eq!(error_code(resp).1, "rate_limited"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, 10);
}

#[test]
fn an_llm_call_is_admitted_by_its_reservation_and_refusals_keep_their_order() {
    let Some((redis, _backend, a, b)) = cluster("deny", |c| c) else {
        return;
    };
    let path = "/openai/limited/chat/completions";
    let call = r#"{"model":"m","messages":[{"role":"user","content":"Where is my order?"}]}"#;
    away_from_minute_edge();
    // Warm both connections (and load the scripts) on another route; an
    // LLM call there also sets the scopes' markers (a fresh Redis has none:
    // their first reservation rebuilds them from the ledger).
    for gw in [&a, &b] {
        assert_eq!(gw.get("/api/v1/tickets/1", BOB_KEY).status(), 200);
        assert_eq!(
            post_raw(gw, "/v1/chat/completions", BOB_KEY, call).status(),
            200
        );
    }
    reset_redis_stats(&redis);
    let resp = post_raw(&a, path, BOB_KEY, call);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["ratelimit-policy"],
        "\"chat-limited\";q=4;w=60"
    );
    // Two scripts in all: reserve (with the rate count) and settle.
    assert!(eventually(Duration::from_secs(3), || scripts_run(&redis) >= 2));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        scripts_run(&redis),
        2,
        "one call, one reservation and one settlement"
    );

    // The rate is shared: 4 a minute across both instances.
    let statuses: Vec<u16> = (0..5)
        .map(|i| {
            let gw = if i % 2 == 0 { &b } else { &a };
            let resp = post_raw(gw, path, BOB_KEY, call);
            resp.status().as_u16()
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Over its rate, a caller hears 429 before anything about its request.
    for body in ["{not json", r#"{"model":"nope","messages":[]}"#, call] {
        assert_error!(
            post_raw(&b, path, BOB_KEY, body),
            429,
            "rate_limited",
            "{body}"
        );
    }
    // Refused calls hold nothing; the settled ones are billed.
    let usage = usage_of(&a, "bob");
    assert_eq!(usage["reserved_tokens"], 0, "{usage}");
    assert!(usage["tokens_day"].as_u64().unwrap_or(0) > 0, "{usage}");
    // Under the rate, a malformed body is still a 400 (and counted).
    assert_error!(
        post_raw(&a, "/v1/chat/completions", BOB_KEY, "{x"),
        400,
        "invalid_request"
    );
}

#[test]
fn daily_token_budget_is_never_overspent_across_instances() {
    let Some((_redis, _backend, a, b)) = cluster("deny", |c| c) else {
        return;
    };

    // Alternating calls until the shared budget refuses.
    let mut refused = false;
    // ~108 tokens a call (the reservation is ~110): about 18 calls fit.
    let full = [("x-mock-completion-tokens", "100")];
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = ask(gw, BOB_KEY, &full);
        match resp.status().as_u16() {
            200 => {
                // Settlement runs just after the answer: let it land.
                std::thread::sleep(Duration::from_millis(30));
            }
            429 => {
                assert_eq!(error_code(resp).1, "token_budget_exceeded");
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused, "2,000 tokens never ran out");
    assert_spend_is_shared(&a, &b, "bob");

    // 20 concurrent calls, 10 on each instance, for a fresh user.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let gw = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    let slow = [
                        ("x-mock-delay-ms", "200"),
                        ("x-mock-completion-tokens", "100"),
                    ];
                    ask(gw, ALICE_KEY, &slow).status().as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let served = statuses.iter().filter(|s| **s == 200).count();
    // Each call reserves its prompt + 100 output tokens: at most 2,000 / ~110 fit.
    assert!((1..20).contains(&served), "{served} served of 20");
    assert_spend_is_shared(&a, &b, "alice");
}

#[test]
fn stuffing_lockout_on_one_instance_applies_on_the_other() {
    let Some((_redis, _backend, a, b)) = cluster("deny", |c| c.failed_auth_per_ip_per_minute(3))
    else {
        return;
    };
    away_from_minute_edge();
    for _ in 0..3 {
        let resp = a.get("/api/v1/tickets/1", "wrong-key");
        assert_eq!(resp.status(), 401);
    }
    // A valid key, on the other instance: refused all the same.
    let resp = b.get("/api/v1/tickets/1", BOB_KEY);
    assert_error!(resp, 429, "rate_limited");
    // LLM calls too, whatever their body, and they hold nothing.
    for body in [
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "{not json",
    ] {
        let resp = post_raw(&b, "/v1/chat/completions", BOB_KEY, body);
        assert_error!(resp, 429, "rate_limited", "{body}");
    }
    assert_eq!(usage_of(&a, "bob")["reserved_tokens"], 0);
}

#[test]
fn redis_down_with_deny_answers_503_at_once_and_recovers() {
    let Some((mut redis, _backend, a, b)) = cluster("deny", |c| c) else {
        return;
    };
    assert_eq!(a.get("/api/v1/tickets/1", BOB_KEY).status(), 200);

    redis.kill();
    for gw in [&a, &b] {
        for path in ["/api/v1/tickets/1", "/api/v1/limited/1"] {
            let started = Instant::now();
            let resp = gw.get(path, BOB_KEY);
            let elapsed = started.elapsed();
            assert_eq!(resp.headers()["retry-after"], "1");
            assert_error!(resp, 503, "store_unavailable");
            assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
        }
        let llm = ask(gw, BOB_KEY, &[]);
        assert_eq!(error_code(llm).1, "store_unavailable");
        // Readiness is not a store probe.
        let ready = client().get(gw.admin_url("/readyz")).send().unwrap();
        assert_eq!(ready.status(), 200);
    }
    assert_store_errors_counted(&a);

    redis.restart();

    let back = eventually(Duration::from_secs(2), || {
        a.get("/api/v1/tickets/1", BOB_KEY).status() == 200
            && b.get("/api/v1/tickets/1", BOB_KEY).status() == 200
    });
    assert!(back, "not serving 2 s after redis returned");
    // Shared again: the remaining count falls across instances.
    let remaining = |gw: &Gateway| -> String {
        let resp = gw.get("/api/v1/limited/1", BOB_KEY);
        assert_eq!(resp.status(), 200);
        resp.headers()["ratelimit"].to_str().unwrap().to_string()
    };
    away_from_minute_edge();
    let first = remaining(&a);
    assert!(first.starts_with("\"limited\";r=9;"), "{first}");
    let second = remaining(&b);
    assert!(second.starts_with("\"limited\";r=8;"), "{second}");
}

#[test]
fn redis_down_with_allow_serves_and_counts_locally_then_shares_again() {
    let Some((mut redis, _backend, a, b)) = cluster("allow", |c| c) else {
        return;
    };
    assert_eq!(ask(&a, BOB_KEY, &[]).status(), 200);
    assert_eq!(usage_of(&b, "bob")["store"], "redis");

    redis.kill();
    for gw in [&a, &b] {
        assert_eq!(gw.get("/api/v1/tickets/1", BOB_KEY).status(), 200);
        assert_eq!(ask(gw, BOB_KEY, &[]).status(), 200);
    }
    let local = usage_of(&a, "bob");
    assert_eq!(local["store"], "local");
    assert!(local["tokens_day"].as_u64().unwrap_or(0) > 0, "{local}");
    assert_store_errors_counted(&b);

    redis.restart();
    let shared = eventually(Duration::from_secs(2), || {
        usage_of(&a, "bob")["store"] == "redis" && usage_of(&b, "bob")["store"] == "redis"
    });
    assert!(shared, "redis not used again 2 s after it returned");
}

#[test]
fn reservation_of_a_killed_instance_expires() {
    let Some((_redis, _backend, mut a, b)) = cluster("deny", |c| c) else {
        return;
    };
    let url = a.url("/v1/chat/completions");
    // A slow call on `a`; `a` is killed while it is in flight.
    let call = std::thread::spawn(move || {
        client()
            .post(url)
            .header("X-API-Key", BOB_KEY)
            .header("x-mock-delay-ms", "900")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .map(|r| r.status().as_u16())
            .ok()
    });
    let held = eventually(Duration::from_secs(5), || {
        usage_of(&b, "bob")["reserved_tokens"].as_u64().unwrap_or(0) > 0
    });
    assert!(held, "the reservation never showed on the other instance");
    let reserved_at = Instant::now();
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(5));
    let _ = call.join();
    // Nobody settles it now: still held a moment later…
    std::thread::sleep(Duration::from_millis(500));
    assert!(usage_of(&b, "bob")["reserved_tokens"].as_u64().unwrap_or(0) > 0);
    // …and gone once its hold (connect 300 + read 1000 ms + 5 s margin) passed.
    let hold = Duration::from_millis(6_300);
    std::thread::sleep((hold + Duration::from_secs(1)).saturating_sub(reserved_at.elapsed()));
    let after = usage_of(&b, "bob");
    assert_eq!(after["reserved_tokens"].as_u64(), Some(0), "{after}");
    // And the budget it held is usable again.
    assert_eq!(ask(&b, BOB_KEY, &[]).status(), 200);
}

#[test]
fn check_accepts_redis_and_rejects_bad_store_values_with_their_line() {
    let (code, _, stderr) = ConfigBuilder::new()
        .redis("rediss://cache.internal:6380/1")
        .redis_prefix("tg-prod:")
        .redis_timeouts(50, 100)
        .on_store_error("allow")
        .check();
    assert_eq!(code, 0, "{stderr}");
    // The positions are the point here: the broken file stays literal.
    let bad = fill_placeholders(
        r#"
server: { listen: ["{listen}"], admin_listen: "{admin}" }
store:
  kind: redis
  path: "{dir}/usage.db"
  redis_url: "redis://:hunter2@127.0.0.1:6379/0"
  redis_prefix: "{tg}:"
  redis_timeouts: { connect_ms: 0, command_ms: 100 }
"#,
    );
    let (code, stdout, stderr) = run_check(&bad);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, 1, "{out}");
    for (line, field) in [
        (6, "store.redis_url"),
        (7, "store.redis_prefix"),
        (8, "store.redis_timeouts.connect_ms"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!(":{line}:")) && l.contains(field)),
            "no {field} at line {line}:\n{out}"
        );
    }
    assert!(!out.contains("hunter2"), "the password was echoed:\n{out}");
}

#[test]
fn reload_warns_that_a_store_change_needs_a_restart() {
    let Some(redis) = Redis::start() else { return };
    let backend = Backend::start();
    let config = config(&backend, &redis, "deny");
    let gw = config.start();
    let moved = config.redis(&format!("redis://127.0.0.1:{}/0", free_port()));
    gw.rewrite_config(&moved.render());
    let resp = gw.reload();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    let warnings = body["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with("store changed"))),
        "{body}"
    );
    // Still counting in the Redis it started with.
    assert_eq!(gw.get("/api/v1/tickets/1", BOB_KEY).status(), 200);
    assert_eq!(usage_of(&gw, "bob")["store"], "redis");
}

#[test]
fn rediss_with_a_password_from_a_file() {
    let Some(redis) = Redis::start_tls("s3cret-pass") else {
        return;
    };
    let backend = Backend::start();
    // The gateway verifies Redis with the system trust store; here the
    // fixtures' CA. Every test runs in its own process under nextest.
    std::env::set_var(
        "SSL_CERT_FILE",
        format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR")),
    );
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis.pass");
    std::fs::write(&password_file, "s3cret-pass\n").unwrap();
    let template = config(&backend, &redis, "deny")
        .redis(&format!("rediss://localhost:{}/0", redis.port))
        // A TLS handshake of a debug build on a busy machine exceeds 50 ms.
        .redis_timeouts(3000, 1000)
        .redis_password_file(&password_file.display().to_string())
        .render();
    let gw = Gateway::start(&template);
    for _ in 0..3 {
        let status = gw.get("/api/v1/limited/1", BOB_KEY).status();
        assert_eq!(status, 200, "{}", gw.all_output());
    }
    let usage = usage_of(&gw, "bob");
    assert_eq!(usage["store"], "redis", "{usage}");
    // A wrong password is a store failure: deny answers 503.
    std::fs::write(&password_file, "wrong\n").unwrap();
    let wrong = Gateway::start(&template);
    assert_error!(
        wrong.get("/api/v1/tickets/1", BOB_KEY),
        503,
        "store_unavailable"
    );
}
