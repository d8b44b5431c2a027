//! Streams translated event by event: each upstream SSE event becomes zero
//! or more events of the client's API as soon as it arrives (nothing of the
//! answer is held back), whatever the read boundaries. The final usage is
//! sent in the client's format: OpenAI's usage chunk before `[DONE]`,
//! Anthropic's `message_delta` usage.
//!
//! Memory: the decoder holds at most the event being assembled (bounded by
//! `usage::MAX_SSE_EVENT_BYTES`); the stages hold ids and counters only.

use super::chat_gemini;
use super::chat_messages::{chat_usage_of, finish_reason_of, messages_usage_of, stop_reason_of};
use super::errors::stream_failure;
use super::hop::Hop;
use super::wire::{unix_now, write_event};
use crate::config::schema::LlmApi;
use crate::llm::usage::SseDecoder;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// An event's data between stages.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Json(Value),
    /// OpenAI's `data: [DONE]`.
    Done,
}

/// Translates an upstream SSE body into the client's, event by event.
pub struct StreamTranslator {
    client: LlmApi,
    decoder: SseDecoder,
    /// In the answer's order: the upstream's format first.
    stages: Vec<Stage>,
    /// The client's stream has ended (its last event was written).
    ended: bool,
}

impl StreamTranslator {
    pub(super) fn new(client: LlmApi, hops: &[Hop]) -> StreamTranslator {
        let stages = hops
            .iter()
            .rev()
            .map(|hop| match hop {
                Hop::ChatToMessages => Stage::MessagesToChat(MessagesToChat::default()),
                Hop::MessagesToChat => Stage::ChatToMessages(ChatToMessages::default()),
                Hop::ChatToGemini => Stage::GeminiToChat(GeminiToChat::default()),
            })
            .collect();
        StreamTranslator {
            client,
            decoder: SseDecoder::default(),
            stages,
            ended: false,
        }
    }

    /// Translates the whole events in `bytes` (a partial one waits for the
    /// next read) and appends them to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut events: Vec<Vec<u8>> = Vec::new();
        self.decoder.feed(bytes, |data| events.push(data.to_vec()));
        for data in events {
            if !self.fast_text_delta(&data, out) {
                self.run(Some(parse(&data)), out);
            }
        }
    }

    /// The common event of an Anthropic stream to an OpenAI client, a text
    /// delta, written straight from a borrowed view: no JSON tree is built
    /// (the generic path costs about a fifth of a streamed call's CPU).
    /// False leaves the event to the generic path.
    fn fast_text_delta(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let ([Stage::MessagesToChat(stage)], false) = (self.stages.as_slice(), self.ended) else {
            return false;
        };
        let Some(prefix) = stage.chunk_prefix.as_deref().filter(|_| !stage.done) else {
            return false;
        };
        let Ok(view) = serde_json::from_slice::<TextDeltaEvent>(data) else {
            return false;
        };
        if view.kind != "content_block_delta" || view.delta.kind != "text_delta" {
            return false;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(prefix.as_bytes());
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &view.delta.text);
        out.extend_from_slice(CHUNK_SUFFIX.as_bytes());
        true
    }

    /// The upstream's body ended: a last unterminated event, then what
    /// the client's stream still needs to end (or an error event when the
    /// upstream stopped before finishing its answer).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let mut events = Vec::new();
        self.decoder.finish(|data| events.push(parse(data)));
        for ev in events {
            self.run(Some(ev), out);
        }
        self.run(None, out);
    }

    /// The upstream failed (reset, stalled past the read timeout): the
    /// client's stream ends with an error event in its format.
    pub fn fail(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            self.ended = true;
            out.extend_from_slice(&stream_failure(
                self.client,
                "the upstream failed before finishing its answer",
            ));
        }
    }

    /// Whether the client's stream has been ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Runs one event (`None`: end of body) through the stages; each
    /// stage's output is the next one's input.
    fn run(&mut self, ev: Option<Ev>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let ending = ev.is_none();
        let mut batch: Vec<Ev> = ev.into_iter().collect();
        for stage in &mut self.stages {
            let mut next = Vec::new();
            for ev in batch {
                stage.on(ev, &mut next);
            }
            if ending {
                stage.end(&mut next);
            }
            batch = next;
        }
        for ev in batch {
            self.write(ev, out);
        }
    }

    fn write(&mut self, ev: Ev, out: &mut Vec<u8>) {
        match (self.client, ev) {
            (LlmApi::AnthropicMessages, Ev::Json(data)) => {
                let name = data
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message")
                    .to_string();
                if name == "message_stop" || name == "error" {
                    self.ended = true;
                }
                write_event(out, Some(&name), &data);
            }
            (LlmApi::AnthropicMessages, Ev::Done) => {}
            (_, Ev::Json(data)) => {
                if data.get("error").is_some() {
                    self.ended = true;
                }
                write_event(out, None, &data);
            }
            (_, Ev::Done) => {
                self.ended = true;
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }
}

fn parse(data: &[u8]) -> Ev {
    if data == b"[DONE]" {
        return Ev::Done;
    }
    // An event that is not JSON is passed on as a string (it reaches the
    // client as the upstream sent it, quoted): dropping it would hide it.
    Ev::Json(
        serde_json::from_slice(data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned())),
    )
}

/// An Anthropic `content_block_delta` of text, borrowed.
#[derive(serde::Deserialize)]
struct TextDeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    delta: TextDelta<'a>,
}

#[derive(serde::Deserialize)]
struct TextDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

/// What follows a content delta's text in an OpenAI chunk.
const CHUNK_SUFFIX: &str = "},\"finish_reason\":null,\"logprobs\":null}]}\n\n";

enum Stage {
    MessagesToChat(MessagesToChat),
    ChatToMessages(ChatToMessages),
    GeminiToChat(GeminiToChat),
}

impl Stage {
    fn on(&mut self, ev: Ev, out: &mut Vec<Ev>) {
        match self {
            Stage::MessagesToChat(s) => s.on(ev, out),
            Stage::ChatToMessages(s) => s.on(ev, out),
            Stage::GeminiToChat(s) => s.on(ev, out),
        }
    }

    /// The end of the upstream body: whatever the stage's format still
    /// needs (a stage whose output ended already produces nothing).
    fn end(&mut self, out: &mut Vec<Ev>) {
        match self {
            Stage::MessagesToChat(s) => s.end(out),
            Stage::ChatToMessages(s) => s.end(out),
            Stage::GeminiToChat(s) => s.end(out),
        }
    }
}

/// An OpenAI chat chunk of one choice.
fn chunk(id: &Value, model: &Value, created: u64, delta: Value, finish: Option<&str>) -> Ev {
    Ev::Json(json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    }))
}

fn openai_stream_error(message: &str) -> Ev {
    Ev::Json(
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}}),
    )
}

/// The message of an upstream's error event (an object under `error`).
fn upstream_error_message(event: &Value) -> Option<&str> {
    let error = event.get("error").filter(|v| v.is_object())?;
    Some(
        error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error"),
    )
}

fn anthropic_stream_error(message: &str) -> Ev {
    Ev::Json(json!({"type": "error", "error": {"type": "api_error", "message": message}}))
}

// ---------------------------------------------------------------------------
// Anthropic events → OpenAI chunks

#[derive(Default)]
struct MessagesToChat {
    /// An OpenAI chunk up to a content delta's text (set by
    /// `message_start`), for the fast path of text deltas.
    chunk_prefix: Option<String>,
    id: Value,
    model: Value,
    created: u64,
    /// Anthropic usage fields seen so far (later events overwrite).
    usage: Map<String, Value>,
    /// Content block index → OpenAI tool call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
    done: bool,
}

impl MessagesToChat {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Ev {
        chunk(&self.id, &self.model, self.created, delta, finish)
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(u) = usage.and_then(Value::as_object) {
            for (k, v) in u {
                if !v.is_null() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn on(&mut self, ev: Ev, out: &mut Vec<Ev>) {
        let Ev::Json(e) = ev else { return };
        if self.done {
            return;
        }
        match e.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = e.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").cloned().unwrap_or(Value::Null);
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                self.created = unix_now();
                self.merge_usage(m.get("usage"));
                self.chunk_prefix = Some(format!(
                    "{{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":",
                    self.id, self.created, self.model
                ));
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let block = e.get("content_block").unwrap_or(&Value::Null);
                let index = e.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let k = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, k);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""}}]}),
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(t) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = e.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = e.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": d.get("text")}), None));
                    }
                    Some("thinking_delta") => {
                        out.push(self.chunk(json!({"reasoning_content": d.get("thinking")}), None));
                    }
                    Some("input_json_delta") => {
                        let k = self.tools.get(&index).copied().unwrap_or(0);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": k, "function": {"arguments": d.get("partial_json")}}]}),
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.merge_usage(e.get("usage"));
                if let Some(reason) = e.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(self.chunk(json!({}), Some(finish_reason_of(reason))));
                }
            }
            "message_stop" => {
                self.done = true;
                if !self.usage.is_empty() {
                    let usage = chat_usage_of(&Value::Object(std::mem::take(&mut self.usage)));
                    out.push(Ev::Json(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage,
                    })));
                }
                out.push(Ev::Done);
            }
            "error" => {
                self.done = true;
                let message = e
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                let kind = e
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                out.push(Ev::Json(json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})));
            }
            _ => {}
        }
    }

    fn end(&mut self, out: &mut Vec<Ev>) {
        if !self.done {
            self.done = true;
            out.push(openai_stream_error(
                "the upstream stream ended before its answer finished",
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// OpenAI chunks → Anthropic events

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Tool(u64),
}

#[derive(Default)]
struct ChatToMessages {
    started: bool,
    open: Option<Open>,
    next_block: u64,
    /// OpenAI tool call index → content block index.
    tools: HashMap<u64, u64>,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
    done: bool,
}

impl ChatToMessages {
    fn start(&mut self, chunk: &Value, out: &mut Vec<Ev>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(Ev::Json(json!({"type": "message_start", "message": {
            "id": chunk.get("id"), "type": "message", "role": "assistant",
            "model": chunk.get("model"), "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})));
    }

    fn close(&mut self, out: &mut Vec<Ev>) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            out.push(Ev::Json(json!({"type": "content_block_stop", "index": i})));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<Ev>) -> u64 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(Ev::Json(
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn on(&mut self, ev: Ev, out: &mut Vec<Ev>) {
        if self.done {
            return;
        }
        let e = match ev {
            Ev::Done => return self.finish(out),
            Ev::Json(e) => e,
        };
        if let Some(message) = upstream_error_message(&e) {
            self.done = true;
            out.push(anthropic_stream_error(message));
            return;
        }
        self.start(&e, out);
        if let Some(usage) = e.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = e.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = match self.open {
                Some(Open::Text(i)) => i,
                _ => {
                    let i = self.open_block(json!({"type": "text", "text": ""}), out);
                    self.open = Some(Open::Text(i));
                    i
                }
            };
            out.push(Ev::Json(
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                let name = call
                    .pointer("/function/name")
                    .cloned()
                    .unwrap_or(Value::Null);
                let i = self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.open = Some(Open::Tool(i));
                self.tools.insert(k, i);
            }
            if let Some(args) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                let index = self.tools.get(&k).copied().unwrap_or(0);
                out.push(Ev::Json(
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close(out);
            self.stop_reason = Some(stop_reason_of(reason));
        }
    }

    /// `[DONE]`: the stop reason and the usage (which OpenAI sends after
    /// the finish reason), then `message_stop`.
    fn finish(&mut self, out: &mut Vec<Ev>) {
        self.done = true;
        let Some(stop_reason) = self.stop_reason else {
            out.push(anthropic_stream_error(
                "the upstream stream ended before its answer finished",
            ));
            return;
        };
        self.close(out);
        let mut delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null}});
        if let Some(usage) = &self.usage {
            delta["usage"] = messages_usage_of(usage);
        }
        out.push(Ev::Json(delta));
        out.push(Ev::Json(json!({"type": "message_stop"})));
    }

    fn end(&mut self, out: &mut Vec<Ev>) {
        if !self.done {
            // Some OpenAI-compatible servers end without `[DONE]`.
            self.finish(out);
        }
    }
}

// ---------------------------------------------------------------------------
// Gemini chunks → OpenAI chunks

#[derive(Default)]
struct GeminiToChat {
    started: bool,
    id: Value,
    model: Value,
    created: u64,
    next_call: u64,
    finished: bool,
    usage: Option<Value>,
    done: bool,
}

impl GeminiToChat {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Ev {
        chunk(&self.id, &self.model, self.created, delta, finish)
    }

    fn on(&mut self, ev: Ev, out: &mut Vec<Ev>) {
        let Ev::Json(e) = ev else { return };
        if self.done {
            return;
        }
        if let Some(message) = upstream_error_message(&e) {
            self.done = true;
            out.push(openai_stream_error(message));
            return;
        }
        if !self.started {
            self.started = true;
            self.id = e
                .get("responseId")
                .cloned()
                .unwrap_or_else(|| json!("gemini"));
            self.model = e.get("modelVersion").cloned().unwrap_or(Value::Null);
            self.created = unix_now();
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(meta) = e.get("usageMetadata").filter(|m| m.is_object()) {
            self.usage = Some(meta.clone());
        }
        let Some(candidate) = e.pointer("/candidates/0") else {
            return;
        };
        let first_call = self.next_call;
        let parts = chat_gemini::candidate_parts(candidate, &mut self.next_call);
        if let Some(r) = parts.reasoning {
            out.push(self.chunk(json!({"reasoning_content": r}), None));
        }
        if let Some(t) = parts.text {
            out.push(self.chunk(json!({"content": t}), None));
        }
        if !parts.calls.is_empty() {
            let calls: Vec<Value> = parts
                .calls
                .iter()
                .zip(first_call..)
                .map(|((id, name, args), k)| {
                    json!({"index": k, "id": id, "type": "function",
                        "function": {"name": name, "arguments": args}})
                })
                .collect();
            out.push(self.chunk(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finished = true;
            let called = self.next_call > 0;
            out.push(self.chunk(
                json!({}),
                Some(chat_gemini::finish_reason_of(reason, called)),
            ));
        }
    }

    /// Gemini has no end marker: the body's end is the stream's.
    fn end(&mut self, out: &mut Vec<Ev>) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.finished {
            out.push(openai_stream_error(
                "the upstream stream ended before its answer finished",
            ));
            return;
        }
        if let Some(meta) = &self.usage {
            out.push(Ev::Json(json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": chat_gemini::chat_usage_of(meta),
            })));
        }
        out.push(Ev::Done);
    }
}
