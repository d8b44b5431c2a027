//! Bench-only switches (`--features bench-tools`, `benches/ablation.sh`):
//! skip one per-request part of the gateway's work to measure what that
//! part costs under load, against the bare hop in the same run. The
//! [`Ablated`] proxy wraps the product's [`Gateway`]; a product build has
//! neither, and never reads the variable.

use crate::ctx::RequestCtx;
use crate::proxy::Gateway;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

/// A part of every request's work that the ablation bench can skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole-head deadline read (`head_deadline`): Pingora reads heads itself.
    HeadDeadline = 1,
    /// Identity, trace and forwarding headers on the upstream request.
    UpstreamHeaders = 2,
    /// Request id, rate-limit and Server-Timing headers on the answer.
    AnswerHeaders = 4,
    /// Metrics, access log and span of a request that is not an LLM call
    /// (an LLM call's settlement is never skipped).
    Logging = 8,
    /// Request id and traceparent generation.
    TraceIds = 16,
}

impl Part {
    const NAMED: [(&'static str, Part); 5] = [
        ("head", Part::HeadDeadline),
        ("upstream-headers", Part::UpstreamHeaders),
        ("answer-headers", Part::AnswerHeaders),
        ("logging", Part::Logging),
        ("ids", Part::TraceIds),
    ];
}

/// The parts named in `spec` (comma-separated names of `Part::NAMED`, or
/// `all`) as a bit set; unknown names are reported and ignored.
pub fn parse(spec: &str) -> u32 {
    spec.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .fold(0, |bits, name| {
            if name == "all" {
                return bits | Part::NAMED.iter().fold(0, |b, (_, p)| b | *p as u32);
            }
            match Part::NAMED.iter().find(|(n, _)| *n == name) {
                Some((_, part)) => bits | *part as u32,
                None => {
                    eprintln!("TOLLGATE_BENCH_SKIP: unknown part {name:?} ignored");
                    bits
                }
            }
        })
}

/// The parts `TOLLGATE_BENCH_SKIP` names; 0 when unset.
pub fn from_env() -> u32 {
    std::env::var("TOLLGATE_BENCH_SKIP")
        .map(|spec| parse(&spec))
        .unwrap_or(0)
}

/// The gateway with some parts of its per-request work skipped: every
/// phase delegates to [`Gateway`] except the skipped parts, so the product's
/// request path carries no bench switch.
pub struct Ablated {
    pub inner: Gateway,
    pub skip: u32,
}

impl Ablated {
    fn skips(&self, part: Part) -> bool {
        self.skip & part as u32 != 0
    }
}

#[async_trait]
impl ProxyHttp for Ablated {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.inner.new_ctx()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.skips(Part::TraceIds) {
            return Ok(());
        }
        self.inner.early_request_filter(session, ctx).await
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.inner.request_filter(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.inner
            .request_body_filter(session, body, end_of_stream, ctx)
            .await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.inner.upstream_peer(session, ctx).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.skips(Part::UpstreamHeaders) {
            return Ok(());
        }
        self.inner
            .upstream_request_filter(session, upstream_request, ctx)
            .await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.skips(Part::AnswerHeaders) {
            crate::observe::request::upstream_answered(ctx, upstream_response.status.as_u16());
            return Ok(());
        }
        self.inner
            .response_filter(session, upstream_response, ctx)
            .await
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.inner
            .connected_to_upstream(
                session,
                reused,
                peer,
                #[cfg(unix)]
                fd,
                #[cfg(windows)]
                sock,
                digest,
                ctx,
            )
            .await
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.inner.fail_to_connect(session, peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.inner
            .error_while_proxy(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.inner.fail_to_proxy(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // An LLM call's settlement is never skipped.
        if self.skips(Part::Logging) && ctx.llm.is_none() {
            return;
        }
        self.inner.logging(session, e, ctx).await
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        self.inner.suppress_error_log(session, ctx, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_select_their_parts() {
        for (names, parts) in [
            ("", 0),
            ("head", 1),
            ("upstream-headers, answer-headers", 6),
            ("logging,ids,nonsense", 24),
            ("all", 31),
        ] {
            assert_eq!(parse(names), parts, "{names:?}");
        }
    }
}
