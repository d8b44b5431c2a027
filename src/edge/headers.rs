//! Header hygiene between client and upstream: what the upstream may trust
//! (identity and forwarding headers set only by us), what never crosses
//! (client credentials, hop-by-hop headers), and what every response carries.
//!
//! Names are compared *folded* (lower case, `_` read as `-`): CGI, WSGI,
//! Rack and PHP backends turn `X_Gateway_User` and `X-Gateway-User` into
//! the same variable, so a client header that folds to one the gateway
//! controls is dropped whatever its spelling.

use crate::ctx::RequestCtx;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};
use std::borrow::Cow;
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

/// Prefixes of names only the gateway sets (identity, forwarding).
const GATEWAY_PREFIXES: &[&str] = &["x-gateway-", "x-forwarded-"];

/// Client credentials never reach the upstream; the others are set by us,
/// or would let the client override what the backend believes about the
/// request (its address, URL or method).
const REPLACED: &[&str] = &[
    "x-api-key",
    "authorization",
    "x-request-id",
    "traceparent",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
];

/// Names Pingora and the gateway frame the request with: a client spelling
/// of them with `_` is dropped (a CGI backend would read it as the real one).
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "host"];

/// Headers that carry credentials or pick the provider account: never
/// forwarded to an LLM upstream (the pool's `set_headers` decide).
pub const LLM_ACCOUNT_HEADERS: &[&str] = &[
    "cookie",
    "proxy-authorization",
    "openai-organization",
    "openai-project",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// A header name as a CGI-style backend reads it: lower case, `_` as `-`.
pub fn fold_name(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
        Cow::Owned(
            name.bytes()
                .map(|b| match b {
                    b'_' => '-',
                    b => char::from(b.to_ascii_lowercase()),
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether a client header (by name) must not reach the upstream because
/// the gateway sets it, or it could spoof identity, address, URL or method.
pub fn is_gateway_controlled(name: &str) -> bool {
    let folded = fold_name(name);
    let folded = folded.as_ref();
    GATEWAY_PREFIXES.iter().any(|p| folded.starts_with(p))
        || REPLACED.contains(&folded)
        || (name.contains('_') && (FRAMING.contains(&folded) || HOP_BY_HOP.contains(&folded)))
}

/// Removes every header whose folded name is in `names`.
pub fn strip_folded(req: &mut RequestHeader, names: &[&str]) {
    let strip: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| names.contains(&fold_name(k.as_str()).as_ref()))
        .cloned()
        .collect();
    for name in strip {
        req.remove_header(&name);
    }
}

/// Rewrites the request sent upstream; `set_headers` are the pool's own.
/// The path is the normalised one the route matched (`ctx.upstream_path`),
/// never the client's raw target: without it the request fails.
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
    // The host the client asked for, before anything is rewritten.
    let forwarded_host = req
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| req.headers.get(http::header::HOST).cloned());
    // One pass over what the client sent (usually a handful of headers)
    // instead of a lookup per name we might strip.
    let strip: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|key| {
            let name = key.as_str();
            let hop = HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name);
            let kept_for_upgrade = keep_upgrade && (name == "upgrade" || name == "connection");
            (hop && !kept_for_upgrade) || is_gateway_controlled(name)
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
    req.insert_header("x-forwarded-proto", ctx.forwarded_proto)?;
    if let Some(host) = forwarded_host {
        req.insert_header("x-forwarded-host", host)?;
    }
    for (name, value) in set_headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    // Fail closed: the raw target may resolve to a path the route did not
    // authorise, so it never goes upstream in place of the normalised one.
    let Some(uri) = ctx.upstream_uri.clone() else {
        return Error::e_explain(
            ErrorType::HTTPStatus(400),
            "no normalised upstream path for this request",
        );
    };
    req.set_uri(uri);
    Ok(())
}

/// The response header a served upstream answer gets (the LLM and MCP
/// flows write their own answers): the upstream's without hop-by-hop
/// headers, decorated like every answer.
pub fn client_response_header(
    ctx: &RequestCtx,
    upstream: &ResponseHeader,
) -> Result<ResponseHeader> {
    let mut resp = upstream.clone();
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
    decorate_response(&mut resp, ctx)?;
    Ok(resp)
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
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_fold_as_cgi_backends_read_them() {
        assert_eq!(fold_name("X_Gateway_User"), "x-gateway-user");
        assert_eq!(fold_name("x-gateway-user"), "x-gateway-user");
        assert!(matches!(fold_name("accept"), Cow::Borrowed(_)));
        for spoof in [
            "x-gateway-user",
            "X_Gateway_User",
            "x-gateway_roles",
            "X_GATEWAY_ANYTHING",
            "x_forwarded_for",
            "X-Forwarded-Proto",
            "forwarded",
            "X_Real_IP",
            "x-original-url",
            "X_Rewrite_Url",
            "x_http_method_override",
            "x_api_key",
            "Authorization",
            "x_request_id",
            "content_length",
            "Transfer_Encoding",
            "proxy_connection",
        ] {
            assert!(is_gateway_controlled(spoof), "{spoof}");
        }
        for kept in [
            "content-length",
            "host",
            "x_custom",
            "x-gatewayuser",
            "accept",
            "cookie",
        ] {
            assert!(!is_gateway_controlled(kept), "{kept}");
        }
    }

    #[test]
    fn the_upstream_target_is_the_normalised_one_or_nothing() {
        let mut req =
            RequestHeader::build("GET", b"/a/../b;x", None).unwrap_or_else(|e| panic!("{e}"));
        let mut ctx = RequestCtx::new(std::sync::Arc::new(
            crate::config::load::empty_snapshot().unwrap_or_else(|e| panic!("{e}")),
        ));
        assert!(prepare_upstream_request(&mut req, &ctx, &[], None, false).is_err());
        ctx.upstream_uri = Some(http::Uri::from_static("/b?q=1"));
        req.insert_header("X_Gateway_User", "carol")
            .unwrap_or_else(|e| panic!("{e}"));
        req.insert_header("host", "gw.example")
            .unwrap_or_else(|e| panic!("{e}"));
        prepare_upstream_request(&mut req, &ctx, &[], None, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.uri, "/b?q=1");
        assert!(req.headers.get("x_gateway_user").is_none());
        assert_eq!(req.headers["x-forwarded-host"], "gw.example");
        assert_eq!(req.headers["x-forwarded-proto"], "http");
    }

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
