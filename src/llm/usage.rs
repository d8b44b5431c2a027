//! Extracts token usage from an upstream LLM response, fed incrementally
//! as the body arrives (chunks may split anywhere, even inside a UTF-8
//! character or a `\r\n`). What an event or a body means is the route's
//! API's business (`api::LlmApi`); this module owns the framing.
//!
//! Memory is bounded in both modes: JSON bodies are buffered up to a caller-set
//! limit, SSE streams only ever hold the event being assembled.

use serde_json::Value;

use super::api::{Dialect, LlmApi};
use super::tally::{ParsedUsage, StreamTally, Usage, KEEP_BUFFER_CAPACITY};

/// Largest SSE event we assemble. OpenAI chunks are a few hundred bytes; an
/// event beyond this is dropped rather than buffered.
pub const MAX_SSE_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct UsageParser {
    api: LlmApi,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Json(JsonBody),
    Sse(SseUsage),
}

impl UsageParser {
    /// For a non-streaming JSON body; of bodies over `max_buffer` bytes only
    /// the last [`JSON_TAIL_BYTES`] are kept, for their usage.
    pub fn json(api: LlmApi, max_buffer: usize) -> UsageParser {
        UsageParser {
            api,
            mode: Mode::Json(JsonBody::new(max_buffer)),
        }
    }

    /// For a `text/event-stream` body.
    pub fn sse(api: LlmApi) -> UsageParser {
        UsageParser {
            api,
            mode: Mode::Sse(SseUsage::default()),
        }
    }

    /// Picks SSE for `text/event-stream` (parameters and case ignored), else JSON.
    pub fn for_content_type(
        api: LlmApi,
        content_type: Option<&str>,
        max_buffer: usize,
    ) -> UsageParser {
        let is_sse = content_type
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"));
        if is_sse {
            UsageParser::sse(api)
        } else {
            UsageParser::json(api, max_buffer)
        }
    }

    pub fn is_sse(&self) -> bool {
        matches!(self.mode, Mode::Sse(_))
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Json(j) => j.feed(chunk),
            Mode::Sse(s) => s.feed(self.api, chunk),
        }
    }

    /// Output tokens counted so far in a stream (0 for JSON bodies, which
    /// are read at the end). Runs the tokenizer on text not counted yet.
    pub fn output_so_far(&mut self) -> u64 {
        match &mut self.mode {
            Mode::Json(_) => 0,
            Mode::Sse(s) => s.tally.output_so_far(),
        }
    }

    /// Never below [`Self::output_so_far`], and free to ask per chunk.
    pub fn output_upper_bound(&self) -> u64 {
        match &self.mode {
            Mode::Json(_) => 0,
            Mode::Sse(s) => s.tally.output_upper_bound(),
        }
    }

    /// Whether [`Self::finish_for_billing`] will run the tokenizer: the
    /// answer reported no final usage and has text to count. Call at the
    /// end of the body: it parses a JSON body, or a stream's unterminated
    /// last event (once; finishing reuses the result).
    pub fn needs_text_count(&mut self) -> bool {
        match &mut self.mode {
            Mode::Json(j) => j.needs_text_count(self.api),
            Mode::Sse(s) => s.needs_text_count(self.api),
        }
    }

    /// In a stream, the offset just past the last event that ended inside
    /// the chunk last fed: the bytes up to it form whole events.
    pub fn last_event_end(&self) -> Option<usize> {
        match &self.mode {
            Mode::Json(_) => None,
            Mode::Sse(s) => s.decoder.last_event_end,
        }
    }

    /// Result so far; call at end of body or after an aborted stream.
    /// Idempotent: further calls (and feeds) do not change the result.
    pub fn finish(&mut self) -> ParsedUsage {
        match &mut self.mode {
            Mode::Json(j) => j.finish(self.api),
            Mode::Sse(s) => s.finish(self.api, TextCount::Always),
        }
    }

    /// Like [`Self::finish`], but a stream's text is counted only when the
    /// bill needs it (no final usage): `completion_text_tokens` is 0 when
    /// the upstream reported its usage. Call one of the two, not both.
    pub fn finish_for_billing(&mut self) -> ParsedUsage {
        match &mut self.mode {
            Mode::Json(j) => j.finish(self.api),
            Mode::Sse(s) => s.finish(self.api, TextCount::WhenUnreported),
        }
    }
}

// ---------------------------------------------------------------------------
// JSON mode

/// What an answer too large to buffer keeps: its last bytes, where every
/// API puts its `usage` object. Usage objects are a few hundred bytes; the
/// fields that may follow them (`system_fingerprint`, Responses' `user` and
/// `metadata`) are small too.
pub const JSON_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug)]
struct JsonBody {
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
    /// Bytes fed in all.
    total: u64,
    /// After an overflow: the last bytes of the body (at least
    /// [`JSON_TAIL_BYTES`] of them once that many arrived).
    tail: Vec<u8>,
    result: Option<ParsedUsage>,
    /// A parsed answer without usage, kept until its text is counted.
    unreported: Option<Value>,
}

impl JsonBody {
    fn new(max: usize) -> JsonBody {
        JsonBody {
            buf: Vec::new(),
            max,
            overflowed: false,
            total: 0,
            tail: Vec::new(),
            result: None,
            unreported: None,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.result.is_some() || self.unreported.is_some() {
            return;
        }
        self.total = self.total.saturating_add(chunk.len() as u64);
        if self.overflowed {
            self.keep_tail(chunk);
            return;
        }
        if self.buf.len().saturating_add(chunk.len()) > self.max {
            // Free the memory now; only the tail is kept from here on.
            self.overflowed = true;
            let buf = std::mem::take(&mut self.buf);
            let start = buf.len().saturating_sub(JSON_TAIL_BYTES);
            self.tail = buf[start..].to_vec();
            self.keep_tail(chunk);
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Appends to the tail, trimming it back to [`JSON_TAIL_BYTES`] once it
    /// holds twice that (amortised: no shift per chunk).
    fn keep_tail(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(2 * JSON_TAIL_BYTES)..];
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * JSON_TAIL_BYTES {
            let cut = self.tail.len() - JSON_TAIL_BYTES;
            self.tail.drain(..cut);
        }
    }

    /// Parses the body once: a reported usage is the result; an answer
    /// without one is kept for its text to be counted.
    fn parse(&mut self, api: LlmApi) {
        if self.result.is_some() || self.unreported.is_some() {
            return;
        }
        if self.overflowed {
            // Too large to parse whole: the usage is read from the tail,
            // and the size is kept so an answer without one is still billed.
            let tail = std::mem::take(&mut self.tail);
            self.result = Some(ParsedUsage {
                usage: usage_in_tail(api, &tail),
                unread_bytes: self.total,
                ..ParsedUsage::default()
            });
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let usage = if let Some(usage) = reported_usage(api, &buf) {
            Some(usage)
        } else {
            // Parsed whole only when the fast path found no usage.
            match serde_json::from_slice::<Value>(&buf) {
                Ok(v) => match api.response_usage(&v) {
                    Some(usage) => Some(usage),
                    None => {
                        self.unreported = Some(v);
                        return;
                    }
                },
                Err(_) => None,
            }
        };
        self.result = Some(ParsedUsage {
            usage,
            ..ParsedUsage::default()
        });
    }

    fn needs_text_count(&mut self, api: LlmApi) -> bool {
        self.parse(api);
        self.unreported.is_some()
    }

    fn finish(&mut self, api: LlmApi) -> ParsedUsage {
        self.parse(api);
        if let Some(v) = self.unreported.take() {
            self.result = Some(ParsedUsage {
                completion_text_tokens: api.response_text_tokens(&v),
                ..ParsedUsage::default()
            });
        }
        self.result.unwrap_or_default()
    }
}

/// The usage object of a JSON answer read from its last bytes: the last
/// `"usage"` key (a quote not escaped, followed by `:`) whose value parses
/// as an object the API reads usage from. Text inside strings cannot forge
/// one: a `"` in a JSON string is always escaped.
pub fn usage_in_tail(api: LlmApi, tail: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let finder = memchr::memmem::rfind_iter(tail, KEY);
    for at in finder {
        let backslashes = tail[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        let rest = &tail[at + KEY.len()..];
        let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        let Some(value) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Value>();
        let Some(Ok(usage)) = values.next() else {
            continue;
        };
        let mut top = serde_json::Map::new();
        top.insert("usage".to_owned(), usage);
        if let Some(found) = api.response_usage(&Value::Object(top)) {
            return Some(found);
        }
    }
    None
}

/// Every API reports usage in a top-level `usage` object. Reading only
/// that (the rest skipped, not built into a tree) is the fast path; an
/// answer it does not fit (no usage, not an object, a repeated key) is
/// parsed whole by the caller, so both agree.
fn reported_usage(api: LlmApi, body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct UsageView {
        #[serde(default)]
        usage: Option<Value>,
    }
    let usage = serde_json::from_slice::<UsageView>(body).ok()?.usage?;
    let mut top = serde_json::Map::new();
    top.insert("usage".to_owned(), usage);
    api.response_usage(&Value::Object(top))
}

// ---------------------------------------------------------------------------
// SSE mode: usage extraction on top of a generic event decoder.

#[derive(Debug, Default)]
struct SseUsage {
    decoder: SseDecoder,
    tally: StreamTally,
    done: bool,
}

impl SseUsage {
    fn on_event(api: LlmApi, tally: &mut StreamTally, done: &mut bool, data: &[u8]) {
        if *done {
            return;
        }
        if data == b"[DONE]" {
            *done = true;
            return;
        }
        if api.on_stream_data(data, tally) {
            return;
        }
        // Malformed or non-JSON events (keep-alives, vendor noise) are skipped:
        // they must never fail the proxied response.
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        api.on_stream_event(&v, tally);
    }

    fn feed(&mut self, api: LlmApi, chunk: &[u8]) {
        self.decoder.last_event_end = None;
        if self.done {
            return;
        }
        let (tally, done) = (&mut self.tally, &mut self.done);
        self.decoder
            .feed(chunk, |data| SseUsage::on_event(api, tally, done, data));
    }

    /// Reads a final event left without its blank line (see the decoder).
    fn end_of_stream(&mut self, api: LlmApi) {
        if !self.done {
            let (tally, done) = (&mut self.tally, &mut self.done);
            self.decoder
                .finish(|data| SseUsage::on_event(api, tally, done, data));
            self.done = true;
        }
    }

    fn needs_text_count(&mut self, api: LlmApi) -> bool {
        self.end_of_stream(api);
        !self.tally.usage_final && self.tally.text.has_uncounted()
    }

    fn finish(&mut self, api: LlmApi, when: TextCount) -> ParsedUsage {
        self.end_of_stream(api);
        let tally = &mut self.tally;
        let partial = tally.usage.is_some() && !tally.usage_final;
        let text_tokens = match when {
            TextCount::WhenUnreported if tally.usage_final => 0,
            _ => tally.text.count(),
        };
        let reported = tally.reported_output();
        let usage = tally.usage.map(|mut u| {
            if partial {
                u.completion_tokens = reported.max(text_tokens);
            }
            u
        });
        ParsedUsage {
            usage,
            partial,
            completion_text_tokens: text_tokens,
            unread_bytes: 0,
        }
    }
}

/// Whether finishing a stream counts its text when the usage was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextCount {
    Always,
    WhenUnreported,
}

/// Server-sent-events framing per the WHATWG spec, reduced to what usage
/// extraction needs: only `data` fields are kept (`event`, `id`, `retry` and
/// comments are ignored) and a leading BOM is not stripped.
#[derive(Debug)]
pub(crate) struct SseDecoder {
    /// Unterminated line carried over from the previous chunk.
    line: Vec<u8>,
    /// Data lines of the current event, joined with `\n` (trailing `\n` included).
    data: Vec<u8>,
    /// The previous chunk ended in `\r`; a leading `\n` in the next one belongs to it.
    after_cr: bool,
    /// The current event exceeded the size cap and is being skipped.
    discarding: bool,
    /// The current line is non-empty but was dropped for being too long.
    line_dropped: bool,
    max_event: usize,
    /// A blank line ended an event in the line just handled.
    event_ended: bool,
    /// Offset in the chunk being fed just past the last event's end.
    last_event_end: Option<usize>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::with_limit(MAX_SSE_EVENT_BYTES)
    }
}

impl SseDecoder {
    fn with_limit(max_event: usize) -> SseDecoder {
        SseDecoder {
            line: Vec::new(),
            data: Vec::new(),
            after_cr: false,
            discarding: false,
            line_dropped: false,
            max_event,
            event_ended: false,
            last_event_end: None,
        }
    }

    pub(crate) fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        let fed = chunk.len();
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        // memchr2: SIMD search; a byte loop here was ~3% of an SSE call's CPU.
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (head, rest) = chunk.split_at(pos);
            let is_cr = rest[0] == b'\r';
            chunk = &rest[1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() && !self.line_dropped {
                // Fast path: the whole line is inside this chunk, no copy.
                self.on_line(head, &mut on_event);
            } else {
                self.push_line_bytes(head);
                let line = std::mem::take(&mut self.line);
                self.on_line(&line, &mut on_event);
                self.line = recycle(line);
            }
            if std::mem::take(&mut self.event_ended) {
                self.last_event_end = Some(fed - chunk.len());
            }
        }
        self.push_line_bytes(chunk);
    }

    /// End of stream. The spec drops an unterminated final event, but for billing
    /// a complete usage object missing only its blank line is still worth
    /// reading; a truncated one fails JSON parsing and is skipped anyway.
    pub(crate) fn finish(&mut self, mut on_event: impl FnMut(&[u8])) {
        if !self.line.is_empty() || self.line_dropped {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut on_event);
        }
        self.on_line(b"", &mut on_event);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_dropped || bytes.is_empty() {
            return;
        }
        if self.data.len() + self.line.len() + bytes.len() > self.max_event {
            self.drop_event();
            self.line_dropped = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn drop_event(&mut self) {
        self.discarding = true;
        // Release the memory, not just the length: the point is bounding it.
        self.line = Vec::new();
        self.data = Vec::new();
    }

    fn on_line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if self.line_dropped {
            // An over-long line is never empty, so it cannot end the event.
            self.line_dropped = false;
            return;
        }
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if self.discarding || line[0] == b':' {
            return;
        }
        let (field, value) = sse_field(line);
        if field != b"data" {
            return;
        }
        if self.data.len() + value.len() + 1 > self.max_event {
            self.drop_event();
            return;
        }
        self.data.extend_from_slice(value);
        self.data.push(b'\n');
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(&[u8])) {
        self.event_ended = true;
        if self.discarding {
            self.discarding = false;
        } else if let Some((b'\n', data)) = self.data.split_last() {
            on_event(data);
        }
        self.data = recycle(std::mem::take(&mut self.data));
    }
}

fn recycle(mut buf: Vec<u8>) -> Vec<u8> {
    if buf.capacity() > KEEP_BUFFER_CAPACITY {
        return Vec::new();
    }
    buf.clear();
    buf
}

/// One SSE line split into its field name and value (one leading space of
/// the value dropped, per the SSE spec); a line without ':' is a field
/// with an empty value.
pub(crate) fn sse_field(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b':', line) {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &b""[..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::tokens;
    use serde_json::json;

    const WORDS: [&str; 8] = [
        "Hello", " there", "!", " How", " can", " I", " help", " today?",
    ];

    fn chunk_event(delta: Value, finish: Option<&str>, eol: &str) -> String {
        let v = json!({
            "id": "chatcmpl-9xYz", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null
        });
        format!("data: {v}{eol}{eol}")
    }

    fn usage_json() -> Value {
        json!({
            "prompt_tokens": 1200, "completion_tokens": 8, "total_tokens": 1208,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0}
        })
    }

    fn expected_usage() -> Usage {
        Usage {
            prompt_tokens: 1200,
            completion_tokens: 8,
            cached_tokens: 1024,
            reasoning_tokens: 3,
            cache_write_tokens: 0,
        }
    }

    /// An OpenAI stream with `include_usage`: keep-alive comment, role delta,
    /// content deltas, finish chunk, usage chunk with empty choices, `[DONE]`.
    fn stream(eol: &str, with_usage: bool) -> Vec<u8> {
        let mut s = format!(": keep-alive{eol}{eol}");
        s += &chunk_event(json!({"role": "assistant", "content": ""}), None, eol);
        for w in WORDS {
            s += &chunk_event(json!({"content": w}), None, eol);
        }
        s += &chunk_event(json!({}), Some("stop"), eol);
        if with_usage {
            let v = json!({
                "id": "chatcmpl-9xYz", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": "gpt-4o-mini-2024-07-18",
                "choices": [], "usage": usage_json()
            });
            // Split over two data lines so a spurious blank line (e.g. a `\r\n`
            // misread as two line ends) would dispatch half an event.
            let text = v.to_string();
            let (a, b) = text.split_at(text.find("\"usage\"").unwrap());
            s += &format!("data: {a}{eol}data: {b}{eol}{eol}");
        }
        s += &format!("data: [DONE]{eol}{eol}");
        s.into_bytes()
    }

    fn parse_sse(parts: &[&[u8]]) -> ParsedUsage {
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        for part in parts {
            p.feed(part);
        }
        p.finish()
    }

    fn word_tokens() -> u64 {
        WORDS.iter().map(|w| tokens::count_text(w)).sum()
    }

    #[test]
    fn sse_stream_yields_usage_and_text_tokens() {
        let body = stream("\n", true);
        let got = parse_sse(&[&body]);
        assert_eq!(got.usage, Some(expected_usage()));
        assert_eq!(got.completion_text_tokens, word_tokens());
        assert!(got.completion_text_tokens > 0);
    }

    #[test]
    fn sse_split_at_every_byte_boundary() {
        for eol in ["\n", "\r\n", "\r"] {
            let body = stream(eol, true);
            let whole = parse_sse(&[&body]);
            assert_eq!(whole.usage, Some(expected_usage()), "eol {eol:?}");
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                assert_eq!(parse_sse(&[a, b]), whole, "eol {eol:?} split at {i}");
            }
            let mut p = UsageParser::sse(LlmApi::OpenaiChat);
            for byte in &body {
                p.feed(std::slice::from_ref(byte));
                p.feed(&[]);
            }
            assert_eq!(p.finish(), whole, "eol {eol:?} byte by byte");
        }
    }

    #[test]
    fn sse_multiline_data_and_ignored_fields() {
        let body = b"event: message\nid: 7\nretry: 100\n: comment\n\
            data: {\"usage\":\ndata:  {\"prompt_tokens\": 5,\n\
            data: \"completion_tokens\": 2}}\n\n";
        let got = parse_sse(&[body]);
        assert_eq!(
            got.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn sse_keeps_last_non_null_usage_and_stops_at_done() {
        let body = b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n\
            data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n\
            data: {\"usage\":null}\n\n\
            data: [DONE]\n\n\
            data: {\"usage\":{\"prompt_tokens\":99,\"completion_tokens\":99}}\n\n";
        let got = parse_sse(&[body]);
        assert_eq!(
            got.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((2, 3))
        );
    }

    #[test]
    fn json_usage_fast_path_agrees_with_the_whole_parse() {
        let bodies: &[&str] = &[
            r#"{"data":[{"embedding":[0.1,0.2,0.3]}],"usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            r#"{"choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":5,"completion_tokens":6}}"#,
            r#"{"choices":[{"message":{"content":"Hi"}}],"usage":null}"#,
            r#"{"content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":4,"output_tokens":2}}"#,
            r#"{"usage":7}"#,
            r#"[1,2]"#,
            r#"{"usage":{"prompt_tokens":1}"#,
        ];
        for api in [
            LlmApi::OpenaiChat,
            LlmApi::OpenaiResponses,
            LlmApi::OpenaiEmbeddings,
            LlmApi::AnthropicMessages,
        ] {
            for body in bodies {
                let mut p = UsageParser::json(api, 1 << 20);
                p.feed(body.as_bytes());
                let whole = match serde_json::from_slice::<Value>(body.as_bytes()) {
                    Ok(v) => match api.response_usage(&v) {
                        Some(u) => ParsedUsage {
                            usage: Some(u),
                            ..ParsedUsage::default()
                        },
                        None => ParsedUsage {
                            completion_text_tokens: api.response_text_tokens(&v),
                            ..ParsedUsage::default()
                        },
                    },
                    Err(_) => ParsedUsage::default(),
                };
                assert_eq!(p.finish(), whole, "{api:?} {body}");
            }
        }
    }

    /// The typed fast path (with its fallback) against the `Value` path
    /// alone, on ordinary, odd and malformed events of every API.
    #[test]
    fn fast_event_path_agrees_with_the_value_path() {
        let events: &[&str] = &[
            r#"{"choices":[{"index":0,"delta":{"content":"Hel\u006co \"x\""},"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"think","content":null}}]}"#,
            r#"{"choices":[{"delta":{"content":7}}]}"#,
            r#"{"choices":[{"delta":"x"}],"usage":null}"#,
            r#"{"choices":"x","usage":7}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}},{}]}"#,
            r#"{"choices":[{"delta":{"content":"dup"}}],"choices":[]}"#,
            r#"{"id":"no choices"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","delta":{"partial_json":"{\"a\":"}}"#,
            r#"{"type":"content_block_delta","delta":{"text":1}}"#,
            r#"{"type":"content_block_delta"}"#,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"response.output_text.delta","delta":"Hello"}"#,
            r#"{"type":"response.reasoning_summary_text.delta","delta":"why"}"#,
            r#"{"type":"response.function_call_arguments.delta","delta":{"x":1}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":2,"output_tokens":3}}}"#,
            r#"{"type":"response.completed.delta","delta":"odd"}"#,
            r#"{"type":7}"#,
            r#"{not json"#,
            r#""str""#,
            r#"{"choices":[{"delta":{"content":"trailing"}}]} x"#,
        ];
        for api in [
            LlmApi::OpenaiChat,
            LlmApi::OpenaiResponses,
            LlmApi::OpenaiEmbeddings,
            LlmApi::AnthropicMessages,
        ] {
            let mut by_value = StreamTally::default();
            let mut fast = StreamTally::default();
            for data in events {
                if let Ok(v) = serde_json::from_slice::<Value>(data.as_bytes()) {
                    api.on_stream_event(&v, &mut by_value);
                }
                if !api.on_stream_data(data.as_bytes(), &mut fast) {
                    if let Ok(v) = serde_json::from_slice::<Value>(data.as_bytes()) {
                        api.on_stream_event(&v, &mut fast);
                    }
                }
                assert_eq!(fast, by_value, "{api:?} after {data}");
            }
            assert!(fast.text.has_uncounted(), "{api:?}: some text was seen");
        }
    }

    #[test]
    fn billing_finish_counts_text_only_without_final_usage() {
        let with_usage = stream("\n", true);
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        p.feed(&with_usage);
        assert!(p.output_upper_bound() >= word_tokens());
        assert!(!p.needs_text_count());
        let billed = p.finish_for_billing();
        assert_eq!(billed.usage, Some(expected_usage()));
        assert_eq!(billed.completion_text_tokens, 0, "not needed: not counted");

        let without = stream("\n", false);
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        p.feed(&without);
        assert!(p.needs_text_count());
        assert_eq!(p.finish_for_billing(), parse_sse(&[&without]));

        // JSON: parsed once for the question, the same answer after it.
        let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
        p.feed(&response_body(false));
        assert!(p.needs_text_count());
        assert_eq!(
            p.finish_for_billing().completion_text_tokens,
            tokens::count_text("Hello, world! ✓ ünïcödé")
        );
        let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
        p.feed(&response_body(true));
        assert!(!p.needs_text_count());
        assert!(p.finish_for_billing().usage.is_some());
    }

    #[test]
    fn upper_bound_is_never_below_the_count_mid_stream() {
        let body = stream("\n", false);
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        for chunk in body.chunks(7) {
            p.feed(chunk);
            let bound = p.output_upper_bound();
            assert!(bound >= p.output_so_far());
        }
        assert_eq!(p.output_so_far(), word_tokens());
    }

    #[test]
    fn sse_without_usage_counts_streamed_text() {
        let got = parse_sse(&[&stream("\n", false)]);
        assert_eq!(got.usage, None);
        assert_eq!(got.completion_text_tokens, word_tokens());
        let reasoning =
            b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"Hello, world!\"}}]}\n\n";
        assert_eq!(parse_sse(&[reasoning]).completion_text_tokens, 4);
    }

    #[test]
    fn sse_skips_malformed_events() {
        let body = b"data: {not json\n\ndata: \"str\"\n\ndata: {\"choices\":\"x\",\"usage\":7}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\n\n";
        let got = parse_sse(&[body]);
        assert_eq!(
            got.usage.map(|u| u.prompt_tokens + u.completion_tokens),
            Some(10)
        );
    }

    #[test]
    fn sse_aborted_stream_reports_what_was_seen() {
        let body = stream("\n", true);
        let cut = body.len() / 2;
        let got = parse_sse(&[&body[..cut]]);
        assert_eq!(got.usage, None);
        assert!(got.completion_text_tokens > 0);
        // A final event lacking only its blank line is still read.
        let tail = b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
        assert_eq!(
            parse_sse(&[tail]).usage.map(|u| u.completion_tokens),
            Some(2)
        );
        // finish is idempotent and later feeds are ignored.
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        p.feed(tail);
        let first = p.finish();
        p.feed(b"\n\ndata: {\"usage\":{\"prompt_tokens\":9}}\n\n");
        assert_eq!(p.finish(), first);
    }

    #[test]
    fn sse_oversized_event_is_dropped_not_buffered() {
        let mut d = SseDecoder::with_limit(64);
        let mut events = Vec::new();
        let big = format!("data: {}\n", "x".repeat(100));
        // Fed in small pieces so the over-long line spans chunks.
        for piece in big.as_bytes().chunks(7) {
            d.feed(piece, |e| events.push(e.to_vec()));
            assert!(d.line.len() + d.data.len() <= 64);
        }
        d.feed(b"data: more\n\ndata: ok\n\n", |e| events.push(e.to_vec()));
        assert_eq!(events, vec![b"ok".to_vec()]);

        // Many short data lines adding up past the cap are dropped too.
        let mut events = Vec::new();
        let many = "data: 0123456789\n".repeat(10) + "\ndata: next\n\n";
        d.feed(many.as_bytes(), |e| events.push(e.to_vec()));
        assert_eq!(events, vec![b"next".to_vec()]);
    }

    #[test]
    fn sse_large_event_buffers_are_released() {
        let mut d = SseDecoder::default();
        let mut sizes = Vec::new();
        let big = format!("data: {}\n\n", "y".repeat(100_000));
        for piece in big.as_bytes().chunks(1000) {
            d.feed(piece, |e| sizes.push(e.len()));
        }
        assert_eq!(sizes, [100_000]);
        assert!(d.line.capacity() <= KEEP_BUFFER_CAPACITY);
        assert!(d.data.capacity() <= KEEP_BUFFER_CAPACITY);
    }

    #[test]
    fn last_event_end_marks_whole_events_in_the_chunk() {
        let mut p = UsageParser::sse(LlmApi::OpenaiChat);
        p.feed(b"data: a\n\ndata: b\n\ndata: par");
        assert_eq!(p.last_event_end(), Some(18));
        p.feed(b"tial");
        assert_eq!(p.last_event_end(), None);
        p.feed(b"\r\n\r\nda");
        assert_eq!(p.last_event_end(), Some(4));
    }

    #[test]
    fn sse_data_without_space_or_colon() {
        let mut d = SseDecoder::default();
        let mut events = Vec::new();
        d.feed(b"data:a\ndata\ndata:  b\n\ndata\n\n", |e| {
            events.push(e.to_vec())
        });
        assert_eq!(events, vec![b"a\n\n b".to_vec(), b"".to_vec()]);
    }

    fn response_body(with_usage: bool) -> Vec<u8> {
        let mut v = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello, world! ✓ ünïcödé"}}]
        });
        if with_usage {
            v["usage"] = usage_json();
        }
        v.to_string().into_bytes()
    }

    #[test]
    fn json_body_split_at_every_byte() {
        let body = response_body(true);
        for i in 0..=body.len() {
            let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
            let (a, b) = body.split_at(i);
            p.feed(a);
            p.feed(b);
            assert_eq!(
                p.finish(),
                ParsedUsage {
                    usage: Some(expected_usage()),
                    ..ParsedUsage::default()
                },
                "split at {i}"
            );
        }
    }

    #[test]
    fn json_without_usage_counts_message_text() {
        let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
        p.feed(&response_body(false));
        let got = p.finish();
        assert_eq!(got.usage, None);
        assert_eq!(
            got.completion_text_tokens,
            tokens::count_text("Hello, world! ✓ ünïcödé")
        );
    }

    #[test]
    fn json_over_limit_reads_usage_from_the_tail() {
        let body = response_body(true);
        let mut p = UsageParser::json(LlmApi::OpenaiChat, body.len() - 1);
        for c in body.chunks(10) {
            p.feed(c);
        }
        assert_eq!(
            p.finish(),
            ParsedUsage {
                usage: Some(expected_usage()),
                unread_bytes: body.len() as u64,
                ..ParsedUsage::default()
            }
        );
        // Megabytes of text before it, fed in odd pieces.
        let big = json!({"choices": [{"message": {"content": "x".repeat(3 << 20)}}],
                         "usage": {"prompt_tokens": 7, "completion_tokens": 2_200_000}});
        let big = big.to_string().into_bytes();
        for piece in [1000, 65_537, 1 << 20] {
            let mut p = UsageParser::json(LlmApi::OpenaiChat, 1 << 20);
            for c in big.chunks(piece) {
                p.feed(c);
            }
            let got = p.finish();
            assert_eq!(
                got.usage.map(|u| u.completion_tokens),
                Some(2_200_000),
                "{piece}"
            );
            assert_eq!(got.unread_bytes, big.len() as u64);
        }
        // Without usage: nothing reported, the size kept for the bill.
        let mut p = UsageParser::json(LlmApi::OpenaiChat, 10);
        p.feed(&response_body(false));
        let got = p.finish();
        assert_eq!(got.usage, None);
        assert!(got.unread_bytes > 0);
    }

    #[test]
    fn tail_usage_is_never_read_from_inside_a_string() {
        let fake =
            br#"{"choices":[{"message":{"content":"say \"usage\": {\"completion_tokens\": 1}"}}]}"#;
        assert_eq!(usage_in_tail(LlmApi::OpenaiChat, fake), None);
        let escaped_backslash = br#"{"a":"x\\","usage":{"prompt_tokens":1,"completion_tokens":9}}"#;
        assert_eq!(
            usage_in_tail(LlmApi::OpenaiChat, escaped_backslash).map(|u| u.completion_tokens),
            Some(9)
        );
        // The last one wins; a cut-off first half is skipped.
        let cut =
            br#"ge": {"prompt_tokens": 1}, "usage" : {"prompt_tokens":2,"completion_tokens":3}}"#;
        assert_eq!(
            usage_in_tail(LlmApi::OpenaiChat, cut).map(|u| u.prompt_tokens),
            Some(2)
        );
    }

    #[test]
    fn json_invalid_reports_nothing() {
        let body = response_body(true);
        let mut p = UsageParser::json(LlmApi::OpenaiChat, body.len());
        p.feed(&body);
        assert!(p.finish().usage.is_some());

        let mut p = UsageParser::json(LlmApi::OpenaiChat, 1024);
        p.feed(b"{\"usage\": {\"prompt_tokens\": 1");
        assert_eq!(p.finish(), ParsedUsage::default());
    }

    #[test]
    fn usage_from_json_handles_missing_details() {
        let u = crate::llm::api::openai_chat::usage_object(
            &json!({"prompt_tokens": 3, "completion_tokens": 4}),
        );
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                ..Usage::default()
            })
        );
        assert_eq!(
            crate::llm::api::openai_chat::usage_object(&Value::Null),
            None
        );
        assert_eq!(crate::llm::api::openai_chat::usage_object(&json!(5)), None);
    }

    #[test]
    fn content_type_selects_mode() {
        assert!(
            UsageParser::for_content_type(LlmApi::OpenaiChat, Some("text/event-stream"), 10)
                .is_sse()
        );
        assert!(UsageParser::for_content_type(
            LlmApi::OpenaiChat,
            Some("Text/Event-Stream; charset=utf-8"),
            10
        )
        .is_sse());
        assert!(
            !UsageParser::for_content_type(LlmApi::OpenaiChat, Some("application/json"), 10)
                .is_sse()
        );
        assert!(!UsageParser::for_content_type(LlmApi::OpenaiChat, None, 10).is_sse());
    }
}
