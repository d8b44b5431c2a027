//! The LLM APIs a `kind: llm` route can speak, behind one interface.
//!
//! `llm::serve` is the single flow for every API (read, guard, estimate,
//! reserve, exchange, stream back, settle). What differs per API lives in
//! one module each and is reached through [`LlmApi`] (the route's `api`):
//! how the body is validated, which texts the model will see (guards and
//! the estimate visit them), how the body is rewritten (model, output cap,
//! usage request), how usage is read from a JSON answer or an SSE stream,
//! and how a runaway stream is ended in the API's own format. The gateway's
//! own error shape is chosen in `respond` from the same enum.
//!
//! The request is kept as the parsed JSON object so that fields the gateway
//! does not know about (tools, response_format, vendor extensions, ...) are
//! forwarded untouched.

pub mod anthropic_messages;
pub mod fields;
pub mod openai_chat;
pub mod openai_embeddings;
pub mod openai_responses;

pub use crate::config::schema::LlmApi;
pub use fields::{Part, RequestError};

use fields::field_err;

use super::tally::{StreamTally, Usage};
use super::tokens;
use serde_json::{Map, Value};

/// Images are charged 85 tokens at "low" detail and more at "high"; the
/// dimensions are not fetched, so reserve the minimum and let the
/// upstream's usage correct it. Other non-text parts get the same.
const NON_TEXT_PART_TOKENS: u64 = 85;
/// OpenAI's documented framing per message (`<|start|>role ... <|end|>`),
/// the role's own token included.
const TOKENS_PER_MESSAGE: u64 = 4;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING_TOKENS: u64 = 3;

/// What each API's wire format tells about usage, and how a cut-off
/// stream ends in it. A trait (not an inherent impl) because `LlmApi` is
/// the config's plain enum: its behaviour lives here, with the APIs.
pub trait Dialect {
    /// Usage of a whole JSON answer (`None` when it reports none).
    fn response_usage(self, response: &Value) -> Option<Usage>;
    /// Tokens of the text generated in a whole JSON answer, for billing an
    /// estimate when it reports no usage.
    fn response_text_tokens(self, response: &Value) -> u64;
    /// Folds one SSE event's `data` into the stream's tally (see the impl).
    fn on_stream_data(self, data: &[u8], tally: &mut StreamTally) -> bool;
    /// Folds one SSE event (its `data`, parsed) into the stream's tally.
    fn on_stream_event(self, event: &Value, tally: &mut StreamTally);
    /// The events that end a stream the gateway cut off at the output cap.
    fn cut_off_tail(self, model: &str, output_tokens: u64) -> Vec<u8>;
}

impl Dialect for LlmApi {
    /// Usage of a whole JSON answer (`None` when it reports none).
    fn response_usage(self, response: &Value) -> Option<Usage> {
        match self {
            LlmApi::OpenaiChat => openai_chat::response_usage(response),
            LlmApi::OpenaiResponses => openai_responses::response_usage(response),
            LlmApi::OpenaiEmbeddings => openai_embeddings::response_usage(response),
            LlmApi::AnthropicMessages => anthropic_messages::response_usage(response),
        }
    }

    /// Tokens of the text generated in a whole JSON answer, for billing an
    /// estimate when it reports no usage.
    fn response_text_tokens(self, response: &Value) -> u64 {
        let mut total = 0u64;
        let mut add = |t: &str| total = total.saturating_add(tokens::count_text(t));
        match self {
            LlmApi::OpenaiChat => openai_chat::for_each_output_text(response, &mut add),
            LlmApi::OpenaiResponses => openai_responses::for_each_output_text(response, &mut add),
            LlmApi::OpenaiEmbeddings => {}
            LlmApi::AnthropicMessages => {
                anthropic_messages::for_each_output_text(response, &mut add)
            }
        }
        total
    }

    /// Folds one SSE event's `data` into the stream's tally, reading it as
    /// a small typed view (no `Value` tree): true when that was enough.
    /// False leaves the event to [`Self::on_stream_event`]: events carrying
    /// usage (one or two per stream) and any shape the view does not
    /// expect, so both paths agree on every input.
    fn on_stream_data(self, data: &[u8], tally: &mut StreamTally) -> bool {
        match self {
            LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => {
                openai_chat::on_stream_data(data, tally)
            }
            LlmApi::OpenaiResponses => openai_responses::on_stream_data(data, tally),
            LlmApi::AnthropicMessages => anthropic_messages::on_stream_data(data, tally),
        }
    }

    /// Folds one SSE event (its `data`, parsed) into the stream's tally.
    fn on_stream_event(self, event: &Value, tally: &mut StreamTally) {
        match self {
            LlmApi::OpenaiChat => openai_chat::on_stream_event(event, tally),
            LlmApi::OpenaiResponses => openai_responses::on_stream_event(event, tally),
            // Embeddings never stream; an SSE answer is read like chat's.
            LlmApi::OpenaiEmbeddings => openai_chat::on_stream_event(event, tally),
            LlmApi::AnthropicMessages => anthropic_messages::on_stream_event(event, tally),
        }
    }

    /// The events that end a stream the gateway cut off at the output cap,
    /// in the API's own format, so clients see a clean "length" finish.
    fn cut_off_tail(self, model: &str, output_tokens: u64) -> Vec<u8> {
        match self {
            LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => {
                openai_chat::cut_off_tail(model, output_tokens)
            }
            LlmApi::OpenaiResponses => openai_responses::cut_off_tail(model, output_tokens),
            LlmApi::AnthropicMessages => anthropic_messages::cut_off_tail(model, output_tokens),
        }
    }
}

/// A validated request body of one API.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    api: LlmApi,
    body: Map<String, Value>,
}

impl LlmRequest {
    pub fn parse(api: LlmApi, body: &[u8]) -> Result<LlmRequest, RequestError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::Json {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(body) = value else {
            return Err(RequestError::NotObject);
        };
        validate_model_and_stream(&body)?;
        match api {
            LlmApi::OpenaiChat => openai_chat::validate(&body)?,
            LlmApi::OpenaiResponses => openai_responses::validate(&body)?,
            LlmApi::OpenaiEmbeddings => openai_embeddings::validate(&body)?,
            LlmApi::AnthropicMessages => anthropic_messages::validate(&body)?,
        }
        Ok(LlmRequest { api, body })
    }

    pub fn api(&self) -> LlmApi {
        self.api
    }

    /// The whole JSON object, for callers that need fields not modelled here.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The JSON object, for a translation into another API.
    pub fn into_body(self) -> Map<String, Value> {
        self.body
    }

    /// The JSON object, for the gateway's own fields (taken out before
    /// the body goes upstream).
    pub fn body_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.body
    }

    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Conversation turns (for `guards.max_messages`); `None` for APIs
    /// without a conversation (an embeddings batch is not one).
    pub fn message_count(&self) -> Option<usize> {
        match self.api {
            LlmApi::OpenaiChat => Some(openai_chat::message_count(&self.body)),
            LlmApi::OpenaiResponses => Some(openai_responses::message_count(&self.body)),
            LlmApi::OpenaiEmbeddings => None,
            LlmApi::AnthropicMessages => Some(anthropic_messages::message_count(&self.body)),
        }
    }

    /// The output limit the client asked for, if any.
    pub fn requested_output_cap(&self) -> Option<u64> {
        match self.api {
            LlmApi::OpenaiChat => openai_chat::requested_output_cap(&self.body),
            LlmApi::OpenaiResponses => openai_responses::requested_output_cap(&self.body),
            LlmApi::OpenaiEmbeddings => None,
            LlmApi::AnthropicMessages => anthropic_messages::requested_output_cap(&self.body),
        }
    }

    /// The output a model with `model_cap` can produce for this request:
    /// the smaller of the request's and the model's limit, times the
    /// number of choices asked for (chat's `n`); 0 for APIs without output.
    /// It bounds the reservation and the runaway cut-off.
    pub fn output_cap(&self, model_cap: u64) -> u64 {
        if !self.api.has_output() {
            return 0;
        }
        let cap = model_cap.max(1);
        let per_choice = self.requested_output_cap().map_or(cap, |r| r.min(cap));
        per_choice.saturating_mul(self.choices())
    }

    /// Answers asked for (chat's `n`; 1 for the other APIs).
    pub fn choices(&self) -> u64 {
        match self.api {
            LlmApi::OpenaiChat => openai_chat::choices(&self.body),
            _ => 1,
        }
    }

    /// Visits every piece of input the model will read, in order.
    pub fn for_each_part<'a>(&'a self, mut f: impl FnMut(Part<'a>)) {
        match self.api {
            LlmApi::OpenaiEmbeddings => openai_embeddings::for_each_part(&self.body, &mut f),
            api => fields::for_each_text_of(&self.body, model_text_fields(api), &mut f),
        }
    }

    /// Visits every text the model will read (guards, estimate).
    pub fn for_each_text<'a>(&'a self, mut f: impl FnMut(&'a str)) {
        self.for_each_part(|part| {
            if let Part::Text(t) = part {
                f(t)
            }
        });
    }

    /// Replaces texts in place: `f` returns `Some(new)` to replace, `None`
    /// to keep. Visits the same texts as [`Self::for_each_text`]; returns
    /// the number replaced.
    pub fn map_texts(&mut self, mut f: impl FnMut(&str) -> Option<String>) -> usize {
        let mut changed = 0;
        let mut apply = |slot: &mut String| {
            if let Some(new) = f(slot) {
                *slot = new;
                changed += 1;
            }
        };
        match self.api {
            LlmApi::OpenaiEmbeddings => openai_embeddings::map_texts(&mut self.body, &mut apply),
            api => fields::map_texts_of(&mut self.body, model_text_fields(api), &mut apply),
        }
        changed
    }

    /// Input tokens as OpenAI's cookbook approximates them for chat models
    /// (framing per message, reply priming); embeddings have no framing.
    pub fn estimate_prompt_tokens(&self) -> u64 {
        self.prompt_tokens_with(tokens::count_text)
    }

    /// An upper bound on [`Self::estimate_prompt_tokens`] that needs no
    /// tokenizer: texts count one token per byte. What budgets reserve
    /// before a call (the exact count is taken only when this bound would
    /// be refused, or `max_prompt_tokens` needs it).
    pub fn prompt_tokens_bound(&self) -> u64 {
        self.prompt_tokens_with(tokens::bytes_bound)
    }

    fn prompt_tokens_with(&self, count_text: impl Fn(&str) -> u64) -> u64 {
        let mut total = match self.message_count() {
            Some(n) => REPLY_PRIMING_TOKENS.saturating_add(TOKENS_PER_MESSAGE * n as u64),
            None => 0,
        };
        self.for_each_part(|part| {
            let n = match part {
                Part::Text(t) => count_text(t),
                Part::Tokens(n) => n,
                Part::Other => NON_TEXT_PART_TOKENS,
            };
            total = total.saturating_add(n);
        });
        total
    }

    /// Bytes of text to tokenize (to decide whether to do it off the loop).
    pub fn text_bytes(&self) -> usize {
        let mut n = 0;
        self.for_each_text(|t| n += t.len());
        n
    }

    /// Prepares the body for a model: `model` set to its upstream name, the
    /// output limit capped (and set when absent, so the reservation bounds
    /// it), usage requested where the API needs asking. Returns the output
    /// cap in force (0 for APIs without output).
    pub fn rewrite(&mut self, upstream_model: &str, model_cap: u64) -> u64 {
        self.body
            .insert("model".to_owned(), Value::String(upstream_model.to_owned()));
        let cap = self.output_cap(model_cap);
        match self.api {
            LlmApi::OpenaiChat => openai_chat::rewrite(&mut self.body, model_cap.max(1)),
            LlmApi::OpenaiResponses => openai_responses::rewrite(&mut self.body, cap),
            LlmApi::OpenaiEmbeddings => {}
            LlmApi::AnthropicMessages => anthropic_messages::rewrite(&mut self.body, cap),
        }
        cap
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising a Map<String, Value> into a Vec cannot fail (string keys,
        // infallible writer), so the empty fallback is unreachable.
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

fn validate_model_and_stream(body: &Map<String, Value>) -> Result<(), RequestError> {
    match body.get("model") {
        None => return Err(field_err("model", "is required")),
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(field_err("model", "must be a non-empty string")),
    }
    if let Some(v) = body.get("stream") {
        if !v.is_boolean() {
            return Err(field_err("stream", "must be a boolean"));
        }
    }
    Ok(())
}

/// The top-level fields whose texts reach the model, for the APIs whose
/// texts sit in JSON trees under them (embeddings read their `input`).
fn model_text_fields(api: LlmApi) -> &'static [&'static str] {
    match api {
        LlmApi::OpenaiChat => openai_chat::MODEL_TEXT_FIELDS,
        LlmApi::OpenaiResponses => openai_responses::MODEL_TEXT_FIELDS,
        LlmApi::AnthropicMessages => anthropic_messages::MODEL_TEXT_FIELDS,
        LlmApi::OpenaiEmbeddings => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(api: LlmApi, v: Value) -> LlmRequest {
        LlmRequest::parse(api, v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{api:?}: {e}"))
    }

    /// The usage billed from a whole JSON answer of `api`.
    pub(super) fn json_usage(api: LlmApi, answer: &Value) -> crate::llm::tally::Usage {
        let mut p = crate::llm::usage::UsageParser::json(api, 1 << 20);
        p.feed(answer.to_string().as_bytes());
        p.finish()
            .usage
            .unwrap_or_else(|| panic!("{api:?}: no usage in {answer}"))
    }

    #[test]
    fn every_api_validates_model_and_stream() {
        for api in [
            LlmApi::OpenaiChat,
            LlmApi::OpenaiResponses,
            LlmApi::OpenaiEmbeddings,
            LlmApi::AnthropicMessages,
        ] {
            assert_eq!(LlmRequest::parse(api, b"[1]"), Err(RequestError::NotObject));
            let e = LlmRequest::parse(api, b"{\"model\": 3}").unwrap_err();
            assert_eq!(e.to_string(), "model must be a non-empty string");
            let e = LlmRequest::parse(api, b"{\"model\": \"m\", \"stream\": 1}").unwrap_err();
            assert_eq!(e.to_string(), "stream must be a boolean");
        }
    }

    #[test]
    fn estimate_counts_framing_texts_and_other_parts() {
        let r = parse(
            LlmApi::OpenaiChat,
            json!({"model": "m", "messages": [
                {"role": "system", "content": "Hello, world!"},
                {"role": "user", "content": [{"type": "text", "text": "Hello, world!"},
                    {"type": "image_url", "image_url": {"url": "data:..."}}]},
                {"role": "assistant", "content": null}
            ]}),
        );
        assert_eq!(r.estimate_prompt_tokens(), 3 + 3 * 4 + 4 + 4 + 85);
        let e = parse(
            LlmApi::OpenaiEmbeddings,
            json!({"model": "m", "input": ["Hello, world!", "Hello, world!"]}),
        );
        assert_eq!(e.estimate_prompt_tokens(), 8);
        assert_eq!(e.output_cap(100), 0);
    }

    #[test]
    fn bound_has_the_same_framing_and_bytes_for_texts() {
        let r = parse(
            LlmApi::AnthropicMessages,
            json!({"model": "m", "max_tokens": 9, "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hello, world!"}]}),
        );
        // Reply priming + framing of system and one message + the texts' bytes.
        assert_eq!(r.prompt_tokens_bound(), 3 + 2 * 4 + 9 + 13);
        assert!(r.prompt_tokens_bound() >= r.estimate_prompt_tokens());
        let e = parse(
            LlmApi::OpenaiEmbeddings,
            json!({"model": "m", "input": [[1, 2, 3], [4, 5]]}),
        );
        assert_eq!(e.prompt_tokens_bound(), 3 + 2);
        let e = parse(
            LlmApi::OpenaiEmbeddings,
            json!({"model": "m", "input": "Hello, world!"}),
        );
        assert_eq!(e.prompt_tokens_bound(), 13);
    }

    #[test]
    fn every_text_the_model_reads_is_visited_and_no_identifier() {
        let r = parse(
            LlmApi::OpenaiChat,
            json!({"model": "m",
                "messages": [
                    {"role": "user", "name": "u1", "content": "t-content"},
                    {"role": "assistant", "content": [{"type": "refusal", "refusal": "t-refusal"}],
                     "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": "t-args"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "t-tool"},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:t-image"}}]}
                ],
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "t-desc",
                    "parameters": {"type": "object", "properties": {"t-key": {"description": "t-pdesc"}}}}}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "description": "t-rf"}},
                "prediction": {"type": "content", "content": "t-pred"},
                "user": "t-not-model-input"}),
        );
        let mut seen = Vec::new();
        r.for_each_text(|t| seen.push(t.to_string()));
        for t in [
            "t-content",
            "t-refusal",
            "t-args",
            "t-tool",
            "t-desc",
            "t-key",
            "t-pdesc",
            "t-rf",
            "t-pred",
        ] {
            assert!(seen.iter().any(|s| s == t), "{t} not visited: {seen:?}");
        }
        for t in [
            "u1",
            "call_1",
            "lookup",
            "function",
            "data:t-image",
            "t-not-model-input",
            "user",
        ] {
            assert!(!seen.iter().any(|s| s == t), "{t} visited: {seen:?}");
        }
        // Redaction reaches the same texts, object keys of schemas included.
        let mut r = r;
        let changed = r.map_texts(|t| t.starts_with("t-").then(|| "X".to_string()));
        assert_eq!(changed, seen.iter().filter(|s| s.starts_with("t-")).count());
        let sent = String::from_utf8(r.to_vec()).unwrap_or_default();
        for (text, kept) in [
            ("t-key", false),
            ("t-args", false),
            ("call_1", true),
            ("t-not-model-input", true),
        ] {
            assert_eq!(sent.contains(text), kept, "{text}: {sent}");
        }
    }

    #[test]
    fn output_cap_is_the_smaller_limit() {
        let r = parse(
            LlmApi::AnthropicMessages,
            json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(r.output_cap(100), 50);
        assert_eq!(r.output_cap(10), 10);
        let r = parse(LlmApi::OpenaiResponses, json!({"model": "m", "input": "x"}));
        assert_eq!(r.output_cap(100), 100);
        // Each of chat's n choices may use the whole cap.
        let r = parse(
            LlmApi::OpenaiChat,
            json!({"model": "m", "n": 3, "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(r.output_cap(100), 150);
        let bad = json!({"model": "m", "n": 0, "messages": [{"role": "user", "content": "x"}]});
        assert!(LlmRequest::parse(LlmApi::OpenaiChat, bad.to_string().as_bytes()).is_err());
    }
}
