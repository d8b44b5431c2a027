//! Output guards applied to an answer on the wire: a JSON answer is
//! rewritten whole; an SSE stream event by event, each text channel (a
//! choice's text, a tool call's arguments, an Anthropic content block, a
//! Responses output part) through its own hold-back [`Redactor`].
//!
//! A stream keeps its framing: deltas carry the released text (possibly
//! empty), and what a channel still holds when it ends is sent in the
//! ending event itself (chat's finish chunk) or in one delta event of the
//! API's own kind just before it (Anthropic's `content_block_stop`,
//! Responses' `*.done`, whose later `sequence_number`s move up by one).
//! A blocking match ends the stream with the API's content-filter ending.

use super::api::LlmApi;
use crate::guards::output::{
    guard_text, Findings, OutputGuardSet, OutputKind, OutputScanner, Redactor,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// The scanner and route set of one call, and what it found.
pub struct Guarding {
    scanner: Arc<OutputScanner>,
    set: OutputGuardSet,
    pub findings: Findings,
}

/// A blocking match was found in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub kind: OutputKind,
    /// The chat choice it was found in (0 for the other APIs).
    pub choice: u64,
}

impl Guarding {
    pub fn new(scanner: Arc<OutputScanner>, set: OutputGuardSet) -> Guarding {
        Guarding {
            scanner,
            set,
            findings: Findings::default(),
        }
    }

    /// An upstream's error body with the gateway's own secrets replaced
    /// (`None`: none in it).
    pub fn scrub_error_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        self.scanner.scrub_exact(self.set, body)
    }

    /// Guards a string value in place (other values are left alone).
    fn text(&mut self, slot: &mut Value, choice: u64) -> Result<(), Blocked> {
        let Value::String(s) = slot else {
            return Ok(());
        };
        let (new, blocked) = guard_text(&self.scanner, self.set, s, &mut self.findings);
        if let Some(new) = new {
            *s = new;
        }
        match blocked {
            Some(kind) => Err(Blocked { kind, choice }),
            None => Ok(()),
        }
    }

    /// Every string value of a JSON subtree (a tool call's `input`).
    fn strings(&mut self, value: &mut Value) -> Result<(), Blocked> {
        match value {
            Value::String(_) => self.text(value, 0),
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.strings(v)),
            Value::Object(map) => map.values_mut().try_for_each(|v| self.strings(v)),
            _ => Ok(()),
        }
    }

    fn field(&mut self, obj: &mut Value, key: &str, choice: u64) -> Result<(), Blocked> {
        match obj.get_mut(key) {
            Some(slot) => self.text(slot, choice),
            None => Ok(()),
        }
    }

    /// A Responses output item: message parts, function-call arguments.
    fn response_item(&mut self, item: &mut Value) -> Result<(), Blocked> {
        if let Some(parts) = item.get_mut("content").and_then(Value::as_array_mut) {
            for part in parts {
                self.response_part(part)?;
            }
        }
        self.field(item, "arguments", 0)
    }

    fn response_part(&mut self, part: &mut Value) -> Result<(), Blocked> {
        self.field(part, "text", 0)?;
        self.field(part, "refusal", 0)
    }

    fn response_output(&mut self, response: &mut Value) -> Result<(), Blocked> {
        if let Some(items) = response.get_mut("output").and_then(Value::as_array_mut) {
            for item in items {
                self.response_item(item)?;
            }
        }
        Ok(())
    }
}

/// Guards a whole JSON answer: `Some(new body)` when it changed.
/// An answer that does not parse is left as it is (not a model answer).
pub fn guard_json(api: LlmApi, g: &mut Guarding, body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    if !v.is_object() {
        return None;
    }
    let before = g.findings;
    let result = match api {
        LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => json_chat(g, &mut v),
        LlmApi::AnthropicMessages => json_anthropic(g, &mut v),
        LlmApi::OpenaiResponses => g.response_output(&mut v),
    };
    if result.is_err() {
        block_json(api, &mut v);
    } else if g.findings == before || !changed_text(g) {
        return None;
    }
    serde_json::to_vec(&v).ok()
}

/// Whether anything was redacted (log alone leaves the body as it is).
fn changed_text(g: &Guarding) -> bool {
    g.findings
        .actions()
        .iter()
        .any(|(_, action)| *action == "redact")
}

/// The items of the array `v[key]` with their `index` field, or their
/// position where it is missing: chat choices and tool calls say which
/// one they are, and a stream continues each by that index.
fn indexed_items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = (u64, &'a mut Value)> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(position, item)| {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            (index, item)
        })
}

fn json_chat(g: &mut Guarding, v: &mut Value) -> Result<(), Blocked> {
    for (index, choice) in indexed_items(v, "choices") {
        let Some(message) = choice.get_mut("message") else {
            continue;
        };
        g.field(message, "content", index)?;
        g.field(message, "refusal", index)?;
        if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for call in calls {
                if let Some(function) = call.get_mut("function") {
                    g.field(function, "arguments", index)?;
                }
            }
        }
        if let Some(function) = message.get_mut("function_call") {
            g.field(function, "arguments", index)?;
        }
    }
    Ok(())
}

fn json_anthropic(g: &mut Guarding, v: &mut Value) -> Result<(), Blocked> {
    let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for block in blocks {
        g.field(block, "text", 0)?;
        if let Some(input) = block.get_mut("input") {
            g.strings(input)?;
        }
    }
    Ok(())
}

/// A blocked JSON answer: no content, the API's content-filter ending;
/// usage stays as the upstream reported it.
fn block_json(api: LlmApi, v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    match api {
        LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => {
            if let Some(choices) = obj.get_mut("choices").and_then(Value::as_array_mut) {
                for choice in choices {
                    choice["message"] = json!({"role": "assistant", "content": null});
                    choice["finish_reason"] = json!("content_filter");
                }
            }
        }
        LlmApi::AnthropicMessages => {
            obj.insert("content".into(), json!([]));
            obj.insert("stop_reason".into(), json!("refusal"));
            obj.insert("stop_sequence".into(), Value::Null);
        }
        LlmApi::OpenaiResponses => {
            obj.insert("output".into(), json!([]));
            obj.insert("status".into(), json!("incomplete"));
            obj.insert(
                "incomplete_details".into(),
                json!({"reason": "content_filter"}),
            );
        }
    }
}

/// A text channel of a stream: (choice or block or output index, content
/// or tool index, what: 0 text, 1 refusal, 2 arguments / JSON input).
type Channel = (u64, u64, u8);

/// An event's one text (its JSON string as sent), its channel, and its
/// sequence number (Responses).
type TextSlot<'a> = (&'a RawValue, Channel, Option<u64>);

/// What [`SseGuard::text_in_place`] reads of a chat chunk; every other
/// field is skipped unread and kept as it came.
#[derive(Deserialize)]
struct ChatTextChunk<'a> {
    #[serde(borrow)]
    choices: Vec<ChatTextChoice<'a>>,
}

#[derive(Deserialize)]
struct ChatTextChoice<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<ChatTextDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChatTextDelta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(default)]
    refusal: Option<IgnoredAny>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

/// A chat chunk of one choice whose delta is text only: the text and its
/// channel.
fn chat_text_slot(data: &[u8]) -> Option<TextSlot<'_>> {
    let chunk: ChatTextChunk<'_> = serde_json::from_slice(data).ok()?;
    let [choice] = chunk.choices.as_slice() else {
        return None;
    };
    let delta = choice.delta.as_ref()?;
    if choice.finish_reason.is_some() || delta.refusal.is_some() || delta.tool_calls.is_some() {
        return None;
    }
    Some((delta.content?, (choice.index, 0, 0), None))
}

/// What [`SseGuard::text_in_place`] reads of an Anthropic event.
#[derive(Deserialize)]
struct AnthropicDeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial_json: Option<&'a RawValue>,
}

/// What [`SseGuard::text_in_place`] reads of a Responses event.
#[derive(Deserialize)]
struct ResponsesDeltaEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    output_index: u64,
    #[serde(default)]
    content_index: u64,
    #[serde(borrow, default)]
    item_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(default)]
    sequence_number: Option<u64>,
}

/// An Anthropic `content_block_delta` of text or tool input: the text and
/// its channel (thinking deltas are signed: left to the general path).
fn anthropic_text_slot(data: &[u8]) -> Option<TextSlot<'_>> {
    let ev: AnthropicDeltaEvent<'_> = serde_json::from_slice(data).ok()?;
    if ev.kind != "content_block_delta" {
        return None;
    }
    let delta = ev.delta?;
    match delta.kind.as_ref() {
        "text_delta" => Some((delta.text?, (ev.index, 0, 0), None)),
        "input_json_delta" => Some((delta.partial_json?, (ev.index, 0, 2), None)),
        _ => None,
    }
}

/// Largest event assembled: one that never ends is not forwarded unread.
const MAX_EVENT_BYTES: usize = super::usage::MAX_SSE_EVENT_BYTES;

/// One event as read: its name, its data (lines joined), and the raw bytes.
struct Event<'a> {
    name: Option<&'a str>,
    data: Vec<u8>,
    raw: &'a [u8],
}

fn parse_event(raw: &[u8]) -> Event<'_> {
    let mut name = None;
    let mut data: Vec<u8> = Vec::new();
    let mut lines = 0;
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = super::usage::sse_field(line);
        match field {
            b"event" => name = std::str::from_utf8(value).ok(),
            b"data" => {
                if lines > 0 {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                lines += 1;
            }
            _ => {}
        }
    }
    Event { name, data, raw }
}

/// Where the event that starts `buf` ends (just past its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let i = at + i;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            _ => at = i + 1,
        }
    }
    None
}

fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// What [`SseGuard::feed`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseVerdict {
    Continue,
    /// A blocking match: `out` ends before it; add [`SseGuard::ending`].
    Blocked,
}

/// Guards an SSE answer event by event.
pub struct SseGuard {
    api: LlmApi,
    pub g: Guarding,
    /// Bytes of an event not complete yet.
    pending: Vec<u8>,
    channels: Vec<(Channel, Redactor)>,
    /// Events added so far (Responses' sequence numbers move up by it).
    seq_shift: u64,
    next_seq: u64,
    /// Chat: the stream's id, created and model; Responses: its response.
    meta: Map<String, Value>,
    /// Anthropic content blocks started and not stopped.
    open_blocks: Vec<u64>,
    blocked: Option<Blocked>,
    /// The text released before a blocking match, in its channel.
    block_text: Option<(Channel, String)>,
}

impl SseGuard {
    pub fn new(api: LlmApi, g: Guarding) -> SseGuard {
        SseGuard {
            api,
            g,
            pending: Vec::new(),
            channels: Vec::new(),
            seq_shift: 0,
            next_seq: 0,
            meta: Map::new(),
            open_blocks: Vec::new(),
            blocked: None,
            block_text: None,
        }
    }

    /// Text held back over every channel (for the hold-back bound).
    pub fn held(&self) -> usize {
        self.channels.iter().map(|(_, r)| r.held()).sum()
    }

    pub fn findings(&self) -> Findings {
        let mut f = self.g.findings;
        for (_, r) in &self.channels {
            f.merge(r.findings);
        }
        f
    }

    /// Guards what arrived; whole events go to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> SseVerdict {
        if self.blocked.is_some() {
            return SseVerdict::Blocked;
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        let pending = std::mem::take(&mut self.pending);
        while let Some(len) = event_end(&pending[start..]) {
            let raw = &pending[start..start + len];
            start += len;
            if self.event(raw, out).is_err() {
                self.pending = pending;
                self.pending.clear();
                return SseVerdict::Blocked;
            }
        }
        self.pending = pending;
        self.pending.drain(..start);
        if self.pending.len() > MAX_EVENT_BYTES {
            // Fails closed: an event too large to read is not forwarded.
            self.pending = Vec::new();
            self.blocked = Some(Blocked {
                kind: OutputKind::GatewaySecret,
                choice: 0,
            });
            return SseVerdict::Blocked;
        }
        SseVerdict::Continue
    }

    /// The upstream ended: an unterminated last event and text still held.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> SseVerdict {
        if self.blocked.is_some() {
            return SseVerdict::Blocked;
        }
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() && self.event(&rest, out).is_err() {
            return SseVerdict::Blocked;
        }
        let keys: Vec<Channel> = self.channels.iter().map(|(k, _)| *k).collect();
        for key in keys {
            let mut before = Vec::new();
            if self.flush_into_events(key, &mut before).is_err() {
                out.extend_from_slice(&before);
                return SseVerdict::Blocked;
            }
            out.extend_from_slice(&before);
        }
        SseVerdict::Continue
    }

    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), Blocked> {
        let ev = parse_event(raw);
        if ev.data.is_empty() {
            out.extend_from_slice(ev.raw);
            return Ok(());
        }
        if ev.data == b"[DONE]" {
            let keys: Vec<Channel> = self.channels.iter().map(|(k, _)| *k).collect();
            for key in keys {
                self.flush_into_events(key, out)?;
            }
            out.extend_from_slice(ev.raw);
            return Ok(());
        }
        if let Some(done) = self.text_in_place(&ev, out) {
            return done;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&ev.data) else {
            out.extend_from_slice(ev.raw);
            return Ok(());
        };
        let mut before = Vec::new();
        let result = match self.api {
            LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => self.chat_event(&mut v),
            LlmApi::AnthropicMessages => self.anthropic_event(&mut v, &mut before),
            LlmApi::OpenaiResponses => self.responses_event(&mut v, &mut before),
        };
        out.extend_from_slice(&before);
        if let Err(b) = result {
            // Only the text released before the match leaves, in a delta
            // of its own: the rest of this event was not all guarded.
            self.blocked = Some(b);
            if let Some((key, text)) = self.block_text.take() {
                if !text.is_empty() {
                    let (name, delta) = self.delta_event(key, text);
                    write_event(out, name, &delta);
                }
            }
            return Err(b);
        }
        if let Some(seq) = v.get("sequence_number").and_then(Value::as_u64) {
            self.next_seq = seq + self.seq_shift + 1;
            if self.seq_shift > 0 {
                v["sequence_number"] = json!(seq + self.seq_shift);
            }
        }
        write_event(out, ev.name, &v);
        Ok(())
    }

    /// Most events of a stream carry one text delta and nothing else to
    /// guard (a chat chunk of one choice, an Anthropic
    /// `content_block_delta`, a Responses `*.delta`): the text is guarded and spliced back into
    /// the event's own bytes, without a JSON tree of the event (parsing and
    /// re-serialising it was most of a guarded stream's cost). `None`: not
    /// such an event, the general path decides.
    fn text_in_place(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) -> Option<Result<(), Blocked>> {
        let (raw, key, seq) = match self.api {
            // The first chunk also gives the stream's id and model.
            LlmApi::OpenaiChat if !self.meta.is_empty() => chat_text_slot(&ev.data)?,
            LlmApi::AnthropicMessages => anthropic_text_slot(&ev.data)?,
            // Once an event was added, later sequence numbers move: the
            // general path rewrites them.
            LlmApi::OpenaiResponses if self.seq_shift == 0 => self.responses_text_slot(&ev.data)?,
            _ => return None,
        };
        let raw = raw.get();
        let text: Cow<'_, str> = serde_json::from_str(raw).ok()?;
        let start = (raw.as_ptr() as usize).checked_sub(ev.data.as_ptr() as usize)?;
        let (before, after) = (ev.data.get(..start)?, ev.data.get(start + raw.len()..)?);
        let scanner = self.g.scanner.clone();
        let set = self.g.set;
        let mut released = String::with_capacity(text.len());
        if let Some(kind) = self.redactor(key).push(&scanner, set, &text, &mut released) {
            let choice = if self.api == LlmApi::OpenaiChat {
                key.0
            } else {
                0
            };
            let b = Blocked { kind, choice };
            self.blocked = Some(b);
            if !released.is_empty() {
                let (name, delta) = self.delta_event(key, released);
                write_event(out, name, &delta);
            }
            return Some(Err(b));
        }
        if let Some(name) = ev.name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(before);
        // A String's JSON form cannot fail to write into a Vec.
        if serde_json::to_writer(&mut *out, &released).is_err() {
            return None;
        }
        out.extend_from_slice(after);
        out.extend_from_slice(b"\n\n");
        if let Some(seq) = seq {
            self.next_seq = seq + 1;
        }
        Some(Ok(()))
    }

    /// A Responses text, refusal or arguments delta: the text and its
    /// channel; notes its sequence number and item id as the general path
    /// does (the ending and a flushed delta need them).
    fn responses_text_slot<'a>(&mut self, data: &'a [u8]) -> Option<TextSlot<'a>> {
        let ev: ResponsesDeltaEvent<'a> = serde_json::from_slice(data).ok()?;
        let (o, c) = (ev.output_index, ev.content_index);
        let slot = match ev.kind.as_ref() {
            "response.output_text.delta" => (ev.delta?, (o, c, 0), ev.sequence_number),
            "response.refusal.delta" => (ev.delta?, (o, c, 1), ev.sequence_number),
            "response.function_call_arguments.delta" => (ev.delta?, (o, 0, 2), ev.sequence_number),
            _ => return None,
        };
        // As the general path: a delta flushed before this event (a
        // blocking match) takes this event's number.
        if let Some(seq) = ev.sequence_number {
            self.next_seq = seq;
        }
        if let Some(item) = ev.item_id {
            let key = format!("item:{o}");
            if let Ok(item) = serde_json::from_str::<Value>(item.get()) {
                if self.meta.get(&key) != Some(&item) {
                    self.meta.insert(key, item);
                }
            }
        }
        Some(slot)
    }

    fn redactor(&mut self, key: Channel) -> &mut Redactor {
        let i = match self.channels.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.channels.push((key, Redactor::new()));
                self.channels.len() - 1
            }
        };
        &mut self.channels[i].1
    }

    /// Passes a string slot through its channel.
    fn pass(&mut self, key: Channel, slot: Option<&mut Value>, choice: u64) -> Result<(), Blocked> {
        let Some(Value::String(s)) = slot else {
            return Ok(());
        };
        let scanner = self.g.scanner.clone();
        let set = self.g.set;
        let mut out = String::with_capacity(s.len());
        match self.redactor(key).push(&scanner, set, s, &mut out) {
            Some(kind) => {
                self.block_text = Some((key, out));
                Err(Blocked { kind, choice })
            }
            None => {
                *s = out;
                Ok(())
            }
        }
    }

    /// Ends a channel: the text it still held (guarded).
    fn flush(&mut self, key: Channel) -> (String, Option<Blocked>) {
        let Some(i) = self.channels.iter().position(|(k, _)| *k == key) else {
            return (String::new(), None);
        };
        let (_, mut r) = self.channels.swap_remove(i);
        let mut out = String::new();
        let blocked = r.finish(&self.g.scanner, self.g.set, &mut out);
        self.g.findings.merge(r.findings);
        (
            out,
            blocked.map(|kind| Blocked {
                kind,
                choice: key.0,
            }),
        )
    }

    /// A channel's held text as delta events of the API's kind.
    fn flush_into_events(&mut self, key: Channel, out: &mut Vec<u8>) -> Result<(), Blocked> {
        let (text, blocked) = self.flush(key);
        if !text.is_empty() {
            let (name, ev) = self.delta_event(key, text);
            write_event(out, name, &ev);
        }
        match blocked {
            Some(b) => {
                self.blocked = Some(b);
                Err(b)
            }
            None => Ok(()),
        }
    }

    /// A delta event carrying `text` in channel `key`.
    fn delta_event(&mut self, key: Channel, text: String) -> (Option<&'static str>, Value) {
        let (a, b, what) = key;
        match self.api {
            LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => {
                let delta = match what {
                    0 => json!({"content": text}),
                    1 => json!({"refusal": text}),
                    _ => json!({"tool_calls": [{"index": b, "function": {"arguments": text}}]}),
                };
                let mut chunk = self.chat_frame();
                chunk["choices"] = json!([{"index": a, "delta": delta, "finish_reason": null}]);
                (None, chunk)
            }
            LlmApi::AnthropicMessages => {
                let delta = match what {
                    2 => json!({"type": "input_json_delta", "partial_json": text}),
                    _ => json!({"type": "text_delta", "text": text}),
                };
                (
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": a, "delta": delta}),
                )
            }
            LlmApi::OpenaiResponses => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.seq_shift += 1;
                let (name, mut ev) = match what {
                    0 => (
                        "response.output_text.delta",
                        json!({"output_index": a, "content_index": b, "delta": text}),
                    ),
                    1 => (
                        "response.refusal.delta",
                        json!({"output_index": a, "content_index": b, "delta": text}),
                    ),
                    _ => (
                        "response.function_call_arguments.delta",
                        json!({"output_index": a, "delta": text}),
                    ),
                };
                ev["type"] = json!(name);
                ev["sequence_number"] = json!(seq);
                if let Some(item) = self.meta.get(&format!("item:{a}")) {
                    ev["item_id"] = item.clone();
                }
                (Some(name), ev)
            }
        }
    }

    fn chat_frame(&self) -> Value {
        let mut chunk = Map::new();
        for key in ["id", "object", "created", "model", "system_fingerprint"] {
            if let Some(v) = self.meta.get(key) {
                chunk.insert(key.into(), v.clone());
            }
        }
        chunk
            .entry("object")
            .or_insert_with(|| json!("chat.completion.chunk"));
        Value::Object(chunk)
    }

    fn chat_event(&mut self, v: &mut Value) -> Result<(), Blocked> {
        if self.meta.is_empty() {
            for key in ["id", "object", "created", "model", "system_fingerprint"] {
                if let Some(x) = v.get(key) {
                    self.meta.insert(key.into(), x.clone());
                }
            }
        }
        for (index, choice) in indexed_items(v, "choices") {
            let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").filter(|d| d.is_object()) else {
                if finished {
                    choice["delta"] = json!({});
                    self.chat_flush_choice(index, &mut choice["delta"])?;
                }
                continue;
            };
            self.pass((index, 0, 0), delta.get_mut("content"), index)?;
            self.pass((index, 0, 1), delta.get_mut("refusal"), index)?;
            for (tool, call) in indexed_items(delta, "tool_calls") {
                let args = call
                    .get_mut("function")
                    .and_then(|f| f.get_mut("arguments"));
                self.pass((index, tool, 2), args, index)?;
            }
            if finished {
                self.chat_flush_choice(index, delta)?;
            }
        }
        Ok(())
    }

    /// A choice finished: its channels' held text joins the finish chunk.
    fn chat_flush_choice(&mut self, index: u64, delta: &mut Value) -> Result<(), Blocked> {
        let keys: Vec<Channel> = self
            .channels
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.0 == index)
            .collect();
        for key in keys {
            let (text, blocked) = self.flush(key);
            if let Some(b) = blocked {
                self.block_text = Some((key, text));
                return Err(b);
            }
            if !text.is_empty() {
                match key.2 {
                    0 | 1 => {
                        let field = if key.2 == 0 { "content" } else { "refusal" };
                        let joined = match delta.get(field).and_then(Value::as_str) {
                            Some(s) => format!("{s}{text}"),
                            None => text,
                        };
                        delta[field] = json!(joined);
                    }
                    _ => append_tool_args(delta, key.1, &text),
                }
            }
        }
        Ok(())
    }

    fn anthropic_event(&mut self, v: &mut Value, before: &mut Vec<u8>) -> Result<(), Blocked> {
        let kind = event_type(v);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind.as_str() {
            "content_block_start" => {
                self.open_blocks.push(index);
                let json_block = v
                    .pointer("/content_block/type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t != "text");
                if !json_block {
                    let slot = v.pointer_mut("/content_block/text");
                    self.pass((index, 0, 0), slot, 0)?;
                }
            }
            "content_block_delta" => {
                let what = v
                    .pointer("/delta/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match what {
                    "text_delta" => self.pass((index, 0, 0), v.pointer_mut("/delta/text"), 0)?,
                    "input_json_delta" => {
                        self.pass((index, 0, 2), v.pointer_mut("/delta/partial_json"), 0)?
                    }
                    // Thinking is signed by the provider: an edit breaks it.
                    _ => {}
                }
            }
            "content_block_stop" => {
                for key in [(index, 0, 0), (index, 0, 2)] {
                    self.flush_into_events(key, before)?;
                }
                self.open_blocks.retain(|b| *b != index);
            }
            "message_delta" | "message_stop" => {
                let keys: Vec<Channel> = self.channels.iter().map(|(k, _)| *k).collect();
                for key in keys {
                    self.flush_into_events(key, before)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn responses_event(&mut self, v: &mut Value, before: &mut Vec<u8>) -> Result<(), Blocked> {
        let kind = event_type(v);
        let out_i = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let part_i = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
        if let Some(seq) = v.get("sequence_number").and_then(Value::as_u64) {
            self.next_seq = seq + self.seq_shift;
        }
        if let Some(item) = v.get("item_id") {
            self.meta.insert(format!("item:{out_i}"), item.clone());
        }
        match kind.as_str() {
            "response.created" => {
                if let Some(r) = v.get("response") {
                    self.meta.insert("response".into(), r.clone());
                }
            }
            "response.output_text.delta" => self.pass((out_i, part_i, 0), v.get_mut("delta"), 0)?,
            "response.refusal.delta" => self.pass((out_i, part_i, 1), v.get_mut("delta"), 0)?,
            "response.function_call_arguments.delta" => {
                self.pass((out_i, 0, 2), v.get_mut("delta"), 0)?
            }
            "response.output_text.done" => {
                self.flush_into_events((out_i, part_i, 0), before)?;
                self.g.field(v, "text", 0)?;
            }
            "response.refusal.done" => {
                self.flush_into_events((out_i, part_i, 1), before)?;
                self.g.field(v, "refusal", 0)?;
            }
            "response.function_call_arguments.done" => {
                self.flush_into_events((out_i, 0, 2), before)?;
                self.g.field(v, "arguments", 0)?;
            }
            "response.content_part.done" => {
                if let Some(part) = v.get_mut("part") {
                    self.g.response_part(part)?;
                }
            }
            "response.output_item.done" => {
                if let Some(item) = v.get_mut("item") {
                    self.g.response_item(item)?;
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let keys: Vec<Channel> = self.channels.iter().map(|(k, _)| *k).collect();
                for key in keys {
                    self.flush_into_events(key, before)?;
                }
                if let Some(r) = v.get_mut("response") {
                    self.g.response_output(r)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The events that end a blocked stream in the API's own format.
    pub fn ending(&mut self, output_tokens: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let choice = self.blocked.map_or(0, |b| b.choice);
        match self.api {
            LlmApi::OpenaiChat | LlmApi::OpenaiEmbeddings => {
                let mut chunk = self.chat_frame();
                chunk["choices"] =
                    json!([{"index": choice, "delta": {}, "finish_reason": "content_filter"}]);
                write_event(&mut out, None, &chunk);
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            LlmApi::AnthropicMessages => {
                for index in std::mem::take(&mut self.open_blocks) {
                    write_event(
                        &mut out,
                        Some("content_block_stop"),
                        &json!({"type": "content_block_stop", "index": index}),
                    );
                }
                write_event(
                    &mut out,
                    Some("message_delta"),
                    &json!({"type": "message_delta",
                        "delta": {"stop_reason": "refusal", "stop_sequence": null},
                        "usage": {"output_tokens": output_tokens}}),
                );
                write_event(
                    &mut out,
                    Some("message_stop"),
                    &json!({"type": "message_stop"}),
                );
            }
            LlmApi::OpenaiResponses => {
                let mut response = self.meta.get("response").cloned().unwrap_or_else(
                    || json!({"id": "resp_tollgate_filtered", "object": "response"}),
                );
                response["status"] = json!("incomplete");
                response["incomplete_details"] = json!({"reason": "content_filter"});
                response["output"] = json!([]);
                response["usage"] = json!({"output_tokens": output_tokens});
                write_event(
                    &mut out,
                    Some("response.incomplete"),
                    &json!({"type": "response.incomplete", "sequence_number": self.next_seq,
                        "response": response}),
                );
            }
        }
        out
    }
}

fn append_tool_args(delta: &mut Value, tool: u64, text: &str) {
    if !delta.get("tool_calls").is_some_and(Value::is_array) {
        delta["tool_calls"] = json!([]);
    }
    let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) else {
        return;
    };
    let existing = calls
        .iter_mut()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(tool));
    match existing {
        Some(call) => {
            let joined = match call.pointer("/function/arguments").and_then(Value::as_str) {
                Some(s) => format!("{s}{text}"),
                None => text.to_string(),
            };
            call["function"]["arguments"] = json!(joined);
        }
        None => calls.push(json!({"index": tool, "function": {"arguments": text}})),
    }
}

/// An SSE event's `type` (Anthropic and Responses events name themselves
/// there), owned: the event is rewritten while its type is matched.
fn event_type(v: &Value) -> String {
    v.get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests;
