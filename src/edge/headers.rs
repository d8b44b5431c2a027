//! Header hygiene between client and upstream: what the upstream may trust
//! (identity headers set only by us), what never crosses (client
//! credentials, hop-by-hop headers), and what every response carries.

use crate::ctx::RequestCtx;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use std::net::IpAddr;

/// RFC 9110 §7.6.1 hop-by-hop headers (plus the de-facto ones), never
/// forwarded in either direction. Framing (`transfer-encoding`,
/// `content-length`) is left to Pingora.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

const IDENTITY_PREFIX: &str = "x-gateway-";

/// Client credentials never reach the upstream; the others are set by us.
const REPLACED: &[&str] = &[
    "x-api-key",
    "authorization",
    "x-forwarded-for",
    "x-request-id",
    "traceparent",
];

/// Rewrites the request sent upstream; `set_headers` are the pool's own.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    set_headers: &[(HeaderName, HeaderValue)],
    client_ip: Option<IpAddr>,
    keep_upgrade: bool,
) -> Result<()> {
    // Headers the client lists in Connection are hop-by-hop too.
    let listed: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    // One pass over what the client sent (usually a handful of headers)
    // instead of a lookup per name we might strip.
    let strip: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|key| {
            let name = key.as_str();
            let hop = HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name);
            let kept_for_upgrade = keep_upgrade && (name == "upgrade" || name == "connection");
            (hop && !kept_for_upgrade)
                || name.starts_with(IDENTITY_PREFIX)
                || REPLACED.contains(&name)
        })
        // A clone of a name is a reference count, not a copy.
        .cloned()
        .collect();
    for name in strip {
        req.remove_header(&name);
    }

    if let Some(identity) = &ctx.identity {
        req.insert_header("x-gateway-user", identity.user.as_str())?;
        req.insert_header("x-gateway-tenant", identity.tenant.as_str())?;
        req.insert_header("x-gateway-roles", identity.roles_header())?;
        req.insert_header("x-gateway-key-id", identity.key_id.as_str())?;
    }
    req.insert_header("x-request-id", ctx.request_id.as_str())?;
    req.insert_header("traceparent", ctx.traceparent.as_str())?;
    if let Some(ip) = client_ip {
        req.insert_header("x-forwarded-for", ip.to_string())?;
    }
    for (name, value) in set_headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    if let Some(path) = &ctx.upstream_path {
        if let Ok(uri) = path.parse::<http::Uri>() {
            req.set_uri(uri);
        }
    }
    Ok(())
}

/// Headers on every response to the client, proxied or not.
pub fn decorate_response(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(rate) = &ctx.rate {
        for (name, value) in rate.headers() {
            resp.insert_header(name, value)?;
        }
    }
    for (name, value) in &ctx.token_headers {
        resp.insert_header(*name, value.as_str())?;
    }
    resp.insert_header("server-timing", server_timing(ctx.gateway_time()))?;
    Ok(())
}

/// `gateway;dur=<ms with 3 decimals>`, from integer microseconds (float
/// formatting with a precision is slow, and this is on every answer).
fn server_timing(elapsed: std::time::Duration) -> String {
    let micros = elapsed.as_micros();
    let mut numbers = itoa::Buffer::new();
    let mut v = String::with_capacity(32);
    v.push_str("gateway;dur=");
    v.push_str(numbers.format(micros / 1000));
    v.push('.');
    let frac = numbers.format(micros % 1000);
    for _ in frac.len()..3 {
        v.push('0');
    }
    v.push_str(frac);
    v
}

#[cfg(test)]
mod tests {
    use super::server_timing;
    use std::time::Duration;

    #[test]
    fn server_timing_has_milliseconds_with_three_decimals() {
        assert_eq!(server_timing(Duration::from_micros(0)), "gateway;dur=0.000");
        assert_eq!(server_timing(Duration::from_micros(7)), "gateway;dur=0.007");
        assert_eq!(
            server_timing(Duration::from_micros(1234)),
            "gateway;dur=1.234"
        );
        assert_eq!(
            server_timing(Duration::from_micros(120_050)),
            "gateway;dur=120.050"
        );
    }
}
