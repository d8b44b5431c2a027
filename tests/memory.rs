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
