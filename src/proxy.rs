//! The `ProxyHttp` implementation: a thin sequence of calls into
//! `admission` (framing, router, auth, authz, limits), `llm` and `upstream`. Decisions live in
//! those modules; this file only orders them along Pingora's phases.

use crate::admission::Admitted;
use crate::ctx::RequestCtx;
use crate::edge::client::client_ip;
use crate::edge::{headers, respond};
use crate::error::GatewayError;
use crate::observe::{request as observe, trace};
use crate::state::GatewayState;
use crate::{admission, llm, mcp, upstream};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

pub struct Gateway {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        // One ArcSwap load per request: the whole request sees one config.
        let mut ctx = RequestCtx::new(self.state.snapshot.load_full());
        // And one for the API-made keys (revoked ones gone within 1 s).
        ctx.made_keys = Some(self.state.keys.registry.table());
        ctx
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.request_id = trace::request_id(session.req_header());
        ctx.traceparent = trace::traceparent(session.req_header());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.forwarded_proto = if tls { "https" } else { "http" };
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let admitted = admission::admit(
            &self.state.store,
            client_ip(session),
            session.req_header(),
            || session.as_http1().map(|h1| h1.get_headers_raw_bytes()),
            ctx,
        )
        .await;
        match admitted {
            Ok(admitted) if ctx.route().is_some_and(|r| r.is_llm()) => {
                // LLM calls are served here in full (see llm::serve). Boxed:
                // its future is large and would otherwise size (allocation
                // and copy) every request's `request_filter` future.
                let client = client_ip(session);
                let serve = llm::serve::serve(&self.state, session, ctx, client, admitted);
                if let Err(refusal) = Box::pin(serve).await {
                    observe::refusal(&self.state, session, ctx, refusal.audit.as_ref());
                    respond::send_error(session, ctx, refusal.error).await?;
                }
                Ok(true)
            }
            // MCP requests are served here too: each JSON-RPC message is
            // read and judged before anything reaches the server.
            Ok(Admitted::Done) if ctx.route().is_some_and(|r| r.is_mcp()) => {
                let client = client_ip(session);
                let serve = mcp::serve::serve(&self.state, session, ctx, client);
                if let Err(refusal) = Box::pin(serve).await {
                    observe::refusal(&self.state, session, ctx, refusal.audit.as_ref());
                    respond::send_error(session, ctx, refusal.error).await?;
                }
                Ok(true)
            }
            // An HTTP route: admission asked everything (only LLM calls
            // leave a question pending).
            Ok(_) => {
                // Request body idle deadline (Pingora's default is 60 s);
                // a request without a body has nothing to time out.
                if !session.as_downstream_mut().is_body_empty() {
                    let idle = ctx.snapshot.server().body_timeout_ms;
                    session.set_read_timeout(Some(std::time::Duration::from_millis(idle)));
                }
                Ok(false)
            }
            Err(refusal) => {
                observe::refusal(&self.state, session, ctx, refusal.audit.as_ref());
                respond::send_error(session, ctx, refusal.error).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Content-Length was checked up front; this catches chunked bodies.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        let limit = ctx.snapshot.server().max_body_bytes;
        if ctx.body_bytes > limit {
            ctx.error = Some(GatewayError::BodyTooLarge { limit });
            return Error::e_explain(HTTPStatus(413), "request body too large");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        upstream::next_peer(ctx).or_else(|err| {
            let status = err.status();
            ctx.error = Some(err);
            Error::e_explain(HTTPStatus(status), "no upstream peer")
        })
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(pool) = ctx.pool() else {
            return Error::e_explain(InternalError, "route without pool");
        };
        let keep_upgrade = ctx.route().is_some_and(|r| r.websocket);
        headers::prepare_upstream_request(
            upstream_request,
            ctx,
            &pool.set_headers,
            client_ip(session),
            keep_upgrade,
        )
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        observe::upstream_answered(ctx, upstream_response.status.as_u16());
        headers::decorate_response(upstream_response, ctx)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Certificate pins of `tls: true` pools (upstream::tls).
        crate::upstream::tls::verify_pins(peer, digest)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        observe::upstream_failed(ctx);
        // Nothing was sent: a connect failure is always safe to retry, on
        // another peer (upstream_peer skips those already tried).
        if ctx.retries_left > 0 {
            ctx.retries_left -= 1;
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        // A client that stalls or goes away says nothing about the peer.
        if e.esource() == &ErrorSource::Upstream {
            observe::upstream_failed(ctx);
        }
        let mut e = e.more_context(format!("peer: {peer}"));
        // Only idempotent methods whose body is replayable are retried.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if replayable && ctx.retries_left > 0 && session.response_written().is_none() {
            ctx.retries_left -= 1;
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let err = ctx
            .error
            .take()
            .unwrap_or_else(|| observe::classify_error(e));
        let status = err.status();
        if session.response_written().is_none() {
            if let Err(write_err) = respond::send_error(session, ctx, err).await {
                tracing::debug!("could not write error response: {write_err}");
            }
        } else {
            ctx.error = Some(err);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        observe::request_done(&self.state, session, e, ctx).await;
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Refusals we produced on purpose are in the access log already.
        ctx.error.as_ref().is_some_and(|e| e.status() < 500)
    }
}
