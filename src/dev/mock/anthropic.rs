//! Anthropic Messages (`/v1/messages`) for the mock backend: JSON, or SSE
//! in Anthropic's event format (named events, `ping`, `message_start` with
//! the input usage, `message_delta` with the cumulative output).

use super::llm::{self, Knobs};
use super::reply::{write_reply, Reply};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// One mock token per 4 bytes of `system` and message text, plus one per
/// message (cache reads and writes come on top, from the knobs).
fn input_tokens(request: &Value) -> u64 {
    let messages: u64 = request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| llm::content_tokens(m.get("content")) + 1)
        .sum();
    messages + llm::content_tokens(request.get("system"))
}

fn usage(input: u64, output: u64, knobs: &Knobs) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": knobs.cache_write,
        "cache_read_input_tokens": knobs.cached,
    })
}

pub(super) async fn messages(session: &mut ServerSession, call: llm::Call) -> pingora::Result<()> {
    let input = input_tokens(&call.request);
    let output = call
        .knobs
        .output(call.request.get("max_tokens").and_then(Value::as_u64));
    let has_result = llm::any_nested_item(&call.request, "messages", "content", |b| {
        b.get("type") == Some(&json!("tool_result"))
    });
    let tool = call.knobs.tool_to_call(has_result);
    if !call.stream {
        let mut answer = json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": call.model,
            "content": [{"type": "text", "text": call.knobs.text(output)}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "backend": call.backend,
            "upstream_path": llm::request_target(session),
            "received": call.request,
        });
        if let Some(name) = tool {
            answer["content"] = json!([{"type": "tool_use", "id": "toolu_mock_1", "name": name,
                "input": serde_json::from_str::<Value>(&llm::TOOL_ARGUMENTS.concat()).unwrap_or_default()}]);
            answer["stop_reason"] = json!("tool_use");
        }
        if !call.knobs.no_usage {
            answer["usage"] = usage(input, output, &call.knobs);
        }
        return write_reply(session, Reply::json(200, &answer)).await;
    }
    llm::start_stream(session, &call.backend).await?;
    let mut message = json!({"id": "msg_mock", "type": "message", "role": "assistant",
        "model": call.model, "content": [], "stop_reason": null, "stop_sequence": null});
    if !call.knobs.no_usage {
        message["usage"] = usage(input, 1, &call.knobs);
    }
    llm::send_named(
        session,
        "message_start",
        &json!({"type": "message_start", "message": message}),
    )
    .await?;
    let block = match tool {
        Some(name) => json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}),
        None => json!({"type": "text", "text": ""}),
    };
    llm::send_named(
        session,
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    )
    .await?;
    llm::send_named(session, "ping", &json!({"type": "ping"})).await?;
    for piece in llm::TOOL_ARGUMENTS.iter().filter(|_| tool.is_some()) {
        let delta = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": piece}});
        llm::send_named(session, "content_block_delta", &delta).await?;
    }
    for i in (0..output).filter(|_| tool.is_none()) {
        let delta = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": call.knobs.piece(i)}});
        llm::send_named(session, "content_block_delta", &delta).await?;
        call.knobs.pace(i + 1).await;
    }
    llm::send_named(
        session,
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    )
    .await?;
    let mut delta = json!({"type": "message_delta",
        "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" },
                  "stop_sequence": null}});
    if !call.knobs.no_usage {
        delta["usage"] = json!({"output_tokens": output});
    }
    llm::send_named(session, "message_delta", &delta).await?;
    llm::send_named(session, "message_stop", &json!({"type": "message_stop"})).await?;
    llm::end_stream(session).await
}
