//! RSS before/after 1,000,000 distinct invalid API keys and 1,000,000
//! distinct users through the admission path, then 1,000,000 distinct
//! conversations with a conversation budget through the local store, and
//! the day after (release build): `cargo bench --bench memory`.

use pingora::http::RequestHeader;
use std::sync::Arc;
use tollgate::admission;
use tollgate::ctx::RequestCtx;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // Test runners list every target (`--list`); only `cargo bench` (which
    // passes `--bench`) should run the million-request measurement.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let config = r#"
server: { listen: ["127.0.0.1:1"], admin_listen: "127.0.0.1:2" }
upstreams: { support: { peers: ["127.0.0.1:9001"] } }
routes: [ { name: tickets, path: "/api/v1/tickets/**", methods: [GET], upstream: support } ]
limits: { default: { requests_per_minute: 10 } }
"#;
    let Ok(snapshot) = tollgate::config::load::load_snapshot_from_str(config, "m.yaml", 1, None)
    else {
        eprintln!("bad bench config");
        return;
    };
    let snapshot = Arc::new(snapshot);
    let store = tollgate::limits::store::Store::local();
    let limiter = &store.local_counters().limiter;
    let before = rss_kib();
    let n = 1_000_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let Ok(mut req) = RequestHeader::build("GET", b"/api/v1/tickets/1", None) else {
            return;
        };
        let _ = req.insert_header("x-api-key", format!("bad-key-{i}"));
        let mut ctx = RequestCtx::new(snapshot.clone());
        // Local mode never suspends: block_on polls it once.
        let _ =
            futures::executor::block_on(admission::admit(&store, None, &req, || None, &mut ctx));
        limiter.check(&format!("user-{i}"), "r", None, Some(10));
        if i % 250_000 == 0 {
            println!("{i:>8} requests: RSS {} KiB", rss_kib());
        }
    }
    let after = rss_kib();
    println!(
        "{n} distinct bad keys + {n} distinct users in {:.1} s: RSS before {before} KiB, after {after} KiB (+{} KiB)",
        started.elapsed().as_secs_f64(),
        after.saturating_sub(before)
    );
    conversations(n);
}

/// A day of `n` distinct conversations under a conversation budget, then
/// the next day's sweep: what a conversation costs while its day lasts,
/// and that it is given back.
fn conversations(n: usize) {
    use tollgate::limits::budget::{BudgetLimits, Charge, ScopeKey};
    use tollgate::limits::local_store::LocalStore;
    let store = LocalStore::new();
    let limits = BudgetLimits {
        tokens_per_day: Some(1 << 40),
        micro_usd_per_day: Some(1 << 40),
        ..Default::default()
    };
    let now = tollgate::limits::window::now_unix();
    let charge = Charge {
        tokens: 500,
        micro_usd: 300,
    };
    let call = |id: String, at: u64| {
        let scopes = [(ScopeKey::conversation("acme", id), limits)];
        if let Ok(ticket) = store.reserve(&scopes, charge, at) {
            let _ = store.settle(ticket, charge, at);
        }
    };
    tollgate::sys::heap::release_freed_memory();
    let before = rss_kib();
    let started = std::time::Instant::now();
    for i in 0..n {
        call(format!("conversation-{i:08}"), now);
    }
    let peak = rss_kib();
    let elapsed = started.elapsed().as_secs_f64();
    for i in 0..=n {
        call(format!("tomorrow-{}", i % 10), now + 86_400);
    }
    tollgate::sys::heap::release_freed_memory();
    let after = rss_kib();
    println!(
        "{n} distinct conversations in {elapsed:.1} s: RSS before {before} KiB, peak {peak} KiB (+{} B each), the next day {after} KiB ({} entries)",
        (peak.saturating_sub(before) * 1024) / n as u64,
        store.tracked_scopes()
    );
}
