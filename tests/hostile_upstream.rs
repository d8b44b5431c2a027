//! Hostile upstreams cost the gateway no memory (issue 10, item 4): a
//! 200 MB JSON answer, an endless SSE stream, one SSE event that never
//! ends and 2,000 response headers all pass or fail cleanly, and the
//! gateway's RSS stays flat. (Measured on the release build: +5 MiB; this
//! debug-build test allows 16 MiB, far below what any of these would cost
//! if buffered.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use std::io::Read;

fn hi(gw: &Gateway, stream: bool, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let body = json!({"model": "gpt", "stream": stream, "max_tokens": 20,
                      "messages": [{"role": "user", "content": "hi"}]});
    chat(gw, BOB_KEY, &body, headers)
}

#[test]
fn hostile_upstream_answers_pass_or_fail_cleanly_with_rss_flat() {
    let (_llm, gw) = start_llm_apis(1_000_000_000);
    // Warm up: connection pools, lazies, the tokenizer.
    for stream in [false, true, false, true] {
        let _ = hi(&gw, stream, &[]).bytes();
    }
    let before = rss_kib(&gw.pid().to_string());

    // 200 MB JSON answer: forwarded whole, usage unreadable (over the
    // 8 MiB parse buffer): billed as an estimate.
    let mut resp = hi(&gw, false, &[("x-mock-json-bytes", "200000000")]);
    assert_eq!(resp.status(), 200);
    let copied = resp.copy_to(&mut std::io::sink()).unwrap();
    assert_eq!(copied, 200_000_000);

    // Endless SSE stream: cut off at the cap, ends cleanly.
    let text = hi(
        &gw,
        true,
        &[
            ("x-mock-ignore-cap", "1"),
            ("x-mock-completion-tokens", "1000000000"),
        ],
    )
    .text()
    .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // One event that never ends: 100 MB pass through, then the client leaves.
    let mut resp = hi(&gw, true, &[("x-mock-endless-event", "1")]);
    assert_eq!(resp.status(), 200);
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0usize;
    while read < 100_000_000 {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early at {read} bytes");
        read += n;
    }
    drop(resp);

    // 2,000 response headers: answered cleanly either way (forwarded, or
    // refused by the HTTP parser as a 502), never a hang.
    let status = hi(&gw, false, &[("x-mock-headers", "2000")])
        .status()
        .as_u16();
    assert!([200, 502].contains(&status), "{status}");
    println!("2,000 upstream response headers: {status}");

    // A refused upstream head consumed nothing: no ledger row, the
    // reservation released.
    let expected = 7 + usize::from(status == 200);
    let rows = rows_eventually(&gw, expected);
    assert_eq!(rows.len(), expected, "every call settled: {rows:?}");
    let u = wait_usage(&gw, "bob", |u| u["reserved_tokens"] == 0);
    assert_eq!(u["reserved_tokens"], 0, "{u}");
    let after = rss_kib(&gw.pid().to_string());
    println!("gateway RSS before {before} KiB, after {after} KiB");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew by {} KiB",
        after - before
    );
}
