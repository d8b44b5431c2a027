//! Pingora cannot add background services after start, and pools are
//! created by reloads, so ONE background service walks the pools of the
//! *current* snapshot, runs each pool's health pass when due and publishes
//! every peer's health and breaker state.

use crate::config::snapshot::Snapshot;
use crate::observe::metrics::{CIRCUIT_OPEN, PEER_HEALTHY};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often the loop looks for due passes; bounds detection latency.
const TICK: Duration = Duration::from_millis(100);

pub struct HealthCheckLoop {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl HealthCheckLoop {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
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
            publish_pool_states(&snapshot);
        }
    }
}

/// Publishes health and breaker state of the snapshot's pools.
fn publish_pool_states(snapshot: &Snapshot) {
    let (Some(healthy), Some(open)) = (PEER_HEALTHY.as_ref(), CIRCUIT_OPEN.as_ref()) else {
        return;
    };
    for (name, pool) in &snapshot.pools {
        for (peer, is_healthy, is_open) in pool.peer_states() {
            let peer = peer.to_string();
            healthy
                .with_label_values(&[name, &peer])
                .set(i64::from(is_healthy));
            open.with_label_values(&[name, &peer])
                .set(i64::from(is_open));
        }
    }
}
