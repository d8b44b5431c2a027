//! Per-key policy (DESIGN §3 `auth.api_keys[]`, issue 24): a key's model
//! allow-list (403 `model_not_allowed`, on every LLM API, fallbacks outside
//! it skipped), its own request rate (429 with the RateLimit headers), its
//! own token/USD budgets and `scope: key` budgets, shadow mode, and
//! `/admin/usage?key=`. Real gateway processes over TCP, mock LLM backends
//! and, for the shared counters, two instances on one real redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A second key of bob's: the key's counters are its own, not its user's.
const BOB_SPARE_KEY: &str = "test-key-bob-spare";
const BOB_SPARE: TestKey = TestKey {
    id: "bob-2",
    key: BOB_SPARE_KEY,
    ..BOB
};

/// `llm_apis` (bob and alice, every LLM API, fallbacks on `backup`) plus a
/// support route on `llm` and bob's spare key.
fn config(llm: &Backend, backup: &Backend) -> ConfigBuilder {
    ConfigBuilder::translating(&llm.addr, &backup.addr)
        .keys(&[BOB_SPARE])
        .pool("support", Pool::new(&[&llm.addr]).timeouts(300, 2000))
        .route(Route::http("tickets", "/api/v1/tickets/**", &["GET"], "support").roles(&["agent"]))
}

/// Fresh `llm` and `backup` backends (they stop when dropped) and `config`
/// on them, bob's key with the policy fields `bob`.
fn config_with_bob(bob: Value) -> (Backend, Backend, ConfigBuilder) {
    let (llm, backup) = (Backend::start(), Backend::start());
    let config = config(&llm, &backup).key_fields("bob-1", bob);
    (llm, backup, config)
}

fn usage_of_key(gw: &Gateway, key: &str) -> reqwest::blocking::Response {
    gw.admin_get(&format!("/admin/usage?key={key}"))
}

/// Fixed windows are UTC minutes: start a rate test early in one.
fn away_from_minute_edge() {
    let second = unix_millis() / 1000 % 60;
    if second >= 45 {
        std::thread::sleep(Duration::from_secs(61 - second));
    }
}

#[test]
fn an_allow_list_refuses_other_models_on_every_api_and_skips_fallbacks_outside_it() {
    let (llm, backup, config) =
        config_with_bob(json!({"models": ["gpt", "claude-via-chat", "gpt-first"]}));
    let gw = config
        .key_fields("alice-1", json!({"models": ["gpt-first", "claude-second"]}))
        .start();
    let hello = |model: &str| user_says(model, "hello");
    assert_eq!(chat(&gw, BOB_KEY, &hello("gpt"), &[]).status(), 200);
    // Translated to Anthropic upstream: listed, served.
    assert_eq!(
        chat(&gw, BOB_KEY, &hello("claude-via-chat"), &[]).status(),
        200
    );
    let body = assert_error!(
        chat(&gw, BOB_KEY, &hello("gemini-via-chat"), &[]),
        403,
        "model_not_allowed"
    );
    assert!(body.to_string().contains("gemini-via-chat"), "{body}");
    // The other APIs: Anthropic Messages (its own error shape), Responses,
    // embeddings.
    let messages = json!({"model": "claude", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}]});
    let resp = post(&gw, "/v1/messages", BOB_KEY, &messages, &[]);
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert_error!(
        post(
            &gw,
            "/v1/responses",
            BOB_KEY,
            &json!({"model": "gpt-backup", "input": "hi"}),
            &[]
        ),
        403,
        "model_not_allowed"
    );
    assert_error!(
        post(
            &gw,
            "/v1/embeddings",
            BOB_KEY,
            &json!({"model": "embed", "input": "hi"}),
            &[]
        ),
        403,
        "model_not_allowed"
    );
    // Alice's key has no list of bob's: her calls are unaffected by his.
    assert_eq!(
        chat(&gw, BOB_SPARE_KEY, &hello("gemini-via-chat"), &[]).status(),
        200
    );

    // gpt-first falls back to claude-second (another API, on `backup`)
    // when its pool answers 5xx. Alice lists both: served by the fallback.
    llm.force_status(500);
    // (`served` counts every request, its own included.)
    let before = backup.served();
    assert_eq!(chat(&gw, ALICE_KEY, &hello("gpt-first"), &[]).status(), 200);
    assert_eq!(backup.served(), before + 2);
    // Bob lists only gpt-first: its fallback is not his to use.
    let before = backup.served();
    let resp = chat(&gw, BOB_KEY, &hello("gpt-first"), &[]);
    assert_ne!(resp.status(), 200);
    assert_eq!(
        backup.served(),
        before + 1,
        "bob's call reached the fallback"
    );
}

#[test]
fn a_keys_own_rate_refuses_with_headers_apart_from_its_users_other_keys() {
    let (_llm, _backup, config) =
        config_with_bob(json!({"rate_limit": {"requests_per_minute": 3}}));
    let gw = config.start();
    away_from_minute_edge();
    for n in 1..=3 {
        let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
        assert_eq!(resp.status(), 200, "call {n}");
        // The key's counter is the tighter: its headers are sent.
        assert_eq!(resp.headers()["ratelimit-policy"], "\"key\";q=3;w=60");
        let left = 3 - n;
        assert!(
            resp.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!("\"key\";r={left};t=")),
            "{:?}",
            resp.headers()["ratelimit"]
        );
    }
    let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
    assert!(retry_after(&resp) >= 1);
    assert!(resp.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"key\";r=0;t="));
    let body = assert_error!(resp, 429, "rate_limited");
    assert_message_has(&body, "for key bob-1");
    // LLM calls count on the same counter.
    assert_error!(
        chat(&gw, BOB_KEY, &user_says("gpt", "hi"), &[]),
        429,
        "rate_limited"
    );
    // Bob's other key is not limited by this one's rate; its answers carry
    // the user's counter.
    let resp = gw.get("/api/v1/tickets/1", BOB_SPARE_KEY);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["ratelimit-policy"],
        "\"default\";q=100000;w=60"
    );
}

#[test]
fn shadow_key_limits_serve_count_and_log() {
    let (_llm, _backup, config) = config_with_bob(json!({
        "rate_limit": {"requests_per_minute": 1, "enforce": false},
        "budgets": {"tokens_per_day": 30, "enforce": false},
    }));
    let gw = config.start();
    away_from_minute_edge();
    for n in 1..=3 {
        let resp = chat(&gw, BOB_KEY, &user_says("gpt", "hello"), &[]);
        assert_eq!(resp.status(), 200, "call {n}");
        // A shadow limit sends no headers of its own.
        assert_ne!(resp.headers()["ratelimit-policy"], "\"key\";q=1;w=60");
    }
    assert_eq!(gw.shadow_refusals("rate_limited"), 2.0);
    assert!(gw.shadow_refusals("token_budget_exceeded") >= 1.0);
    assert_eq!(
        gw.metric("tollgate_rejections_total{code=\"rate_limited\"}"),
        0.0
    );
    // Counted all the same.
    let usage: Value = poll_until(
        Duration::from_secs(5),
        || usage_of_key(&gw, "bob-1").json::<Value>().unwrap(),
        |u| u["tokens_day"].as_u64().unwrap_or(0) > 30,
    );
    assert_eq!(usage["scope"], "key", "{usage}");
    assert_eq!(usage["limits"]["tokens_per_day"], 30, "{usage}");
}

/// Calls `gpt` as `key` on `gws` in turn (100 completion tokens each)
/// until one is refused; its answer and how many were served.
fn spend_until_refused(gws: &[&Gateway], key: &str) -> (reqwest::blocking::Response, usize) {
    let full = [("x-mock-completion-tokens", "100")];
    for n in 0..60 {
        let gw = gws[n % gws.len()];
        let resp = chat(gw, key, &user_says("gpt", "Where is my order?"), &full);
        if resp.status() != 200 {
            return (resp, n);
        }
        // Settlement runs just after the answer: let it land.
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("never refused");
}

#[test]
fn a_keys_token_budget_and_scope_key_usd_budget_refuse_that_key_only() {
    // scope: key gives every key $0.001 a month (gpt: ~$0.00006 a call);
    // bob's own token budget replaces none of its fields but adds a day's.
    let (_llm, _backup, config) = config_with_bob(json!({"budgets": {"tokens_per_day": 500}}));
    let gw = config
        .budget(Budget::scope("key").usd_per_month(0.001))
        .start();
    let (resp, served) = spend_until_refused(&[&gw], BOB_KEY);
    let body = assert_error!(resp, 429, "token_budget_exceeded");
    assert_message_has(&body, "for key bob-1");
    assert!((2..=5).contains(&served), "{served} served");
    // The key's usage: its windows, its limits.
    let usage: Value = usage_of_key(&gw, "bob-1").json().unwrap();
    assert_eq!(usage["id"], "bob-1");
    assert_eq!(usage["limits"]["tokens_per_day"], 500);
    assert_eq!(usage["limits"]["usd_per_month"], "0.001000");
    assert!(usage["tokens_day"].as_u64().unwrap() <= 500, "{usage}");
    // Bob's other key has its own (scope: key) budget: USD runs out first.
    let (resp, served) = spend_until_refused(&[&gw], BOB_SPARE_KEY);
    let body = assert_error!(resp, 429, "usd_budget_exceeded");
    assert_message_has(&body, "for key bob-2");
    assert!(served >= 5, "{served} served");
    // Unknown key: 404; no key at all: 400.
    assert_eq!(usage_of_key(&gw, "nobody").status(), 404);
    assert_eq!(gw.admin_get("/admin/usage").status(), 400);
}

#[test]
fn a_keys_rate_and_budgets_are_shared_by_two_instances_in_redis_mode() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let (_llm, _backup, config) = config_with_bob(json!({
        "rate_limit": {"requests_per_minute": 4},
        "budgets": {"tokens_per_day": 100000},
    }));
    let template = config
        .key_fields(
            "alice-1",
            json!({"budgets": {"tokens_per_day": 600, "usd_per_month": 1.0}}),
        )
        .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
        .redis_timeouts(200, 1000)
        .on_store_error("deny")
        .render();
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));
    away_from_minute_edge();
    // The key's rate: 4 a minute across both, LLM and HTTP routes alike.
    let statuses: Vec<u16> = (0..6)
        .map(|i| {
            let gw = if i % 2 == 0 { &a } else { &b };
            if i < 3 {
                chat(gw, BOB_KEY, &user_says("gpt", "hi"), &[])
                    .status()
                    .as_u16()
            } else {
                gw.get("/api/v1/tickets/1", BOB_KEY).status().as_u16()
            }
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    // Refused calls hold nothing.
    let usage: Value = usage_of_key(&a, "bob-1").json().unwrap();
    assert_eq!(usage["store"], "redis", "{usage}");
    assert_eq!(usage["reserved_tokens"], 0, "{usage}");

    // Alice's key: 600 tokens a day across both instances, never overspent.
    let (resp, served) = spend_until_refused(&[&a, &b], ALICE_KEY);
    assert_error!(resp, 429, "token_budget_exceeded");
    assert!(served >= 2, "{served} served");
    let from_a: Value = usage_of_key(&a, "alice-1").json().unwrap();
    let from_b: Value = usage_of_key(&b, "alice-1").json().unwrap();
    let spent = from_a["tokens_day"].as_u64().unwrap();
    assert!(spent > 0 && spent <= 600, "{from_a}");
    assert_eq!(from_b["tokens_day"].as_u64(), Some(spent), "{from_b}");
    assert!(from_a["micro_usd_month"].as_u64().unwrap() > 0, "{from_a}");
    assert_eq!(from_a["limits"]["usd_per_month"], "1.000000");
    // The other instance refuses too.
    assert_error!(
        chat(&b, ALICE_KEY, &user_says("gpt", "hi"), &[]),
        429,
        "token_budget_exceeded"
    );
}

#[test]
fn check_names_bad_key_policies_with_their_line() {
    let llm = Backend::start();
    let (code, _, err) = config(&llm, &llm)
        .key_fields(
            "bob-1",
            json!({"models": ["gpt", "gtp"], "rate_limit": {"requests_per_minute": 0}}),
        )
        .key_fields(
            "alice-1",
            json!({"budgets": {"tokens_per_day": 0, "usd_per_month": -1.0}}),
        )
        .key_fields("bob-2", json!({"budgets": {"enforce": false}}))
        .budget(Budget::scope("key").usd_per_day(1.0))
        .check();
    assert_eq!(code, 1, "{err}");
    for wanted in [
        "auth.api_keys[0].models[1]: unknown model 'gtp'",
        "auth.api_keys[0].rate_limit.requests_per_minute: must be at least 1",
        "auth.api_keys[1].budgets.tokens_per_day: must be at least 1",
        "auth.api_keys[1].budgets.usd_per_month: must be a non-negative number of USD",
        "auth.api_keys[2].budgets: set tokens_per_day, usd_per_month or both",
        "limits.budgets[1].usd_per_day: only scope conversation has usd_per_day",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(wanted))
            .unwrap_or_else(|| panic!("{wanted} not in:\n{err}"));
        // FILE:LINE:COL before the message.
        let position = line.split("tollgate.yaml:").nth(1).unwrap_or("");
        let mut numbers = position.split(':').take(2).map(str::parse::<u32>);
        assert!(
            matches!((numbers.next(), numbers.next()), (Some(Ok(_)), Some(Ok(_)))),
            "{line}"
        );
    }
    // An unknown field in a key's policy is an error too.
    let (code, _, err) = config(&llm, &llm)
        .key_fields("bob-1", json!({"rate_limit": {"requests_per_hour": 5}}))
        .check();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("requests_per_hour"), "{err}");
    // And a good one passes.
    let (code, _, err) = config(&llm, &llm)
        .key_fields(
            "bob-1",
            json!({"models": ["gpt"], "rate_limit": {"requests_per_minute": 5, "enforce": false},
                   "budgets": {"tokens_per_day": 10, "usd_per_month": 2.5}}),
        )
        .budget(Budget::scope("key").tokens_per_day(1000))
        .section("alerts", "webhooks: [{ url: \"http://127.0.0.1:9/h\", secret_env: HOME, scopes: [key], thresholds: [0.5] }]")
        .check();
    assert_eq!(code, 0, "{err}");
}
