//! An upstream's error answer in the client's error shape, so the client's
//! SDK raises the exception it would raise talking to its own provider.

use crate::config::schema::{LlmApi, UpstreamApi};
use crate::edge::respond::anthropic_error_type;
use serde_json::{json, Value};

/// Anthropic's "overloaded" status, unknown to OpenAI's SDKs.
const ANTHROPIC_OVERLOADED: u16 = 529;

/// The message and the upstream's own error type or code, whatever the
/// upstream's shape (`None` when the body is not one of them).
fn message_of(upstream: UpstreamApi, body: &[u8]) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let message = error.get("message").and_then(Value::as_str)?.to_string();
    let kind = match upstream {
        UpstreamApi::OpenaiChat => error.get("code").or_else(|| error.get("type")),
        UpstreamApi::AnthropicMessages => error.get("type"),
        UpstreamApi::Gemini => error.get("status"),
    }
    .and_then(Value::as_str)
    .map(str::to_string);
    Some((message, kind))
}

/// OpenAI's `error.type` for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The status and body the client sees for an upstream error.
pub(super) fn reshape(
    upstream: UpstreamApi,
    client: LlmApi,
    status: u16,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (message, upstream_code) = message_of(upstream, body).unwrap_or_else(|| {
        (
            format!("upstream {} answered HTTP {status}", upstream.name()),
            None,
        )
    });
    match client {
        LlmApi::AnthropicMessages => {
            // An OpenAI or Gemini 503 is Anthropic's `overloaded_error`.
            let kind = anthropic_error_type(status);
            let body = json!({"type": "error", "error": {"type": kind, "message": message}});
            (status, body.to_string().into_bytes())
        }
        _ => {
            let status = if status == ANTHROPIC_OVERLOADED {
                503
            } else {
                status
            };
            let body = json!({"error": {
                "message": message,
                "type": openai_error_type(status),
                "param": null,
                "code": upstream_code,
            }});
            (status, body.to_string().into_bytes())
        }
    }
}

/// The error event that ends a translated stream whose upstream failed
/// (stalled, reset, or ended without finishing), in the client's format.
pub(super) fn stream_failure(client: LlmApi, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match client {
        LlmApi::AnthropicMessages => {
            let data = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            super::wire::write_event(&mut out, Some("error"), &data);
        }
        _ => {
            let data = json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_error"}});
            super::wire::write_event(&mut out, None, &data);
        }
    }
    out
}
