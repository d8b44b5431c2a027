//! The one place where the gateway's own answers are written: the OpenAI
//! error shape of DESIGN §4, with `X-Request-Id`, rate-limit headers and
//! whatever headers the refusal itself carries.

use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::headers::decorate_response;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

pub fn error_body(err: &GatewayError, request_id: &str) -> Bytes {
    let body = json!({
        "error": {
            "type": err.error_type(),
            "code": err.code(),
            "message": err.to_string(),
            "request_id": request_id,
        }
    });
    Bytes::from(body.to_string())
}

pub async fn send_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    err: GatewayError,
) -> Result<()> {
    let body = error_body(&err, &ctx.request_id);
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
    let body = error_body(err, &request_id);
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
