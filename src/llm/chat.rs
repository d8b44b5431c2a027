//! OpenAI-compatible chat-completions request: validation, inspection and rewriting.
//!
//! The request is kept as the parsed JSON object so that fields the gateway does
//! not know about (tools, response_format, vendor extensions, ...) are forwarded
//! untouched. Validation happens once in [`ChatRequest::parse`]; the accessors
//! below rely on it but still never panic on unexpected shapes.

use serde_json::{Map, Value};
use thiserror::Error;

/// A request the gateway refuses with HTTP 400 `invalid_request`.
///
/// Messages name the offending field but never echo message content, because
/// error bodies and logs must not leak prompts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChatError {
    /// Only the position is reported: serde's message could quote the input.
    #[error("request body is not valid JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("{field} {problem}")]
    Field {
        field: String,
        problem: &'static str,
    },
}

fn field_err(field: impl Into<String>, problem: &'static str) -> ChatError {
    ChatError::Field {
        field: field.into(),
        problem,
    }
}

/// One piece of message content as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    /// image_url, input_audio, file, ...: counted with a flat estimate.
    Other,
}

/// Read-only view of one validated message.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> MessageRef<'a> {
    pub fn role(&self) -> &'a str {
        self.obj.get("role").and_then(Value::as_str).unwrap_or("")
    }

    /// Visits the content parts in order; null/absent content has none.
    pub fn for_each_part(&self, mut f: impl FnMut(Part<'a>)) {
        match self.obj.get("content") {
            Some(Value::String(s)) => f(Part::Text(s)),
            Some(Value::Array(parts)) => {
                for part in parts {
                    match text_of_part(part) {
                        Some(t) => f(Part::Text(t)),
                        None => f(Part::Other),
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_text_part(part: &Value) -> bool {
    part.get("type").and_then(Value::as_str) == Some("text")
}

fn text_of_part(part: &Value) -> Option<&str> {
    if is_text_part(part) {
        part.get("text").and_then(Value::as_str)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    body: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ChatError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| ChatError::Json {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(body) = value else {
            return Err(ChatError::NotObject);
        };
        validate(&body)?;
        Ok(ChatRequest { body })
    }

    /// The whole JSON object, for callers that need fields not modelled here.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    pub fn message_count(&self) -> usize {
        self.messages().count()
    }

    /// `max_completion_tokens` is the newer name and supersedes `max_tokens`.
    pub fn requested_max_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| self.body.get(*k).and_then(Value::as_u64))
    }

    pub fn messages(&self) -> impl Iterator<Item = MessageRef<'_>> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .map(|obj| MessageRef { obj })
    }

    /// Visits every text the model will read: string contents and text parts.
    pub fn for_each_text(&self, mut f: impl FnMut(&str)) {
        for msg in self.messages() {
            msg.for_each_part(|part| {
                if let Part::Text(t) = part {
                    f(t)
                }
            });
        }
    }

    /// Replaces texts in place: `f` returns `Some(new)` to replace, `None` to keep.
    /// Returns the number of texts replaced.
    pub fn map_texts(&mut self, mut f: impl FnMut(&str) -> Option<String>) -> usize {
        let Some(Value::Array(messages)) = self.body.get_mut("messages") else {
            return 0;
        };
        let mut changed = 0;
        let mut apply = |slot: &mut String| {
            if let Some(new) = f(slot) {
                *slot = new;
                changed += 1;
            }
        };
        for msg in messages.iter_mut() {
            match msg.get_mut("content") {
                Some(Value::String(s)) => apply(s),
                Some(Value::Array(parts)) => {
                    for part in parts.iter_mut().filter(|p| is_text_part(p)) {
                        if let Some(Value::String(s)) = part.get_mut("text") {
                            apply(s);
                        }
                    }
                }
                _ => {}
            }
        }
        changed
    }

    /// Prepares the request for the upstream and returns the output-token limit
    /// to use for budget estimation.
    ///
    /// A cap of 0 is treated as 1: upstreams reject a zero limit, and config
    /// validation should have refused it anyway.
    pub fn rewrite(&mut self, upstream_model: Option<&str>, max_tokens_cap: u64) -> u64 {
        let cap = max_tokens_cap.max(1);
        if let Some(model) = upstream_model {
            self.body
                .insert("model".to_owned(), Value::String(model.to_owned()));
        }

        let effective = self.requested_max_tokens().map_or(cap, |r| r.min(cap));
        let mut present = false;
        for key in ["max_completion_tokens", "max_tokens"] {
            if let Some(v) = self.body.get_mut(key) {
                present = true;
                if let Some(n) = v.as_u64() {
                    *v = Value::from(n.min(cap));
                }
            }
        }
        if !present {
            // Without an explicit limit the upstream may generate up to the model's
            // context size, which the budget reservation could not bound.
            self.body.insert("max_tokens".to_owned(), Value::from(cap));
        }

        if self.is_stream() {
            // Without include_usage OpenAI streams carry no usage at all.
            let opts = self
                .body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if !opts.is_object() {
                *opts = Value::Object(Map::new());
            }
            if let Value::Object(o) = opts {
                o.insert("include_usage".to_owned(), Value::Bool(true));
            }
        }
        effective
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising a Map<String, Value> into a Vec cannot fail (string keys,
        // infallible writer), so the empty fallback is unreachable.
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

fn validate(body: &Map<String, Value>) -> Result<(), ChatError> {
    match body.get("model") {
        None => return Err(field_err("model", "is required")),
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(field_err("model", "must be a non-empty string")),
    }

    let messages = match body.get("messages") {
        None => return Err(field_err("messages", "is required")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(field_err("messages", "must be a non-empty array")),
    };
    for (i, msg) in messages.iter().enumerate() {
        validate_message(i, msg)?;
    }

    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = body.get(key) {
            if !matches!(v.as_u64(), Some(n) if n > 0) {
                return Err(field_err(key, "must be a positive integer"));
            }
        }
    }
    if let Some(v) = body.get("stream") {
        if !v.is_boolean() {
            return Err(field_err("stream", "must be a boolean"));
        }
    }
    Ok(())
}

fn validate_message(i: usize, msg: &Value) -> Result<(), ChatError> {
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

fn validate_part(i: usize, j: usize, part: &Value) -> Result<(), ChatError> {
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
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<ChatRequest, ChatError> {
        ChatRequest::parse(v.to_string().as_bytes())
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
        assert_eq!(r.message_count(), 4);
        assert_eq!(r.requested_max_tokens(), None);
        let roles: Vec<_> = r.messages().map(|m| m.role()).collect();
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
        for m in r.messages() {
            m.for_each_part(|p| others += usize::from(p == Part::Other));
        }
        assert_eq!(others, 1);
    }

    #[test]
    fn rejects_bad_bodies_with_field_names() {
        assert!(matches!(
            ChatRequest::parse(b"{not json"),
            Err(ChatError::Json { .. })
        ));
        assert_eq!(ChatRequest::parse(b"[1]"), Err(ChatError::NotObject));
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
        let e = ChatRequest::parse(format!("{{\"model\": \"{secret}\" ,, }}").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("123-45"), "{e}");
    }

    #[test]
    fn max_completion_tokens_wins() {
        let mut v = sample();
        v["max_tokens"] = json!(100);
        v["max_completion_tokens"] = json!(50);
        assert_eq!(req(v).unwrap().requested_max_tokens(), Some(50));
    }

    #[test]
    fn rewrite_sets_model_and_default_cap() {
        let mut r = req(sample()).unwrap();
        assert_eq!(r.rewrite(Some("gpt-4o-mini-2024-07-18"), 512), 512);
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
        assert_eq!(r.rewrite(None, 1000), 1000);
        assert_eq!(r.model(), "gpt-4o-mini");
        assert_eq!(r.body()["max_completion_tokens"], json!(1000));
        assert_eq!(r.body()["max_tokens"], json!(100));

        let mut v = sample();
        v["max_tokens"] = json!(100);
        let mut r = req(v).unwrap();
        assert_eq!(r.rewrite(None, 1000), 100);
        assert_eq!(r.body()["max_tokens"], json!(100));
        assert_eq!(r.rewrite(None, 0), 1);
        assert_eq!(r.body()["max_tokens"], json!(1));
    }

    #[test]
    fn rewrite_forces_include_usage_on_streams() {
        let mut v = sample();
        v["stream"] = json!(true);
        let mut r = req(v.clone()).unwrap();
        r.rewrite(None, 10);
        assert_eq!(r.body()["stream_options"], json!({"include_usage": true}));

        v["stream_options"] = json!({"include_usage": false, "other": 1});
        let mut r = req(v.clone()).unwrap();
        r.rewrite(None, 10);
        assert_eq!(
            r.body()["stream_options"],
            json!({"include_usage": true, "other": 1})
        );

        v["stream_options"] = json!("bogus");
        let mut r = req(v).unwrap();
        r.rewrite(None, 10);
        assert_eq!(r.body()["stream_options"], json!({"include_usage": true}));

        let mut v = sample();
        v["stream"] = json!(false);
        let mut r = req(v).unwrap();
        r.rewrite(None, 10);
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
