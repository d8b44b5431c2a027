//! Hostile load must not grow memory without limit: distinct invalid keys
//! and distinct users go through the real admission path (key lookup and
//! per-user rate counters) and RSS is compared before and after.
//! The 1,000,000-request figure comes from `cargo bench --bench memory`;
//! this test runs a smaller count so it fits in CI's debug build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures::executor::block_on;
use pingora::http::RequestHeader;
use std::sync::Arc;
use tollgate::admission;
use tollgate::ctx::RequestCtx;
use tollgate::limits::store::Store;

fn request(key: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/v1/tickets/1", None).unwrap();
    req.insert_header("x-api-key", key).unwrap();
    req
}

#[test]
fn distinct_bad_keys_and_users_do_not_grow_memory() {
    let config = ConfigBuilder::new()
        .pool("support", Pool::new(&["127.0.0.1:9001"]))
        .route(Route::http(
            "tickets",
            "/api/v1/tickets/**",
            &["GET"],
            "support",
        ))
        .default_rate_limit(10)
        .render();
    let snapshot = Arc::new(
        tollgate::config::load::load_snapshot_from_str(
            &fill_placeholders(&config),
            "m.yaml",
            1,
            None,
        )
        .unwrap(),
    );
    let store = Store::local();
    let limiter = &store.local_counters().limiter;
    let n = 200_000;
    let admit = |key: &str| {
        let mut ctx = RequestCtx::new(snapshot.clone());
        block_on(admission::admit(
            &store,
            None,
            &request(key),
            || None,
            &mut ctx,
        ))
    };
    // Warm up allocator pools and lazies before the baseline.
    for i in 0..10_000 {
        let _ = admit(&format!("warm-{i}"));
        limiter.check(&format!("warm-user-{i}"), "r", None, Some(10));
    }
    let before = rss_kib("self");
    for i in 0..n {
        let refused = admit(&format!("bad-key-{i}"));
        assert_eq!(refused.unwrap_err().error.code(), "invalid_api_key");
        limiter.check(&format!("user-{i}"), "r", None, Some(10));
    }
    let after = rss_kib("self");
    println!("RSS before {before} KiB, after {after} KiB for {n} bad keys + {n} users");
    // A per-key or per-user entry of even 64 bytes would add 25 MiB here.
    assert!(
        after.saturating_sub(before) < 4 * 1024,
        "grew by {} KiB",
        after - before
    );
}

/// A day's distinct conversations cost memory while their day lasts (a
/// budget must be exact, so each has its own counter) and give it back
/// when the day ends: the next day's sweeps drop them and the table.
#[test]
fn a_days_distinct_conversations_are_given_back_the_next_day() {
    use tollgate::limits::budget::{BudgetLimits, Charge, ScopeKey};
    use tollgate::limits::local_store::LocalStore;
    let store = LocalStore::new();
    let limits = BudgetLimits {
        tokens_per_day: Some(1 << 40),
        micro_usd_per_day: Some(1 << 40),
        ..Default::default()
    };
    let now = 1_796_126_400; // 2026-12-01 12:00 UTC
    let charge = Charge {
        tokens: 100,
        micro_usd: 50,
    };
    let call = |id: String, at: u64| {
        let scopes = [(ScopeKey::conversation("acme", id), limits)];
        let ticket = store.reserve(&scopes, charge, at).unwrap();
        store.settle(ticket, charge, at).unwrap();
    };
    for i in 0..10_000 {
        call(format!("warm-{i}"), now - 86_400);
    }
    tollgate::sys::heap::release_freed_memory();
    let before = rss_kib("self");
    let n = 200_000;
    for i in 0..n {
        call(format!("conversation-{i:08}"), now);
    }
    let peak = rss_kib("self");
    assert!(store.tracked_scopes() >= n);
    // The next day: as many calls as there are entries sweep them all.
    for i in 0..=n {
        call(format!("tomorrow-{}", i % 10), now + 86_400);
    }
    tollgate::sys::heap::release_freed_memory();
    let after = rss_kib("self");
    let per_conversation = (peak.saturating_sub(before) * 1024) / n as u64;
    println!(
        "{n} conversations: RSS {before} KiB -> {peak} KiB ({per_conversation} B each) -> {after} KiB the next day, {} entries left",
        store.tracked_scopes()
    );
    assert!(store.tracked_scopes() <= 10, "{}", store.tracked_scopes());
    // An entry is a key (tenant, id) and four window slots: bounded.
    assert!(
        per_conversation < 512,
        "{per_conversation} B per conversation"
    );
    assert!(
        after < before + (peak - before) / 4,
        "not given back: {before} -> {peak} -> {after} KiB"
    );
}
