//! One upstream pool: its peers, load balancer, health state and circuit
//! breakers. Pools are immutable once built; a reload builds new ones only
//! for definitions that changed, so unchanged pools keep their state.

use super::breaker::{Breaker, BreakerPolicy};
use super::health;
use super::tls::UpstreamTls;
use crate::config::env::expand_env;
use crate::config::schema::{Selection, UpstreamConfig};
use crate::sys::clock::mono_ms;
use futures::FutureExt;
use http::{HeaderName, HeaderValue};
use pingora::lb::discovery::Static;
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bound on candidates examined per selection (ketama walks rings).
const MAX_SELECT_ITERATIONS: usize = 256;

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
}

struct PeerSlot {
    template: HttpPeer,
    breaker: Breaker,
}

pub struct Pool {
    pub name: String,
    /// The definition this pool was built from (reload keeps equal ones).
    pub definition: UpstreamConfig,
    balancer: Balancer,
    peers: HashMap<SocketAddr, PeerSlot>,
    /// Peer order as configured, for metrics and admin output.
    order: Vec<SocketAddr>,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    breaker: Option<BreakerPolicy>,
    next_health_check_ms: AtomicU64,
    health_check_running: AtomicBool,
}

/// Routes hold their pool (`Route::pool`); their `Debug` names it.
impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn build_balancer<S>(
    addrs: &[SocketAddr],
    upstream: &UpstreamConfig,
) -> Result<LoadBalancer<S>, String>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let set: BTreeSet<Backend> = addrs
        .iter()
        .map(|a| Backend::new(&a.to_string()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(Static::new(set)));
    if let Some(hc) = &upstream.health_check {
        lb.set_health_check(health::build_check(hc, upstream));
    }
    // Static discovery never awaits: resolve it synchronously so building a
    // pool needs no runtime (reload compiles off the request path).
    lb.update()
        .now_or_never()
        .ok_or("static discovery unexpectedly pending")?
        .map_err(|e| e.to_string())?;
    Ok(lb)
}

impl Pool {
    pub fn build(name: &str, upstream: &UpstreamConfig) -> Result<Pool, String> {
        let order: Vec<SocketAddr> = upstream
            .peers
            .iter()
            .map(|p| p.parse().map_err(|_| format!("bad peer address '{p}'")))
            .collect::<Result<_, _>>()?;
        let balancer = match upstream.selection {
            Selection::RoundRobin => Balancer::RoundRobin(build_balancer(&order, upstream)?),
            Selection::ConsistentHash => Balancer::Consistent(build_balancer(&order, upstream)?),
        };
        let tls = UpstreamTls::load(upstream)?;
        let peers = order
            .iter()
            .map(|addr| {
                let slot = PeerSlot {
                    template: peer_template(*addr, upstream, &tls),
                    breaker: Breaker::default(),
                };
                (*addr, slot)
            })
            .collect();
        let mut set_headers = Vec::new();
        for (k, v) in &upstream.set_headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value =
                HeaderValue::from_str(&expand_env(v.expose())?).map_err(|e| e.to_string())?;
            set_headers.push((name, value));
        }
        Ok(Pool {
            name: name.to_string(),
            definition: upstream.clone(),
            balancer,
            peers,
            order,
            set_headers,
            breaker: upstream.circuit_breaker.map(|cb| BreakerPolicy {
                failure_threshold: cb.failure_threshold,
                open_ms: cb.open_seconds * 1000,
            }),
            next_health_check_ms: AtomicU64::new(0),
            health_check_running: AtomicBool::new(false),
        })
    }

    /// A healthy peer whose breaker admits a request, skipping `exclude`
    /// (peers already tried for this request). `None` → 503.
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let now = mono_ms();
        let accept = |b: &Backend, healthy: bool| {
            let Some(addr) = b.addr.as_inet().copied() else {
                return false;
            };
            healthy
                && !exclude.contains(&addr)
                && self.peers.get(&addr).is_some_and(|p| p.breaker.allows(now))
        };
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        };
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    pub fn http_peer(&self, addr: SocketAddr) -> Option<Box<HttpPeer>> {
        self.peers.get(&addr).map(|p| Box::new(p.template.clone()))
    }

    /// The peer answered with `status`: the one rule both the proxied and
    /// the LLM paths feed the breaker by — a 5xx is a failure, any other
    /// answer closes the count.
    pub fn report_status(&self, addr: SocketAddr, status: u16) {
        if status >= 500 {
            self.report_failure(addr);
        } else if let Some(p) = self.peers.get(&addr) {
            p.breaker.record_success();
        }
    }

    /// Feeds a connect failure, timeout or 5xx into the peer's breaker.
    pub fn report_failure(&self, addr: SocketAddr) {
        if let (Some(policy), Some(p)) = (self.breaker, self.peers.get(&addr)) {
            if p.breaker.record_failure(policy, mono_ms()) {
                tracing::warn!(upstream = %self.name, peer = %addr, "circuit breaker opened");
            }
        }
    }

    pub fn retries(&self) -> u32 {
        self.definition.retries
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// (peer, healthy, breaker open) in configured order.
    pub fn peer_states(&self) -> Vec<(SocketAddr, bool, bool)> {
        self.order
            .iter()
            .map(|addr| {
                let healthy = Backend::new(&addr.to_string())
                    .map(|b| self.backends().ready(&b))
                    .unwrap_or(false);
                let open = self.peers.get(addr).is_some_and(|p| p.breaker.is_open());
                (*addr, healthy, open)
            })
            .collect()
    }

    /// Claims the next health-check pass if it is due; the caller runs it.
    pub fn claim_health_check(&self, now_ms: u64) -> bool {
        let Some(hc) = &self.definition.health_check else {
            return false;
        };
        if now_ms < self.next_health_check_ms.load(Ordering::Acquire) {
            return false;
        }
        if self.health_check_running.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.next_health_check_ms
            .store(now_ms + hc.interval_ms, Ordering::Release);
        true
    }

    /// One health-check pass over every peer (in parallel).
    pub async fn run_health_check(&self) {
        self.backends().run_health_check(true).await;
        self.health_check_running.store(false, Ordering::Release);
    }
}

fn peer_template(addr: SocketAddr, upstream: &UpstreamConfig, tls: &UpstreamTls) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, upstream.tls, upstream.sni.clone());
    tls.apply(&mut peer);
    let connect = Duration::from_millis(upstream.timeouts.connect_ms);
    let read = Duration::from_millis(upstream.timeouts.read_ms);
    // Pingora has no default timeouts: without these a dead peer hangs
    // requests forever.
    peer.options.connection_timeout = Some(connect);
    peer.options.total_connection_timeout = Some(connect * 2);
    peer.options.read_timeout = Some(read);
    peer.options.write_timeout = Some(read);
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    peer
}
