//! What every mock LLM API shares: the knobs read from request headers, a
//! deterministic "tokenizer", SSE writing and the misbehaving modes used by
//! the runaway tests.

use super::reply::{header_u64, write_reply, Reply};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a stalled stream sleeps: longer than any test's read timeout.
const STALL: Duration = Duration::from_secs(600);

/// Per-request behaviour, from `x-mock-*` headers.
pub(super) struct Knobs {
    /// Output tokens to generate (default 16), capped by the request's
    /// output limit unless `ignore_cap`.
    completion: u64,
    /// `x-mock-ignore-cap: 1`: generate past the request's output limit
    /// (a runaway upstream; with a huge completion count, an endless one).
    ignore_cap: bool,
    pub chunk_delay: Option<Duration>,
    /// `x-mock-stall-after: N`: stop sending (without closing) after N
    /// output events.
    pub stall_after: Option<u64>,
    pub no_usage: bool,
    /// Reported cache-read input tokens (OpenAI cached_tokens, Anthropic
    /// cache_read_input_tokens).
    pub cached: u64,
    /// Reported Anthropic cache_creation_input_tokens.
    pub cache_write: u64,
    /// Reported reasoning tokens (inside the output).
    pub reasoning: u64,
    /// `x-mock-answer-b64`: the answer's text pieces (base64 of a JSON
    /// array of strings): one streamed delta each, joined in JSON.
    /// `x-mock-echo-header: NAME` answers with that request header's value
    /// (what the gateway sent upstream), split in three pieces.
    pub answer: Option<Vec<String>>,
    /// `x-mock-tool-call: NAME`: answer with a call of tool NAME (arguments
    /// [`TOOL_ARGUMENTS`]) unless the conversation already holds a tool
    /// result, which gets a text answer (a tool round trip).
    pub tool_call: Option<String>,
}

/// The arguments of the mock's tool calls, streamed in these two pieces.
pub(super) const TOOL_ARGUMENTS: [&str; 2] = ["{\"id\":", " 42}"];

impl Knobs {
    pub fn read(session: &ServerSession) -> Knobs {
        Knobs {
            completion: header_u64(session, "x-mock-completion-tokens").unwrap_or(16),
            ignore_cap: session.get_header("x-mock-ignore-cap").is_some(),
            chunk_delay: header_u64(session, "x-mock-chunk-delay-ms").map(Duration::from_millis),
            stall_after: header_u64(session, "x-mock-stall-after"),
            no_usage: session.get_header("x-mock-no-usage").is_some(),
            cached: header_u64(session, "x-mock-cached-tokens").unwrap_or(0),
            cache_write: header_u64(session, "x-mock-cache-write-tokens").unwrap_or(0),
            reasoning: header_u64(session, "x-mock-reasoning-tokens").unwrap_or(0),
            answer: answer(session),
            tool_call: session
                .get_header("x-mock-tool-call")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    /// Output events (and tokens reported) of an answer whose limit is
    /// `cap`: the chosen pieces, or `completion` tokens.
    pub fn output(&self, cap: Option<u64>) -> u64 {
        match &self.answer {
            Some(pieces) => pieces.len() as u64,
            None => self.completion(cap),
        }
    }

    /// The text of the i-th output event (never built for all at once:
    /// an endless stream has a billion).
    pub fn piece(&self, i: u64) -> &str {
        match &self.answer {
            Some(pieces) => usize::try_from(i)
                .ok()
                .and_then(|i| pieces.get(i))
                .map_or("", String::as_str),
            None => token(i),
        }
    }

    /// The whole text of `n` output events.
    pub fn text(&self, n: u64) -> String {
        (0..n).map(|i| self.piece(i)).collect()
    }

    /// The tool to call: asked for, and no tool result in the conversation
    /// yet (`has_result` says, per API).
    pub fn tool_to_call(&self, has_result: bool) -> Option<&str> {
        self.tool_call.as_deref().filter(|_| !has_result)
    }

    /// Output tokens for a request whose limit is `cap`.
    pub fn completion(&self, cap: Option<u64>) -> u64 {
        match cap {
            Some(cap) if !self.ignore_cap => self.completion.min(cap),
            _ => self.completion,
        }
    }

    /// Between output events: the configured delay, or forever once the
    /// stall point is reached.
    pub async fn pace(&self, sent: u64) {
        if self.stall_after.is_some_and(|n| sent >= n) {
            tokio::time::sleep(STALL).await;
        }
        if let Some(d) = self.chunk_delay {
            tokio::time::sleep(d).await;
        }
    }
}

fn answer(session: &ServerSession) -> Option<Vec<String>> {
    use base64::Engine;
    if let Some(name) = session.get_header("x-mock-echo-header") {
        let name = name.to_str().ok()?;
        let value = session.get_header(name)?.to_str().ok()?.to_string();
        let (a, b) = value.split_at(value.len() / 2);
        return Some(vec![
            format!("Sure, the header is {a}"),
            b.to_string(),
            " - anything else?".to_string(),
        ]);
    }
    let encoded = session.get_header("x-mock-answer-b64")?.as_bytes();
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Prompt tokens as the mock counts them: one per 4 bytes of text.
/// Deterministic, not realistic.
/// Whether an item of a list in an item of the list `outer` of `request`,
/// under `inner`, passes `pred` (Anthropic and Gemini requests carry tool
/// results two lists deep: messages' content, contents' parts).
pub(super) fn any_nested_item(
    request: &Value,
    outer: &str,
    inner: &str,
    pred: impl Fn(&Value) -> bool,
) -> bool {
    request
        .get(outer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get(inner).and_then(Value::as_array))
        .flatten()
        .any(pred)
}

pub(super) fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Sums the mock tokens of a string or of the `text` of each part.
pub(super) fn content_tokens(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => text_tokens(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match (p.get("text"), p.get("content")) {
                (Some(Value::String(t)), _) => text_tokens(t),
                (_, inner @ Some(_)) => content_tokens(inner),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The text of the i-th streamed token.
pub(super) fn token(i: u64) -> &'static str {
    if i == 0 {
        "tok"
    } else {
        " tok"
    }
}

/// What every API handler reads first.
pub(super) struct Call {
    /// The mock backend's name (echoed in answers).
    pub backend: String,
    pub request: Value,
    pub knobs: Knobs,
    /// The body's `model` ("unknown" when absent).
    pub model: String,
    pub stream: bool,
}

/// The call in `body`, or `None` once a 400 for a body that is not a JSON
/// object has been answered.
pub(super) async fn read_call(
    session: &mut ServerSession,
    backend: &str,
    body: &[u8],
) -> pingora::Result<Option<Call>> {
    let Some(request) = parse_request(body) else {
        invalid_json(session).await?;
        return Ok(None);
    };
    let knobs = Knobs::read(session);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    Ok(Some(Call {
        backend: backend.to_string(),
        request,
        knobs,
        model,
        stream,
    }))
}

pub(super) fn parse_request(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

pub(super) async fn invalid_json(session: &mut ServerSession) -> pingora::Result<()> {
    let err = json!({"error": {"message": "invalid JSON", "type": "invalid_request_error"}});
    write_reply(session, Reply::json(400, &err)).await
}

pub(super) async fn start_stream(
    session: &mut ServerSession,
    backend: &str,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header("content-type", "text/event-stream")?;
    header.insert_header("cache-control", "no-cache")?;
    header.insert_header("x-mock-backend", backend)?;
    // Chunked, as the providers answer; `x-mock-close-delimited: 1` ends
    // the answer by closing instead (no length, no chunks: RFC 9112 §6.3).
    if session.get_header("x-mock-close-delimited").is_none() {
        header.insert_header("transfer-encoding", "chunked")?;
    }
    session.write_response_header(Box::new(header)).await
}

/// `data: ...` (OpenAI chat).
pub(super) async fn send_data(session: &mut ServerSession, data: &str) -> pingora::Result<()> {
    let event = format!("data: {data}\n\n");
    session.write_response_body(Bytes::from(event), false).await
}

/// `event: NAME` + `data: ...` (Anthropic, Responses).
pub(super) async fn send_named(
    session: &mut ServerSession,
    name: &str,
    data: &Value,
) -> pingora::Result<()> {
    let event = format!("event: {name}\ndata: {data}\n\n");
    session.write_response_body(Bytes::from(event), false).await
}

pub(super) async fn end_stream(session: &mut ServerSession) -> pingora::Result<()> {
    session.write_response_body(Bytes::new(), true).await
}

/// Where the request was sent (path and query), echoed in JSON answers so
/// tests see upstream path rewrites (Azure deployments).
pub(super) fn request_target(session: &ServerSession) -> String {
    let uri = &session.req_header().uri;
    match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    }
}

/// Upstream misbehaviour beyond tokens, for the hostile-upstream tests:
/// - `x-mock-json-bytes: N` a 200 JSON answer of N bytes (sent in 64 KiB
///   pieces, never held whole); with `x-mock-json-usage: M` it ends with a
///   usage object reporting M completion tokens;
/// - `x-mock-endless-event: 1` an SSE answer whose one event never ends;
/// - `x-mock-headers: N` N extra response headers on an empty JSON answer.
///
/// Returns false when none applies.
pub(super) async fn misbehave(session: &mut ServerSession) -> pingora::Result<bool> {
    const PIECE: usize = 64 * 1024;
    if let Some(total) = header_u64(session, "x-mock-json-bytes") {
        let total = total.max(16) as usize;
        // `x-mock-json-usage: N`: the answer ends with a usage object
        // reporting N completion tokens (after the N bytes of padding).
        let end = match header_u64(session, "x-mock-json-usage") {
            Some(n) => format!(
                "\",\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{n},\"total_tokens\":{}}}}}",
                n + 5
            ),
            None => "\"}".to_string(),
        };
        let mut header = ResponseHeader::build(200, Some(3))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", (total - 2 + end.len()).to_string())?;
        session.write_response_header(Box::new(header)).await?;
        // {"pad":"xxxx...x"}: 10 bytes of frame around the padding.
        session
            .write_response_body(Bytes::from_static(b"{\"pad\":\""), false)
            .await?;
        let mut left = total - 10;
        let piece = Bytes::from(vec![b'x'; PIECE]);
        while left > 0 {
            let n = left.min(PIECE);
            session.write_response_body(piece.slice(..n), false).await?;
            left -= n;
        }
        session
            .write_response_body(Bytes::from(end.into_bytes()), true)
            .await?;
        return Ok(true);
    }
    if session.get_header("x-mock-endless-event").is_some() {
        start_stream(session, "endless-event").await?;
        session
            .write_response_body(Bytes::from_static(b"data: "), false)
            .await?;
        let piece = Bytes::from(vec![b'x'; PIECE]);
        // Until the gateway goes away: the write then fails.
        loop {
            session.write_response_body(piece.clone(), false).await?;
        }
    }
    if let Some(n) = header_u64(session, "x-mock-headers") {
        let mut header = ResponseHeader::build(200, Some(3))?;
        header.insert_header("content-type", "application/json")?;
        for i in 0..n {
            header.append_header(format!("x-mock-h-{i}"), "value")?;
        }
        header.insert_header("content-length", "2")?;
        session.write_response_header(Box::new(header)).await?;
        session
            .write_response_body(Bytes::from_static(b"{}"), true)
            .await?;
        return Ok(true);
    }
    Ok(false)
}
