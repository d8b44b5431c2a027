//! Per-request cost of OpenTelemetry tracing (issue 12): the time the
//! `logging` phase spends building and queueing a request's spans (one
//! `gateway.request` with the GenAI attributes of an LLM call, one
//! `upstream.attempt` child), against a loopback OTLP collector that
//! accepts every export. Off, the cost is one `Option` check.
//!
//!   cargo bench --bench tracing

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tollgate::config::schema::OtlpConfig;
use tollgate::ctx::{RequestCtx, UpstreamAttempt};
use tollgate::llm::account::LlmSummary;
use tollgate::observe::otel::{remote_parent, RequestSpan, Tracing};

/// Answers 200 to every OTLP/HTTP export, on loopback.
fn collector() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    addr
}

fn request() -> RequestCtx {
    let mut ctx = RequestCtx::new(std::sync::Arc::new(
        tollgate::config::load::empty_snapshot().expect("empty config"),
    ));
    ctx.request_id = "01JBENCH0000000000000000000".into();
    ctx.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    ctx.identity = Some(Arc::new(tollgate::auth::Identity {
        user: "alice".into(),
        tenant: "acme".into(),
        roles: vec!["agent".into()],
        key_id: "alice-1".into(),
        ..tollgate::auth::Identity::default()
    }));
    ctx.llm_summary = Some(LlmSummary {
        model: "support-fast".into(),
        served_model: Some("support-fast".into()),
        upstream_model: Some("gpt-4o-mini".into()),
        api: tollgate::config::schema::LlmApi::OpenaiChat,
        prompt_tokens: 120,
        completion_tokens: 40,
        ..LlmSummary::default()
    });
    let now = SystemTime::now();
    ctx.attempts.push(UpstreamAttempt {
        peer: "127.0.0.1:9101".parse().unwrap(),
        model: Some("support-fast".into()),
        started: now,
        ended: Some(now),
        status: Some(200),
    });
    ctx
}

fn main() {
    // Test runners list every target (`--list`); only `cargo bench` (which
    // passes `--bench`) runs the measurement.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return;
    }
    let tracing = Tracing::start(&OtlpConfig {
        endpoint: format!("http://{}", collector()),
        service_name: "tollgate-bench".into(),
        sample_ratio: 1.0,
    })
    .unwrap();
    let ctx = request();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";
    // 1,500 requests = 3,000 spans: under the 4,096-span queue, so every
    // span takes the full path (no queue_full shortcut). Exported between
    // rounds.
    const PER_ROUND: u32 = 1_500;
    let mut on = Vec::new();
    let mut off = Vec::new();
    let disabled: Option<&Tracing> = std::hint::black_box(None);
    let span = || RequestSpan {
        ctx: &ctx,
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        incoming_parent: remote_parent(Some(incoming)),
    };
    for _ in 0..10 {
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            tracing.record(&span());
        }
        on.push(t.elapsed() / PER_ROUND);
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            // What the logging phase does with otlp off.
            if let Some(tracing) = disabled {
                tracing.record(&span());
            }
        }
        off.push(t.elapsed() / PER_ROUND);
        tracing.flush();
        std::thread::sleep(Duration::from_millis(50));
    }
    on.sort();
    off.sort();
    println!(
        "tracing on:  median {:?} per request (2 spans, queued for export), min {:?}, max {:?}",
        on[on.len() / 2],
        on[0],
        on[on.len() - 1]
    );
    println!("tracing off: median {:?} per request", off[off.len() / 2]);
    let dropped = tollgate::observe::metrics::OTLP_SPANS_DROPPED
        .as_ref()
        .map(|c| {
            c.with_label_values(&["export_failed"]).get()
                + c.with_label_values(&["queue_full"]).get()
        })
        .unwrap_or(0);
    println!("spans dropped: {dropped}");
    tracing.shutdown();
}
