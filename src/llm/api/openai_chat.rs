//! OpenAI chat completions (`POST /v1/chat/completions`): `messages`
//! with string or part content, `max_tokens` / `max_completion_tokens`,
//! usage from `usage` (JSON, or the last SSE chunk once
//! `stream_options.include_usage` is set, which the rewrite forces).

use super::fields::{field_err, num, validate_positive, RequestError};
use crate::llm::tally::{StreamTally, Usage};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

pub(super) fn validate(body: &Map<String, Value>) -> Result<(), RequestError> {
    let messages = match body.get("messages") {
        None => return Err(field_err("messages", "is required")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(field_err("messages", "must be a non-empty array")),
    };
    for (i, msg) in messages.iter().enumerate() {
        validate_message(i, msg)?;
    }
    for key in ["max_tokens", "max_completion_tokens", "n"] {
        validate_positive(body, key)?;
    }
    Ok(())
}

/// Choices asked for (`n`, default 1): each may generate up to the cap.
pub(super) fn choices(body: &Map<String, Value>) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1)
}

fn messages(body: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

pub(super) fn message_count(body: &Map<String, Value>) -> usize {
    messages(body).count()
}

/// `max_completion_tokens` is the newer name and supersedes `max_tokens`.
pub(super) fn requested_output_cap(body: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// Every field whose text reaches the model: messages (content, refusals,
/// tool-call arguments), tool and function definitions, the structured
/// output schema and the predicted output.
pub(super) const MODEL_TEXT_FIELDS: &[&str] = &[
    "messages",
    "tools",
    "functions",
    "response_format",
    "prediction",
];

/// Caps both limits at the model's; sets `max_tokens` when neither is
/// present (else the upstream may generate up to the context size, which
/// the reservation could not bound); forces `include_usage` on streams.
pub(super) fn rewrite(body: &mut Map<String, Value>, model_cap: u64) {
    let mut present = false;
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = body.get_mut(key) {
            present = true;
            if let Some(n) = v.as_u64() {
                *v = Value::from(n.min(model_cap));
            }
        }
    }
    if !present {
        body.insert("max_tokens".to_owned(), Value::from(model_cap));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        // Without include_usage OpenAI streams carry no usage at all.
        let opts = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !opts.is_object() {
            *opts = Value::Object(Map::new());
        }
        if let Value::Object(o) = opts {
            o.insert("include_usage".to_owned(), Value::Bool(true));
        }
    }
}

/// OpenAI's `usage` object: cached tokens are inside `prompt_tokens`,
/// reasoning tokens inside `completion_tokens`.
pub(crate) fn usage_object(usage: &Value) -> Option<Usage> {
    usage.as_object()?;
    Some(Usage {
        prompt_tokens: num(usage, "/prompt_tokens"),
        completion_tokens: num(usage, "/completion_tokens"),
        cached_tokens: num(usage, "/prompt_tokens_details/cached_tokens"),
        reasoning_tokens: num(usage, "/completion_tokens_details/reasoning_tokens"),
        // Not OpenAI's: LiteLLM's field for Anthropic cache writes, which
        // translated Anthropic answers carry too (billed at their price).
        cache_write_tokens: num(usage, "/cache_creation_input_tokens"),
    })
}

pub(super) fn response_usage(response: &Value) -> Option<Usage> {
    response.get("usage").and_then(usage_object)
}

/// `choices[*].<field>.content` and `reasoning_content` (which some
/// OpenAI-compatible providers use for thinking output).
fn for_each_choice_text<'a>(response: &'a Value, field: &str, f: &mut impl FnMut(&'a str)) {
    let Some(choices) = response.get("choices").and_then(Value::as_array) else {
        return;
    };
    for msg in choices.iter().filter_map(|c| c.get(field)) {
        for key in ["content", "reasoning_content"] {
            if let Some(text) = msg.get(key).and_then(Value::as_str) {
                f(text);
            }
        }
    }
}

pub(super) fn for_each_output_text(response: &Value, f: &mut impl FnMut(&str)) {
    for_each_choice_text(response, "message", f);
}

/// A chunk as the fast path reads it (see `LlmApi::on_stream_data`).
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow)]
    choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
}

pub(super) fn on_stream_data(data: &[u8], tally: &mut StreamTally) -> bool {
    match serde_json::from_slice::<ChunkView>(data) {
        Ok(chunk) if chunk.usage.is_none() => {
            for delta in chunk.choices.iter().filter_map(|c| c.delta.as_ref()) {
                tally
                    .text
                    .add_present([&delta.content, &delta.reasoning_content].map(Option::as_ref));
            }
            true
        }
        _ => false,
    }
}

pub(super) fn on_stream_event(event: &Value, tally: &mut StreamTally) {
    if let Some(u) = event.get("usage").and_then(usage_object) {
        tally.usage = Some(u);
        tally.usage_final = true;
    }
    // Deltas are roughly token-aligned, so counting them one by one is
    // close to counting the joined text.
    for_each_choice_text(event, "delta", &mut |t| tally.text.add(t));
}

/// A last chunk finishing with "length", then `[DONE]`.
pub(super) fn cut_off_tail(model: &str, _output_tokens: u64) -> Vec<u8> {
    let last = json!({
        "id": "chatcmpl-tollgate-cutoff", "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]
    });
    format!("data: {last}\n\ndata: [DONE]\n\n").into_bytes()
}

fn validate_message(i: usize, msg: &Value) -> Result<(), RequestError> {
    let Some(obj) = msg.as_object() else {
        return Err(field_err(format!("messages[{i}]"), "must be an object"));
    };
    if !obj.get("role").is_some_and(Value::is_string) {
        return Err(field_err(format!("messages[{i}].role"), "must be a string"));
    }
    // Absent content is treated like null: assistant tool-call turns omit it.
    match obj.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                validate_part(i, j, part)?;
            }
            Ok(())
        }
        Some(_) => Err(field_err(
            format!("messages[{i}].content"),
            "must be a string or an array of parts",
        )),
    }
}

fn validate_part(i: usize, j: usize, part: &Value) -> Result<(), RequestError> {
    let Some(obj) = part.as_object() else {
        return Err(field_err(
            format!("messages[{i}].content[{j}]"),
            "must be an object",
        ));
    };
    match obj.get("type") {
        Some(Value::String(t)) if t == "text" => {
            if !obj.get("text").is_some_and(Value::is_string) {
                return Err(field_err(
                    format!("messages[{i}].content[{j}].text"),
                    "must be a string",
                ));
            }
            Ok(())
        }
        Some(Value::String(_)) => Ok(()),
        _ => Err(field_err(
            format!("messages[{i}].content[{j}].type"),
            "must be a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LlmApi, LlmRequest, Part};
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<LlmRequest, RequestError> {
        LlmRequest::parse(LlmApi::OpenaiChat, v.to_string().as_bytes())
    }

    fn err_text(v: Value) -> String {
        match req(v) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected a validation error"),
        }
    }

    fn sample() -> Value {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "text", "text": "this picture?"}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "temperature": 0.2,
            "x_vendor": {"keep": [1, 2, 3]}
        })
    }

    #[test]
    fn parses_valid_request_and_exposes_accessors() {
        let r = req(sample()).unwrap();
        assert_eq!(r.model(), "gpt-4o-mini");
        assert!(!r.is_stream());
        assert_eq!(r.message_count(), Some(4));
        assert_eq!(r.requested_output_cap(), None);
        let roles: Vec<_> = r.body()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    }

    #[test]
    fn for_each_text_visits_strings_and_text_parts_only() {
        let r = req(sample()).unwrap();
        let mut seen = Vec::new();
        r.for_each_text(|t| seen.push(t.to_owned()));
        assert_eq!(
            seen,
            ["You are helpful.", "What is in", "this picture?", "42"]
        );
        let mut others = 0;
        r.for_each_part(|p| others += usize::from(p == Part::Other));
        assert_eq!(others, 1);
    }

    #[test]
    fn rejects_bad_bodies_with_field_names() {
        assert!(matches!(
            LlmRequest::parse(LlmApi::OpenaiChat, b"{not json"),
            Err(RequestError::Json { .. })
        ));
        assert_eq!(
            LlmRequest::parse(LlmApi::OpenaiChat, b"[1]"),
            Err(RequestError::NotObject)
        );
        let cases = [
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model is required",
            ),
            (
                json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
                "model must be a non-empty string",
            ),
            (
                json!({"model": 3, "messages": [{"role": "user", "content": "x"}]}),
                "model must be a non-empty string",
            ),
            (json!({"model": "m"}), "messages is required"),
            (
                json!({"model": "m", "messages": []}),
                "messages must be a non-empty array",
            ),
            (
                json!({"model": "m", "messages": {}}),
                "messages must be a non-empty array",
            ),
            (
                json!({"model": "m", "messages": ["hi"]}),
                "messages[0] must be an object",
            ),
            (
                json!({"model": "m", "messages": [{"content": "x"}]}),
                "messages[0].role must be a string",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": 5}]}),
                "messages[2].content must be a string or an array of parts",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": ["x"]}]}),
                "messages[0].content[0] must be an object",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "messages[0].content[0].type must be a string",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
                "messages[0].content[0].text must be a string",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
                "max_tokens must be a positive integer",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}),
                "max_tokens must be a positive integer",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 1.5}),
                "max_completion_tokens must be a positive integer",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
                "stream must be a boolean",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(err_text(body), want);
        }
    }

    #[test]
    fn errors_never_echo_content() {
        let secret = "SSN 123-45-6789";
        let e = err_text(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 7}, secret]}]}),
        );
        assert!(!e.contains("123-45"), "{e}");
        let e = LlmRequest::parse(
            LlmApi::OpenaiChat,
            format!("{{\"model\": \"{secret}\" ,, }}").as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("123-45"), "{e}");
    }

    #[test]
    fn max_completion_tokens_wins() {
        let mut v = sample();
        v["max_tokens"] = json!(100);
        v["max_completion_tokens"] = json!(50);
        assert_eq!(req(v).unwrap().requested_output_cap(), Some(50));
    }

    #[test]
    fn rewrite_sets_model_and_default_cap() {
        let mut r = req(sample()).unwrap();
        assert_eq!(r.rewrite("gpt-4o-mini-2024-07-18", 512), 512);
        assert_eq!(r.model(), "gpt-4o-mini-2024-07-18");
        assert_eq!(r.body()["max_tokens"], json!(512));
        assert!(!r.body().contains_key("max_completion_tokens"));
        assert!(!r.body().contains_key("stream_options"));
        // Unknown fields survive the round trip.
        let out: Value = serde_json::from_slice(&r.to_vec()).unwrap();
        assert_eq!(out["x_vendor"], json!({"keep": [1, 2, 3]}));
        assert_eq!(out["temperature"], json!(0.2));
    }

    #[test]
    fn rewrite_caps_both_limits_and_keeps_model_without_override() {
        let mut v = sample();
        v["max_tokens"] = json!(100);
        v["max_completion_tokens"] = json!(5000);
        let mut r = req(v).unwrap();
        assert_eq!(r.rewrite("gpt-4o-mini", 1000), 1000);
        assert_eq!(r.model(), "gpt-4o-mini");
        assert_eq!(r.body()["max_completion_tokens"], json!(1000));
        assert_eq!(r.body()["max_tokens"], json!(100));

        let mut v = sample();
        v["max_tokens"] = json!(100);
        let mut r = req(v).unwrap();
        assert_eq!(r.rewrite("gpt-4o-mini", 1000), 100);
        assert_eq!(r.body()["max_tokens"], json!(100));
        assert_eq!(r.rewrite("gpt-4o-mini", 0), 1);
        assert_eq!(r.body()["max_tokens"], json!(1));
    }

    #[test]
    fn rewrite_forces_include_usage_on_streams() {
        let mut v = sample();
        v["stream"] = json!(true);
        let mut r = req(v.clone()).unwrap();
        r.rewrite("gpt-4o-mini", 10);
        assert_eq!(r.body()["stream_options"], json!({"include_usage": true}));

        v["stream_options"] = json!({"include_usage": false, "other": 1});
        let mut r = req(v.clone()).unwrap();
        r.rewrite("gpt-4o-mini", 10);
        assert_eq!(
            r.body()["stream_options"],
            json!({"include_usage": true, "other": 1})
        );

        v["stream_options"] = json!("bogus");
        let mut r = req(v).unwrap();
        r.rewrite("gpt-4o-mini", 10);
        assert_eq!(r.body()["stream_options"], json!({"include_usage": true}));

        let mut v = sample();
        v["stream"] = json!(false);
        let mut r = req(v).unwrap();
        r.rewrite("gpt-4o-mini", 10);
        assert!(!r.body().contains_key("stream_options"));
    }

    #[test]
    fn map_texts_replaces_in_place_and_counts() {
        let mut r = req(sample()).unwrap();
        let n = r.map_texts(|t| t.contains("is").then(|| t.replace("is", "IS")));
        assert_eq!(n, 2);
        let mut seen = Vec::new();
        r.for_each_text(|t| seen.push(t.to_owned()));
        assert_eq!(
            seen,
            ["You are helpful.", "What IS in", "thIS picture?", "42"]
        );
        // Non-text parts are untouched.
        assert_eq!(
            r.body()["messages"][1]["content"][1]["image_url"]["url"],
            json!("https://x/y.png")
        );
    }
}
