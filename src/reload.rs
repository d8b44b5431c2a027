//! Configuration reload: parse, validate and compile the file completely off
//! the request path, then swap the snapshot atomically. On failure the old
//! snapshot keeps serving. Triggered by SIGHUP or `POST /admin/reload`.

use crate::config::{self, ConfigError};
use crate::metrics;
use crate::state::GatewayState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Serialises reloads: two at once would race on the generation number.
static RELOAD_LOCK: once_cell::sync::Lazy<Mutex<()>> =
    once_cell::sync::Lazy::new(|| Mutex::new(()));

/// Reloads the config file; returns the new generation.
pub async fn reload(state: &Arc<GatewayState>) -> Result<u64, ConfigError> {
    let _guard = RELOAD_LOCK.lock().await;
    let worker_state = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let previous = worker_state.snapshot.load_full();
        let generation = previous.generation + 1;
        config::load_snapshot_with_previous(&worker_state.config_path, generation, Some(&previous))
    })
    .await;
    let compiled = match result {
        Ok(r) => r,
        Err(join) => Err(ConfigError {
            file: state.config_path.display().to_string(),
            problems: vec![config::ConfigProblem {
                line: 1,
                column: 1,
                path: String::new(),
                message: format!("reload task failed: {join}"),
            }],
        }),
    };
    match compiled {
        Ok(snapshot) => {
            // New pools get one health pass before they take traffic.
            let previous = state.snapshot.load_full();
            for (name, pool) in &snapshot.pools {
                let reused = previous
                    .pools
                    .get(name)
                    .is_some_and(|p| Arc::ptr_eq(p, pool));
                if !reused {
                    pool.run_health_check().await;
                }
            }
            let generation = snapshot.generation;
            state.snapshot.store(Arc::new(snapshot));
            metrics::inc(&metrics::CONFIG_RELOADS, &["ok"]);
            if let Some(g) = metrics::CONFIG_GENERATION.as_ref() {
                g.set(generation as i64);
            }
            tracing::info!(generation, "configuration reloaded");
            Ok(generation)
        }
        Err(e) => {
            metrics::inc(&metrics::CONFIG_RELOADS, &["error"]);
            tracing::error!("configuration reload failed, keeping the old one:\n{e}");
            Err(e)
        }
    }
}

/// Pingora 0.9 leaves SIGHUP at its default disposition (the process would
/// die); this service owns it and turns it into a reload.
pub struct SighupReloader {
    state: Arc<GatewayState>,
}

impl SighupReloader {
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self { state }
    }
}

#[async_trait]
impl BackgroundService for SighupReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install SIGHUP handler: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                received = hangup.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading configuration");
                    let _ = reload(&self.state).await;
                }
            }
        }
    }
}
