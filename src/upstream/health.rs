//! Active health checks of one pool's peers (Pingora's checks, built from
//! the pool's `health_check` section). The loop that runs them is in
//! `health_loop`.

use crate::config::schema::{HealthCheckConfig, HealthCheckKind, UpstreamConfig};
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use std::time::Duration;

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
