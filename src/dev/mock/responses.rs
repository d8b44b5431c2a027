//! OpenAI Responses (`/v1/responses`) for the mock backend: JSON, or SSE
//! ending in `response.completed` (which carries the usage).

use super::llm::{self, Knobs};
use super::reply::{write_reply, Reply};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// One mock token per 4 bytes of instructions and input text, plus one per
/// input item.
fn input_tokens(request: &Value) -> u64 {
    let instructions = llm::content_tokens(request.get("instructions"));
    let input = match request.get("input") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                llm::content_tokens(item.get("content"))
                    + llm::content_tokens(item.get("output"))
                    + 1
            })
            .sum(),
        other => llm::content_tokens(other),
    };
    instructions + input
}

fn usage(input: u64, output: u64, knobs: &Knobs) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": knobs.cached.min(input)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": knobs.reasoning.min(output)},
        "total_tokens": input + output,
    })
}

fn response(model: &str, status: &str, text: &str, usage: Option<Value>) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1_700_000_000,
        "status": status, "model": model, "error": null, "incomplete_details": null,
        "output": [{"type": "message", "id": "msg_mock", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "usage": usage,
    })
}

pub(super) async fn create(session: &mut ServerSession, call: llm::Call) -> pingora::Result<()> {
    let input = input_tokens(&call.request);
    let output = call.knobs.output(
        call.request
            .get("max_output_tokens")
            .and_then(Value::as_u64),
    );
    let usage = (!call.knobs.no_usage).then(|| usage(input, output, &call.knobs));
    if !call.stream {
        let mut answer = response(&call.model, "completed", &call.knobs.text(output), usage);
        answer["backend"] = json!(call.backend);
        answer["upstream_path"] = json!(llm::request_target(session));
        answer["received"] = call.request;
        return write_reply(session, Reply::json(200, &answer)).await;
    }
    llm::start_stream(session, &call.backend).await?;
    let mut seq = 0u64;
    let mut send = |name: &'static str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        (name, data)
    };
    let (n, d) = send(
        "response.created",
        json!({"response": response(&call.model, "in_progress", "", None)}),
    );
    llm::send_named(session, n, &d).await?;
    let (n, d) = send(
        "response.output_item.added",
        json!({"output_index": 0, "item": {"type": "message", "id": "msg_mock",
            "status": "in_progress", "role": "assistant", "content": []}}),
    );
    llm::send_named(session, n, &d).await?;
    let (n, d) = send(
        "response.content_part.added",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
    );
    llm::send_named(session, n, &d).await?;
    for i in 0..output {
        let (n, d) = send(
            "response.output_text.delta",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "delta": call.knobs.piece(i)}),
        );
        llm::send_named(session, n, &d).await?;
        call.knobs.pace(i + 1).await;
    }
    let text = call.knobs.text(output);
    let (n, d) = send(
        "response.output_text.done",
        json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0, "text": text}),
    );
    llm::send_named(session, n, &d).await?;
    let (n, d) = send(
        "response.completed",
        json!({"response": response(&call.model, "completed", &text, usage)}),
    );
    llm::send_named(session, n, &d).await?;
    llm::end_stream(session).await
}
