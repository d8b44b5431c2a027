//! LLM routes over real TCP: model routing and rewrite, usage accounting
//! from JSON and SSE, budgets with reservations, the durable ledger,
//! fallbacks and large bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A chat route for bob, alice and the admin; `support-fast` on the
/// `llm` pool falling back to `support-backup` on the `backup` pool
/// (connect 300 ms, read 5 s); `admin-only`; `user_tokens_per_day` each
/// user's budget; 2 MiB bodies.
fn llm_config(
    llm_peers: &[&str],
    fallback_peers: &[&str],
    user_tokens_per_day: u64,
) -> ConfigBuilder {
    ConfigBuilder::new()
        .max_body_bytes(2_097_152)
        .keys(&[BOB, ALICE, ROOT_OPS])
        .pool("llm", Pool::new(llm_peers).timeouts(300, 5000))
        .pool("backup", Pool::new(fallback_peers).timeouts(300, 5000))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent", "admin"]))
        .model(
            Model::new("support-fast", "llm", 0.15, 0.60, 100)
                .upstream_model("gpt-4o-mini")
                .fallbacks(&["support-backup"]),
        )
        .model(Model::new("support-backup", "backup", 1.0, 2.0, 100).upstream_model("backup-model"))
        .model(Model::new("admin-only", "llm", 1.0, 1.0, 100).roles(&["admin"]))
        .default_rate_limit(100_000)
        .budget(Budget::user().tokens_per_day(user_tokens_per_day))
}

/// A chat call for `support-fast`.
fn ask(gw: &Gateway, key: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    chat(gw, key, &chat_body("support-fast", json!({})), headers)
}

#[test]
fn model_rewrite_and_max_tokens_cap_reach_the_upstream() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    let resp = chat(
        &gw,
        BOB_KEY,
        &chat_body(
            "support-fast",
            json!({"max_tokens": 5000, "temperature": 0.2}),
        ),
        &[],
    );
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "1000000");
    assert!(resp.headers().contains_key("x-ratelimit-remaining-tokens"));
    assert!(resp.headers().contains_key("x-ratelimit-reset-tokens"));
    let answer: Value = resp.json().unwrap();
    let received = &answer["received"];
    assert_eq!(received["model"], "gpt-4o-mini");
    assert_eq!(
        received["max_tokens"], 100,
        "capped at the model's max_tokens"
    );
    assert_eq!(received["temperature"], 0.2, "unknown fields pass through");
    // Absent max_tokens is set to the cap.
    let answer: Value = ask(&gw, BOB_KEY, &[]).json().unwrap();
    assert_eq!(answer["received"]["max_tokens"], 100);
}

#[test]
fn usage_from_json_and_sse_is_billed_exactly() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    // JSON answer.
    let answer: Value = ask(&gw, BOB_KEY, &[("x-mock-completion-tokens", "7")])
        .json()
        .unwrap();
    let json_total = answer["usage"]["total_tokens"].as_u64().unwrap();
    let u = wait_usage(&gw, "bob", |u| u["tokens_day"].as_u64() == Some(json_total));
    assert_eq!(u["tokens_day"].as_u64(), Some(json_total), "{u}");
    assert_eq!(u["reserved_tokens"], 0);

    // SSE answer: include_usage is injected, so the upstream reports usage.
    let resp = chat(
        &gw,
        BOB_KEY,
        &chat_body("support-fast", json!({"stream": true})),
        &[("x-mock-completion-tokens", "9")],
    );
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().unwrap();
    let usage_line = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("usage").is_some())
        .expect("upstream reported usage: include_usage was injected");
    let sse_total = usage_line["usage"]["total_tokens"].as_u64().unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let u = wait_usage(&gw, "bob", |u| {
        u["tokens_day"].as_u64() == Some(json_total + sse_total)
    });
    assert_eq!(
        u["tokens_day"].as_u64(),
        Some(json_total + sse_total),
        "{u}"
    );

    let rows = rows_eventually(&gw, 2);
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.model == "support-fast" && !r.estimated));
    assert_eq!(rows[1].prompt + rows[1].completion, sse_total);
    // Cost in integer micro-dollars: ceil(p*0.15 + c*0.60).
    let (p, c) = (rows[1].prompt, rows[1].completion);
    assert_eq!(
        rows[1].micro_usd,
        (p * 150_000 + c * 600_000).div_ceil(1_000_000)
    );
}

#[test]
fn refusals_have_the_contract_codes() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            chat_body("no-such-model", json!({})),
            404,
            "model_not_found",
        ),
        (chat_body("admin-only", json!({})), 403, "model_not_allowed"),
        (json!({"model": "support-fast"}), 400, "invalid_request"),
        (
            json!({"model": "support-fast", "messages": [{"role": "user", "content": 5}]}),
            400,
            "invalid_request",
        ),
        (json!(["not", "an", "object"]), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got_status, got_code, _) = error_code(chat(&gw, BOB_KEY, &body, &[]));
        assert_eq!((got_status, got_code.as_str()), (status, code), "{body}");
    }
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("X-API-Key", BOB_KEY)
        .body("{not json")
        .send()
        .unwrap();
    assert_error!(resp, 400, "invalid_request");
    // The admin may use the restricted model.
    assert_eq!(
        chat(&gw, ROOT_KEY, &chat_body("admin-only", json!({})), &[]).status(),
        200
    );
}

#[test]
fn daily_budget_refuses_before_overspending() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 2000).start();
    let mut admitted = 0;
    let mut refused = None;
    for _ in 0..40 {
        let resp = ask(&gw, ALICE_KEY, &[("x-mock-completion-tokens", "100")]);
        if resp.status() == 429 {
            let retry = retry_after(&resp);
            assert!((1..=86_400).contains(&retry));
            assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "2000");
            assert!(resp.headers().contains_key("x-ratelimit-remaining-tokens"));
            refused = Some(error_code(resp));
            break;
        }
        assert_eq!(resp.status(), 200);
        admitted += 1;
        wait_usage(&gw, "alice", |u| u["reserved_tokens"] == 0);
    }
    let (_, code, body) = refused.expect("the budget must refuse eventually");
    assert_eq!(code, "token_budget_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("alice"));
    let u = usage_of(&gw, "alice");
    assert!(u["tokens_day"].as_u64().unwrap() <= 2000, "overspent: {u}");
    assert!(admitted > 0);
    // Bob is unaffected.
    assert_eq!(ask(&gw, BOB_KEY, &[]).status(), 200);
}

#[test]
fn fifty_concurrent_calls_against_room_for_ten() {
    let llm = Backend::start();
    // Each call reserves prompt (~12) + max_tokens (100) ≈ 112 tokens:
    // 1,150 tokens leave room for exactly 10.
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1150).start();
    let url = gw.url("/v1/chat/completions");
    let body = chat_body("support-fast", json!({}));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || {
                client()
                    .post(url)
                    .header("X-API-Key", BOB_KEY)
                    .header("x-mock-delay-ms", "300")
                    .header("x-mock-completion-tokens", "100")
                    .json(&body)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!((1..=10).contains(&ok), "admitted {ok}: {statuses:?}");
    assert_eq!(ok + refused, 50);
    let rows = rows_eventually(&gw, ok);
    assert_eq!(rows.len(), ok);
    let billed: u64 = rows.iter().map(|r| r.prompt + r.completion).sum();
    let u = wait_usage(&gw, "bob", |u| u["reserved_tokens"] == 0);
    assert_eq!(
        u["tokens_day"].as_u64().unwrap(),
        billed,
        "store and ledger agree"
    );
    assert_eq!(u["reserved_tokens"], 0);
}

#[test]
fn client_disconnect_mid_stream_bills_what_was_produced_and_frees_the_reservation() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    let body = chat_body("support-fast", json!({"stream": true})).to_string();
    let mut stream = TcpStream::connect(&gw.addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nx-mock-completion-tokens: 100\r\nx-mock-chunk-delay-ms: 50\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = 0;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while got < 600 {
        got += stream.read(&mut buf).unwrap();
    }
    // Half-way through the 5 s stream: reservation open.
    assert!(usage_of(&gw, "bob")["reserved_tokens"].as_u64().unwrap() > 0);
    drop(stream);
    let u = wait_usage(&gw, "bob", |u| {
        u["reserved_tokens"] == 0 && u["tokens_day"].as_u64() > Some(0)
    });
    assert_eq!(u["reserved_tokens"], 0, "{u}");
    let billed = u["tokens_day"].as_u64().unwrap();
    assert!(billed > 0, "billed for what was produced, never zero: {u}");
    let rows = rows_eventually(&gw, 1);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].estimated,
        "no usage arrived: the row is marked estimated"
    );
    assert!(
        rows[0].completion > 0 && rows[0].completion < 100,
        "completion counted from streamed text: {rows:?}"
    );
}

#[test]
fn restart_and_kill_keep_spend() {
    let llm = Backend::start();
    let mut gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    ask(&gw, BOB_KEY, &[]);
    let before = wait_usage(&gw, "bob", |u| u["tokens_day"].as_u64() > Some(0))["tokens_day"]
        .as_u64()
        .unwrap();
    // Graceful stop flushes the ledger.
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    gw.spawn(false);
    assert_eq!(usage_of(&gw, "bob")["tokens_day"].as_u64().unwrap(), before);
    // kill -9 after the group-commit window (≤ 100 ms) loses nothing.
    ask(&gw, BOB_KEY, &[]);
    let after = wait_usage(&gw, "bob", |u| u["tokens_day"].as_u64() > Some(before))["tokens_day"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    gw.spawn(false);
    assert_eq!(usage_of(&gw, "bob")["tokens_day"].as_u64().unwrap(), after);
}

#[test]
fn failing_primary_pool_falls_back_to_the_next_model() {
    let backup = Backend::start();
    let dead = free_addr();
    let gw = llm_config(&[&dead], &[&backup.addr], 1_000_000).start();
    let resp = ask(&gw, BOB_KEY, &[]);
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["received"]["model"], "backup-model");
    let rows = rows_eventually(&gw, 1);
    assert_eq!(
        rows[0].model, "support-backup",
        "billed at the model that served"
    );

    // A primary answering 5xx also falls back, before any byte reached
    // the client.
    let failing = Backend::start();
    failing.force_status(500);
    let gw2 = llm_config(&[&failing.addr], &[&backup.addr], 1_000_000).start();
    let resp = ask(&gw2, BOB_KEY, &[]);
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["received"]["model"], "backup-model");
    // When the last candidate fails too, its answer is forwarded as is.
    backup.force_status(503);
    let resp = ask(&gw2, BOB_KEY, &[]);
    assert_eq!(resp.status(), 503);
}

#[test]
fn large_prompts_work() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 100_000_000).start();
    // The last case is one 900 KiB "word": BPE merging is quadratic in a
    // word's length, so the tokenizer must cut it (else minutes of CPU).
    let cases = [
        "lorem ipsum dolor sit amet ".repeat(70 * 1024 / 27 + 1),
        "lorem ipsum dolor sit amet ".repeat(900 * 1024 / 27 + 1),
        "x".repeat(900 * 1024),
    ];
    for text in cases {
        let size = text.len();
        let body =
            json!({"model": "support-fast", "messages": [{"role": "user", "content": text}]});
        let resp = chat(&gw, BOB_KEY, &body, &[]);
        assert_eq!(resp.status(), 200, "{size}");
        let answer: Value = resp.json().unwrap();
        let received = answer["received"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .len();
        assert_eq!(received, text.len(), "{size}: body arrived whole");
    }
    // Over max_body_bytes (2 MiB): 413.
    let text = "x".repeat(3 * 1024 * 1024);
    let body = json!({"model": "support-fast", "messages": [{"role": "user", "content": text}]});
    assert_error!(chat(&gw, BOB_KEY, &body, &[]), 413, "body_too_large");
}

/// Regression: watching the client for a disconnect while streaming must
/// not eat the first bytes of the next request on a keep-alive connection.
#[test]
fn keep_alive_clients_send_many_calls_back_to_back() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 100_000_000).start();
    let url = gw.url("/v1/chat/completions");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                let mut failures = Vec::new();
                for i in 0..100 {
                    let stream = (t + i) % 2 == 0;
                    let body = chat_body("support-fast", json!({"stream": stream}));
                    let resp = c
                        .post(&url)
                        .header("X-API-Key", BOB_KEY)
                        .json(&body)
                        .send()
                        .unwrap();
                    let status = resp.status().as_u16();
                    let _ = resp.bytes();
                    if status != 200 {
                        failures.push(status);
                    }
                }
                failures
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Vec::<u16>::new());
    }
}

/// A streamed answer is chunked to the client whether the upstream chunked
/// it or ended it by closing: the client's keep-alive connection survives
/// it and carries the next call.
#[test]
fn a_streamed_answer_is_chunked_and_keeps_the_connection() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 100_000_000).start();
    let body = chat_body("support-fast", json!({"stream": true})).to_string();
    let request = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let mut stream = TcpStream::connect(&gw.addr).unwrap();
    for upstream in ["", "x-mock-close-delimited: 1\r\n", ""] {
        stream.write_all(request(upstream).as_bytes()).unwrap();
        let answer = read_answer(&mut stream, Duration::from_secs(3));
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 200"), "{upstream:?}: {answer}");
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\ntransfer-encoding: chunked"),
            "{upstream:?}: {head}"
        );
        assert!(
            rest.contains("[DONE]") && rest.ends_with("\r\n0\r\n\r\n"),
            "{upstream:?}: {rest}"
        );
    }
}

/// Pingora never answers `Expect: 100-continue` itself; clients like curl
/// would wait a second before sending large bodies.
#[test]
fn expect_continue_is_answered_before_the_body() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    let body = chat_body("support-fast", json!({})).to_string();
    let mut stream = TcpStream::connect(&gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {BOB_KEY}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = stream
        .read(&mut buf)
        .expect("100 Continue arrives without the body");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(body.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("chatcmpl-mock") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
}

#[test]
fn upstream_refusals_without_usage_cost_nothing() {
    let llm = Backend::start();
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000).start();
    let resp = ask(&gw, BOB_KEY, &[("x-mock-status", "400")]);
    assert_eq!(resp.status(), 400, "the upstream's own answer is forwarded");
    let rows = rows_eventually(&gw, 1);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].prompt, rows[0].completion, rows[0].micro_usd),
        (0, 0, 0),
        "{rows:?}"
    );
    let u = wait_usage(&gw, "bob", |u| u["reserved_tokens"] == 0);
    assert_eq!(u["tokens_day"], 0, "{u}");
}

/// Reservations take a free bound (one token per byte of prompt text);
/// when that bound does not fit the budget, the prompt is counted and the
/// call reserved by the count, so it is never refused for the bound.
#[test]
fn a_prompt_that_fits_by_its_count_is_not_refused_for_its_byte_bound() {
    let llm = Backend::start();
    let text = "How do I reset my password? ".repeat(20);
    // Reply priming (3) + one message's framing (4) + the text.
    let counted = 3 + 4 + count_tokens(&text);
    let bound = 3 + 4 + text.len() as u64;
    let budget = counted + 100 + 10; // max_tokens of support-fast: 100
    assert!(bound + 100 > budget, "the bound alone would be refused");
    let gw = llm_config(&[&llm.addr], &[&llm.addr], budget).start();
    let body = json!({"model": "support-fast", "messages": [{"role": "user", "content": text}]});
    let resp = chat(&gw, ALICE_KEY, &body, &[("x-mock-completion-tokens", "5")]);
    assert_eq!(resp.status(), 200);
    let u = wait_usage(&gw, "alice", |u| u["reserved_tokens"] == 0);
    assert!(u["tokens_day"].as_u64().unwrap() <= budget, "{u}");
    // What is left no longer fits the counted prompt plus its cap: refused.
    let resp = chat(&gw, ALICE_KEY, &body, &[("x-mock-completion-tokens", "5")]);
    assert_eq!(resp.status(), 429);
    assert_eq!(error_code(resp).1, "token_budget_exceeded");
    let u = usage_of(&gw, "alice");
    assert!(
        u["tokens_day"].as_u64().unwrap() <= budget,
        "overspent: {u}"
    );
}

/// `guards.max_prompt_tokens` is judged by the count, not the byte bound.
#[test]
fn max_prompt_tokens_counts_the_prompt() {
    let llm = Backend::start();
    let text = "How do I reset my password? ".repeat(20);
    let counted = 3 + 4 + count_tokens(&text);
    let gw = llm_config(&[&llm.addr], &[&llm.addr], 1_000_000)
        .max_prompt_tokens(counted)
        .start();
    let body = json!({"model": "support-fast", "messages": [{"role": "user", "content": text}]});
    assert!(
        text.len() as u64 > counted,
        "the byte bound is over the limit"
    );
    assert_eq!(chat(&gw, ALICE_KEY, &body, &[]).status(), 200);
    let longer = json!({"model": "support-fast",
        "messages": [{"role": "user", "content": format!("{text} Thanks!")}]});
    let resp = chat(&gw, ALICE_KEY, &longer, &[]);
    assert_eq!(resp.status(), 400);
    let (_, code, body) = error_code(resp);
    assert_eq!(code, "invalid_request");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!("limit of {counted}")),
        "{message}"
    );
}

/// A raw upstream that answers every chat call with a fixed JSON answer
/// and reports, per request, whether its first read held the whole request
/// (header and body).
fn one_read_upstream() -> (String, std::sync::mpsc::Receiver<bool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answer = br#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let mut request = Vec::new();
                    let mut first_read_whole = None;
                    loop {
                        let n = match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        request.extend_from_slice(&buf[..n]);
                        let whole = whole_request(&request);
                        first_read_whole.get_or_insert(whole);
                        if whole {
                            break;
                        }
                    }
                    let _ = tx.send(first_read_whole == Some(true));
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Header complete and as many body bytes as its Content-Length says.
fn whole_request(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = content_length(&text[..end]).unwrap_or(0);
    bytes.len() >= end + 4 + length
}

/// The gateway sends an LLM call's header and body to the upstream in one
/// write (upstream::cork): the upstream wakes once and reads it whole.
#[test]
fn the_upstream_reads_each_call_whole_in_one_read() {
    let (upstream, first_reads) = one_read_upstream();
    let gw = llm_config(&[&upstream], &[&upstream], 1_000_000).start();
    for _ in 0..10 {
        let resp = ask(&gw, BOB_KEY, &[]);
        assert_eq!(resp.status(), 200);
    }
    let whole: Vec<bool> = first_reads.try_iter().collect();
    assert_eq!(whole.len(), 10);
    assert!(whole.iter().all(|w| *w), "first reads whole: {whole:?}");
}
