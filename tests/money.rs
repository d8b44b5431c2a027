//! Money controls (issue 27) against the real gateway: a call's
//! conversation id (attribution) in the ledger, the access log and the
//! reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::llm::*;
use common::postgres::Postgres;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONVERSATION: &str = "X-Conversation-Id";

/// bob (acme) and alice (acme) and root (ops) on one chat route, model
/// `m` priced 0.15/0.60 per Mtok.
fn money(llm: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .keys(&[BOB, ALICE, ROOT_OPS])
        .pool("llm", Pool::new(&[llm]).timeouts(300, 5000))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent", "admin"]))
        .route(
            Route::llm("messages", "/v1/messages")
                .api("anthropic_messages")
                .roles(&["agent", "admin"]),
        )
        .model(Model::new("m", "llm", 0.15, 0.60, 100))
        .default_rate_limit(100_000)
}

fn chat_in(gw: &Gateway, key: &str, conversation: Option<&str>) -> reqwest::blocking::Response {
    let headers: Vec<(&str, &str)> = conversation
        .map(|c| (CONVERSATION, c))
        .into_iter()
        .collect();
    chat(gw, key, &chat_body("m", json!({})), &headers)
}

/// (conversation id, tenant, micro-USD) of every row of the gateway's ledger, in order.
fn ledger_conversations(gw: &Gateway) -> Vec<(Option<String>, String, i64)> {
    conversations_at(&gw.dir.path().join("usage.db"))
}

fn conversations_at(path: &std::path::Path) -> Vec<(Option<String>, String, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT conversation_id, tenant_id, micro_usd FROM usage ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn micro(usd: &str) -> i64 {
    let (whole, frac) = usd.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 1_000_000 + frac.parse::<i64>().unwrap()
}

/// Report rows as (tenant, conversation) -> (calls, micro-USD).
fn by_conversation(rows: &[Value]) -> BTreeMap<(String, String), (i64, i64)> {
    rows.iter()
        .map(|r| {
            (
                (
                    r["tenant"].as_str().unwrap().to_string(),
                    r["conversation"].as_str().unwrap().to_string(),
                ),
                (
                    r["calls"].as_i64().unwrap(),
                    micro(r["usd"].as_str().unwrap()),
                ),
            )
        })
        .collect()
}

fn ledger_by_conversation(
    rows: &[(Option<String>, String, i64)],
) -> BTreeMap<(String, String), (i64, i64)> {
    let mut want = BTreeMap::new();
    for (conversation, tenant, usd) in rows {
        let t: &mut (i64, i64) = want
            .entry((tenant.clone(), conversation.clone().unwrap_or_default()))
            .or_default();
        t.0 += 1;
        t.1 += usd;
    }
    want
}

#[test]
fn conversation_ids_reach_the_ledger_the_access_log_and_every_report() {
    let llm = Backend::start();
    let gw = money(&llm.addr).start();
    // Header, body metadata, both (the header wins), none; a hostile id.
    let hostile = "=HYPERLINK(\"http://evil.test\")";
    assert_eq!(chat_in(&gw, BOB_KEY, Some("c-1")).status(), 200);
    assert_eq!(chat_in(&gw, BOB_KEY, Some("c-1")).status(), 200);
    let in_body = chat_body("m", json!({"metadata": {"conversation_id": "c-2"}}));
    assert_eq!(chat(&gw, ALICE_KEY, &in_body, &[]).status(), 200);
    assert_eq!(
        chat(&gw, ALICE_KEY, &in_body, &[(CONVERSATION, "c-1")]).status(),
        200
    );
    assert_eq!(chat_in(&gw, ROOT_KEY, Some("c-1")).status(), 200);
    assert_eq!(chat_in(&gw, BOB_KEY, None).status(), 200);
    assert_eq!(chat_in(&gw, BOB_KEY, Some(hostile)).status(), 200);
    rows_eventually(&gw, 7);
    let ledger = ledger_conversations(&gw);
    let ids: Vec<Option<&str>> = ledger.iter().map(|r| r.0.as_deref()).collect();
    assert_eq!(
        ids,
        [
            Some("c-1"),
            Some("c-1"),
            Some("c-2"),
            Some("c-1"),
            Some("c-1"),
            None,
            Some(hostile)
        ]
    );

    // The access log names it on LLM lines that had one.
    let lines = poll_until(Duration::from_secs(5), || gw.access_log(), |l| l.len() >= 7);
    let logged: Vec<Option<&str>> = lines
        .iter()
        .filter(|l| l["route"] == "chat")
        .map(|l| l["conversation"].as_str())
        .collect();
    assert_eq!(logged, ids);

    // The report by conversation equals the ledger: acme's c-1 and ops'
    // c-1 are two groups; calls without one are the "" group.
    let body: Value = report(&gw, "tenant,conversation", "json").json().unwrap();
    assert_eq!(body["group_by"], json!(["tenant", "conversation"]));
    let got = by_conversation(body["rows"].as_array().unwrap());
    assert_eq!(got, ledger_by_conversation(&ledger));
    assert_eq!(got[&("acme".to_string(), "c-1".to_string())].0, 3);
    assert_eq!(got[&("ops".to_string(), "c-1".to_string())].0, 1);
    // Biggest spender first.
    let usd: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| micro(r["usd"].as_str().unwrap()))
        .collect();
    assert!(usd.windows(2).all(|w| w[0] >= w[1]), "{usd:?}");

    // CSV: the hostile id cannot run as a formula.
    let csv = report(&gw, "conversation", "csv").text().unwrap();
    assert!(csv.starts_with("conversation,calls,"), "{csv}");
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://evil.test\"\")\""),
        "{csv}"
    );

    // `tollgate usage --group-by conversation` reads the same ledger.
    let cli = usage_cli_today(&gw.config_path, "tenant,conversation");
    assert_eq!(cli["rows"], body["rows"]);

    // Grouped with other keys too.
    let body: Value = report(&gw, "user,conversation,model", "json")
        .json()
        .unwrap();
    let bob_c1 = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == "bob" && r["conversation"] == "c-1")
        .cloned()
        .unwrap();
    assert_eq!(bob_c1["calls"], 2);
    assert_eq!(bob_c1["model"], "m");
}

#[test]
fn a_bad_conversation_id_is_a_400_naming_it() {
    let llm = Backend::start();
    let gw = money(&llm.addr).start();
    let long = "x".repeat(129);
    let refused = |resp: reqwest::blocking::Response, names: &str| {
        let body = assert_error!(resp, 400, "invalid_request");
        let message = body["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(names), "{message}");
    };
    refused(
        chat_in(&gw, BOB_KEY, Some(&long)),
        "x-conversation-id header",
    );
    let raw = client()
        .post(gw.url("/v1/chat/completions"))
        .header("X-API-Key", BOB_KEY)
        .header(
            CONVERSATION,
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .json(&chat_body("m", json!({})))
        .send()
        .unwrap();
    refused(raw, "x-conversation-id header");
    for bad in [
        json!(42),
        json!("bell\u{7}"),
        json!(""),
        json!("é".repeat(65)),
    ] {
        let body = chat_body("m", json!({"metadata": {"conversation_id": bad}}));
        refused(chat(&gw, BOB_KEY, &body, &[]), "metadata.conversation_id");
    }
    // Exactly 128 bytes is fine; nothing refused reached the ledger.
    assert_eq!(chat_in(&gw, BOB_KEY, Some(&"x".repeat(128))).status(), 200);
    assert_eq!(rows_eventually(&gw, 1).len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rows(&gw).len(), 1);
}

/// A one-shot upstream that records the body it got and answers an
/// Anthropic message.
fn recording_upstream() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            while let Some((_, body)) = read_request(&mut reader) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                let answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
                    "model": "m", "content": [{"type": "text", "text": "hi"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 5, "output_tokens": 1}})
                .to_string();
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
            }
        }
    });
    (addr, seen)
}

#[test]
fn the_conversation_field_never_goes_upstream() {
    let (upstream, seen) = recording_upstream();
    let gw = money(&upstream).start();
    let body = json!({"model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": "u-7", "conversation_id": "ticket-42"}});
    let resp = post(&gw, "/v1/messages", BOB_KEY, &body, &[]);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let only = json!({"model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"conversation_id": "ticket-42"}});
    assert_eq!(post(&gw, "/v1/messages", BOB_KEY, &only, &[]).status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // Anthropic refuses unknown metadata fields: only the client's own stay.
    assert_eq!(seen[0]["metadata"], json!({"user_id": "u-7"}));
    assert!(seen[1].get("metadata").is_none(), "{}", seen[1]);
    rows_eventually(&gw, 2);
    let ids: Vec<Option<String>> = ledger_conversations(&gw).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, [Some("ticket-42".into()), Some("ticket-42".into())]);
}

#[test]
fn a_ledger_of_the_previous_schema_gains_the_conversation_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    // Schema 3, as the previous release left it (no conversation_id).
    create_ledger(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX usage_conversation_time;
             ALTER TABLE usage DROP COLUMN conversation_id;
             ALTER TABLE spool DROP COLUMN conversation_id;
             PRAGMA user_version = 3;
             INSERT INTO usage (time_ms, request_id, user_id, tenant_id, key_id, route, model,
                 upstream_model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
                 micro_usd, status, estimated) VALUES
                 (1, 'old', 'bob', 'acme', 'k', 'chat', 'm', 'm', 1, 1, 0, 0, 5, 200, 0);",
        )
        .unwrap();
    }
    let llm = Backend::start();
    let gw = money(&llm.addr)
        .store_path(&path.display().to_string())
        .start();
    assert_eq!(chat_in(&gw, BOB_KEY, Some("c-9")).status(), 200);
    let rows = poll_until(
        Duration::from_secs(5),
        || conversations_at(&path),
        |r| r.len() >= 2,
    );
    assert_eq!(rows[0].0, None);
    assert_eq!(rows[1].0.as_deref(), Some("c-9"));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, tollgate::ledger::schema::SCHEMA_VERSION);
}

#[test]
fn postgres_ledger_keeps_conversations_and_reports_them() {
    let Some(pg) = Postgres::start() else {
        return skipped("PostgreSQL is not installed");
    };
    let llm = Backend::start();
    let gw = money(&llm.addr)
        .section(
            "ledger",
            &format!("kind: postgres\npostgres_url: \"{}\"", pg.url()),
        )
        .start();
    for (key, c) in [
        (BOB_KEY, "c-1"),
        (BOB_KEY, "c-1"),
        (ALICE_KEY, "c-2"),
        (ROOT_KEY, "c-1"),
    ] {
        assert_eq!(chat_in(&gw, key, Some(c)).status(), 200);
    }
    assert_eq!(chat_in(&gw, BOB_KEY, None).status(), 200);
    assert!(eventually(Duration::from_secs(10), || {
        pg.try_psql("SELECT COUNT(*) FROM usage").ok().as_deref() == Some("5")
    }));
    let body: Value = report(&gw, "tenant,conversation", "json").json().unwrap();
    let got = by_conversation(body["rows"].as_array().unwrap());
    let want: BTreeMap<(String, String), (i64, i64)> = pg
        .psql(
            "SELECT string_agg(tenant_id || '|' || COALESCE(conversation_id, '') || '|' || n || '|' || usd, ';')
             FROM (SELECT tenant_id, conversation_id, COUNT(*) AS n, SUM(micro_usd) AS usd
                   FROM usage GROUP BY 1, 2) g",
        )
        .split(';')
        .map(|row| {
            let f: Vec<&str> = row.split('|').collect();
            (
                (f[0].to_string(), f[1].to_string()),
                (f[2].parse().unwrap(), f[3].parse().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[&("acme".to_string(), "c-1".to_string())].0, 2);
}

/// Where the counters live in a conversation-budget test.
enum Counters {
    Local,
    Redis(common::redis::Redis),
}

impl Counters {
    /// The local store, or a fresh redis-server (None: not installed).
    fn all() -> Vec<Counters> {
        let mut all = vec![Counters::Local];
        all.extend(common::redis::Redis::start().map(Counters::Redis));
        all
    }

    fn apply(&self, builder: ConfigBuilder) -> ConfigBuilder {
        match self {
            Counters::Local => builder,
            Counters::Redis(redis) => builder
                .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
                .redis_timeouts(200, 1000)
                .on_store_error("deny"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Counters::Local => "local",
            Counters::Redis(_) => "redis",
        }
    }
}

/// Runs `test` once per counter store (local, and redis when installed) on
/// a gateway of `config` with that store; `test` gets the store's name, for
/// its messages, and the gateway.
fn on_each_store(config: impl Fn() -> ConfigBuilder, mut test: impl FnMut(&str, &Gateway)) {
    for counters in Counters::all() {
        let gw = counters.apply(config()).start();
        test(counters.name(), &gw);
    }
}

/// Settled (tokens, micro-USD) of one conversation in the ledger.
fn conversation_spend(gw: &Gateway, tenant: &str, conversation: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(gw.dir.path().join("usage.db")).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(micro_usd), 0)
         FROM usage WHERE tenant_id = ?1 AND conversation_id = ?2",
        rusqlite::params![tenant, conversation],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// A model at $1000 per Mtok both ways: a call of ~25 tokens costs ~$0.025
/// and reserves ~$0.13 (its prompt bound plus the 100-token cap).
fn pricey(llm: &str) -> ConfigBuilder {
    money(llm).model(Model::new("pricey", "llm", 1000.0, 1000.0, 100))
}

fn pricey_call(gw: &Gateway, key: &str, conversation: &str) -> reqwest::blocking::Response {
    chat(
        gw,
        key,
        &chat_body("pricey", json!({})),
        &[(CONVERSATION, conversation)],
    )
}

#[test]
fn a_conversation_budget_refuses_the_call_that_would_pass_it() {
    let llm = Backend::start();
    on_each_store(
        || pricey(&llm.addr).budget(Budget::scope("conversation").usd_per_day(0.5)),
        |mode, gw| {
            let mut served = 0;
            let refusal = loop {
                let resp = pricey_call(gw, BOB_KEY, "c-1");
                if resp.status() != 200 {
                    break resp;
                }
                served += 1;
                assert!(served < 40, "{mode}: never refused");
                // Settled before the next call reserves.
                wait_rows(gw, served);
            };
            let retry_after = retry_after(&refusal);
            let body = assert_error!(refusal, 429, "usd_budget_exceeded", "{mode}");
            let message = body["error"]["message"].as_str().unwrap();
            assert_eq!(
                message, "daily budget of $0.50 exhausted for conversation c-1",
                "{mode}"
            );
            assert!((1..=86_400).contains(&retry_after), "{mode}: {retry_after}");
            let (_, spent) = conversation_spend(gw, "acme", "c-1");
            assert!(
                served >= 3 && spent <= 500_000,
                "{mode}: {served} calls, {spent}"
            );
            // Another conversation, the same id in another tenant, and a call
            // without a conversation are not affected.
            assert_eq!(pricey_call(gw, ALICE_KEY, "c-2").status(), 200, "{mode}");
            assert_eq!(pricey_call(gw, ROOT_KEY, "c-1").status(), 200, "{mode}");
            assert_eq!(
                chat(gw, BOB_KEY, &chat_body("pricey", json!({})), &[]).status(),
                200,
                "{mode}"
            );
            // alice in the same tenant and conversation is refused too.
            assert_eq!(pricey_call(gw, ALICE_KEY, "c-1").status(), 429, "{mode}");
        },
    );
}

/// Waits for `n` rows in the gateway's ledger.
fn wait_rows(gw: &Gateway, n: usize) {
    assert!(rows_eventually(gw, n).len() >= n);
}

#[test]
fn twenty_concurrent_calls_in_one_conversation_never_overspend_it() {
    let llm = Backend::start();
    let limit = 1_000;
    on_each_store(
        || money(&llm.addr).budget(Budget::scope("conversation").tokens_per_day(limit)),
        |mode, gw| {
            // Streams paced at 20 ms a token: the 20 calls overlap.
            let body = chat_body("m", json!({"stream": true}));
            let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
                let calls: Vec<_> = (0..20)
                    .map(|i| {
                        let body = &body;
                        s.spawn(move || {
                            let key = if i % 2 == 0 { BOB_KEY } else { ALICE_KEY };
                            let resp = chat(
                                gw,
                                key,
                                body,
                                &[(CONVERSATION, "c-1"), ("x-mock-chunk-delay-ms", "20")],
                            );
                            let status = resp.status().as_u16();
                            (status, resp.text().unwrap_or_default())
                        })
                    })
                    .collect();
                calls.into_iter().map(|c| c.join().unwrap()).collect()
            });
            let served = statuses.iter().filter(|(s, _)| *s == 200).count();
            for (status, text) in &statuses {
                assert!(
                    *status == 200
                        || (*status == 429
                            && text.contains("token_budget_exceeded")
                            && text.contains("conversation c-1")),
                    "{mode}: {status} {text}"
                );
            }
            assert!((1..20).contains(&served), "{mode}: {served} served");
            wait_rows(gw, served);
            let (tokens, _) = conversation_spend(gw, "acme", "c-1");
            assert!(tokens <= limit as i64, "{mode}: spent {tokens} of {limit}");
        },
    );
}

#[test]
fn a_restarted_gateway_remembers_a_conversations_day() {
    let llm = Backend::start();
    let mut gw = pricey(&llm.addr)
        .budget(Budget::scope("conversation").usd_per_day(0.2))
        .start();
    let mut served = 0;
    while pricey_call(&gw, BOB_KEY, "c-1").status() == 200 {
        served += 1;
        assert!(served < 20);
        wait_rows(&gw, served);
    }
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    gw.spawn(false);
    assert_eq!(pricey_call(&gw, BOB_KEY, "c-1").status(), 429);
    assert_eq!(pricey_call(&gw, BOB_KEY, "c-2").status(), 200);
}

#[test]
fn check_reports_misplaced_money_fields_with_their_location() {
    let llm = "127.0.0.1:1";
    let (code, out, err) = money(llm)
        .budget(
            Budget::scope("conversation")
                .tokens_per_minute(10)
                .usd_per_month(1.0),
        )
        .budget(Budget::user().usd_per_day(1.0))
        .section("attribution", "conversation_header: \"bad header\"")
        .check();
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "{text}");
    for wanted in [
        "limits.budgets[0].tokens_per_minute: scope conversation has tokens_per_day and usd_per_day only",
        "limits.budgets[0].usd_per_month: scope conversation has",
        "limits.budgets[1].usd_per_day: only scope conversation has usd_per_day",
        "attribution.conversation_header: must be a valid HTTP header name",
    ] {
        assert!(text.contains(wanted), "{wanted} in {text}");
    }
    // Every problem carries FILE:LINE:COL.
    for line in text.lines().filter(|l| l.contains("limits.budgets[")) {
        assert!(line.contains("tollgate.yaml:"), "{line}");
    }
    let (code, _, err) = money(llm)
        .budget(
            Budget::scope("conversation")
                .tokens_per_day(10)
                .usd_per_day(1.0),
        )
        .section("attribution", "conversation_header: X-Ticket-Id")
        .check();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_shadow_conversation_budget_serves_counts_logs_and_still_settles() {
    let llm = Backend::start();
    on_each_store(
        || {
            pricey(&llm.addr)
                .budget(
                    Budget::scope("conversation")
                        .usd_per_day(0.2)
                        .enforce(false),
                )
                .budget(Budget::scope("tenant").usd_per_month(1000.0))
        },
        |mode, gw| {
            let calls = 12;
            for n in 1..=calls {
                let resp = pricey_call(gw, BOB_KEY, "c-1");
                assert_eq!(resp.status(), 200, "{mode}: call {n}");
                wait_rows(gw, n);
            }
            // Real use went past the shadow limit: the counters show it all.
            let (_, spent) = conversation_spend(gw, "acme", "c-1");
            assert!(spent > 200_000, "{mode}: {spent}");
            let shadowed = gw.shadow_refusals("usd_budget_exceeded");
            assert!(
                shadowed >= 1.0 && shadowed < calls as f64,
                "{mode}: {shadowed}"
            );
            // The access log names each call a limit would have refused.
            let lines = poll_until(
                Duration::from_secs(5),
                || gw.access_log(),
                |l| l.len() >= calls,
            );
            let logged = lines
                .iter()
                .filter(|l| l["shadow_refusal"] == "usd_budget_exceeded")
                .count();
            assert_eq!(logged as f64, shadowed, "{mode}");
            assert!(lines.iter().all(|l| l["status"] == 200), "{mode}");
            // Nothing was refused.
            assert_eq!(
                gw.metric("tollgate_rejections_total{code=\"usd_budget_exceeded\"}"),
                0.0,
                "{mode}"
            );
        },
    );
}

#[test]
fn shadow_rate_limits_serve_count_and_log() {
    let llm = Backend::start();
    let gw = money(&llm.addr)
        .limits(
            "default",
            json!({"requests_per_minute": 2, "enforce": false}),
        )
        .pool("support", Pool::new(&[&llm.addr]))
        .route(
            Route::http("tickets", "/api/v1/tickets/**", &["GET"], "support")
                .roles(&["agent"])
                .set(
                    "rate_limit",
                    json!({"requests_per_minute": 1, "enforce": false}),
                ),
        )
        .route(
            Route::http("users", "/api/v1/users/**", &["GET"], "support")
                .roles(&["agent"])
                .set("rate_limit", json!({"requests_per_minute": 1})),
        )
        .start();
    // limits.default in shadow: the LLM route past 2 a minute is served.
    for _ in 0..4 {
        let resp = chat_in(&gw, BOB_KEY, None);
        assert_eq!(resp.status(), 200);
        // A shadow limit sends no RateLimit headers: nothing changes for the client.
        assert!(resp.headers().get("ratelimit").is_none());
    }
    // A route's rate_limit in shadow: served past 1 a minute.
    for _ in 0..3 {
        assert_eq!(gw.get("/api/v1/tickets/1", BOB_KEY).status(), 200);
    }
    // An enforced route limit still refuses.
    assert_eq!(gw.get("/api/v1/users/1", BOB_KEY).status(), 200);
    assert_error!(gw.get("/api/v1/users/1", BOB_KEY), 429, "rate_limited");
    assert_eq!(gw.shadow_refusals("rate_limited"), 2.0 + 2.0);
    let lines = poll_until(Duration::from_secs(5), || gw.access_log(), |l| l.len() >= 9);
    let shadowed: Vec<&str> = lines
        .iter()
        .filter(|l| l["shadow_refusal"] == "rate_limited")
        .map(|l| l["route"].as_str().unwrap())
        .collect();
    assert_eq!(shadowed, ["chat", "chat", "tickets", "tickets"]);
}

const WEBHOOK_SECRET: &str = "whsec-test-5f2c";

/// Requests received: (head, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver started by the test: records every POST (headers,
/// body) and answers 204.
struct Receiver {
    addr: String,
    got: Received,
}

impl Receiver {
    fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    while let Some((head, body)) = read_request(&mut reader) {
                        sink.lock().unwrap().push((head, body));
                        let _ = writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                    }
                });
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/tollgate", self.addr)
    }

    /// The events received, each checked: its signature is the HMAC-SHA256
    /// of its body under the shared secret.
    fn events(&self) -> Vec<Value> {
        use hmac::Mac;
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(head, body)| {
                assert!(head.starts_with("POST /hooks/tollgate "), "{head}");
                let signature = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("x-tollgate-signature")
                            .then(|| value.trim().to_string())
                    })
                    .unwrap_or_else(|| panic!("unsigned: {head}"));
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
                mac.update(body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                assert_eq!(
                    signature,
                    want,
                    "signature of {}",
                    String::from_utf8_lossy(body)
                );
                serde_json::from_slice(body).unwrap()
            })
            .collect()
    }
}

/// A webhook entry for `url`: conversation crossings of 0.5, 0.8 and 1.0.
fn webhook(url: &str, retry_for_seconds: u64) -> Value {
    json!({"url": url, "secret_env": "TOLLGATE_WEBHOOK_SECRET", "scopes": ["conversation"],
        "thresholds": [0.5, 0.8, 1.0], "retry_for_seconds": retry_for_seconds, "timeout_ms": 1000})
}

/// `pricey` with a conversation budget of $0.20 a day in shadow mode
/// (calls go on past it, so every threshold is crossed) and `webhooks`.
fn alerting(llm: &str, webhooks: Vec<Value>) -> ConfigBuilder {
    std::env::set_var("TOLLGATE_WEBHOOK_SECRET", WEBHOOK_SECRET);
    let section = serde_yaml::to_string(&json!({ "webhooks": webhooks })).unwrap();
    pricey(llm)
        .budget(
            Budget::scope("conversation")
                .usd_per_day(0.2)
                .enforce(false),
        )
        .section("alerts", &section)
}

/// Calls in conversation c-1 until its spend is past $0.30, alternating
/// between the gateways; returns how many.
fn spend_past_the_budget(gateways: &[&Gateway]) -> usize {
    let mut calls = 0;
    while conversation_spend_any(gateways) <= 300_000 {
        let gw = gateways[calls % gateways.len()];
        let before = rows(gw).len();
        assert_eq!(pricey_call(gw, BOB_KEY, "c-1").status(), 200);
        calls += 1;
        assert!(calls < 40);
        // Settled (and in its ledger) before the next call.
        let _ = poll_until(Duration::from_secs(5), || rows(gw).len(), |n| *n > before);
    }
    calls
}

fn conversation_spend_any(gateways: &[&Gateway]) -> i64 {
    gateways
        .iter()
        .map(|gw| conversation_spend(gw, "acme", "c-1").1)
        .sum()
}

fn thresholds_of(events: &[Value]) -> Vec<f64> {
    let mut t: Vec<f64> = events
        .iter()
        .map(|e| e["threshold"].as_f64().unwrap())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

#[test]
fn a_receiver_gets_one_signed_event_per_threshold_crossed() {
    let llm = Backend::start();
    let receiver = Receiver::start();
    let gw = alerting(&llm.addr, vec![webhook(&receiver.url(), 60)]).start();
    spend_past_the_budget(&[&gw]);
    let events = poll_until(
        Duration::from_secs(10),
        || receiver.got.lock().unwrap().len(),
        |n| *n >= 3,
    );
    assert_eq!(events, 3);
    // More calls past every threshold send nothing more.
    for _ in 0..3 {
        assert_eq!(pricey_call(&gw, BOB_KEY, "c-1").status(), 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let events = receiver.events();
    assert_eq!(thresholds_of(&events), [0.5, 0.8, 1.0]);
    for e in &events {
        assert_eq!(e["event"], "budget_threshold");
        assert_eq!(e["scope"], "conversation");
        assert_eq!(e["id"], "c-1");
        assert_eq!(e["tenant"], "acme");
        assert_eq!(e["window"], "usd_per_day");
        assert_eq!(e["limit"], 0.2);
        assert_eq!(e["enforce"], false);
        let spent = e["spent"].as_f64().unwrap();
        assert!(
            spent >= 0.2 * e["threshold"].as_f64().unwrap() - 1e-9,
            "{e}"
        );
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    assert_eq!(gw.metric("tollgate_alerts_total{result=\"sent\"}"), 3.0);
    assert_eq!(gw.metric("tollgate_alerts_total{result=\"dropped\"}"), 0.0);
}

#[test]
fn two_instances_sharing_redis_send_each_crossing_once() {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let llm = Backend::start();
    let receiver = Receiver::start();
    let template = Counters::Redis(redis);
    let config = template
        .apply(alerting(&llm.addr, vec![webhook(&receiver.url(), 60)]))
        .render();
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    spend_past_the_budget(&[&a, &b]);
    let _ = poll_until(
        Duration::from_secs(10),
        || receiver.got.lock().unwrap().len(),
        |n| *n >= 3,
    );
    std::thread::sleep(Duration::from_millis(500));
    let events = receiver.events();
    assert_eq!(thresholds_of(&events), [0.5, 0.8, 1.0], "{events:?}");
    let sent = |gw: &Gateway| gw.metric("tollgate_alerts_total{result=\"sent\"}");
    assert_eq!(sent(&a) + sent(&b), 3.0);
}

#[test]
fn a_receiver_down_slows_nothing_then_gets_its_events_or_they_are_dropped() {
    let llm = Backend::start();
    // `later` comes up after the crossings; `never` stays down.
    let later_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let later_addr = later_port.local_addr().unwrap().to_string();
    drop(later_port);
    let never = format!("http://{}/hooks/tollgate", free_addr());
    let later_url = format!("http://{later_addr}/hooks/tollgate");
    let gw = alerting(&llm.addr, vec![webhook(&later_url, 60), webhook(&never, 2)]).start();
    // Every call is served while both receivers are down.
    spend_past_the_budget(&[&gw]);
    assert!(eventually(Duration::from_secs(10), || {
        gw.metric("tollgate_alerts_total{result=\"dropped\"}") >= 3.0
    }));
    assert!(gw.metric("tollgate_alerts_total{result=\"retried\"}") >= 3.0);
    // The first receiver recovers: its retries deliver each event once.
    let receiver = Receiver::on(TcpListener::bind(&later_addr).unwrap());
    let _ = poll_until(
        Duration::from_secs(20),
        || receiver.got.lock().unwrap().len(),
        |n| *n >= 3,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(thresholds_of(&receiver.events()), [0.5, 0.8, 1.0]);
    assert_eq!(gw.metric("tollgate_alerts_total{result=\"sent\"}"), 3.0);
    assert_eq!(gw.metric("tollgate_alerts_total{result=\"dropped\"}"), 3.0);
}
