//! OpenAI Responses (`POST /v1/responses`): `input` as a string or a list
//! of items (message items with string or part content, tool outputs),
//! `instructions`, `max_output_tokens`. Usage: `usage.{input_tokens,
//! output_tokens, input_tokens_details.cached_tokens,
//! output_tokens_details.reasoning_tokens}` in the JSON answer or in the
//! `response` of the stream's `response.completed` (or `.incomplete`,
//! `.failed`) event. Cached tokens are inside `input_tokens`.

use super::fields::{
    cap_field, field_err, items, num, typed_events, validate_positive, RequestError,
};
use crate::llm::tally::{StreamTally, Usage};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// Part types whose `text` the model reads.
const TEXT_PARTS: &[&str] = &["input_text", "output_text", "text"];

pub(super) fn validate(body: &Map<String, Value>) -> Result<(), RequestError> {
    validate_positive(body, "max_output_tokens")?;
    if body
        .get("instructions")
        .is_some_and(|v| !v.is_string() && !v.is_null())
    {
        return Err(field_err("instructions", "must be a string"));
    }
    match body.get("input") {
        None => Err(field_err("input", "is required")),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                validate_item(i, item)?;
            }
            Ok(())
        }
        Some(_) => Err(field_err("input", "must be a string or an array of items")),
    }
}

fn validate_item(i: usize, item: &Value) -> Result<(), RequestError> {
    let Some(obj) = item.as_object() else {
        return Err(field_err(format!("input[{i}]"), "must be an object"));
    };
    match obj.get("content") {
        None | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let path = format!("input[{i}].content[{j}]");
                let Some(kind) = part.get("type").and_then(Value::as_str) else {
                    return Err(field_err(format!("{path}.type"), "must be a string"));
                };
                if TEXT_PARTS.contains(&kind) && !part.get("text").is_some_and(Value::is_string) {
                    return Err(field_err(format!("{path}.text"), "must be a string"));
                }
            }
            Ok(())
        }
        Some(_) => Err(field_err(
            format!("input[{i}].content"),
            "must be a string or an array of parts",
        )),
    }
}

pub(super) fn message_count(body: &Map<String, Value>) -> usize {
    let input = match body.get("input") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    input + usize::from(body.get("instructions").is_some_and(Value::is_string))
}

pub(super) fn requested_output_cap(body: &Map<String, Value>) -> Option<u64> {
    body.get("max_output_tokens").and_then(Value::as_u64)
}

/// Every field whose text reaches the model: instructions, every input
/// item (messages, tool calls and outputs, reasoning summaries), tool
/// definitions, the structured-output format and prompt variables.
pub(super) const MODEL_TEXT_FIELDS: &[&str] = &["instructions", "input", "tools", "text", "prompt"];

/// Usage is always reported (JSON and `response.completed`): only the
/// output limit needs capping, and setting when absent.
pub(super) fn rewrite(body: &mut Map<String, Value>, cap: u64) {
    cap_field(body, "max_output_tokens", cap);
}

fn usage_object(usage: &Value) -> Option<Usage> {
    usage.as_object()?;
    Some(Usage {
        prompt_tokens: num(usage, "/input_tokens"),
        completion_tokens: num(usage, "/output_tokens"),
        cached_tokens: num(usage, "/input_tokens_details/cached_tokens"),
        reasoning_tokens: num(usage, "/output_tokens_details/reasoning_tokens"),
        cache_write_tokens: 0,
    })
}

pub(super) fn response_usage(response: &Value) -> Option<Usage> {
    response.get("usage").and_then(usage_object)
}

pub(super) fn for_each_output_text(response: &Value, f: &mut impl FnMut(&str)) {
    for item in items(response, "output") {
        for part in items(item, "content") {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                f(t);
            }
        }
    }
}

/// A `*.delta` event as the fast path reads it.
#[derive(Deserialize)]
struct DeltaEventView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
}

/// The events whose `response.usage` is the call's final report.
const TERMINAL_EVENTS: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

pub(super) fn on_stream_data(data: &[u8], tally: &mut StreamTally) -> bool {
    match serde_json::from_slice::<DeltaEventView>(data) {
        Ok(event) if event.kind.ends_with(".delta") && !TERMINAL_EVENTS.contains(&&*event.kind) => {
            if let Some(text) = &event.delta {
                tally.text.add(text);
            }
            true
        }
        _ => false,
    }
}

pub(super) fn on_stream_event(event: &Value, tally: &mut StreamTally) {
    let Some(kind) = event.get("type").and_then(Value::as_str) else {
        return;
    };
    match kind {
        _ if TERMINAL_EVENTS.contains(&kind) => {
            if let Some(u) = event.pointer("/response/usage").and_then(usage_object) {
                tally.usage = Some(u);
                tally.usage_final = true;
            }
        }
        // Text, reasoning and tool-argument deltas are all generated output.
        _ if kind.ends_with(".delta") => {
            if let Some(t) = event.get("delta").and_then(Value::as_str) {
                tally.text.add(t);
            }
        }
        _ => {}
    }
}

/// A `response.incomplete` event with reason `max_output_tokens`.
pub(super) fn cut_off_tail(model: &str, output_tokens: u64) -> Vec<u8> {
    typed_events(&[json!({"type": "response.incomplete", "response": {
        "id": "resp_tollgate_cutoff", "object": "response", "model": model,
        "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        "output": [], "usage": {"output_tokens": output_tokens}}})])
}

#[cfg(test)]
mod tests {
    use super::super::tests::json_usage;
    use super::super::{LlmApi, LlmRequest};
    use crate::llm::usage::UsageParser;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> LlmRequest {
        LlmRequest::parse(LlmApi::OpenaiResponses, v.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn visits_instructions_strings_parts_and_tool_outputs() {
        let mut r = parse(json!({
            "model": "m", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "first"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "second"},
                    {"type": "input_image", "image_url": "https://x/y.png"}]},
                {"type": "function_call_output", "call_id": "c1", "output": "third"}
            ]
        }));
        let mut seen = Vec::new();
        r.for_each_text(|t| seen.push(t.to_string()));
        assert_eq!(seen, ["Be brief.", "first", "second", "third"]);
        assert_eq!(r.message_count(), Some(4));
        assert_eq!(r.map_texts(|t| Some(t.to_uppercase())), 4);
        assert_eq!(r.body()["input"][1]["content"][0]["text"], "SECOND");
        let s = parse(json!({"model": "m", "input": "hello"}));
        assert_eq!(s.message_count(), Some(1));
        let e = LlmRequest::parse(LlmApi::OpenaiResponses, br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.to_string(), "input is required");
    }

    #[test]
    fn max_output_tokens_is_set_and_capped() {
        let mut r = parse(json!({"model": "m", "input": "x"}));
        assert_eq!(r.rewrite("gpt-4.1", 64), 64);
        assert_eq!(r.body()["max_output_tokens"], 64);
        let mut r = parse(json!({"model": "m", "input": "x", "max_output_tokens": 10}));
        assert_eq!(r.rewrite("gpt-4.1", 64), 10);
        assert_eq!(r.body()["max_output_tokens"], 10);
    }

    #[test]
    fn usage_from_json_and_terminal_events() {
        let usage = json!({"input_tokens": 300, "output_tokens": 40,
            "input_tokens_details": {"cached_tokens": 256},
            "output_tokens_details": {"reasoning_tokens": 12}});
        let answer = json!({"object": "response", "output": [{"type": "message",
            "content": [{"type": "output_text", "text": "Hi"}]}], "usage": usage});
        let u = json_usage(LlmApi::OpenaiResponses, &answer);
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.completion_tokens,
                u.reasoning_tokens
            ),
            (300, 256, 40, 12)
        );
        for terminal in [
            "response.completed",
            "response.incomplete",
            "response.failed",
        ] {
            let stream = format!(
                "event: response.created\ndata: {}\n\n\
                 event: response.output_text.delta\ndata: {}\n\n\
                 event: {terminal}\ndata: {}\n\n",
                json!({"type": "response.created", "response": {"usage": null}}),
                json!({"type": "response.output_text.delta", "delta": "Hello, world!"}),
                json!({"type": terminal, "response": {"usage": usage}}),
            );
            let mut p = UsageParser::sse(LlmApi::OpenaiResponses);
            p.feed(stream.as_bytes());
            let got = p.finish();
            assert_eq!(
                got.usage.map(|u| u.completion_tokens),
                Some(40),
                "{terminal}"
            );
            assert_eq!(got.completion_text_tokens, 4);
        }
    }
}
