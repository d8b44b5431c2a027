//! One client API, any provider, over real TCP: an OpenAI chat client
//! served by Anthropic- and Gemini-shaped upstreams, an Anthropic client
//! served by OpenAI- and Gemini-shaped ones (the mock backend speaks all
//! three), JSON and streamed, with tool-call round trips, cache classes
//! billed at the serving model's prices, upstream errors in the client's
//! shape, refusals naming the field, and failover across providers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn start() -> (Backend, Gateway) {
    let llm = Backend::start();
    let gw = ConfigBuilder::translating(&llm.addr, &llm.addr).start();
    (llm, gw)
}

const CACHE: [(&str, &str); 3] = [
    ("x-mock-cached-tokens", "40"),
    ("x-mock-cache-write-tokens", "8"),
    ("x-mock-completion-tokens", "5"),
];

fn messages_body(model: &str, extra: Value) -> Value {
    with_fields(
        json!({"model": model, "max_tokens": 50, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Where is my order?"}]}),
        extra,
    )
}

/// The usage a chat client sees, as the ledger's classes.
fn chat_usage(u: &Value) -> (u64, u64, u64) {
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
    )
}

/// The usage an Anthropic client sees, as the ledger's classes.
fn messages_usage(u: &Value) -> (u64, u64, u64, u64) {
    let read = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
    let write = u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    let input = u["input_tokens"].as_u64().unwrap();
    (
        input + read + write,
        u["output_tokens"].as_u64().unwrap(),
        read,
        write,
    )
}

/// The stream's text, its finish reason and its usage chunk (chat).
fn chat_stream(text: &str) -> (String, String, Value) {
    let events = sse_events(text);
    assert_eq!(events.last().unwrap().1, "[DONE]", "{text}");
    let mut answer = String::new();
    let mut finish = String::new();
    let mut usage = Value::Null;
    for (name, data) in &events {
        assert!(name.is_empty(), "chat streams have no event names: {text}");
        if let Some(t) = data["choices"][0]["delta"]["content"].as_str() {
            answer.push_str(t);
        }
        if let Some(f) = data["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
        if data["usage"].is_object() {
            usage = data["usage"].clone();
        }
    }
    (answer, finish, usage)
}

#[test]
fn openai_client_served_by_anthropic_json_and_stream_billed_with_cache_classes() {
    let (_llm, gw) = start();
    let body = chat_body("claude-via-chat", json!({"max_tokens": 50}));
    let resp = chat(&gw, BOB_KEY, &body, &CACHE);
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "claude-sonnet-4-5");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tok tok tok tok tok"
    );
    let (prompt, completion, cached) = chat_usage(&answer["usage"]);
    assert_eq!((completion, cached), (5, 40));
    assert_eq!(answer["usage"]["cache_creation_input_tokens"], 8);

    let streamed = with_fields(body, json!({"stream": true}));
    let resp = chat(&gw, BOB_KEY, &streamed, &CACHE);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (text, finish, usage) = chat_stream(&resp.text().unwrap());
    assert_eq!(
        (text.as_str(), finish.as_str()),
        ("tok tok tok tok tok", "stop")
    );
    assert_eq!(chat_usage(&usage), (prompt, completion, cached));

    let rows = rows_eventually(&gw, 2);
    for row in &rows {
        assert_eq!(row.api, "openai_chat");
        assert_eq!(row.model, "claude-via-chat");
        assert_eq!(row.requested_model, "claude-via-chat");
        assert_eq!(row.upstream_api, "anthropic_messages");
        assert_eq!(
            (row.prompt, row.completion, row.cached, row.cache_write),
            (prompt, 5, 40, 8)
        );
        assert!(!row.estimated);
        let input = prompt - 48;
        assert_eq!(
            row.micro_usd,
            cost(&[(input, 3.0), (40, 0.30), (8, 3.75), (5, 15.0)])
        );
    }
    let line = gw.logged("model", "claude-via-chat").unwrap();
    assert_eq!(line["upstream_api"], "anthropic_messages");
    assert_eq!(line["served_model"], "claude-via-chat");
}

#[test]
fn tool_call_round_trip_keeps_ids_across_apis() {
    let (_llm, gw) = start();
    let tools = json!([{"type": "function", "function": {"name": "get_ticket",
        "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}}}}]);
    for model in ["claude-via-chat", "gemini-via-chat"] {
        let ask = chat_body(model, json!({"tools": tools}));
        let tool = [("x-mock-tool-call", "get_ticket")];
        let answer: Value = chat(&gw, BOB_KEY, &ask, &tool).json().unwrap();
        let message = &answer["choices"][0]["message"];
        assert_eq!(
            answer["choices"][0]["finish_reason"], "tool_calls",
            "{model}"
        );
        let call = &message["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_ticket");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"id": 42}));
        let id = call["id"].as_str().unwrap().to_string();
        // The result goes back under the same id; the model answers.
        let mut messages = ask["messages"].as_array().unwrap().clone();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "ticket 42: open"}));
        let follow = with_fields(ask.clone(), json!({"messages": messages}));
        let answer: Value = chat(&gw, BOB_KEY, &follow, &tool).json().unwrap();
        assert_eq!(
            answer["choices"][0]["finish_reason"], "stop",
            "{model}: {answer}"
        );
        assert!(answer["choices"][0]["message"]["content"].is_string());
        // Streamed: the call's id, name and arguments arrive as deltas.
        let streamed = with_fields(ask, json!({"stream": true}));
        let text = chat(&gw, BOB_KEY, &streamed, &tool).text().unwrap();
        let (_, finish, usage) = chat_stream(&text);
        assert_eq!(finish, "tool_calls", "{model}");
        assert!(usage.is_object());
        let args: String = sse_events(&text)
            .iter()
            .filter_map(|(_, d)| {
                d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"id": 42})
        );
    }
}

#[test]
fn anthropic_client_served_by_openai_and_gemini_json_and_stream() {
    let (_llm, gw) = start();
    let mut seen = Vec::new();
    // The mock's OpenAI side reports at most the prompt as cached.
    let classes = [
        ("x-mock-cached-tokens", "4"),
        ("x-mock-completion-tokens", "5"),
    ];
    for (model, cached) in [("gpt-via-messages", 4), ("gemini-via-messages", 4)] {
        let body = messages_body(model, json!({}));
        let answer: Value = post(&gw, "/v1/messages", BOB_KEY, &body, &classes)
            .json()
            .unwrap();
        assert_eq!(answer["type"], "message", "{model}: {answer}");
        assert_eq!(answer["stop_reason"], "end_turn");
        assert_eq!(answer["content"][0]["text"], "tok tok tok tok tok");
        let (prompt, completion, read, _) = messages_usage(&answer["usage"]);
        assert_eq!((completion, read), (5, cached));

        let streamed = with_fields(body, json!({"stream": true}));
        let resp = post(&gw, "/v1/messages", BOB_KEY, &streamed, &classes);
        assert_eq!(resp.status(), 200);
        let events = sse_events(&resp.text().unwrap());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}");
        assert_eq!(names.last(), Some(&"message_stop"));
        let text: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "tok tok tok tok tok");
        let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            messages_usage(&delta["usage"]),
            messages_usage(&answer["usage"])
        );
        seen.push((model, prompt, read));
    }
    let rows = rows_eventually(&gw, 4);
    assert_eq!(rows.len(), 4);
    for (model, prompt, read) in seen {
        let billed: Vec<_> = rows.iter().filter(|r| r.model == model).collect();
        assert_eq!(billed.len(), 2, "{model}: JSON and stream");
        for row in billed {
            assert_eq!(row.api, "anthropic_messages");
            let upstream = if model == "gpt-via-messages" {
                "openai_chat"
            } else {
                "gemini"
            };
            assert_eq!(row.upstream_api, upstream);
            assert_eq!((row.prompt, row.completion, row.cached), (prompt, 5, read));
        }
    }
    let gpt = rows.iter().find(|r| r.model == "gpt-via-messages").unwrap();
    assert_eq!(
        gpt.micro_usd,
        cost(&[(gpt.prompt - 4, 0.15), (4, 0.075), (5, 0.60)])
    );
}

#[test]
fn openai_client_served_by_gemini_json_and_stream() {
    let (_llm, gw) = start();
    let body = chat_body("gemini-via-chat", json!({"max_tokens": 50}));
    let answer: Value = chat(&gw, BOB_KEY, &body, &CACHE).json().unwrap();
    assert_eq!(answer["model"], "gemini-2.5-flash");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tok tok tok tok tok"
    );
    let (prompt, completion, cached) = chat_usage(&answer["usage"]);
    assert_eq!((completion, cached), (5, 40));
    let streamed = with_fields(body, json!({"stream": true}));
    let (text, finish, usage) = chat_stream(&chat(&gw, BOB_KEY, &streamed, &CACHE).text().unwrap());
    assert_eq!(
        (text.as_str(), finish.as_str()),
        ("tok tok tok tok tok", "stop")
    );
    assert_eq!(chat_usage(&usage), (prompt, completion, cached));
    for row in rows_eventually(&gw, 2) {
        assert_eq!((row.prompt, row.completion, row.cached), (prompt, 5, 40));
        assert_eq!(
            row.micro_usd,
            cost(&[(prompt - 40, 0.30), (40, 0.075), (5, 2.50)])
        );
    }
}

#[test]
fn upstream_errors_take_the_clients_shape_and_unsupported_fields_are_refused() {
    let (_llm, gw) = start();
    // Anthropic's 529 "overloaded" is a 503 to an OpenAI client.
    let body = chat_body("claude-via-chat", json!({}));
    let resp = chat(&gw, BOB_KEY, &body, &[("x-mock-status", "529")]);
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["code"], "overloaded_error");
    assert_eq!(v["error"]["message"], "mock failure");
    // An OpenAI 503 is Anthropic's overloaded_error.
    let body = messages_body("gpt-via-messages", json!({}));
    let resp = post(
        &gw,
        "/v1/messages",
        BOB_KEY,
        &body,
        &[("x-mock-status", "503")],
    );
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    // A field with no equivalent: 400 naming it, nothing sent upstream.
    let body = chat_body("claude-via-chat", json!({"n": 2}));
    let (status, code, v) = error_code(chat(&gw, BOB_KEY, &body, &[]));
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("n above 1"),
        "{v}"
    );
    let body = messages_body("gpt-via-messages", json!({"top_k": 3}));
    let resp = post(&gw, "/v1/messages", BOB_KEY, &body, &[]);
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("top_k"),
        "{v}"
    );
    // A route whose API cannot be translated.
    let body = json!({"model": "claude-via-chat", "input": "hi"});
    let resp = post(&gw, "/v1/responses", BOB_KEY, &body, &[]);
    assert_eq!(resp.status(), 400);
    // Refusals and upstream errors bill nothing.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(rows(&gw).iter().all(|r| r.micro_usd == 0));
}

#[test]
fn an_openai_primary_that_is_down_or_failing_falls_back_to_anthropic_billed_once() {
    let llm = Backend::start();
    let backup = Backend::start();
    let dead = free_addr();
    // Primary refused at connect: nothing listens on its pool.
    let gw = ConfigBuilder::translating(&dead, &backup.addr).start();
    for stream in [false, true] {
        let body = chat_body("gpt-first", json!({"stream": stream}));
        let resp = chat(&gw, BOB_KEY, &body, &CACHE);
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        if stream {
            let (answer, finish, usage) = chat_stream(&text);
            assert_eq!(
                (answer.as_str(), finish.as_str()),
                ("tok tok tok tok tok", "stop")
            );
            assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 40);
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["object"], "chat.completion");
            assert_eq!(v["model"], "claude-backup");
        }
    }
    let rows = rows_eventually(&gw, 2);
    assert_eq!(rows.len(), 2, "one row per call");
    for row in &rows {
        // Asked for the OpenAI model, served and billed by the Anthropic one.
        assert_eq!(row.requested_model, "gpt-first");
        assert_eq!(row.model, "claude-second");
        assert_eq!(row.upstream_api, "anthropic_messages");
        let input = row.prompt - 48;
        assert_eq!(
            row.micro_usd,
            cost(&[(input, 3.0), (40, 3.0), (8, 3.0), (5, 15.0)])
        );
    }
    drop(gw);
    // Primary answering 500: the same.
    llm.force_status(500);
    let gw = ConfigBuilder::translating(&llm.addr, &backup.addr).start();
    let body = chat_body("gpt-first", json!({}));
    let v: Value = chat(&gw, BOB_KEY, &body, &CACHE).json().unwrap();
    assert_eq!(v["model"], "claude-backup", "{v}");
    let rows = rows_eventually(&gw, 1);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].model, "claude-second");
    assert!(backup.served() >= 3);
    // The access line counts both attempts and names the model that served.
    let line = gw
        .logged("log", "access")
        .unwrap_or_else(|| panic!("no access line"));
    assert_eq!(line["attempts"], 2, "{line}");
    assert_eq!(line["served_model"], "claude-second", "{line}");
}

#[test]
fn check_reports_an_upstream_path_with_gemini() {
    let config = ConfigBuilder::translating("127.0.0.1:1", "127.0.0.1:2")
        .with_model("gemini-via-chat", |m| m.upstream_path("/v1/x"));
    let (code, stdout, stderr) = config.check();
    assert_ne!(code, 0);
    let out = format!("{stdout}{stderr}");
    assert!(
        out.contains("upstream_path: cannot be set with upstream_api: gemini"),
        "{out}"
    );
}

/// An OpenAI-shaped upstream whose streams start (header, role chunk) and
/// then die (`stall: false`) or stall (`stall: true`) before any content.
fn dying_stream_upstream(stall: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let event = "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = write!(conn, "{head}{:x}\r\n{event}\r\n", event.len());
                let _ = conn.flush();
                if stall {
                    std::thread::sleep(std::time::Duration::from_secs(30));
                }
            });
        }
    });
    addr
}

#[test]
fn a_stream_that_dies_or_stalls_before_its_first_token_falls_back_to_anthropic() {
    let backup = Backend::start();
    for stall in [false, true] {
        let primary = dying_stream_upstream(stall);
        let gw = ConfigBuilder::translating(&primary, &backup.addr).start();
        let body = chat_body("gpt-first", json!({"stream": true}));
        let resp = chat(&gw, BOB_KEY, &body, &CACHE);
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        // One clean answer in the client's format: the dead stream's
        // role chunk never reached it.
        let (answer, finish, usage) = chat_stream(&text);
        assert_eq!(
            (answer.as_str(), finish.as_str()),
            ("tok tok tok tok tok", "stop"),
            "{text}"
        );
        assert_eq!(text.matches("\"role\":\"assistant\"").count(), 1, "{text}");
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 40);
        let rows = rows_eventually(&gw, 1);
        assert_eq!(rows.len(), 1, "billed once");
        assert_eq!(
            (rows[0].requested_model.as_str(), rows[0].model.as_str()),
            ("gpt-first", "claude-second")
        );
        assert_eq!(rows[0].completion, 5);
    }
}
