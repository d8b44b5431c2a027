//! Hot-path costs of the LLM helpers, reported per byte of input.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

use std::sync::Arc;
use tollgate::config::schema::{
    GuardAction, OutputGuardsConfig, PiiGuardConfig, SecretsGuardConfig,
};
use tollgate::guards::output::{OutputGuardSet, OutputScanner};
use tollgate::llm::api::{LlmApi, LlmRequest};
use tollgate::llm::output_guard::{guard_json, Guarding, SseGuard};
use tollgate::llm::tally::ParsedUsage;
use tollgate::llm::tokens::warm_up;
use tollgate::llm::usage::UsageParser;

const PROSE: &str = "Thanks for reaching out about your order. I checked the tracking \
    number you sent and the parcel left our warehouse on Tuesday; the carrier shows it \
    in transit to your local depot. Could you confirm the delivery address, including \
    the apartment number, so I can update the shipment if needed? ";

/// A support-chat request whose serialized body is at least `target` bytes.
fn chat_body(target: usize) -> Vec<u8> {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a concise, friendly support agent."})];
    let mut i = 0;
    loop {
        let body = json!({"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2});
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() >= target {
            return bytes;
        }
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("({i}) {PROSE}")}));
        i += 1;
    }
}

/// An OpenAI stream with `include_usage` of at least `target` bytes.
fn sse_stream(target: usize) -> Vec<u8> {
    let mut s = String::new();
    let words: Vec<&str> = PROSE.split_inclusive(' ').collect();
    let mut i = 0;
    while s.len() < target {
        let v = json!({
            "id": "chatcmpl-AbCdEf0123456789", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": {"content": words[i % words.len()]},
                "logprobs": null, "finish_reason": null}],
            "usage": null
        });
        s += &format!("data: {v}\n\n");
        i += 1;
    }
    let usage = json!({
        "id": "chatcmpl-AbCdEf0123456789", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 812, "completion_tokens": i, "total_tokens": 812 + i,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}
    });
    s += &format!("data: {usage}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

/// Anthropic's event format: named events, text deltas, cumulative usage.
fn anthropic_stream(target: usize) -> Vec<u8> {
    let mut s = String::new();
    let start = json!({"type": "message_start", "message": {"id": "msg_01", "type": "message",
        "role": "assistant", "content": [], "model": "claude-3-5-haiku-20241022",
        "usage": {"input_tokens": 812, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}});
    s += &format!("event: message_start\ndata: {start}\n\n");
    let words: Vec<&str> = PROSE.split_inclusive(' ').collect();
    let mut i = 0;
    while s.len() < target {
        let v = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": words[i % words.len()]}});
        s += &format!("event: content_block_delta\ndata: {v}\n\n");
        i += 1;
    }
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": i}});
    s += &format!("event: message_delta\ndata: {delta}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n");
    s.into_bytes()
}

/// The Responses API's event format, ending in `response.completed`.
fn responses_stream(target: usize) -> Vec<u8> {
    let mut s = String::new();
    let words: Vec<&str> = PROSE.split_inclusive(' ').collect();
    let mut i = 0;
    while s.len() < target {
        let v = json!({"type": "response.output_text.delta", "item_id": "msg_01",
            "output_index": 0, "content_index": 0, "delta": words[i % words.len()],
            "sequence_number": i});
        s += &format!("event: response.output_text.delta\ndata: {v}\n\n");
        i += 1;
    }
    let done = json!({"type": "response.completed", "response": {"id": "resp_01",
        "status": "completed", "usage": {"input_tokens": 812, "output_tokens": i,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0}}}});
    s += &format!("event: response.completed\ndata: {done}\n\n");
    s.into_bytes()
}

fn json_response() -> Vec<u8> {
    let v: Value = json!({
        "id": "chatcmpl-AbCdEf0123456789", "object": "chat.completion",
        "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
            "message": {"role": "assistant", "content": PROSE.repeat(3), "refusal": null}}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 180, "total_tokens": 992,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "system_fingerprint": "fp_0ba0d124f1"
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn bench_prompt_estimation(c: &mut Criterion) {
    warm_up();
    let mut group = c.benchmark_group("estimate_prompt_tokens");
    for (name, size) in [("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let body = chat_body(size);
        let Ok(req) = LlmRequest::parse(LlmApi::OpenaiChat, &body) else {
            panic!("bench request must be valid");
        };
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(&req).estimate_prompt_tokens())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("chat_parse");
    for (name, size) in [("1KiB", 1024), ("16KiB", 16 * 1024)] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| LlmRequest::parse(LlmApi::OpenaiChat, black_box(&body)))
        });
    }
    group.finish();
}

fn bench_usage(c: &mut Criterion) {
    warm_up();
    let mut group = c.benchmark_group("usage");

    let stream = sse_stream(32 * 1024);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    // `finish` counts the streamed text (the tokenizer's cost included);
    // `finish_for_billing` is what the gateway runs when the upstream
    // reported its usage: the text is never tokenized, so that line is the
    // per-event parsing alone.
    type Finish = fn(&mut UsageParser) -> ParsedUsage;
    let finishes: [(&str, Finish); 2] = [
        ("sse_32KiB_in_1KiB_chunks", UsageParser::finish),
        (
            "sse_32KiB_in_1KiB_chunks_as_billed",
            UsageParser::finish_for_billing,
        ),
    ];
    for (name, finish) in finishes {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut p = UsageParser::sse(LlmApi::OpenaiChat);
                for chunk in black_box(&stream).chunks(1024) {
                    p.feed(chunk);
                }
                finish(&mut p)
            })
        });
    }

    // The same text as the other APIs stream it, for the per-API cost.
    for (name, api, stream) in other_api_streams() {
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut p = UsageParser::sse(api);
                for chunk in black_box(&stream).chunks(1024) {
                    p.feed(chunk);
                }
                p.finish()
            })
        });
    }

    let body = json_response();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_response", |b| {
        b.iter(|| {
            let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
            for chunk in black_box(&body).chunks(1024) {
                p.feed(chunk);
            }
            p.finish()
        })
    });
    group.finish();
}

/// Output guards (pii + secrets, redact) on answers with nothing to
/// redact, against the usage parse every LLM answer already pays: the
/// guard's added cost per answer. A route without output guards runs none
/// of this (the pump forwards its reads untouched).
fn bench_output_guard(c: &mut Criterion) {
    let config = OutputGuardsConfig {
        pii: Some(PiiGuardConfig {
            detect: ["email", "phone", "credit_card", "ssn", "iban"]
                .map(String::from)
                .to_vec(),
            action: GuardAction::Redact,
        }),
        secrets: Some(SecretsGuardConfig {
            action: GuardAction::Redact,
        }),
        holdback_bytes: 256,
    };
    let Ok(scanner) = OutputScanner::compile(&config, &["Bearer sk-upstream-0123456789".into()])
    else {
        panic!("bench scanner must compile");
    };
    let scanner = Arc::new(scanner);
    let set = OutputGuardSet {
        pii: true,
        secrets: true,
    };
    let mut group = c.benchmark_group("output_guard");
    let chat = (
        "sse_chat_32KiB_in_1KiB_chunks",
        LlmApi::OpenaiChat,
        sse_stream(32 * 1024),
    );
    for (name, api, stream) in std::iter::once(chat).chain(other_api_streams()) {
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut g = SseGuard::new(api, Guarding::new(scanner.clone(), set));
                let mut out = Vec::with_capacity(stream.len() + 1024);
                for chunk in black_box(&stream).chunks(1024) {
                    g.feed(chunk, &mut out);
                }
                g.finish(&mut out);
                out
            })
        });
    }
    let body = json_response();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_response", |b| {
        b.iter(|| {
            let mut g = Guarding::new(scanner.clone(), set);
            guard_json(LlmApi::OpenaiChat, &mut g, black_box(&body))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_prompt_estimation,
    bench_usage,
    bench_output_guard
);
criterion_main!(benches);

/// The chat benches' 32 KiB text as the Anthropic and Responses APIs
/// stream it, for the per-API cost.
fn other_api_streams() -> [(&'static str, LlmApi, Vec<u8>); 2] {
    [
        (
            "sse_anthropic_32KiB_in_1KiB_chunks",
            LlmApi::AnthropicMessages,
            anthropic_stream(32 * 1024),
        ),
        (
            "sse_responses_32KiB_in_1KiB_chunks",
            LlmApi::OpenaiResponses,
            responses_stream(32 * 1024),
        ),
    ]
}
