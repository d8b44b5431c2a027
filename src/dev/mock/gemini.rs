//! Gemini `generateContent` and `streamGenerateContent?alt=sse` for the
//! mock backend (`/v1beta/models/MODEL:METHOD`): text or a function call,
//! `usageMetadata` with the cached-content count from the knobs (Gemini
//! reports it inside the prompt count), in every streamed chunk as Gemini
//! does (cumulative; the last one is the total).

use super::llm::{self, Knobs};
use super::reply::{write_reply, Reply};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// Whether `path` is a Gemini model call, and if so whether it streams.
pub(super) fn method_of(path: &str) -> Option<bool> {
    let rest = path.strip_prefix("/v1beta/models/")?;
    match rest.rsplit_once(':')?.1 {
        "generateContent" => Some(false),
        "streamGenerateContent" => Some(true),
        _ => None,
    }
}

/// The model named in the path.
fn model_of(path: &str) -> &str {
    path.strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.rsplit_once(':'))
        .map_or("unknown", |(model, _)| model)
}

/// One mock token per 4 bytes of text parts, plus one per content.
fn prompt_tokens(request: &Value) -> u64 {
    let parts_tokens = |content: &Value| -> u64 {
        content
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(llm::text_tokens)
            .sum()
    };
    let contents: u64 = request
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| parts_tokens(c) + 1)
        .sum();
    contents + request.get("systemInstruction").map_or(0, parts_tokens)
}

fn usage(prompt: u64, output: u64, knobs: &Knobs) -> Value {
    let prompt = prompt + knobs.cached;
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output,
        "cachedContentTokenCount": knobs.cached,
    })
}

pub(super) async fn generate(session: &mut ServerSession, call: llm::Call) -> pingora::Result<()> {
    let path = session.req_header().uri.path().to_string();
    let model = model_of(&path).to_string();
    let stream = method_of(&path) == Some(true);
    let prompt = prompt_tokens(&call.request);
    let cap = call
        .request
        .pointer("/generationConfig/maxOutputTokens")
        .and_then(Value::as_u64);
    let output = call.knobs.output(cap);
    let has_result = llm::any_nested_item(&call.request, "contents", "parts", |p| {
        p.get("functionResponse").is_some()
    });
    let tool = call.knobs.tool_to_call(has_result);
    let args: Value = serde_json::from_str(&llm::TOOL_ARGUMENTS.concat()).unwrap_or_default();
    let finish = if output < cap.unwrap_or(u64::MAX) || tool.is_some() {
        "STOP"
    } else {
        "MAX_TOKENS"
    };
    if !stream {
        let parts = match tool {
            Some(name) => json!([{"functionCall": {"name": name, "args": args}}]),
            None => json!([{"text": call.knobs.text(output)}]),
        };
        let mut answer = json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "modelVersion": model,
            "responseId": "gemini-mock",
            "backend": call.backend,
            "upstream_path": llm::request_target(session),
            "received": call.request,
        });
        if !call.knobs.no_usage {
            answer["usageMetadata"] = usage(prompt, output, &call.knobs);
        }
        return write_reply(session, Reply::json(200, &answer)).await;
    }
    llm::start_stream(session, &call.backend).await?;
    let chunk = |parts: Value, sent: u64, finish: Option<&str>| {
        let mut c = json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": model, "responseId": "gemini-mock",
        });
        if let Some(f) = finish {
            c["candidates"][0]["finishReason"] = json!(f);
        }
        if !call.knobs.no_usage {
            c["usageMetadata"] = usage(prompt, sent, &call.knobs);
        }
        c
    };
    if let Some(name) = tool {
        let c = chunk(
            json!([{"functionCall": {"name": name, "args": args}}]),
            output,
            Some(finish),
        );
        llm::send_data(session, &c.to_string()).await?;
        return llm::end_stream(session).await;
    }
    for i in 0..output {
        let last = i + 1 == output;
        let c = chunk(
            json!([{"text": call.knobs.piece(i)}]),
            i + 1,
            last.then_some(finish),
        );
        llm::send_data(session, &c.to_string()).await?;
        call.knobs.pace(i + 1).await;
    }
    if output == 0 {
        llm::send_data(session, &chunk(json!([]), 0, Some(finish)).to_string()).await?;
    }
    llm::end_stream(session).await
}
