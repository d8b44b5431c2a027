//! Upstream pools: load balancing, active health checks, circuit breakers.

pub mod breaker;
pub mod cork;
pub mod health;
pub mod health_loop;
pub mod pool;
pub mod tls;

use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use pingora::connectors::http::Connector;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use std::time::{Duration, Instant};

/// How long a connection the gateway opened itself (LLM and MCP calls)
/// may idle in the pool.
const IDLE: Duration = Duration::from_secs(60);

/// Returns a connection the gateway opened itself once its answer is
/// done: pooled after a clean end, closed otherwise (a provider stops
/// generating, and billing, when its connection goes).
pub async fn give_back(
    connector: &Connector,
    mut session: HttpSession,
    peer: &HttpPeer,
    clean: bool,
) {
    if clean {
        connector
            .release_http_session(session, peer, Some(IDLE))
            .await;
    } else {
        session.shutdown().await;
    }
}

/// The next peer for a proxied request: load balanced, healthy, breaker
/// closed, and not one this request already tried (retries go elsewhere).
pub fn next_peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>, GatewayError> {
    let pool = ctx
        .pool()
        .cloned()
        .ok_or_else(|| GatewayError::Internal("route without pool".into()))?;
    let key = ctx
        .identity
        .as_ref()
        .map(|i| i.user.as_bytes())
        .unwrap_or_default();
    let chosen = pool
        .select(key, &ctx.tried_peers)
        .and_then(|addr| Some((addr, pool.http_peer(addr)?)));
    let Some((addr, peer)) = chosen else {
        return Err(GatewayError::UpstreamUnavailable {
            upstream: pool.name.clone(),
            retry_after: 1,
        });
    };
    ctx.peer = Some(addr);
    ctx.tried_peers.push(addr);
    ctx.attempt_started(addr, None);
    ctx.upstream_started.get_or_insert_with(Instant::now);
    Ok(peer)
}
