//! Opens the upstream side of an MCP request: the session's pinned peer,
//! or one the pool balances to; the request header cleaned like any
//! proxied request (client credentials never leave, identity headers and
//! `set_headers` are added; `Mcp-Session-Id`, `MCP-Protocol-Version`,
//! `Accept` and `Last-Event-ID` pass), the body as the gateway decided it.

use crate::ctx::RequestCtx;
use crate::edge::headers;
use crate::error::GatewayError;
use crate::upstream::pool::Pool;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// An upstream that answered with a response header.
pub struct Opened {
    pub session: HttpSession,
    pub peer: Box<HttpPeer>,
    pub addr: SocketAddr,
    pub response: ResponseHeader,
}

/// Where the request goes.
pub enum Route<'a> {
    /// The peer holding the request's session: no other may serve it.
    Pinned(SocketAddr),
    /// Any healthy peer, balanced on `key`.
    Balanced { key: &'a [u8] },
}

/// The request as the upstream sees it.
pub struct Outgoing<'a> {
    pub client: &'a RequestHeader,
    pub client_ip: Option<IpAddr>,
    pub body: Option<Bytes>,
    /// Longest wait for a read (a GET stream waits up to its lifetime).
    pub read_timeout: Option<Duration>,
}

fn upstream_request(
    out: &Outgoing<'_>,
    ctx: &RequestCtx,
    pool: &Pool,
) -> pingora::Result<RequestHeader> {
    let mut req = out.client.clone();
    headers::strip_folded(&mut req, &["cookie", "proxy-authorization"]);
    headers::prepare_upstream_request(&mut req, ctx, &pool.set_headers, out.client_ip, false)?;
    req.set_version(http::Version::HTTP_11);
    for name in ["transfer-encoding", "expect", "content-length"] {
        req.remove_header(name);
    }
    // The gateway reads every message: no compressed answers.
    req.insert_header("accept-encoding", "identity")?;
    if let Some(body) = &out.body {
        req.insert_header("content-length", body.len().to_string())?;
    }
    Ok(req)
}

enum Failure {
    /// Nothing reached the peer: another one may be tried.
    Connect(pingora::BError),
    /// The request was (partly) sent: not repeated.
    Exchange(pingora::BError),
}

async fn attempt(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    out: &Outgoing<'_>,
) -> Result<HttpSession, Failure> {
    let (mut session, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(Failure::Connect)?;
    session.set_read_timeout(out.read_timeout.or(peer.options.read_timeout));
    session.set_write_timeout(peer.options.write_timeout);
    if let Err(e) = crate::upstream::tls::verify_pins(peer, session.digest()) {
        session.shutdown().await;
        return Err(Failure::Connect(e));
    }
    let sent = async {
        session.write_request_header(Box::new(req)).await?;
        if let Some(body) = &out.body {
            session.write_request_body(body.clone(), true).await?;
        }
        session.finish_request_body().await?;
        session.read_response_header().await
    }
    .await;
    match sent {
        Ok(()) => Ok(session),
        Err(e) => {
            session.shutdown().await;
            Err(Failure::Exchange(e))
        }
    }
}

fn failure_error(e: &pingora::Error) -> GatewayError {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GatewayError::UpstreamTimeout(e.etype().as_str().to_string())
        }
        _ => GatewayError::UpstreamError(e.etype().as_str().to_string()),
    }
}

/// Sends the request; a connect failure moves on to another peer (when
/// not pinned) up to the pool's `retries`.
pub async fn open(
    connector: &Connector,
    pool: &Pool,
    route: Route<'_>,
    out: &Outgoing<'_>,
    ctx: &mut RequestCtx,
) -> Result<Opened, GatewayError> {
    let unavailable = || GatewayError::UpstreamUnavailable {
        upstream: pool.name.clone(),
        retry_after: 1,
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last = unavailable();
    let attempts = match route {
        Route::Pinned(_) => 1,
        Route::Balanced { .. } => 1 + pool.retries(),
    };
    for _ in 0..attempts {
        let addr = match route {
            Route::Pinned(addr) => addr,
            Route::Balanced { key } => match pool.select(key, &tried) {
                Some(addr) => addr,
                None => break,
            },
        };
        tried.push(addr);
        let Some(peer) = pool.http_peer(addr) else {
            // A reload dropped the session's peer: the session is gone.
            return Err(GatewayError::SessionNotFound);
        };
        ctx.peer = Some(addr);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        ctx.attempt_started(addr, None);
        let req =
            upstream_request(out, ctx, pool).map_err(|e| GatewayError::Internal(e.to_string()))?;
        match attempt(connector, &peer, req, out).await {
            Ok(session) => {
                let Some(response) = session.response_header().cloned() else {
                    ctx.attempt_ended(None);
                    return Err(GatewayError::UpstreamError("no response header".into()));
                };
                let status = response.status.as_u16();
                ctx.attempt_ended(Some(status));
                pool.report_status(addr, status);
                return Ok(Opened {
                    session,
                    peer,
                    addr,
                    response,
                });
            }
            Err(Failure::Connect(e)) => {
                ctx.attempt_ended(None);
                pool.report_failure(addr);
                tracing::warn!(peer = %addr, "mcp upstream connect failed: {e}");
                last = failure_error(&e);
            }
            Err(Failure::Exchange(e)) => {
                ctx.attempt_ended(None);
                pool.report_failure(addr);
                tracing::warn!(peer = %addr, "mcp upstream exchange failed: {e}");
                return Err(failure_error(&e));
            }
        }
    }
    Err(last)
}
