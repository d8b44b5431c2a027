//! Translation tests: field mappings, refusals naming the field, answers
//! and their usage (billed as the upstream reported it), streams whatever
//! the read boundaries, and the request round trip as a property.

use super::*;
use crate::llm::tally::Usage;
use crate::llm::usage::UsageParser;
use proptest::prelude::*;
use serde_json::json;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn to(client: LlmApi, upstream: UpstreamApi) -> Translation {
    match Translation::between(client, upstream) {
        Ok(Some(t)) => t,
        other => panic!("{client:?} -> {upstream:?}: {other:?}"),
    }
}

fn chat_to_anthropic() -> Translation {
    to(LlmApi::OpenaiChat, UpstreamApi::AnthropicMessages)
}

fn anthropic_to_chat() -> Translation {
    to(LlmApi::AnthropicMessages, UpstreamApi::OpenaiChat)
}

/// An upstream's JSON answer translated: the bytes and their JSON.
fn translated_answer(t: Translation, upstream: &str) -> (Vec<u8>, Value) {
    let out = t.answer(upstream.as_bytes()).unwrap_or_default();
    let v = serde_json::from_slice(&out).unwrap_or_default();
    (out, v)
}

fn chat_to_gemini() -> Translation {
    to(LlmApi::OpenaiChat, UpstreamApi::Gemini)
}

fn anthropic_to_gemini() -> Translation {
    to(LlmApi::AnthropicMessages, UpstreamApi::Gemini)
}

fn tool_round_trip_chat() -> Value {
    json!({
        "model": "claude-support",
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "Long policy", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_ticket", "arguments": "{\"id\":42}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_user", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ticket 42: open"},
            {"role": "tool", "tool_call_id": "call_2", "content": "user: bob"},
            {"role": "user", "content": "And now?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_ticket", "description": "Reads a ticket",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_ticket"}},
        "parallel_tool_calls": false,
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

#[test]
fn same_api_needs_no_translation_and_other_client_apis_cannot_be_translated() {
    assert_eq!(
        Translation::between(LlmApi::OpenaiChat, UpstreamApi::OpenaiChat),
        Ok(None)
    );
    assert_eq!(
        Translation::between(LlmApi::AnthropicMessages, UpstreamApi::AnthropicMessages),
        Ok(None)
    );
    for api in [LlmApi::OpenaiResponses, LlmApi::OpenaiEmbeddings] {
        assert!(Translation::between(api, UpstreamApi::AnthropicMessages).is_err());
    }
}

#[test]
fn chat_request_becomes_an_anthropic_request() {
    let out = chat_to_anthropic()
        .request(obj(tool_round_trip_chat()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Value::Object(out),
        json!({
            "model": "claude-support",
            "system": "Be brief.",
            "max_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "u-1"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Long policy", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_ticket", "input": {"id": 42}},
                    {"type": "tool_use", "id": "call_2", "name": "get_user", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "ticket 42: open"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "user: bob"}]},
                {"role": "user", "content": "And now?"}
            ],
            "tools": [{"name": "get_ticket", "description": "Reads a ticket",
                "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}],
            "tool_choice": {"type": "tool", "name": "get_ticket", "disable_parallel_tool_use": true}
        })
    );
}

#[test]
fn fields_without_an_equivalent_are_refused_by_name() {
    let base = || {
        obj(json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}))
    };
    let cases: Vec<(Translation, &str, Value, &str)> = vec![
        (chat_to_anthropic(), "n", json!(2), "n above 1"),
        (
            chat_to_anthropic(),
            "logprobs",
            json!(true),
            "logprobs has no",
        ),
        (
            chat_to_anthropic(),
            "frequency_penalty",
            json!(0.5),
            "frequency_penalty has no",
        ),
        (
            chat_to_anthropic(),
            "response_format",
            json!({"type": "json_object"}),
            "response_format",
        ),
        (chat_to_anthropic(), "seed", json!(7), "seed has no"),
        (chat_to_gemini(), "n", json!(3), "n above 1"),
        (chat_to_gemini(), "user", json!("u"), "user has no"),
        (
            chat_to_gemini(),
            "logit_bias",
            json!({"1": 2}),
            "logit_bias has no",
        ),
    ];
    for (t, field, value, expected) in cases {
        let mut body = base();
        body.insert(field.into(), value);
        let err = t.request(body).map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{field}: {err}");
    }
    let mut body = base();
    body.insert("top_k".into(), json!(5));
    let err = anthropic_to_chat().request(body).unwrap_err().to_string();
    assert!(err.starts_with("top_k has no equivalent"), "{err}");
    // Null means "not set": nothing to refuse.
    let mut body = base();
    body.insert("seed".into(), Value::Null);
    assert!(chat_to_anthropic().request(body).is_ok());
    // Parts and message fields too.
    let audio = obj(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}),
    );
    let err = chat_to_anthropic().request(audio).unwrap_err().to_string();
    assert!(
        err.starts_with("messages[0].content[0].type has no"),
        "{err}"
    );
    let thinking = obj(
        json!({"model": "m", "max_tokens": 9, "thinking": {"type": "enabled", "budget_tokens": 5},
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    let err = anthropic_to_chat()
        .request(thinking)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("thinking has no"), "{err}");
}

#[test]
fn anthropic_request_becomes_a_chat_request() {
    let body = obj(json!({
        "model": "gpt", "max_tokens": 100, "stream": true, "stop_sequences": ["X"],
        "system": [{"type": "text", "text": "Policy", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "u-9"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_ticket", "input": {"id": 42}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "open"},
                {"type": "text", "text": "thanks"}]}
        ],
        "tools": [{"name": "get_ticket", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}
    }));
    let out = anthropic_to_chat()
        .request(body)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Value::Object(out),
        json!({
            "model": "gpt", "max_tokens": 100, "stream": true,
            "stream_options": {"include_usage": true}, "stop": ["X"], "user": "u-9",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Policy", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}}]},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_ticket", "arguments": "{\"id\":42}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "open"},
                {"role": "user", "content": [{"type": "text", "text": "thanks"}]}
            ],
            "tools": [{"type": "function", "function": {"name": "get_ticket", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        })
    );
}

#[test]
fn chat_request_becomes_a_gemini_request_and_tool_results_find_their_function() {
    let mut body = obj(tool_round_trip_chat());
    body.remove("user");
    body.remove("parallel_tool_calls");
    body.insert(
        "response_format".into(),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
    );
    let out = Value::Object(
        chat_to_gemini()
            .request(body)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(out.get("model"), None, "Gemini names the model in the path");
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        out["generationConfig"],
        json!({"maxOutputTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"],
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}})
    );
    assert_eq!(
        out["contents"][0]["parts"],
        json!([{"text": "Long policy"}, {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}])
    );
    assert_eq!(
        out["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_ticket", "args": {"id": 42}}},
            {"functionCall": {"name": "get_user", "args": {}}}]})
    );
    assert_eq!(
        out["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_ticket", "response": {"content": "ticket 42: open"}}},
            {"functionResponse": {"name": "get_user", "response": {"content": "user: bob"}}}]})
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_ticket"]}})
    );
    assert_eq!(
        out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"],
        "object"
    );
    assert_eq!(
        chat_to_gemini().upstream_path("gemini-2.5-flash", true),
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        chat_to_gemini().upstream_path("a/b", false),
        "/v1beta/models/a%2Fb:generateContent"
    );
    let orphan = obj(json!({"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "nope", "content": "x"}]}));
    let err = chat_to_gemini().request(orphan).unwrap_err().to_string();
    assert!(err.starts_with("messages[0].tool_call_id"), "{err}");
}

/// The usage the client's parser bills from a translated JSON answer.
fn billed_json(api: LlmApi, body: &[u8]) -> Option<Usage> {
    let mut p = UsageParser::json(api, 1 << 20);
    p.feed(body);
    p.finish().usage
}

#[test]
fn anthropic_answer_becomes_a_chat_completion_billed_the_same() {
    let upstream = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_ticket", "input": {"id": 42}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "output_tokens": 9,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50}
    })
    .to_string();
    let (out, v) = translated_answer(chat_to_anthropic(), &upstream);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], "Checking.");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0],
        json!({"id": "toolu_1", "type": "function",
            "function": {"name": "get_ticket", "arguments": "{\"id\":42}"}})
    );
    assert_eq!(v["usage"]["prompt_tokens"], 170);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    let upstream_usage = billed_json(LlmApi::AnthropicMessages, upstream.as_bytes());
    assert!(upstream_usage.is_some());
    assert_eq!(billed_json(LlmApi::OpenaiChat, &out), upstream_usage);
}

#[test]
fn chat_answer_becomes_an_anthropic_message_billed_the_same() {
    let upstream = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant",
            "content": "Partial", "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
            "prompt_tokens_details": {"cached_tokens": 64}}
    })
    .to_string();
    let (out, v) = translated_answer(anthropic_to_chat(), &upstream);
    assert_eq!(v["type"], "message");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Partial"},
            {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}}])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 56, "output_tokens": 7, "cache_read_input_tokens": 64,
            "cache_creation_input_tokens": 0})
    );
    assert_eq!(
        billed_json(LlmApi::AnthropicMessages, &out),
        billed_json(LlmApi::OpenaiChat, upstream.as_bytes())
    );
}

#[test]
fn gemini_answer_becomes_a_chat_completion_and_an_anthropic_message() {
    let upstream = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true}, {"text": "Done."},
            {"functionCall": {"name": "get_ticket", "args": {"id": 42}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": 12,
            "thoughtsTokenCount": 5, "cachedContentTokenCount": 200, "totalTokenCount": 317},
        "modelVersion": "gemini-2.5-flash", "responseId": "r-1"
    })
    .to_string();
    let (_, chat) = translated_answer(chat_to_gemini(), &upstream);
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chat["choices"][0]["message"]["content"], "Done.");
    assert_eq!(
        chat["choices"][0]["message"]["reasoning_content"],
        "thinking..."
    );
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_0"
    );
    let expected = Usage {
        prompt_tokens: 300,
        completion_tokens: 17,
        cached_tokens: 200,
        reasoning_tokens: 5,
        cache_write_tokens: 0,
    };
    assert_eq!(
        billed_json(LlmApi::OpenaiChat, chat.to_string().as_bytes()),
        Some(expected)
    );
    let (message, m) = translated_answer(anthropic_to_gemini(), &upstream);
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"]["input_tokens"], 100);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 200);
    let billed = billed_json(LlmApi::AnthropicMessages, &message).unwrap_or_default();
    assert_eq!(
        (
            billed.prompt_tokens,
            billed.completion_tokens,
            billed.cached_tokens
        ),
        (300, 17, 200)
    );
}

#[test]
fn errors_take_the_clients_shape() {
    let overloaded =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let (status, body) = chat_to_anthropic().error(529, overloaded);
    assert_eq!(status, 503);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(v["error"]["message"], "Overloaded");
    assert_eq!(v["error"]["code"], "overloaded_error");
    let openai =
        br#"{"error":{"message":"Slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
    let (status, body) = anthropic_to_chat().error(429, openai);
    assert_eq!(status, 429);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}})
    );
    let (status, body) = anthropic_to_chat().error(503, b"<html>bad gateway</html>");
    assert_eq!(status, 503);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(v["error"]["type"], "overloaded_error");
    let gemini = br#"{"error":{"code":400,"message":"bad field","status":"INVALID_ARGUMENT"}}"#;
    let (status, body) = chat_to_gemini().error(400, gemini);
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

// ---------------------------------------------------------------------------
// Streams

fn named(out: &mut String, v: Value) {
    let name = v["type"].as_str().unwrap_or("").to_string();
    out.push_str(&format!("event: {name}\ndata: {v}\n\n"));
}

/// One content block of an Anthropic stream: its start, `before` (what
/// precedes the deltas), a delta per piece and its stop.
fn content_block(
    s: &mut String,
    index: u64,
    block: Value,
    pieces: &[&str],
    delta: impl Fn(&str) -> Value,
    before: impl FnOnce(&mut String),
) {
    named(
        s,
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    );
    before(s);
    for piece in pieces {
        named(
            s,
            json!({"type": "content_block_delta", "index": index, "delta": delta(piece)}),
        );
    }
    named(s, json!({"type": "content_block_stop", "index": index}));
}

fn anthropic_stream() -> String {
    let mut s = String::new();
    named(
        &mut s,
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
        "role": "assistant", "model": "claude", "content": [], "stop_reason": null,
        "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50}}}),
    );
    content_block(
        &mut s,
        0,
        json!({"type": "text", "text": ""}),
        &["Hel", "lo é"],
        |t| json!({"type": "text_delta", "text": t}),
        // Comments and pings between events are not events.
        |s| {
            s.push_str(": keep-alive comment\r\n\r\n");
            named(s, json!({"type": "ping"}));
        },
    );
    content_block(
        &mut s,
        1,
        json!({"type": "tool_use", "id": "toolu_1", "name": "get_ticket", "input": {}}),
        &["{\"id\":", " 42}"],
        |p| json!({"type": "input_json_delta", "partial_json": p}),
        |_| {},
    );
    named(
        &mut s,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": {"output_tokens": 9}}),
    );
    named(&mut s, json!({"type": "message_stop"}));
    s
}

fn chat_stream() -> String {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut s = String::new();
    s.push_str(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    s.push_str(&chunk(json!({"content": "Hi"}), Value::Null));
    s.push_str(&chunk(json!({"content": " there"}), Value::Null));
    s.push_str(&chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_ticket", "arguments": ""}}]}),
        Value::Null,
    ));
    s.push_str(&chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"id\":42}"}}]}),
        Value::Null,
    ));
    s.push_str(&chunk(json!({}), json!("tool_calls")));
    s.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt", "choices": [],
            "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                "prompt_tokens_details": {"cached_tokens": 64}}})
    ));
    s.push_str("data: [DONE]\n\n");
    s
}

fn gemini_stream() -> String {
    let mut s = String::new();
    for (parts, finish, out) in [
        (json!([{"text": "Hel"}]), None, 1),
        (json!([{"text": "lo"}]), None, 2),
        (
            json!([{"functionCall": {"name": "get_ticket", "args": {"id": 42}}}]),
            Some("STOP"),
            3,
        ),
    ] {
        let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 300, "candidatesTokenCount": out,
                "cachedContentTokenCount": 200}, "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        if let Some(f) = finish {
            c["candidates"][0]["finishReason"] = json!(f);
        }
        s.push_str(&format!("data: {c}\r\n\r\n"));
    }
    s
}

/// Translates `input` fed in the given pieces.
fn run_stream(t: &Translation, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut st = t.stream();
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        st.feed(&input[last..cut], &mut out);
        last = cut;
    }
    st.feed(&input[last..], &mut out);
    st.finish(&mut out);
    out
}

/// The data of each event of an SSE body, with its event name.
fn events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            (name, data)
        })
        .collect()
}

fn billed_sse(api: LlmApi, body: &[u8]) -> Option<Usage> {
    let mut p = UsageParser::sse(api);
    p.feed(body);
    p.finish().usage
}

#[test]
fn anthropic_stream_becomes_chat_chunks_with_the_same_usage() {
    let input = anthropic_stream();
    let out = run_stream(&chat_to_anthropic(), input.as_bytes(), &[]);
    let evs = events(&out);
    let datas: Vec<Value> = evs
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).unwrap_or_default())
        .collect();
    assert!(evs.iter().all(|(name, _)| name.is_none()));
    assert_eq!(evs.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    assert_eq!(datas[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = datas
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello é");
    let args: String = datas
        .iter()
        .filter_map(|d| d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"id\": 42}");
    let first_call = datas
        .iter()
        .find(|d| d["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        first_call["choices"][0]["delta"]["tool_calls"][0]["id"],
        "toolu_1"
    );
    assert!(datas
        .iter()
        .any(|d| d["choices"][0]["finish_reason"] == "tool_calls"));
    assert_eq!(
        billed_sse(LlmApi::OpenaiChat, &out),
        billed_sse(LlmApi::AnthropicMessages, input.as_bytes())
    );
    assert_eq!(
        billed_sse(LlmApi::OpenaiChat, &out).map(|u| (
            u.prompt_tokens,
            u.cached_tokens,
            u.cache_write_tokens
        )),
        Some((170, 100, 50))
    );
}

#[test]
fn chat_stream_becomes_anthropic_events_with_the_same_usage() {
    let input = chat_stream();
    let out = run_stream(&anthropic_to_chat(), input.as_bytes(), &[]);
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let delta: Value = serde_json::from_str(&evs[8].1).unwrap_or_default();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    let tool: Value = serde_json::from_str(&evs[5].1).unwrap_or_default();
    assert_eq!(tool["content_block"]["id"], "call_1");
    assert_eq!(tool["index"], 1);
    assert_eq!(
        billed_sse(LlmApi::AnthropicMessages, &out),
        billed_sse(LlmApi::OpenaiChat, input.as_bytes())
    );
}

#[test]
fn gemini_stream_becomes_chat_chunks_and_anthropic_events() {
    let input = gemini_stream();
    let out = run_stream(&chat_to_gemini(), input.as_bytes(), &[]);
    let evs = events(&out);
    assert_eq!(evs.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    let usage = billed_sse(LlmApi::OpenaiChat, &out).unwrap_or_default();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens
        ),
        (300, 3, 200)
    );
    assert!(String::from_utf8_lossy(&out).contains("\"finish_reason\":\"tool_calls\""));
    let out = run_stream(&anthropic_to_gemini(), input.as_bytes(), &[]);
    let names: Vec<String> = events(&out).into_iter().filter_map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let usage = billed_sse(LlmApi::AnthropicMessages, &out).unwrap_or_default();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens
        ),
        (300, 3, 200)
    );
}

#[test]
fn a_stream_that_stops_early_or_fails_ends_with_the_clients_error_event() {
    let input = anthropic_stream();
    let cut = input.find("event: content_block_stop").unwrap_or(0);
    let out = run_stream(&chat_to_anthropic(), &input.as_bytes()[..cut], &[]);
    let last = events(&out).pop().unwrap_or_default();
    assert!(last.1.contains("\"error\""), "{last:?}");
    let mut st = anthropic_to_chat().stream();
    let mut out = Vec::new();
    st.feed(&chat_stream().as_bytes()[..40], &mut out);
    st.fail(&mut out);
    assert!(st.ended());
    let last = events(&out).pop().unwrap_or_default();
    assert_eq!(last.0.as_deref(), Some("error"));
    // Nothing follows the end.
    let before = out.len();
    st.feed(chat_stream().as_bytes(), &mut out);
    st.finish(&mut out);
    assert_eq!(out.len(), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The translated stream is the same whatever the read boundaries
    /// (inside events, inside `\r\n`, inside a UTF-8 character), for
    /// every direction.
    #[test]
    fn stream_translation_ignores_read_boundaries(cuts in proptest::collection::vec(0usize..4000, 0..12)) {
        for (t, input) in [
            (chat_to_anthropic(), anthropic_stream()),
            (anthropic_to_chat(), chat_stream()),
            (chat_to_gemini(), gemini_stream()),
            (anthropic_to_gemini(), gemini_stream()),
        ] {
            let bytes = input.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let whole = run_stream(&t, bytes, &[]);
            let split = run_stream(&t, bytes, &cuts);
            // `created` may tick between runs; everything else must match.
            let strip = |b: &[u8]| {
                events(b).into_iter().map(|(n, d)| {
                    let mut v: Value = serde_json::from_str(&d).unwrap_or(Value::String(d));
                    if let Some(o) = v.as_object_mut() { o.remove("created"); }
                    (n, v)
                }).collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(&whole), strip(&split));
        }
    }

    /// OpenAI chat → Anthropic → OpenAI chat keeps every supported field.
    #[test]
    fn chat_request_round_trips_through_anthropic(request in chat_request()) {
        let there = chat_to_anthropic().request(obj(request.clone()));
        let there = there.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = anthropic_to_chat().request(there);
        let back = back.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Value::Object(back), request);
    }
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?é]{1,12}"
}

fn user_message() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|t| json!({"role": "user", "content": t})),
        proptest::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"type": "text", "text": t})),
                text().prop_map(|t| json!({"type": "text", "text": t, "cache_control": {"type": "ephemeral"}})),
                "[a-zA-Z0-9]{1,8}".prop_map(|d| json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{d}")}})),
                "[a-z]{1,8}".prop_map(|d| json!({"type": "image_url", "image_url": {"url": format!("https://x.example/{d}.png")}})),
            ],
            1..4
        )
        .prop_map(|parts| json!({"role": "user", "content": parts})),
    ]
}

/// An assistant turn with tool calls and the tool results that answer it.
fn tool_turn(turn: usize) -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::option::of(text()),
        proptest::collection::vec(("[a-z_]{1,8}", 0i64..1000, text()), 1..3),
    )
        .prop_map(move |(content, calls)| {
            let ids: Vec<String> = (0..calls.len())
                .map(|i| format!("call_{turn}_{i}"))
                .collect();
            let tool_calls: Vec<Value> = calls
                .iter()
                .zip(&ids)
                .map(|((name, n, _), id)| {
                    json!({"id": id, "type": "function", "function": {"name": name,
                        "arguments": json!({"n": n}).to_string()}})
                })
                .collect();
            let mut out =
                vec![json!({"role": "assistant", "content": content, "tool_calls": tool_calls})];
            for ((_, _, result), id) in calls.iter().zip(&ids) {
                out.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
            }
            out
        })
}

fn chat_request() -> impl Strategy<Value = Value> {
    let turns = proptest::collection::vec(
        prop_oneof![
            user_message().prop_map(|m| vec![m]),
            text().prop_map(|t| vec![json!({"role": "assistant", "content": t})]),
            (0usize..1000).prop_flat_map(tool_turn),
        ],
        1..5,
    );
    (
        proptest::option::of(text()),
        turns,
        1u64..4096,
        proptest::option::of(0.0f64..1.0),
        proptest::option::of(0.0f64..1.0),
        proptest::option::of(proptest::collection::vec(text(), 1..3)),
        any::<bool>(),
        proptest::option::of(text()),
        proptest::option::of(prop_oneof![
            Just(json!("auto")),
            Just(json!("required")),
            Just(json!("none")),
            "[a-z]{1,6}".prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        ]),
        any::<bool>(),
    )
        .prop_map(
            |(system, turns, max, temperature, top_p, stop, stream, user, choice, serial)| {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                // Tool results are followed by a user turn in real
                // conversations; two tool turns in a row stay distinct.
                for turn in turns {
                    messages.extend(turn);
                }
                let mut r = json!({"model": "m", "messages": messages, "max_tokens": max,
                    "tools": [{"type": "function", "function": {"name": "get_ticket",
                        "description": "reads", "parameters": {"type": "object"}}}]});
                if let Some(t) = temperature {
                    r["temperature"] = json!(t);
                }
                if let Some(p) = top_p {
                    r["top_p"] = json!(p);
                }
                if let Some(s) = stop {
                    r["stop"] = json!(s);
                }
                if stream {
                    r["stream"] = json!(true);
                    r["stream_options"] = json!({"include_usage": true});
                }
                if let Some(u) = user {
                    r["user"] = json!(u);
                }
                match (choice, serial) {
                    (Some(c), serial) => {
                        r["tool_choice"] = c;
                        if serial {
                            r["parallel_tool_calls"] = json!(false);
                        }
                    }
                    (None, true) => {
                        r["tool_choice"] = json!("auto");
                        r["parallel_tool_calls"] = json!(false);
                    }
                    (None, false) => {}
                }
                r
            },
        )
}
