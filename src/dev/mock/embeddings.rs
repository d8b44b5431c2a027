//! OpenAI embeddings (`/v1/embeddings`) for the mock backend: one small
//! deterministic vector per input, as floats or (`encoding_format:
//! base64`, the openai SDK's default) little-endian f32 in base64.

use super::llm;
use super::reply::{write_reply, Reply};
use base64::Engine;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

const DIMENSIONS: usize = 8;

/// The inputs as the mock sees them: strings, or token arrays.
fn inputs(request: &Value) -> Vec<u64> {
    match request.get("input") {
        Some(Value::String(s)) => vec![llm::text_tokens(s)],
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => vec![items.len() as u64],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => llm::text_tokens(s),
                Value::Array(tokens) => tokens.len() as u64,
                _ => 0,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn vector(index: usize) -> Vec<f32> {
    (0..DIMENSIONS)
        .map(|d| ((index * DIMENSIONS + d) as f32) / 100.0)
        .collect()
}

pub(super) async fn create(session: &mut ServerSession, call: llm::Call) -> pingora::Result<()> {
    let no_usage = call.knobs.no_usage;
    let base64 = call.request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let inputs = inputs(&call.request);
    let prompt: u64 = inputs.iter().sum();
    let data: Vec<Value> = (0..inputs.len())
        .map(|i| {
            let v = vector(i);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let mut answer = json!({
        "object": "list",
        "data": data,
        "model": call.request.get("model").cloned().unwrap_or(Value::Null),
        "backend": call.backend,
        "upstream_path": llm::request_target(session),
        "received": call.request,
    });
    if !no_usage {
        answer["usage"] = json!({"prompt_tokens": prompt, "total_tokens": prompt});
    }
    write_reply(session, Reply::json(200, &answer)).await
}
