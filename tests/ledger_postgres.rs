//! The shared ledger (`ledger.kind: postgres`) with real processes: two
//! gateway instances, one `redis-server` and one PostgreSQL cluster started
//! per test (tests/common/postgres.rs). Reports agree on both instances and
//! with the rows in PostgreSQL; rows spool while PostgreSQL is away and
//! arrive exactly once, also across a `kill -9`; TLS with a fixture CA and a
//! password from the environment; the first call after Redis returns is
//! served. Skipped with a printed reason only when redis-server or
//! PostgreSQL is not installed (`make test-deps` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::llm::{report, usage_cli_today};
use common::postgres::{HostAuth, Postgres, PASSWORD};
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Redis, PostgreSQL, a mock backend and the config of an instance writing
/// to the shared ledger; None (skipped) when a server is not installed.
fn shared_setup() -> Option<(Redis, Postgres, Backend, String)> {
    let (redis, pg) = servers()?;
    let backend = Backend::start();
    let template = config(&backend, &redis, &pg.url(), "");
    Some((redis, pg, backend, template))
}

/// Redis and PostgreSQL, or None (skipped) when either is not installed.
fn servers() -> Option<(Redis, Postgres)> {
    let redis = Redis::start()?;
    let pg = Postgres::start()?;
    Some((redis, pg))
}

/// Both instances' config without a `ledger:` section: counters in Redis.
fn builder(backend: &Backend, redis: &Redis, tokens_per_day: u64) -> ConfigBuilder {
    ConfigBuilder::new()
        .keys(&[BOB, ALICE])
        .pool("llm", Pool::new(&[&backend.addr]).timeouts(300, 2000))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent"]))
        .model(Model::new("m", "llm", 0.15, 0.6, 100))
        .model(Model::new("m2", "llm", 1.0, 2.0, 100))
        .default_rate_limit(100_000)
        .budget(Budget::user().tokens_per_day(tokens_per_day))
        .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
        .redis_timeouts(50, 100)
        .on_store_error("deny")
        .access_log("off")
}

/// One gateway config for both instances: counters in Redis, the ledger in
/// PostgreSQL at `pg_url`; `extra_ledger`: more `ledger:` lines.
fn config(backend: &Backend, redis: &Redis, pg_url: &str, extra_ledger: &str) -> String {
    with_ledger(builder(backend, redis, 1_000_000), pg_url, extra_ledger)
}

fn with_ledger(builder: ConfigBuilder, pg_url: &str, extra_ledger: &str) -> String {
    builder
        .section(
            "ledger",
            &format!("kind: postgres\npostgres_url: \"{pg_url}\"{extra_ledger}"),
        )
        .render()
}

fn chat(gw: &Gateway, key: &str, model: &str) -> u16 {
    chat_with(gw, key, model, &[])
}

fn chat_with(gw: &Gateway, key: &str, model: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .header("X-API-Key", key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.json(&json!({
        "model": model,
        "messages": [{"role": "user", "content": "How do I reset my password?"}],
    }))
    .send()
    .map(|r| r.status().as_u16())
    .unwrap_or(0)
}

fn report_rows(gw: &Gateway, group_by: &str) -> Vec<Value> {
    let resp = report(gw, group_by, "json");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    body["rows"].as_array().cloned().unwrap_or_default()
}

/// Total calls in the report of `gw`; 0 while the shared ledger has no
/// schema yet (503 until the first instance has migrated it).
fn reported_calls(gw: &Gateway) -> u64 {
    let resp = report(gw, "", "json");
    if resp.status() != 200 {
        return 0;
    }
    let body: Value = resp.json().unwrap();
    body["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["calls"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// 0 until the table exists (the gateway migrates in the background).
fn pg_count(pg: &Postgres, sql: &str) -> u64 {
    pg.try_psql(sql)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until PostgreSQL holds `calls` rows, each request id once.
fn assert_all_rows_once(pg: &Postgres, calls: u64) {
    let arrived = eventually(Duration::from_secs(20), || {
        pg_count(pg, "SELECT COUNT(*) FROM usage") >= calls
    });
    assert!(
        arrived,
        "{} of {calls} rows in postgres",
        pg_count(pg, "SELECT COUNT(*) FROM usage")
    );
    // Give a late duplicate the chance to show.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pg_count(pg, "SELECT COUNT(*) FROM usage"), calls);
    assert_eq!(
        pg_count(pg, "SELECT COUNT(DISTINCT request_id) FROM usage"),
        calls
    );
    // The rollup counted each row once.
    assert_eq!(
        pg_count(pg, "SELECT COALESCE(SUM(calls), 0) FROM usage_daily"),
        calls
    );
    assert_eq!(
        pg.psql("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage"),
        pg.psql("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_daily"),
    );
}

/// The ledger's connection settings for `pg`, as `ledger.kind: postgres`
/// with its URL compiles them.
fn pg_settings(pg: &Postgres) -> tollgate::ledger::postgres::PgSettings {
    let ledger = tollgate::config::schema::LedgerConfig {
        kind: tollgate::config::schema::LedgerKind::Postgres,
        postgres_url: Some(tollgate::config::secret::Secret::new(pg.url())),
        ..Default::default()
    };
    tollgate::ledger::postgres::PgSettings::from_config(&ledger).unwrap()
}

#[test]
fn migrations_run_once_when_two_instances_migrate_at_once() {
    let Some(pg) = Postgres::start() else { return };
    let settings = pg_settings(&pg);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let applied: Vec<usize> = runtime.block_on(async {
        let migrate = || async {
            let mut client = settings.connect().await.unwrap();
            tollgate::ledger::postgres::migrate(&mut client)
                .await
                .unwrap()
        };
        let (a, b, c) = tokio::join!(migrate(), migrate(), migrate());
        vec![a, b, c]
    });
    // One of them applied the schema (every migration); the others found
    // it done.
    let mut sorted = applied.clone();
    sorted.sort();
    let all = tollgate::ledger::postgres::MIGRATION_COUNT;
    assert_eq!(sorted, vec![0, 0, all], "{applied:?}");
    assert_eq!(
        pg_count(&pg, "SELECT COUNT(*) FROM tollgate_migrations"),
        all as u64
    );
    assert_eq!(
        pg.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'"),
        "api_key_requests,api_keys,tollgate_migrations,usage,usage_daily"
    );
    // The lock is free again: a later start migrates nothing, at once.
    let again = runtime.block_on(async {
        let mut client = settings.connect().await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            tollgate::ledger::postgres::migrate(&mut client),
        )
        .await
    });
    assert_eq!(again.ok().and_then(|r| r.ok()), Some(0));
}

#[test]
fn two_instances_share_one_ledger_and_report_the_same_numbers() {
    let Some((redis, pg)) = servers() else { return };
    let backend = Backend::start();
    let template = config(&backend, &redis, &pg.url(), "");
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));

    let mut served = 0;
    for i in 0..24 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (key, model) = match i % 3 {
            0 => (BOB_KEY, "m"),
            1 => (ALICE_KEY, "m2"),
            _ => (BOB_KEY, "m2"),
        };
        assert_eq!(chat(gw, key, model), 200);
        served += 1;
    }
    // A served call is in the shared report within a few seconds.
    assert!(
        eventually(Duration::from_secs(5), || reported_calls(&a) == served),
        "report on A: {} of {served} calls",
        reported_calls(&a)
    );
    let on_a = report_rows(&a, "user,model");
    let on_b = report_rows(&b, "user,model");
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.len(), 3, "{on_a:?}");
    let calls_of = |user: &str, model: &str| {
        on_a.iter()
            .find(|r| r["user"] == user && r["model"] == model)
            .and_then(|r| r["calls"].as_u64())
    };
    assert_eq!(calls_of("bob", "m"), Some(8));
    assert_eq!(calls_of("alice", "m2"), Some(8));
    assert_eq!(calls_of("bob", "m2"), Some(8));
    // The report equals the rows in PostgreSQL, per user and model.
    assert_all_rows_once(&pg, served);
    for row in &on_a {
        let sql = format!(
            "SELECT COUNT(*) || '/' || SUM(prompt_tokens) || '/' || SUM(completion_tokens) FROM usage WHERE user_id = '{}' AND model = '{}'",
            row["user"].as_str().unwrap(),
            row["model"].as_str().unwrap()
        );
        let expected = format!(
            "{}/{}/{}",
            row["calls"], row["prompt_tokens"], row["completion_tokens"]
        );
        assert_eq!(pg.psql(&sql), expected);
    }
    // CSV from B, same numbers.
    let csv = report(&b, "user,model", "csv").text().unwrap();
    assert!(csv.starts_with("user,model,calls,"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // `tollgate usage -c` reads the configured ledger, with no gateway.
    let cli = usage_cli_today(&a.config_path, "user,model");
    assert_eq!(cli["rows"].as_array().cloned().unwrap_or_default(), on_a);
    assert_eq!(metric(&a, "tollgate_ledger_spool_rows"), Some(0.0));
}

#[test]
fn postgres_away_under_load_spools_and_every_row_arrives_once() {
    let Some((_redis, mut pg, _backend, template)) = shared_setup() else {
        return;
    };
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));
    for gw in [&a, &b] {
        assert_eq!(chat(gw, BOB_KEY, "m"), 200);
    }
    assert_all_rows_once(&pg, 2);

    pg.stop();
    // Load on both instances while PostgreSQL is down: nothing fails.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let gw = if t % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    (0..15)
                        .map(|_| chat(gw, if t < 2 { BOB_KEY } else { ALICE_KEY }, "m"))
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let served = 2 + statuses.len() as u64;
    for gw in [&a, &b] {
        let resp = client().get(gw.admin_url("/readyz")).send().unwrap();
        assert_eq!(resp.status(), 200, "readyz while postgres is down");
        assert!(
            eventually(Duration::from_secs(5), || metric(
                gw,
                "tollgate_ledger_spool_rows"
            )
            .is_some_and(|v| v >= 30.0)),
            "spool gauge: {:?}",
            metric(gw, "tollgate_ledger_spool_rows")
        );
        assert!(
            eventually(Duration::from_secs(5), || metric(
                gw,
                "tollgate_ledger_errors_total{ledger=\"postgres\"}"
            )
            .is_some_and(|v| v >= 1.0)),
            "errors counter"
        );
    }

    pg.restart();
    assert_all_rows_once(&pg, served);
    assert!(eventually(Duration::from_secs(10), || {
        metric(&a, "tollgate_ledger_spool_rows") == Some(0.0)
            && metric(&b, "tollgate_ledger_spool_rows") == Some(0.0)
    }));
    assert_eq!(reported_calls(&a), served);
    assert_eq!(reported_calls(&b), served);
}

#[test]
fn kill_9_with_spooled_rows_then_restart_forwards_them() {
    let Some((_redis, mut pg, _backend, template)) = shared_setup() else {
        return;
    };
    // PostgreSQL down from the start: the instance starts and serves.
    pg.stop();
    let mut a = Gateway::start(&template);
    for _ in 0..10 {
        assert_eq!(chat(&a, BOB_KEY, "m"), 200);
    }
    // Rows are committed to the spool within the writer's batch delay.
    assert!(eventually(Duration::from_secs(5), || metric(
        &a,
        "tollgate_ledger_spool_rows"
    ) == Some(10.0)));
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)).is_none_or(|_| true));
    pg.restart();
    a.spawn(false);
    assert_all_rows_once(&pg, 10);
    assert_eq!(reported_calls(&a), 10);
}

#[test]
fn tls_verify_full_with_a_fixture_ca_and_a_password_from_the_environment() {
    let Some(redis) = Redis::start() else { return };
    let Some(pg) = Postgres::start_with(HostAuth::Password, true) else {
        return;
    };
    let backend = Backend::start();
    let ca = format!("{}/tests/fixtures/tls/ca.pem", env!("CARGO_MANIFEST_DIR"));
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
        pg.port
    );
    let password_file = pg.dir().join("client-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let extra = format!(
        "\npostgres_password_file: \"{}\"\nca_file: \"{ca}\"",
        password_file.display()
    );
    let a = Gateway::start(&config(&backend, &redis, &url, &extra));
    assert_eq!(chat(&a, BOB_KEY, "m"), 200);
    assert_all_rows_once(&pg, 1);
    assert_eq!(
        pg.psql("SELECT bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'tollgate'"),
        "t"
    );

    // A CA that did not sign the server's certificate: refused, rows wait.
    let other = format!(
        "{}/tests/fixtures/tls/other.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let extra = format!(
        "\npostgres_password_file: \"{}\"\nca_file: \"{other}\"",
        password_file.display()
    );
    let b = Gateway::start(&config(&backend, &redis, &url, &extra));
    assert_eq!(chat(&b, BOB_KEY, "m"), 200);
    assert!(eventually(Duration::from_secs(5), || metric(
        &b,
        "tollgate_ledger_errors_total{ledger=\"postgres\"}"
    )
    .is_some_and(|v| v >= 1.0)));
    assert_eq!(metric(&b, "tollgate_ledger_spool_rows"), Some(1.0));
    assert_eq!(pg_count(&pg, "SELECT COUNT(*) FROM usage"), 1);
}

#[test]
fn first_call_after_redis_returns_is_served_on_both_instances() {
    let Some((mut redis, pg)) = servers() else {
        return;
    };
    let backend = Backend::start();
    let template = config(&backend, &redis, &pg.url(), "");
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));
    for gw in [&a, &b] {
        assert_eq!(chat(gw, BOB_KEY, "m"), 200);
    }
    redis.kill();
    for gw in [&a, &b] {
        assert_eq!(chat(gw, BOB_KEY, "m"), 503, "deny while redis is down");
    }
    redis.restart();
    std::thread::sleep(Duration::from_millis(2500));
    for gw in [&a, &b] {
        assert_eq!(
            chat(gw, BOB_KEY, "m"),
            200,
            "first call after redis returned"
        );
    }
}

#[test]
fn check_warns_when_redis_counters_meet_a_per_instance_ledger() {
    let backend = Backend::start();
    let redis = Redis::unstarted(6390);
    let shared = config(
        &backend,
        &redis,
        "postgres://tg@127.0.0.1:5/tg?sslmode=disable",
        "",
    );
    let (code, _, stderr) = run_check(&fill_placeholders(&shared));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let per_instance = builder(&backend, &redis, 1000).render();
    let (code, _, stderr) = run_check(&fill_placeholders(&per_instance));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: ledger.kind:") && stderr.contains("budgets reset"),
        "{stderr}"
    );
    // A password in the URL, or no sslmode, is refused with its field.
    for bad in [
        "postgres://tg:pw@127.0.0.1:5/tg?sslmode=disable",
        "postgres://tg@127.0.0.1:5/tg",
    ] {
        let (code, _, stderr) = run_check(&fill_placeholders(&config(&backend, &redis, bad, "")));
        assert_eq!(code, 1, "{bad}: {stderr}");
        assert!(stderr.contains("ledger.postgres_url"), "{stderr}");
    }
}

/// Two instances of `configure`'s config with the ledger in PostgreSQL
/// spend about half of a 2,000-token day as `key` (8 calls of ~110 tokens),
/// Redis restarts without its data (no persistence), then they spend until
/// refused: the budget must still hold, rebuilt from the ledger. Asserts
/// every call landed once and that what `spent_sql` sums stayed within the
/// 2,000 tokens, refused no earlier than 1,500; returns the refusal's body.
/// None (skipped) when a server is not installed.
fn spend_a_day_across_a_redis_restart(
    configure: impl FnOnce(&Backend, &Redis) -> ConfigBuilder,
    key: &str,
    spent_sql: &str,
) -> Option<Value> {
    let (mut redis, pg) = servers()?;
    let backend = Backend::start();
    let template = with_ledger(configure(&backend, &redis), &pg.url(), "");
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));
    let full = [("x-mock-completion-tokens", "100")];
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(chat_with(gw, key, "m", &full), 200);
    }
    assert_all_rows_once(&pg, 8);
    let before = pg_count(&pg, spent_sql);
    assert!((800..1200).contains(&before), "{before}");

    redis.kill();
    redis.restart();
    std::thread::sleep(Duration::from_millis(500));
    let mut served = 8;
    let mut refusal = None;
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = post(
            gw,
            "/v1/chat/completions",
            key,
            &chat_body("m", json!({})),
            &full,
        );
        match resp.status().as_u16() {
            200 => served += 1,
            429 => {
                refusal = Some(resp.json::<Value>().unwrap());
                break;
            }
            other => panic!("call {i} after the restart: {other}"),
        }
    }
    let refusal = refusal.expect("the budget never ran out after the restart");
    assert_all_rows_once(&pg, served);
    let spent = pg_count(&pg, spent_sql);
    assert!(
        spent <= 2000,
        "{spent} tokens spent on a 2,000-token budget"
    );
    assert!(spent > 1500, "{spent}: the budget refused too early");
    Some(refusal)
}

#[test]
fn redis_restarted_empty_mid_day_the_daily_budget_still_holds() {
    let Some(refusal) = spend_a_day_across_a_redis_restart(
        |backend, redis| builder(backend, redis, 2000),
        BOB_KEY,
        "SELECT SUM(prompt_tokens + completion_tokens) FROM usage",
    ) else {
        return;
    };
    assert_eq!(refusal["error"]["code"], "token_budget_exceeded");
}

/// The key's windows come back from the ledger rows carrying its id.
#[test]
fn redis_restarted_empty_mid_day_a_keys_budget_is_rebuilt_from_the_ledger() {
    // The user may spend plenty; the key 2,000 tokens a day.
    let Some(refusal) = spend_a_day_across_a_redis_restart(
        |backend, redis| {
            builder(backend, redis, 1_000_000)
                .key_fields("alice-1", json!({"budgets": {"tokens_per_day": 2000}}))
        },
        ALICE_KEY,
        "SELECT SUM(prompt_tokens + completion_tokens) FROM usage WHERE key_id = 'alice-1'",
    ) else {
        return;
    };
    assert_eq!(refusal["error"]["code"], "token_budget_exceeded");
    assert_message_has(&refusal, "for key alice-1");
}
