//! Shared-ledger figures (issue 23): the forwarder's batched insert into
//! PostgreSQL (rows/s), disk per million rows, and usage-report latency
//! over many rows for each grouping. Run by `benches/ledger_postgres.sh`,
//! which starts a throwaway PostgreSQL cluster on loopback and passes its
//! URL in `TOLLGATE_BENCH_PG_URL` (`TOLLGATE_BENCH_ROWS` rows for the
//! report latency, default 10 million).

use std::time::Instant;
use tollgate::config::schema::{LedgerConfig, LedgerKind};
use tollgate::config::secret::Secret;
use tollgate::ledger::postgres::{insert_batch, migrate, PgSettings};
use tollgate::ledger::reader::LedgerReader;
use tollgate::ledger::report::{parse_group_by, ReportQuery};
use tollgate::ledger::LedgerRow;

const BATCH_ROWS: usize = 2_000;
const BATCHES: usize = 100;
/// The rollup's groupings (`conversation` reads the call rows instead:
/// its cost grows with the calls of the range, see README).
const GROUPINGS: [&str; 8] = [
    "",
    "tenant",
    "user",
    "key",
    "model",
    "day",
    "tenant,user,model,day",
    "tenant,user,key,model,day",
];

fn main() {
    // Test runners list every target (`--list`); only `cargo bench` (which
    // passes `--bench`) with a database runs the measurement.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let Ok(url) = std::env::var("TOLLGATE_BENCH_PG_URL") else {
        eprintln!("no TOLLGATE_BENCH_PG_URL: run `bash benches/ledger_postgres.sh`");
        return;
    };
    let rows: u64 = std::env::var("TOLLGATE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    if let Err(e) = run(&url, rows) {
        eprintln!("ledger bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(url: &str, generated_rows: u64) -> Result<(), Box<dyn std::error::Error>> {
    let settings = PgSettings::from_config(&LedgerConfig {
        kind: LedgerKind::Postgres,
        postgres_url: Some(Secret::new(url.to_string())),
        ..Default::default()
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    let now_ms = tollgate::limits::window::now_unix() * 1000;
    runtime.block_on(async {
        let mut client = settings.connect().await?;
        migrate(&mut client).await?;
        // Write throughput: the forwarder's statement, its batch size.
        let start = Instant::now();
        for b in 0..BATCHES {
            let batch: Vec<LedgerRow> = (0..BATCH_ROWS)
                .map(|i| synthetic_row(b * BATCH_ROWS + i, now_ms))
                .collect();
            insert_batch(&client, &batch).await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let written = BATCHES * BATCH_ROWS;
        println!(
            "write: {written} rows in {BATCH_ROWS}-row batches, {secs:.2} s = {:.0} rows/s",
            written as f64 / secs
        );
        let bytes: i64 = client
            .query_one(
                "SELECT pg_total_relation_size('usage') + pg_total_relation_size('usage_daily')",
                &[],
            )
            .await?
            .get(0);
        println!(
            "disk: {:.0} MiB per million rows (rows, indexes, daily rollup)",
            bytes as f64 / written as f64 * 1e6 / 1_048_576.0
        );
        // Report latency: 30 days, 20 tenants, 2,000 users and keys, 8
        // models, generated in the database; the rollup rebuilt once.
        let start = Instant::now();
        client
            .batch_execute(&generate_rows_sql(generated_rows, now_ms))
            .await?;
        let rollup: i64 = client
            .query_one("SELECT COUNT(*) FROM usage_daily", &[])
            .await?
            .get(0);
        println!(
            "loaded {generated_rows} more rows in {:.0} s; rollup: {rollup} rows",
            start.elapsed().as_secs_f64()
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let reader = LedgerReader::Postgres(settings);
    let today = time::OffsetDateTime::from_unix_timestamp((now_ms / 1000) as i64)?.date();
    let from = today - time::Duration::days(29);
    let total = generated_rows + (BATCHES * BATCH_ROWS) as u64;
    for grouping in GROUPINGS {
        let query = ReportQuery::new(from, today, parse_group_by(grouping)?, None, None)?;
        let mut millis = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let report = runtime.block_on(reader.report(query.clone()))?;
            millis.push(start.elapsed().as_secs_f64() * 1000.0);
            if report.rows.is_empty() {
                return Err("a report over the generated rows came back empty".into());
            }
        }
        millis.sort_by(f64::total_cmp);
        println!(
            "report over {total} rows, group_by={grouping:?}: median {:.0} ms (max {:.0} ms)",
            millis[2], millis[4]
        );
    }
    Ok(())
}

fn synthetic_row(n: usize, now_ms: u64) -> LedgerRow {
    LedgerRow {
        time_ms: now_ms + n as u64,
        request_id: format!("01JBENCH{n:012}"),
        user: Some(format!("user{}", n % 2000)),
        tenant: Some(format!("tenant{}", n % 20)),
        key_id: Some(format!("key{}", n % 2000)),
        route: "chat".into(),
        model: format!("model{}", n % 8),
        upstream_model: format!("model{}", n % 8),
        prompt_tokens: 500,
        completion_tokens: 100,
        micro_usd: 135,
        status: 200,
        api: "openai_chat".into(),
        ..Default::default()
    }
}

/// `rows` usage rows spread over the last 30 days, inserted by the
/// database itself (a client would measure its own speed, not the
/// report's), then the daily rollup rebuilt from them.
fn generate_rows_sql(rows: u64, now_ms: u64) -> String {
    format!(
        "INSERT INTO usage (request_id, time_ms, user_id, tenant_id, key_id, route, model,
            upstream_model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
            micro_usd, status, estimated, api, cache_write_tokens, over_cap)
         SELECT 'gen' || n, {now_ms} - (n % 30) * 86400000, 'user' || (n % 2000),
            'tenant' || (n % 20), 'key' || (n % 2000), 'chat', 'model' || (n % 8),
            'model' || (n % 8), 500, 100, 0, 0, 135, 200, false, 'openai_chat', 0, false
         FROM generate_series(1::bigint, {rows}) AS n;
         TRUNCATE usage_daily;
         INSERT INTO usage_daily SELECT time_ms / 86400000, COALESCE(tenant_id, ''),
            COALESCE(user_id, ''), COALESCE(key_id, ''), model, api, COUNT(*),
            SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(micro_usd),
            COUNT(*) FILTER (WHERE estimated) FROM usage GROUP BY 1, 2, 3, 4, 5, 6;
         ANALYZE;"
    )
}
