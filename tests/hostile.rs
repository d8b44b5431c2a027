//! Hostile clients, as exact bytes over TCP: slowloris heads (first and
//! keep-alive requests), header count and size limits, pipelining and a
//! request smuggled into a body, a JSON body nested 100,000 deep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The contract's head deadline in these tests (short, so they are quick).
const HEADER_TIMEOUT_MS: u64 = 2000;

/// The core config with a 2 s head deadline and no health checks, so the
/// mock backend's `served` counts exactly the requests the gateway passed on.
fn hostile_config(peer: &str) -> ConfigBuilder {
    ConfigBuilder::support(&[peer])
        .header_timeout_ms(HEADER_TIMEOUT_MS)
        .with_pool("support", Pool::no_health_check)
}

fn setup() -> (Backend, Gateway) {
    let backend = Backend::start();
    let gw = hostile_config(&backend.addr).start();
    (backend, gw)
}

/// Requests the mock backend served, not counting the stats request itself.
fn upstream_saw(backend: &Backend) -> u64 {
    backend.served() - 1
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
    stream
}

/// Sends `bytes` one per second, reading between them; returns what the
/// gateway answered and when the connection was closed, counted from `from`.
fn slowloris(stream: &mut TcpStream, bytes: &[u8], from: Instant) -> (String, Duration) {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next = bytes.iter().cycle();
    loop {
        assert!(
            from.elapsed() < Duration::from_secs(30),
            "the slow head was never cut off; got {:?}",
            String::from_utf8_lossy(&answer)
        );
        if let Some(b) = next.next() {
            // A write may fail once the gateway has closed; the read says so.
            let _ = stream.write_all(&[*b]);
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&answer).into_owned(),
                    from.elapsed(),
                )
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&answer).into_owned(),
                    from.elapsed(),
                )
            }
        }
    }
}

/// Reads answers until the gateway closes (or 5 s pass: a hang).
fn read_to_close(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "connection neither answered nor closed: {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a byte stream of HTTP/1.1 answers (each with Content-Length).
fn split_answers(mut text: &str) -> Vec<(u16, String, Value)> {
    let mut answers = Vec::new();
    while let Some((head, rest)) = text.split_once("\r\n\r\n") {
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let len = content_length(head).unwrap_or_else(|| panic!("no content-length in {head:?}"));
        let body = &rest[..len.min(rest.len())];
        answers.push((
            status,
            head.to_ascii_lowercase(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        ));
        text = &rest[len.min(rest.len())..];
    }
    answers
}

/// Sends `request` on a new connection; the answers until it closes.
fn exchange(gw: &Gateway, request: &str) -> Vec<(u16, String, Value)> {
    let mut stream = connect(&gw.addr);
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    split_answers(&read_to_close(&mut stream))
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {BOB_KEY}\r\n{extra}\r\n")
}

fn assert_request_timeout(answer: &str, elapsed: Duration, what: &str) {
    let answers = split_answers(answer);
    let last = answers
        .last()
        .unwrap_or_else(|| panic!("{what}: no answer before close: {answer:?}"));
    assert_eq!(last.0, 408, "{what}: {answer}");
    assert_eq!(last.2["error"]["code"], "request_timeout", "{what}");
    assert!(last.1.contains("connection: close"), "{what}: {}", last.1);
    assert!(last.1.contains("x-request-id:"), "{what}: {}", last.1);
    let deadline = Duration::from_millis(HEADER_TIMEOUT_MS);
    assert!(
        elapsed >= deadline - Duration::from_millis(100),
        "{what}: closed before the deadline, after {elapsed:?}"
    );
    assert!(
        elapsed <= deadline + Duration::from_secs(1),
        "{what}: held past header_timeout_ms + 1 s: {elapsed:?}"
    );
}

#[test]
fn a_head_sent_one_byte_per_second_is_cut_off_at_the_deadline_with_408() {
    let (backend, gw) = setup();
    let start = Instant::now();
    let mut stream = connect(&gw.addr);
    let (answer, elapsed) = slowloris(&mut stream, get("/api/v1/tickets/1", "").as_bytes(), start);
    assert_request_timeout(&answer, elapsed, "first request");
    assert_eq!(upstream_saw(&backend), 0, "nothing reached the upstream");
}

#[test]
fn a_slow_second_request_on_a_kept_alive_connection_is_cut_off_too() {
    let (backend, gw) = setup();
    let mut stream = connect(&gw.addr);
    stream
        .write_all(get("/api/v1/tickets/first", "").as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 16384];
    let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    let first = split_answers(&String::from_utf8_lossy(&buf[..n]));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, 200);
    assert_eq!(first[0].2["path"], "/api/v1/tickets/first");
    assert!(!first[0].1.contains("connection: close"));

    // The deadline of a kept-alive request runs from its first byte.
    let start = Instant::now();
    let (answer, elapsed) = slowloris(
        &mut stream,
        get("/api/v1/tickets/second", "").as_bytes(),
        start,
    );
    assert_request_timeout(&answer, elapsed, "second request");
    assert_eq!(
        upstream_saw(&backend),
        1,
        "only the first request reached the upstream"
    );
}

#[test]
fn keep_alive_requests_and_a_head_split_over_several_writes_are_served() {
    let (backend, gw) = setup();
    let mut stream = connect(&gw.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        let req = get(&format!("/api/v1/tickets/{i}"), "");
        // Three pieces, a moment apart: slow but well inside the deadline.
        for piece in req.as_bytes().chunks(req.len() / 3 + 1) {
            stream.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut buf = vec![0u8; 16384];
        let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let answers = split_answers(&String::from_utf8_lossy(&buf[..n]));
        assert_eq!(answers.len(), 1, "request {i}");
        assert_eq!(answers[0].0, 200, "request {i}");
        assert_eq!(answers[0].2["path"], format!("/api/v1/tickets/{i}"));
        assert_eq!(answers[0].2["headers"]["x-gateway-user"], "bob");
    }
    assert_eq!(upstream_saw(&backend), 3);
}

#[test]
fn too_many_header_fields_get_431_and_reach_nobody() {
    let (backend, gw) = setup();
    let fields: String = (0..300).map(|i| format!("X-F{i}: v\r\n")).collect();
    let answers = exchange(&gw, &get("/api/v1/tickets/1", &fields));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, 431);
    assert_eq!(answers[0].2["error"]["code"], "headers_too_large");
    assert!(answers[0].1.contains("connection: close"));

    // Under the limit: served (the gateway adds its X-Gateway-* fields, and
    // the mock backend, Pingora too, parses 256 at most).
    let fields: String = (0..200).map(|i| format!("X-F{i}: v\r\n")).collect();
    let answer = raw_request(&gw.addr, get("/api/v1/tickets/1", &fields).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        upstream_saw(&backend),
        1,
        "only the request within the limit"
    );
}

#[test]
fn an_oversize_head_gets_431_and_reaches_nobody() {
    let (backend, gw) = setup();
    // The support config keeps the default max_header_bytes (32 KiB).
    let big = format!("X-Big: {}\r\n", "v".repeat(40_000));
    let answers = exchange(&gw, &get("/api/v1/tickets/1", &big));
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, 431);
    assert_eq!(answers[0].2["error"]["code"], "headers_too_large");
    // An endless request line is a URI too long.
    let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
    let answer = raw_request(&gw.addr, line.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(answer.contains("uri_too_long"), "{answer}");
    assert_eq!(upstream_saw(&backend), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order_or_the_connection_closes() {
    let (backend, gw) = setup();
    let smuggled = get("/api/v1/tickets/smuggled", "");
    let post = format!(
        "POST /api/v1/tickets/a HTTP/1.1\r\nHost: gw\r\nX-API-Key: {BOB_KEY}\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let pipelined = [
        post,
        get("/api/v1/tickets/b", ""),
        get("/api/v1/tickets/c", ""),
    ]
    .concat();
    let answers = exchange(&gw, &pipelined);
    assert!(!answers.is_empty(), "the first request is answered");
    let expected = [
        "/api/v1/tickets/a",
        "/api/v1/tickets/b",
        "/api/v1/tickets/c",
    ];
    for (i, (status, _, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "answer {i}");
        assert_eq!(body["path"], expected[i], "answers come in order");
    }
    // The request inside the body stayed a body.
    assert_eq!(answers[0].2["body"], smuggled);
    assert_eq!(upstream_saw(&backend), answers.len() as u64);
}

#[test]
fn two_gets_in_one_write_never_hang() {
    let (backend, gw) = setup();
    let two = [get("/api/v1/tickets/1", ""), get("/api/v1/tickets/2", "")].concat();
    let answers = exchange(&gw, &two);
    assert!(!answers.is_empty() && answers.len() <= 2, "{answers:?}");
    for (i, (status, _, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(body["path"], format!("/api/v1/tickets/{}", i + 1));
    }
    assert_eq!(upstream_saw(&backend), answers.len() as u64);
}

/// An LLM route whose upstream is the mock backend.
fn llm_config(llm: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .max_body_bytes(1_048_576)
        .keys(&[BOB])
        .pool("llm", Pool::new(&[llm]))
        .route(Route::llm("chat", "/v1/chat/completions"))
        .model(Model::new("m", "llm", 1.0, 1.0, 50))
}

#[test]
fn json_nested_100000_deep_is_refused_with_400_and_the_gateway_lives_on() {
    let llm = Backend::start();
    let gw = llm_config(&llm.addr).start();
    let depth = 100_000;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let body = format!(
            "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":{}1{}}}]}}",
            open.repeat(depth),
            close.repeat(depth)
        );
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-API-Key: {BOB_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut stream = connect(&gw.addr);
        stream
            .write_all([head, body].concat().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let answers = split_answers(&read_answer(&mut stream, Duration::from_secs(10)));
        assert_eq!(answers.len(), 1, "{open}");
        assert_eq!(answers[0].0, 400, "{open}");
        assert_eq!(answers[0].2["error"]["code"], "invalid_request", "{open}");
    }
    assert_eq!(upstream_saw(&llm), 0, "nothing reached the upstream");
    // The process survived (no stack overflow): it still serves.
    let ok = chat(&gw, BOB_KEY, &user_says("m", "hi"), &[]);
    assert_eq!(ok.status(), 200);
}

#[test]
fn one_address_holds_at_most_16_slow_heads() {
    let (backend, gw) = setup();
    // 20 connections whose heads never complete. After 1 s a head counts as
    // slow; the 17th slow one from the same address is answered 408 at
    // once, the 16 others at the 2 s deadline.
    let mut streams: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&gw.addr);
            s.write_all(b"GET /api/v1/tickets/1 HTTP/1.1\r\nHost: gw\r\n")
                .unwrap_or_else(|e| panic!("{e}"));
            s
        })
        .collect();
    // Between the 1 s slow mark and the 2 s deadline.
    std::thread::sleep(Duration::from_millis(1500));
    let mut early = 0;
    for s in &mut streams {
        s.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 1024];
        if let Ok(n) = s.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            early += 1;
        }
    }
    assert_eq!(early, 4, "20 slow heads, 16 allowed per address");
    for s in &mut streams {
        s.set_nonblocking(false).unwrap_or_else(|e| panic!("{e}"));
    }
    // The others end at the deadline, as usual.
    let late = streams
        .iter_mut()
        .map(read_to_close)
        .filter(|answer| answer.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(late, 16);
    assert_eq!(upstream_saw(&backend), 0);
}
