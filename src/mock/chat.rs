//! OpenAI-compatible `/v1/chat/completions` for the mock backend: JSON or
//! SSE answers, usage in streams only when `stream_options.include_usage`
//! is set (like the real API), and deterministic token counts so tests can
//! compare the gateway's ledger with what the "upstream" reported.

use super::{header_u64, write_reply, Reply};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::time::Duration;

/// Prompt tokens as the mock "tokenizer" counts them: one per 4 bytes of
/// message text, plus one per message. Deterministic, not realistic.
fn prompt_tokens(request: &Value) -> u64 {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    messages
        .iter()
        .map(|m| {
            let text_len = match m.get("content") {
                Some(Value::String(s)) => s.len(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(str::len)
                    .sum(),
                _ => 0,
            };
            (text_len as u64).div_ceil(4) + 1
        })
        .sum()
}

fn completion_tokens(session: &ServerSession, request: &Value) -> u64 {
    let cap = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    header_u64(session, "x-mock-completion-tokens")
        .unwrap_or(16)
        .min(cap)
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}
    })
}

pub(super) async fn complete(
    session: &mut ServerSession,
    backend: &str,
    body: &[u8],
) -> pingora::Result<()> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let err =
                json!({"error": {"message": "invalid JSON", "type": "invalid_request_error"}});
            return write_reply(session, Reply::json(400, &err)).await;
        }
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let prompt = prompt_tokens(&request);
    let completion = completion_tokens(session, &request);
    let no_usage = session.get_header("x-mock-no-usage").is_some();
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if !stream {
        let mut answer = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": model,
            "backend": backend,
            "received": request,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": words(completion)}}],
        });
        if !no_usage {
            answer["usage"] = usage(prompt, completion);
        }
        return write_reply(session, Reply::json(200, &answer)).await;
    }
    let include_usage = !no_usage
        && request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
    let delay = header_u64(session, "x-mock-chunk-delay-ms").map(Duration::from_millis);

    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header("content-type", "text/event-stream")?;
    header.insert_header("cache-control", "no-cache")?;
    header.insert_header("x-mock-backend", backend)?;
    session.write_response_header(Box::new(header)).await?;
    for i in 0..completion {
        let chunk = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": if i == 0 { "tok" } else { " tok" }}}]
        });
        send_event(session, &chunk.to_string()).await?;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
    }
    let last = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                      "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    send_event(session, &last.to_string()).await?;
    if include_usage {
        let usage_chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                                 "model": model, "choices": [], "usage": usage(prompt, completion)});
        send_event(session, &usage_chunk.to_string()).await?;
    }
    send_event(session, "[DONE]").await?;
    session.write_response_body(Bytes::new(), true).await?;
    Ok(())
}

async fn send_event(session: &mut ServerSession, data: &str) -> pingora::Result<()> {
    let event = format!("data: {data}\n\n");
    session.write_response_body(Bytes::from(event), false).await
}

fn words(count: u64) -> String {
    let mut text = String::with_capacity(count as usize * 4);
    for i in 0..count {
        if i > 0 {
            text.push(' ');
        }
        text.push_str("tok");
    }
    text
}
