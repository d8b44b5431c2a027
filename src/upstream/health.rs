//! Active health checks. Pingora cannot add background services after
//! start, and pools are created by reloads, so ONE background service walks
//! the pools of the *current* snapshot and runs each pool's pass when due.

use crate::config::schema::{HealthCheckConfig, HealthCheckKind, UpstreamConfig};
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

/// How often the loop looks for due passes; bounds detection latency.
const TICK: Duration = Duration::from_millis(100);

pub fn build_check(
    hc: &HealthCheckConfig,
    upstream: &UpstreamConfig,
) -> Box<dyn HealthCheck + Send + Sync> {
    let timeout = Some(Duration::from_millis(hc.timeout_ms));
    match hc.kind {
        HealthCheckKind::Tcp => {
            let mut check = if upstream.tls {
                TcpHealthCheck::new_tls(&upstream.sni)
            } else {
                TcpHealthCheck::new()
            };
            check.consecutive_success = hc.healthy_after;
            check.consecutive_failure = hc.unhealthy_after;
            check.peer_template.options.connection_timeout = timeout;
            check
        }
        HealthCheckKind::Http => {
            let host = if upstream.sni.is_empty() {
                "localhost"
            } else {
                upstream.sni.as_str()
            };
            let mut check = HttpHealthCheck::new(host, upstream.tls);
            check.consecutive_success = hc.healthy_after;
            check.consecutive_failure = hc.unhealthy_after;
            check.peer_template.options.connection_timeout = timeout;
            check.peer_template.options.read_timeout = timeout;
            if let Ok(mut req) = RequestHeader::build("GET", hc.path.as_bytes(), None) {
                let _ = req.insert_header("host", host);
                let _ = req.insert_header("user-agent", "tollgate-health-check");
                check.req = req;
            }
            Box::new(check)
        }
    }
}

pub struct HealthCheckLoop {
    snapshot: SharedSnapshot,
}

impl HealthCheckLoop {
    pub fn new(snapshot: SharedSnapshot) -> Self {
        Self { snapshot }
    }
}

#[async_trait]
impl BackgroundService for HealthCheckLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = crate::sys::clock::mono_ms();
            let snapshot = self.snapshot.load_full();
            for pool in snapshot.pools.values() {
                if pool.claim_health_check(now) {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.run_health_check().await });
                }
            }
            crate::observe::metrics::observe_pools(&snapshot);
        }
    }
}
