//! Seeing spend and traces, over real TCP: LLM fields in the access log,
//! SIGUSR1 log reopening, the usage report (JSON, CSV, CLI), the metrics
//! named by the Grafana dashboard and the alert rules, and OTLP traces
//! received by an in-test collector.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// An LLM route, a support route and two models.
fn config(llm: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .keys(&[BOB, ALICE, ROOT_OPS])
        .pool("llm", Pool::new(&[llm]).timeouts(300, 5000))
        .pool("support", Pool::new(&[llm]))
        .route(
            Route::llm("chat", "/v1/chat/completions")
                .roles(&["agent", "admin"])
                .guards(&["pii"]),
        )
        .route(
            Route::http("tickets", "/api/v1/tickets/**", &["GET"], "support")
                .roles(&["agent", "admin"]),
        )
        .model(Model::new("support-fast", "llm", 0.15, 0.60, 100).upstream_model("gpt-4o-mini"))
        .model(Model::new("support-smart", "llm", 2.5, 10.0, 100).upstream_model("gpt-4o"))
        .default_rate_limit(100_000)
        .budget(Budget::user().tokens_per_day(1_000_000).usd_per_month(25.0))
        .pii(&["email"], "redact")
}

/// A gateway exporting traces to a collector that is never there.
fn with_dead_collector(llm: &str) -> Gateway {
    config(llm)
        .otlp(&format!("http://{}", free_addr()), "tollgate", 1.0)
        .start()
}

/// A chat call that must succeed; returns its request id.
fn chat_id(gw: &Gateway, key: &str, model: &str, extra: Value, headers: &[(&str, &str)]) -> String {
    let resp = chat(gw, key, &chat_body(model, extra), headers);
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = resp.text();
    id
}

/// Access lines, polled until `pred` holds (lines are written in batches).
fn access_lines_until(path: &std::path::Path, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = read_json_lines(path);
        if pred(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn line_for<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access line for {request_id}"))
}

#[test]
fn llm_calls_log_model_tokens_cost_and_usage_source() {
    let llm = Backend::start();
    let gw = config(&llm.addr).start();
    let json_id = chat_id(
        &gw,
        BOB_KEY,
        "support-fast",
        json!({}),
        &[("x-mock-completion-tokens", "7")],
    );
    let stream_id = chat_id(
        &gw,
        BOB_KEY,
        "support-smart",
        json!({"stream": true}),
        &[("x-mock-completion-tokens", "5")],
    );
    let estimated_id = chat_id(
        &gw,
        ALICE_KEY,
        "support-fast",
        json!({}),
        &[("x-mock-completion-tokens", "4"), ("x-mock-no-usage", "1")],
    );
    let path = gw.dir.path().join("access.log");
    let ids = [&json_id, &stream_id, &estimated_id];
    let lines = access_lines_until(&path, |lines| {
        ids.iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == id.as_str()))
    });

    // Expected figures straight from the ledger rows of each call.
    let conn = rusqlite::Connection::open(gw.dir.path().join("usage.db")).unwrap();
    // The ledger commits in groups (within 100 ms): poll for the row.
    let row = |id: &str| -> (i64, i64, i64, i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = conn.query_row(
                "SELECT prompt_tokens, completion_tokens, micro_usd, estimated FROM usage WHERE request_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            );
            match found {
                Ok(row) => return row,
                Err(e) if Instant::now() > deadline => panic!("ledger row of {id}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    };
    let usd = |micro: i64| format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);

    let l = line_for(&lines, &json_id);
    let (p, c, m, _) = row(&json_id);
    assert_eq!(l["model"], "support-fast", "{l}");
    assert_eq!(l["served_model"], "support-fast");
    assert_eq!(l["api"], "openai_chat");
    assert_eq!(l["prompt_tokens"], p);
    assert_eq!(l["completion_tokens"], 7);
    assert_eq!(c, 7);
    assert_eq!(l["cached_tokens"], 0);
    assert_eq!(l["usd"], usd(m));
    assert_eq!(l["usage_source"], "upstream");
    assert_eq!(l["stream"], false);

    let l = line_for(&lines, &stream_id);
    let (p, c, m, _) = row(&stream_id);
    assert_eq!(l["model"], "support-smart", "{l}");
    assert_eq!(l["served_model"], "support-smart");
    assert_eq!(
        (l["prompt_tokens"].as_i64(), l["completion_tokens"].as_i64()),
        (Some(p), Some(c))
    );
    assert_eq!(c, 5);
    assert_eq!(l["usd"], usd(m));
    assert!(m > 0);
    assert_eq!(l["usage_source"], "upstream");
    assert_eq!(l["stream"], true);

    let l = line_for(&lines, &estimated_id);
    let (p, c, m, estimated) = row(&estimated_id);
    assert_eq!(estimated, 1);
    assert_eq!(l["usage_source"], "estimated", "{l}");
    assert_eq!(
        (l["prompt_tokens"].as_i64(), l["completion_tokens"].as_i64()),
        (Some(p), Some(c))
    );
    assert!(p > 0 && c > 0);
    assert_eq!(l["usd"], usd(m));
    assert_eq!(l["stream"], false);

    // A plain request's line has none of them.
    let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
    let plain_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let lines = access_lines_until(&path, |lines| {
        lines.iter().any(|l| l["request_id"] == plain_id.as_str())
    });
    let l = line_for(&lines, &plain_id);
    assert!(l.get("model").is_none() && l.get("usd").is_none(), "{l}");
}

#[test]
fn sigusr1_reopens_a_rotated_log_without_losing_a_line() {
    let llm = Backend::start();
    let gw = config(&llm.addr).start();
    let path = gw.dir.path().join("access.log");
    let rotated = gw.dir.path().join("access.log.1");
    let get = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
                resp.headers()["x-request-id"].to_str().unwrap().to_string()
            })
            .collect()
    };
    let before = get(20);
    // logrotate: rename, then signal. Lines sent between the two still go
    // to the renamed file (the process holds it open).
    std::fs::rename(&path, &rotated).unwrap();
    let between = get(20);
    gw.signal(libc::SIGUSR1);
    // The reopen happens before the writer's next batch: keep sending until
    // a line shows up in the new file.
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        after.extend(get(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(path.exists(), "no new access.log after SIGUSR1");
    after.extend(get(20));
    let wanted: Vec<&String> = before.iter().chain(&between).chain(&after).collect();
    let lines = access_lines_until(&path, |lines| {
        after
            .iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == id.as_str()))
    });
    let rotated_lines = read_json_lines(&rotated);
    for id in &wanted {
        let n = rotated_lines
            .iter()
            .chain(&lines)
            .filter(|l| l["request_id"] == id.as_str())
            .count();
        assert_eq!(n, 1, "request {id} logged {n} times across both files");
    }
    // Everything sent after the new file appeared is in it.
    let last = after.last().unwrap();
    assert!(lines.iter().any(|l| l["request_id"] == last.as_str()));
    assert!(before
        .iter()
        .all(|id| rotated_lines.iter().any(|l| l["request_id"] == id.as_str())));
    // The process is alive and serving (SIGUSR1 did not kill it).
    assert_eq!(get(1).len(), 1);
}

/// A ledger written before the gateway starts: known rows over three days.
struct SeededRow {
    day: &'static str,
    time_ms: i64,
    user: &'static str,
    tenant: &'static str,
    /// API key id: two per tenant, so grouping by key splits users' rows.
    key: String,
    model: &'static str,
    prompt: i64,
    completion: i64,
    cached: i64,
    micro_usd: i64,
    estimated: bool,
}

fn seed_ledger(path: &std::path::Path) -> Vec<SeededRow> {
    create_ledger(path);
    // 2026-03-01T00:00:00Z
    let day0: i64 = 1_772_323_200_000;
    let day_ms: i64 = 86_400_000;
    let days = ["2026-03-01", "2026-03-02", "2026-03-03"];
    let users = [
        ("bob", "acme"),
        ("alice", "acme"),
        ("dora, \"the\" agent", "globex"),
    ];
    let models = ["support-fast", "support-smart"];
    let mut rows = Vec::new();
    let mut i = 0i64;
    for (d, day) in days.iter().enumerate() {
        for (user, tenant) in users {
            for model in models {
                i += 1;
                rows.push(SeededRow {
                    day,
                    // Include a row at the last millisecond of the day.
                    time_ms: day0
                        + d as i64 * day_ms
                        + if i % 4 == 0 { day_ms - 1 } else { i * 1000 },
                    user,
                    tenant,
                    key: format!("{tenant}-key-{}", i % 2),
                    model,
                    prompt: 100 + i * 7,
                    completion: 10 + i * 3,
                    cached: i % 3 * 5,
                    micro_usd: 1_000 + i * 12_345,
                    estimated: i % 5 == 0,
                });
            }
        }
    }
    // A row the day after the range: must never be counted.
    rows.push(SeededRow {
        day: "2026-03-04",
        time_ms: day0 + 3 * day_ms,
        user: "bob",
        tenant: "acme",
        key: "acme-key-0".into(),
        model: "support-fast",
        prompt: 1_000_000,
        completion: 1,
        cached: 0,
        micro_usd: 999_999_999,
        estimated: false,
    });
    let conn = rusqlite::Connection::open(path).unwrap();
    for (n, r) in rows.iter().enumerate() {
        conn.execute(
            "INSERT INTO usage (time_ms, request_id, user_id, tenant_id, key_id, route, model, upstream_model,
                prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, micro_usd, status, estimated)
             VALUES (?1, ?2, ?3, ?4, ?11, 'chat', ?5, ?5, ?6, ?7, ?8, 0, ?9, 200, ?10)",
            rusqlite::params![r.time_ms, format!("seed-{n}"), r.user, r.tenant, r.model,
                r.prompt, r.completion, r.cached, r.micro_usd, r.estimated, r.key],
        )
        .unwrap();
    }
    rows
}

fn report(gw: &Gateway, query: &str) -> reqwest::blocking::Response {
    gw.admin_get(&format!("/admin/usage/report?{query}"))
}

/// Expected totals per group key tuple, computed from the seeded rows.
fn expected(rows: &[SeededRow], keys: &[&str], to: &str) -> BTreeMap<Vec<String>, [i64; 6]> {
    let mut out: BTreeMap<Vec<String>, [i64; 6]> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.day <= to) {
        let key = keys
            .iter()
            .map(|k| match *k {
                "tenant" => r.tenant.to_string(),
                "user" => r.user.to_string(),
                "key" => r.key.clone(),
                "model" => r.model.to_string(),
                "day" => r.day.to_string(),
                _ => unreachable!(),
            })
            .collect();
        let t = out.entry(key).or_default();
        t[0] += 1;
        t[1] += r.prompt;
        t[2] += r.completion;
        t[3] += r.cached;
        t[4] += r.micro_usd;
        t[5] += i64::from(r.estimated);
    }
    out
}

fn micro(usd: &str) -> i64 {
    let (whole, frac) = usd.split_once('.').unwrap();
    assert_eq!(frac.len(), 6, "usd {usd} has 6 decimals");
    whole.parse::<i64>().unwrap() * 1_000_000 + frac.parse::<i64>().unwrap()
}

#[test]
fn usage_report_matches_the_ledger_in_json_csv_and_cli() {
    let llm = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("usage.db");
    let rows = seed_ledger(&store_path);
    let gw = config(&llm.addr)
        .store_path(&store_path.display().to_string())
        .start();
    // `tollgate usage` over the three seeded days, grouped by `group_by`.
    let usage_cli = |group_by: &[&str]| {
        let range = ["--from", "2026-03-01", "--to", "2026-03-03", "--group-by"];
        tollgate("usage", &gw.config_path, &[&range[..], group_by].concat())
    };
    let groupings: &[&[&str]] = &[
        &[],
        &["tenant"],
        &["user"],
        &["key"],
        &["model"],
        &["day"],
        &["day", "model"],
        &["tenant", "user"],
        &["tenant", "key", "model"],
        &["model", "tenant", "user", "day"],
    ];
    for keys in groupings {
        let group_by = keys.join(",");
        let query = format!("from=2026-03-01&to=2026-03-03&group_by={group_by}");
        let resp = report(&gw, &query);
        assert_eq!(resp.status(), 200, "{query}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Value = resp.json().unwrap();
        assert_eq!(body["from"], "2026-03-01");
        assert_eq!(body["to"], "2026-03-03");
        assert_eq!(body["group_by"], json!(keys));
        let want = expected(&rows, keys, "2026-03-03");
        let mut got = BTreeMap::new();
        for row in body["rows"].as_array().unwrap() {
            let key: Vec<String> = keys
                .iter()
                .map(|k| row[*k].as_str().unwrap().to_string())
                .collect();
            let totals = [
                row["calls"].as_i64().unwrap(),
                row["prompt_tokens"].as_i64().unwrap(),
                row["completion_tokens"].as_i64().unwrap(),
                row["cached_tokens"].as_i64().unwrap(),
                micro(row["usd"].as_str().unwrap()),
                row["estimated_calls"].as_i64().unwrap(),
            ];
            assert!(
                got.insert(key, totals).is_none(),
                "duplicate group in {body}"
            );
        }
        assert_eq!(got, want, "group_by={group_by}");

        // The CSV: same columns, same rows, same order.
        let resp = report(&gw, &format!("{query}&format=csv"));
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let text = resp.text().unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        let mut columns: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let totals = "calls prompt_tokens completion_tokens cached_tokens usd estimated_calls";
        columns.extend(totals.split(' ').map(String::from));
        assert_eq!(header, columns);
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let json_rows = body["rows"].as_array().unwrap();
        assert_eq!(records.len(), json_rows.len());
        for (record, row) in records.iter().zip(json_rows) {
            for (i, column) in columns.iter().enumerate() {
                let want = match &row[column.as_str()] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(&record[i], want, "column {column}");
            }
        }

        // The command line reads the same ledger file while the gateway runs.
        if !keys.is_empty() {
            let out = usage_cli(&[&group_by, "--csv"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                text,
                "CLI CSV for {group_by}"
            );
        }
    }

    // The JSON form of the CLI.
    let out = usage_cli(&["tenant"]);
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let api: Value = report(&gw, "from=2026-03-01&to=2026-03-03&group_by=tenant")
        .json()
        .unwrap();
    assert_eq!(cli, api);

    // Filters, and a one-day range (both ends inclusive).
    let body: Value = report(
        &gw,
        "from=2026-03-02&to=2026-03-02&group_by=model&tenant=acme&user=bob",
    )
    .json()
    .unwrap();
    let want: i64 = rows
        .iter()
        .filter(|r| r.day == "2026-03-02" && r.user == "bob" && r.tenant == "acme")
        .map(|r| r.micro_usd)
        .sum();
    let got: i64 = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| micro(r["usd"].as_str().unwrap()))
        .sum();
    assert_eq!(got, want, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 2);

    // Bad parameters: 400 invalid_request naming the parameter.
    for (query, param) in [
        ("to=2026-03-03", "from"),
        ("from=2026-03-01", "to"),
        ("from=2026-3-1&to=2026-03-03", "from"),
        ("from=2026-03-01&to=yesterday", "to"),
        ("from=2026-03-03&to=2026-03-01", "to"),
        ("from=2026-03-01&to=2026-03-03&group_by=team", "group_by"),
        ("from=2026-03-01&to=2026-03-03&format=xml", "format"),
        ("from=2026-03-01&to=2026-03-03&tenant=acme&teams=x", "teams"),
    ] {
        let body = assert_error!(
            report(&gw, query),
            400,
            "invalid_request",
            "{query}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(param), "{query}: {message}");
    }
    // The report is an admin endpoint.
    let resp = client()
        .get(gw.admin_url("/admin/usage/report?from=2026-03-01&to=2026-03-03"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Metric names in a dashboard or rule file (histograms by family name).
fn metric_names(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"tollgate_[a-z_]+").unwrap();
    let mut names: Vec<String> = re
        .find_iter(text)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        })
        // Alert names (TollgateX) are capitalised and never match.
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_of_the_dashboard_and_alert_rules_is_exported() {
    let llm = Backend::start();
    // An unreachable collector, so span drops are counted too.
    let gw = with_dead_collector(&llm.addr);
    // Traffic that fills every labelled series: an LLM call with a PII
    // redaction, a proxied request, an auth failure, a reload.
    let mut body = json!({"stream": false});
    body["messages"] = json!([{"role": "user", "content": "mail me at jane@example.com"}]);
    chat_id(&gw, BOB_KEY, "support-fast", body, &[]);
    let _ = gw.get("/api/v1/tickets/1", BOB_KEY);
    let _ = gw.get("/api/v1/tickets/1", "wrong");
    let resp = client()
        .post(gw.admin_url("/admin/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dashboard = std::fs::read_to_string("conf/grafana/tollgate-dashboard.json").unwrap();
    let _: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let rules = std::fs::read_to_string("conf/prometheus/tollgate-alerts.yaml").unwrap();
    let mut wanted = metric_names(&dashboard);
    wanted.extend(metric_names(&rules));
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 14, "{wanted:?}");
    let missing_from = |exported: String| -> Vec<String> {
        let typed = |name: &&String| {
            let type_line = format!("# TYPE {name} ");
            exported.lines().any(|l| l.starts_with(&type_line))
        };
        wanted.iter().filter(|n| !typed(n)).cloned().collect()
    };
    let missing = poll_until(
        Duration::from_secs(10),
        || missing_from(gw.metrics()),
        Vec::is_empty,
    );
    assert!(missing.is_empty(), "not in /metrics: {missing:?}");
}

#[test]
fn otlp_spans_carry_the_parent_attributes_and_upstream_attempts() {
    let llm = Backend::start();
    let collector = Collector::start();
    let gw = config(&llm.addr)
        .otlp(&format!("http://{}", collector.addr), "tollgate-test", 1.0)
        .start();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let incoming = format!("00-{trace_id}-{parent_id}-01");

    // A proxied request: the support mock echoes the traceparent it got.
    let echo: Value = client()
        .get(gw.url("/api/v1/tickets/7"))
        .header("X-API-Key", BOB_KEY)
        .header("traceparent", &incoming)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let upstream_tp = echo["headers"]["traceparent"].as_str().unwrap().to_string();
    let upstream_span_id = upstream_tp.split('-').nth(2).unwrap().to_string();
    assert!(
        upstream_tp.starts_with(&format!("00-{trace_id}-")),
        "{upstream_tp}"
    );

    // An LLM call in another trace.
    let llm_trace = "0af7651916cd43dd8448eb211c80319c";
    let llm_id = chat_id(
        &gw,
        ALICE_KEY,
        "support-smart",
        json!({}),
        &[
            (
                "traceparent",
                &format!("00-{llm_trace}-b7ad6b7169203331-01"),
            ),
            ("x-mock-completion-tokens", "6"),
        ],
    );
    let spans = wait_spans(&collector, |spans| {
        spans
            .iter()
            .filter(|(_, s)| s.name == "gateway.request")
            .count()
            >= 2
            && spans
                .iter()
                .filter(|(_, s)| s.name == "upstream.attempt")
                .count()
                >= 2
    });
    let hex = hex::encode;
    let request_span = |trace: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == "gateway.request" && hex(&s.trace_id) == trace)
            .unwrap_or_else(|| panic!("no gateway.request span in trace {trace}: {spans:?}"))
    };

    let (service, span) = request_span(trace_id);
    assert!(service.contains("tollgate-test"), "service.name: {service}");
    assert_eq!(
        hex(&span.parent_span_id),
        parent_id,
        "parented on the incoming traceparent"
    );
    // The upstream received this span's trace id, and this span's id.
    assert_eq!(hex(&span.span_id), upstream_span_id);
    assert_attrs(
        span,
        &[
            ("http.request.method", "GET"),
            ("url.path", "/api/v1/tickets/7"),
            ("http.route", "/api/v1/tickets/**"),
            ("http.response.status_code", "200"),
            ("user.id", "bob"),
            ("tenant.id", "acme"),
        ],
    );
    assert!(span.start_time_unix_nano > 0 && span.end_time_unix_nano >= span.start_time_unix_nano);
    let child = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "upstream.attempt" && s.parent_span_id == span.span_id)
        .unwrap_or_else(|| panic!("no upstream.attempt child: {spans:?}"));
    assert_eq!(child.trace_id, span.trace_id);
    assert_eq!(
        attr(child, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(child, "server.port").as_deref(),
        Some(llm.addr.rsplit(':').next().unwrap())
    );

    let (_, span) = request_span(llm_trace);
    assert_eq!(hex(&span.parent_span_id), "b7ad6b7169203331");
    assert_attrs(
        span,
        &[
            ("tollgate.request_id", &llm_id),
            ("http.route", "/v1/chat/completions"),
            ("user.id", "alice"),
            ("gen_ai.request.model", "support-smart"),
            ("gen_ai.response.model", "gpt-4o"),
            ("gen_ai.usage.output_tokens", "6"),
        ],
    );
    let input: u64 = attr(span, "gen_ai.usage.input_tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(input > 0);
    // An LLM call's attempt names the model it asked for (a fallback's own).
    let attempt = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "upstream.attempt" && s.parent_span_id == span.span_id)
        .unwrap_or_else(|| panic!("no upstream.attempt child of the LLM call: {spans:?}"));
    assert_eq!(
        attr(attempt, "gen_ai.request.model").as_deref(),
        Some("support-smart")
    );
}

#[test]
fn an_unreachable_collector_never_affects_requests() {
    let llm = Backend::start();
    // Nothing listens there: every export fails.
    let gw = with_dead_collector(&llm.addr);
    for _ in 0..50 {
        let resp = gw.get("/api/v1/tickets/1", BOB_KEY);
        assert_eq!(resp.status(), 200);
    }
    chat_id(&gw, BOB_KEY, "support-fast", json!({}), &[]);
    // The failed exports are counted.
    let dropped = poll_until(
        Duration::from_secs(10),
        || gw.metric("tollgate_otlp_spans_dropped_total{reason=\"export_failed\"}"),
        |dropped| *dropped >= 51.0,
    );
    assert!(dropped >= 51.0, "drops not counted: {dropped}");
}
