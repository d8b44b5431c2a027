//! The one place where the gateway's own answers are written: the OpenAI
//! error shape of DESIGN §4 (Anthropic's on `anthropic_messages` routes, so
//! its SDKs raise the right exception), with `X-Request-Id`, rate-limit
//! headers and whatever headers the refusal itself carries.

use crate::config::schema::LlmApi;
use crate::ctx::RequestCtx;
use crate::edge::headers::decorate_response;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

/// The error body in the shape of `api` (`None`: not an LLM route, the
/// OpenAI shape).
pub fn error_body(err: &GatewayError, request_id: &str, api: Option<LlmApi>) -> Bytes {
    let body = if api == Some(LlmApi::AnthropicMessages) {
        json!({
            "type": "error",
            "error": {
                "type": anthropic_error_type(err.status()),
                "message": err.to_string(),
                "code": err.code(),
                "request_id": request_id,
            }
        })
    } else {
        json!({
            "error": {
                "type": err.error_type(),
                "code": err.code(),
                "message": err.to_string(),
                "request_id": request_id,
            }
        })
    };
    Bytes::from(body.to_string())
}

/// Anthropic's `error.type` for a status, as its API documents them.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The API of the matched route, when it is an LLM route.
fn route_api(ctx: &RequestCtx) -> Option<LlmApi> {
    ctx.route().and_then(|r| r.llm_api())
}

pub async fn send_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    err: GatewayError,
) -> Result<()> {
    let body = error_body(&err, &ctx.request_id, route_api(ctx));
    let mut resp = ResponseHeader::build(err.status(), Some(8))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    for (name, value) in err.headers() {
        resp.insert_header(name, value)?;
    }
    decorate_response(&mut resp, ctx)?;
    if err.closes_connection() {
        resp.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    ctx.error = Some(err);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// The same answer as raw HTTP/1.1 bytes, for refusals made before Pingora
/// has a session (the request head deadline and size limits, read by the
/// listener): always `Connection: close`, since the connection is dropped.
pub fn raw_error_response(err: &GatewayError) -> Vec<u8> {
    let request_id = ulid::Ulid::new().to_string();
    let body = error_body(err, &request_id, None);
    let reason = http::StatusCode::from_u16(err.status())
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n",
        err.status(),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_shape_maps_statuses_to_its_error_types() {
        let cases = [
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (400, "invalid_request_error"),
            (405, "invalid_request_error"),
            (408, "invalid_request_error"),
            (413, "invalid_request_error"),
            (414, "invalid_request_error"),
            (431, "invalid_request_error"),
            (429, "rate_limit_error"),
            (503, "overloaded_error"),
            (502, "api_error"),
            (504, "api_error"),
            (500, "api_error"),
        ];
        for (status, kind) in cases {
            assert_eq!(anthropic_error_type(status), kind, "{status}");
        }
        let err = GatewayError::TokenBudgetExceeded {
            message: "daily token budget exhausted".into(),
            retry_after: 5,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&err, "req-1", Some(LlmApi::AnthropicMessages)))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "token_budget_exceeded");
        assert_eq!(v["error"]["request_id"], "req-1");
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&err, "req-1", Some(LlmApi::OpenaiResponses)))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["error"]["type"], "rate_limit");
        assert!(v.get("type").is_none());
    }
}
