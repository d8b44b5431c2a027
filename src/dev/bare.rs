//! A bare Pingora proxy hop: the baseline the load benchmark compares
//! tollgate against (`benches/load.sh`), built from the same Pingora
//! version and settings. Not part of the product; hidden from `--help`.
//!
//! With `--contract-headers` (`benches/ablation.sh`, target
//! `bare-headers`) it also writes the headers the contract puts on every
//! proxied request and answer (identity, request id, `traceparent`,
//! `X-Forwarded-For` upstream; request id, `RateLimit*` and
//! `Server-Timing` on the answer), through tollgate's own functions with
//! fixed values: what those headers cost on Pingora's header API with none
//! of tollgate's policy.

use crate::auth::Identity;
use crate::ctx::RequestCtx;
use crate::edge::headers;
use crate::limits::rate::RateDecision;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct BareProxy {
    upstream: SocketAddr,
    /// An admitted request's context, when the contract's headers are written.
    contract: Option<RequestCtx>,
}

/// The context of an admitted plain request, as tollgate fills it for the
/// bench key (benches/load_setup.py), with ids of the real lengths.
fn contract_ctx() -> Result<RequestCtx, crate::config::problems::ConfigError> {
    // The bare hop reads nothing from the config its context carries.
    let snapshot = crate::config::load::empty_snapshot()?;
    let mut ctx = RequestCtx::new(Arc::new(snapshot));
    ctx.identity = Some(Arc::new(Identity {
        user: "agent-bench".into(),
        tenant: "acme".into(),
        roles: vec!["agent".into()],
        key_id: "bench-1".into(),
        ..Identity::default()
    }));
    let template = RequestHeader::build("GET", b"/", None);
    if let Ok(req) = template {
        ctx.request_id = crate::observe::trace::request_id(&req);
        ctx.traceparent = crate::observe::trace::traceparent(&req);
    }
    ctx.upstream_uri = Some(http::Uri::from_static("/"));
    ctx.rate = Some(RateDecision {
        policy: "default".into(),
        limit: 100_000_000,
        remaining: 99_999_999,
        reset_secs: 42,
        allowed: true,
        enforced: true,
    });
    Ok(ctx)
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(1));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        let Some(ctx) = &self.contract else {
            return Ok(());
        };
        let client_ip = crate::edge::client::client_ip(session);
        // The hop forwards the client's target as it came; the placeholder
        // normalised target is set (a `Uri` clone, as tollgate pays) and
        // the client's put back.
        let target = upstream_request.uri.clone();
        headers::prepare_upstream_request(upstream_request, ctx, &[], client_ip, false)?;
        upstream_request.set_uri(target);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        match &self.contract {
            Some(ctx) => headers::decorate_response(upstream_response, ctx),
            None => Ok(()),
        }
    }
}

pub fn run(
    listen: &str,
    upstream: &str,
    threads: usize,
    contract_headers: bool,
) -> Result<(), crate::cli::CliError> {
    let upstream: SocketAddr = upstream
        .parse()
        .map_err(|_| crate::cli::CliError::Runtime(format!("bad upstream address {upstream}")))?;
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let contract = match contract_headers {
        true => Some(contract_ctx()?),
        false => None,
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, BareProxy { upstream, contract });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
