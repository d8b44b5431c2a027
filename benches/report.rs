//! Usage report latency over a 1,000,000-row ledger (issue 12: < 200 ms).
//!
//! Fills a ledger with the gateway's own schema (`Ledger::open`), 1M calls
//! spread over 30 days, 20 tenants, 500 users and 5 models, then times each
//! grouping of the report over the whole range (the worst case: every row
//! is in range) and over one tenant. Prints the median of 5 runs.
//!
//!   cargo bench --bench report

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use time::macros::date;
use tollgate::ledger::report::{open_ledger, parse_group_by, ReportQuery};

const ROWS: u64 = 1_000_000;
const DAY_MS: u64 = 86_400_000;

fn fill(path: &std::path::Path) {
    // Creates the schema and indexes exactly as the gateway does.
    drop(tollgate::ledger::Ledger::open(path).expect("open ledger"));
    let mut conn = rusqlite::Connection::open(path).expect("open");
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO usage (time_ms, request_id, user_id, tenant_id, key_id, route, model,
                    upstream_model, prompt_tokens, completion_tokens, cached_tokens,
                    reasoning_tokens, micro_usd, status, estimated)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'chat', ?6, ?6, ?7, ?8, ?9, 0, ?10, 200, ?11)",
            )
            .expect("prepare");
        // 2026-01-01T00:00:00Z
        let start = 1_767_225_600_000u64;
        for i in 0..ROWS {
            let user = i % 500;
            let tenant = user % 20;
            let model = i % 5;
            let prompt = 100 + i % 900;
            let completion = 20 + i % 300;
            stmt.execute(rusqlite::params![
                (start + i * (30 * DAY_MS / ROWS)) as i64,
                format!("req-{i}"),
                format!("user-{user}"),
                format!("tenant-{tenant}"),
                format!("key-{user}"),
                format!("model-{model}"),
                prompt as i64,
                completion as i64,
                (i % 7 * 10) as i64,
                (prompt * 150 + completion * 600) as i64,
                i64::from(i % 50 == 0),
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
    conn.execute_batch("ANALYZE").expect("analyze");
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    // Test runners list every target (`--list`); only `cargo bench` (which
    // passes `--bench`) runs the measurement.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.db");
    let t = Instant::now();
    fill(&path);
    println!("filled {ROWS} rows in {:.1} s", t.elapsed().as_secs_f64());
    let conn = open_ledger(&path).expect("open reader");
    let cases: &[(&str, Option<&str>)] = &[
        ("", None),
        ("tenant", None),
        ("user", None),
        ("model", None),
        ("day", None),
        ("day,model", None),
        ("tenant,user", None),
        ("day,model", Some("tenant-3")),
        ("user", Some("tenant-3")),
    ];
    println!(
        "{:<28} {:>8} {:>10}",
        "group_by (30 days, 1M rows)", "rows", "median"
    );
    for (group_by, tenant) in cases {
        let query = ReportQuery::new(
            date!(2026 - 01 - 01),
            date!(2026 - 01 - 30),
            parse_group_by(group_by).expect("keys"),
            tenant.map(str::to_string),
            None,
        )
        .expect("query");
        let mut runs = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let report = query.run(&conn).expect("report");
            // The answer as the admin endpoint renders it.
            let body = report.to_json().to_string();
            runs.push(t.elapsed());
            n = report.rows.len();
            std::hint::black_box(body);
        }
        let label = match tenant {
            Some(t) => format!("{group_by} (tenant={t})"),
            None if group_by.is_empty() => "(total)".to_string(),
            None => group_by.to_string(),
        };
        println!(
            "{label:<28} {n:>8} {:>8.1} ms",
            median(runs).as_secs_f64() * 1000.0
        );
    }
}
