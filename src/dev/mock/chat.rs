//! OpenAI-compatible `/v1/chat/completions` for the mock backend: JSON or
//! SSE answers, usage in streams only when `stream_options.include_usage`
//! is set (like the real API), and deterministic token counts so tests can
//! compare the gateway's ledger with what the "upstream" reported.

use super::llm::{self, Knobs};
use super::reply::{write_reply, Reply};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// One mock token per 4 bytes of message text, plus one per message.
fn prompt_tokens(request: &Value) -> u64 {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    messages
        .iter()
        .map(|m| llm::content_tokens(m.get("content")) + 1)
        .sum()
}

fn usage(prompt: u64, completion: u64, knobs: &Knobs) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": knobs.cached.min(prompt)},
        "completion_tokens_details": {"reasoning_tokens": knobs.reasoning.min(completion)}
    })
}

pub(super) async fn complete(session: &mut ServerSession, call: llm::Call) -> pingora::Result<()> {
    let prompt = prompt_tokens(&call.request);
    let cap = call
        .request
        .get("max_completion_tokens")
        .or_else(|| call.request.get("max_tokens"))
        .and_then(Value::as_u64);
    let completion = call.knobs.output(cap);
    let has_result = call
        .request
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|m| m.get("role") == Some(&json!("tool"))));
    let tool = call.knobs.tool_to_call(has_result);
    if !call.stream {
        let mut answer = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": call.model,
            "backend": call.backend,
            "upstream_path": llm::request_target(session),
            "received": call.request,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": call.knobs.text(completion)}}],
        });
        if let Some(name) = tool {
            answer["choices"][0] = json!({"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_mock_1", "type": "function",
                    "function": {"name": name, "arguments": llm::TOOL_ARGUMENTS.concat()}}]}});
        }
        if !call.knobs.no_usage {
            answer["usage"] = usage(prompt, completion, &call.knobs);
        }
        return write_reply(session, Reply::json(200, &answer)).await;
    }
    let include_usage = !call.knobs.no_usage
        && call
            .request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
    llm::start_stream(session, &call.backend).await?;
    if let Some(name) = tool {
        let start = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": call.model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{
                "index": 0, "id": "call_mock_1", "type": "function",
                "function": {"name": name, "arguments": ""}}]}}]});
        llm::send_data(session, &start.to_string()).await?;
        for piece in llm::TOOL_ARGUMENTS {
            let delta = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": call.model,
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}}]});
            llm::send_data(session, &delta.to_string()).await?;
        }
    }
    for i in (0..completion).filter(|_| tool.is_none()) {
        let chunk = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": call.model,
            "choices": [{"index": 0, "delta": {"content": call.knobs.piece(i)}}]
        });
        llm::send_data(session, &chunk.to_string()).await?;
        call.knobs.pace(i + 1).await;
    }
    let last = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": call.model,
                      "choices": [{"index": 0, "delta": {},
                                   "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }}]});
    llm::send_data(session, &last.to_string()).await?;
    if include_usage {
        let usage_chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                                 "model": call.model, "choices": [],
                                 "usage": usage(prompt, completion, &call.knobs)});
        llm::send_data(session, &usage_chunk.to_string()).await?;
    }
    llm::send_data(session, "[DONE]").await?;
    llm::end_stream(session).await
}
