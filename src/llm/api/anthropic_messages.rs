//! Anthropic Messages (`POST /v1/messages`): `system` (string or text
//! blocks), `messages` with string or block content, `max_tokens`
//! (required). Usage: `usage.{input_tokens, output_tokens,
//! cache_creation_input_tokens, cache_read_input_tokens}` in the JSON
//! answer; in a stream `message_start` carries the input side and each
//! `message_delta` the cumulative `output_tokens` (the last one wins).
//! Anthropic counts cache reads and writes OUTSIDE `input_tokens`: the
//! gateway's `prompt_tokens` is their sum.

use super::fields::{
    cap_field, field_err, items, num, typed_events, validate_positive, RequestError,
};
use crate::llm::tally::{StreamTally, Usage};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

pub(super) fn validate(body: &Map<String, Value>) -> Result<(), RequestError> {
    if !body.contains_key("max_tokens") {
        return Err(field_err("max_tokens", "is required"));
    }
    validate_positive(body, "max_tokens")?;
    match body.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                validate_block(&format!("system[{i}]"), block)?;
            }
        }
        Some(_) => {
            return Err(field_err(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    let messages = match body.get("messages") {
        None => return Err(field_err("messages", "is required")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(field_err("messages", "must be a non-empty array")),
    };
    for (i, msg) in messages.iter().enumerate() {
        let Some(obj) = msg.as_object() else {
            return Err(field_err(format!("messages[{i}]"), "must be an object"));
        };
        if !obj.get("role").is_some_and(Value::is_string) {
            return Err(field_err(format!("messages[{i}].role"), "must be a string"));
        }
        match obj.get("content") {
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    validate_block(&format!("messages[{i}].content[{j}]"), block)?;
                }
            }
            _ => {
                return Err(field_err(
                    format!("messages[{i}].content"),
                    "must be a string or an array of content blocks",
                ))
            }
        }
    }
    Ok(())
}

fn validate_block(path: &str, block: &Value) -> Result<(), RequestError> {
    let Some(obj) = block.as_object() else {
        return Err(field_err(path, "must be an object"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") if !obj.get("text").is_some_and(Value::is_string) => {
            Err(field_err(format!("{path}.text"), "must be a string"))
        }
        Some(_) => Ok(()),
        None => Err(field_err(format!("{path}.type"), "must be a string")),
    }
}

pub(super) fn message_count(body: &Map<String, Value>) -> usize {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    messages + usize::from(body.contains_key("system"))
}

pub(super) fn requested_output_cap(body: &Map<String, Value>) -> Option<u64> {
    body.get("max_tokens").and_then(Value::as_u64)
}

/// Every field whose text reaches the model: the system prompt, every
/// block of every message (text, `tool_use` input, `tool_result` content,
/// thinking) and the tool definitions.
pub(super) const MODEL_TEXT_FIELDS: &[&str] = &["system", "messages", "tools"];

/// `max_tokens` is required, so capping it is the whole rewrite: usage is
/// always reported.
pub(super) fn rewrite(body: &mut Map<String, Value>, cap: u64) {
    cap_field(body, "max_tokens", cap);
}

/// Anthropic's usage object, with every input class summed into
/// `prompt_tokens` (the ledger's convention).
fn usage_object(usage: &Value) -> Option<Usage> {
    usage.as_object()?;
    let input = num(usage, "/input_tokens");
    let cache_read = num(usage, "/cache_read_input_tokens");
    let cache_write = num(usage, "/cache_creation_input_tokens");
    Some(Usage {
        prompt_tokens: input.saturating_add(cache_read).saturating_add(cache_write),
        completion_tokens: num(usage, "/output_tokens"),
        cached_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
    })
}

pub(super) fn response_usage(response: &Value) -> Option<Usage> {
    response.get("usage").and_then(usage_object)
}

pub(super) fn for_each_output_text(response: &Value, f: &mut impl FnMut(&str)) {
    for block in items(response, "content") {
        for key in ["text", "thinking"] {
            if let Some(t) = block.get(key).and_then(Value::as_str) {
                f(t);
            }
        }
    }
}

/// A `content_block_delta` as the fast path reads it.
#[derive(Deserialize)]
struct BlockDeltaView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<TextDeltaView<'a>>,
}

#[derive(Deserialize)]
struct TextDeltaView<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

pub(super) fn on_stream_data(data: &[u8], tally: &mut StreamTally) -> bool {
    match serde_json::from_slice::<BlockDeltaView>(data) {
        Ok(event) if event.kind == "content_block_delta" => {
            if let Some(d) = &event.delta {
                tally
                    .text
                    .add_present([&d.text, &d.thinking, &d.partial_json].map(Option::as_ref));
            }
            true
        }
        _ => false,
    }
}

pub(super) fn on_stream_event(event: &Value, tally: &mut StreamTally) {
    match event.get("type").and_then(Value::as_str) {
        Some("message_start") => {
            if let Some(u) = event.pointer("/message/usage").and_then(usage_object) {
                tally.usage = Some(u);
            }
        }
        Some("message_delta") => {
            let Some(delta) = event.get("usage").filter(|u| u.is_object()) else {
                return;
            };
            let mut usage = tally.usage.unwrap_or_default();
            usage.completion_tokens = num(delta, "/output_tokens");
            // Newer streams repeat the input side here; it then wins too.
            if delta.get("input_tokens").is_some() {
                if let Some(u) = usage_object(delta) {
                    usage.prompt_tokens = u.prompt_tokens;
                    usage.cached_tokens = u.cached_tokens;
                    usage.cache_write_tokens = u.cache_write_tokens;
                }
            }
            tally.usage = Some(usage);
            tally.usage_final = true;
        }
        Some("content_block_delta") => {
            let Some(delta) = event.get("delta") else {
                return;
            };
            for key in ["text", "thinking", "partial_json"] {
                if let Some(t) = delta.get(key).and_then(Value::as_str) {
                    tally.text.add(t);
                }
            }
        }
        _ => {}
    }
}

/// `message_delta` with stop_reason "max_tokens" (and the output counted),
/// then `message_stop`.
pub(super) fn cut_off_tail(_model: &str, output_tokens: u64) -> Vec<u8> {
    typed_events(&[
        json!({"type": "message_delta",
               "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
        json!({"type": "message_stop"}),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::tests::json_usage;
    use super::super::{LlmApi, LlmRequest};
    use crate::llm::usage::UsageParser;
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!({
            "model": "claude-support",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "You are a support agent."}],
            "messages": [
                {"role": "user", "content": "My email is a@b.example"},
                {"role": "assistant", "content": [{"type": "text", "text": "Thanks."},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "order 42"},
                    {"type": "image", "source": {"type": "base64", "data": "..."}},
                    {"type": "text", "text": "Where is it?"}]}
            ],
            "metadata": {"user_id": "u1"}
        })
    }

    fn parse(v: serde_json::Value) -> LlmRequest {
        LlmRequest::parse(LlmApi::AnthropicMessages, v.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn visits_system_text_blocks_and_tool_results() {
        let mut r = parse(sample());
        let mut seen = Vec::new();
        r.for_each_text(|t| seen.push(t.to_string()));
        assert_eq!(
            seen,
            [
                "You are a support agent.",
                "My email is a@b.example",
                "Thanks.",
                "order 42",
                "Where is it?"
            ]
        );
        assert_eq!(r.message_count(), Some(4));
        let n = r.map_texts(|t| t.contains('@').then(|| "[EMAIL]".to_string()));
        assert_eq!(n, 1);
        assert_eq!(r.body()["messages"][0]["content"], "[EMAIL]");
        assert_eq!(r.body()["metadata"]["user_id"], "u1", "unknown fields kept");
    }

    #[test]
    fn max_tokens_is_required_and_capped() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("max_tokens");
        let e = LlmRequest::parse(LlmApi::AnthropicMessages, v.to_string().as_bytes());
        assert_eq!(e.unwrap_err().to_string(), "max_tokens is required");
        let mut r = parse(sample());
        assert_eq!(r.rewrite("claude-3-5-haiku", 100), 100);
        assert_eq!(r.body()["max_tokens"], 100);
        assert_eq!(r.body()["model"], "claude-3-5-haiku");
        let bad =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]});
        assert!(LlmRequest::parse(LlmApi::AnthropicMessages, bad.to_string().as_bytes()).is_err());
    }

    #[test]
    fn json_usage_sums_every_input_class() {
        let answer = json!({"type": "message", "content": [{"type": "text", "text": "Hi"}],
            "usage": {"input_tokens": 100, "output_tokens": 50,
                      "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1000}});
        let u = json_usage(LlmApi::AnthropicMessages, &answer);
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.completion_tokens
            ),
            (1300, 1000, 200, 50)
        );
    }

    /// A stream as Anthropic sends it: named events, pings, cumulative
    /// output in message_delta.
    pub(crate) fn stream() -> String {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude", "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 5}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect()
    }

    #[test]
    fn stream_usage_last_delta_wins_at_every_split() {
        let body = stream();
        for i in 0..=body.len() {
            let mut p = UsageParser::sse(LlmApi::AnthropicMessages);
            let (a, b) = body.as_bytes().split_at(i);
            p.feed(a);
            p.feed(b);
            let got = p.finish();
            let u = got.usage.unwrap();
            assert!(!got.partial);
            assert_eq!(
                (
                    u.prompt_tokens,
                    u.cached_tokens,
                    u.cache_write_tokens,
                    u.completion_tokens
                ),
                (40, 10, 5, 15),
                "split at {i}"
            );
        }
        // Cut before any message_delta: the input is known, the output is
        // what was streamed, and the figure is partial.
        // An `error` event mid-stream (overloaded) ends it without a
        // message_delta: the input is billed, the output counted.
        let errored = format!(
            "{}event: error\ndata: {}\n\n",
            &body[..body.find("event: content_block_stop").unwrap()],
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let mut p = UsageParser::sse(LlmApi::AnthropicMessages);
        p.feed(errored.as_bytes());
        let got = p.finish();
        assert!(got.partial);
        assert_eq!(
            got.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((40, 2))
        );
        let cut = body.find("event: message_delta").unwrap();
        let mut p = UsageParser::sse(LlmApi::AnthropicMessages);
        p.feed(&body.as_bytes()[..cut]);
        let got = p.finish();
        assert!(got.partial);
        assert_eq!(got.usage.unwrap().prompt_tokens, 40);
        assert_eq!(got.completion_text_tokens, 2);
    }
}
