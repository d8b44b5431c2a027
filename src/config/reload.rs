//! Configuration reload: parse, validate and compile the file completely off
//! the request path, then swap the snapshot atomically. On failure the old
//! snapshot keeps serving. Triggered by SIGHUP or `POST /admin/reload`.

use crate::config::load;
use crate::config::problems::ConfigError;
use crate::config::schema::Config;
use crate::observe::metrics;
use crate::state::GatewayState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Serialises reloads: two at once would race on the generation number.
static RELOAD_LOCK: once_cell::sync::Lazy<Mutex<()>> =
    once_cell::sync::Lazy::new(|| Mutex::new(()));

/// A successful reload: the new generation, and the changes that only a
/// restart or binary upgrade applies (listeners, threads, store, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    pub warnings: Vec<String>,
}

/// Fields read once at start-up. A reload keeps serving with the running
/// values (Pingora cannot add listeners to a running server); the operator
/// is told instead of the change silently doing nothing.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    // Compared as values (not through their serialisation, which
    // redacts secrets such as `store.redis_url`).
    fn differ<T: PartialEq>(a: &T, b: &T) -> bool {
        a != b
    }
    let (o, n) = (&old.server, &new.server);
    let checks = [
        ("server.listen", differ(&o.listen, &n.listen)),
        (
            "server.admin_listen",
            differ(&o.admin_listen, &n.admin_listen),
        ),
        ("server.tls", differ(&o.tls, &n.tls)),
        ("server.threads", differ(&o.threads, &n.threads)),
        (
            "server.grace_period_seconds",
            differ(&o.grace_period_seconds, &n.grace_period_seconds),
        ),
        (
            "server.upgrade_sock",
            differ(&o.upgrade_sock, &n.upgrade_sock),
        ),
        ("store", differ(&old.store, &new.store)),
        (
            "observability.access_log",
            differ(&old.observability.access_log, &new.observability.access_log),
        ),
        (
            "observability.audit_log",
            differ(&old.observability.audit_log, &new.observability.audit_log),
        ),
        (
            "observability.otlp",
            differ(&old.observability.otlp, &new.observability.otlp),
        ),
    ];
    checks
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(field, _)| {
            format!("{field} changed: it takes effect at the next restart or binary upgrade")
        })
        .collect()
}

/// Reloads the config file.
pub async fn reload(state: &Arc<GatewayState>) -> Result<Reloaded, ConfigError> {
    let _guard = RELOAD_LOCK.lock().await;
    let worker_state = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let previous = worker_state.snapshot.load_full();
        let generation = previous.generation + 1;
        let snapshot = load::load_snapshot_with_previous(
            &worker_state.config_path,
            generation,
            Some(&previous),
        )?;
        // An id names one key: the file may not take an API-made key's.
        let clashes = worker_state
            .keys
            .registry
            .clashing_ids(snapshot.auth.keys());
        if clashes.is_empty() {
            return Ok(snapshot);
        }
        Err(ConfigError {
            file: worker_state.config_path.display().to_string(),
            problems: clashes
                .into_iter()
                .map(|(i, id)| crate::config::problems::ConfigProblem {
                    line: 1,
                    column: 1,
                    path: format!("auth.api_keys[{i}].id"),
                    message: format!("'{id}' is the id of a key made through the admin API"),
                })
                .collect(),
        })
    })
    .await;
    let compiled = match result {
        Ok(r) => r,
        Err(join) => Err(ConfigError {
            file: state.config_path.display().to_string(),
            problems: vec![crate::config::problems::ConfigProblem {
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
            let warnings = restart_only_changes(&previous.config, &snapshot.config);
            for warning in &warnings {
                tracing::warn!("{warning}");
            }
            drop(previous);
            state.snapshot.store(Arc::new(snapshot));
            // The parse's transient memory (and the old snapshot, unless a
            // request still holds it) is free now: hand it back.
            let _ = tokio::task::spawn_blocking(crate::sys::heap::release_freed_memory).await;
            metrics::inc(&metrics::CONFIG_RELOADS, &["ok"]);
            if let Some(g) = metrics::CONFIG_GENERATION.as_ref() {
                g.set(generation as i64);
            }
            tracing::info!(generation, "configuration reloaded");
            Ok(Reloaded {
                generation,
                warnings,
            })
        }
        Err(e) => {
            metrics::inc(&metrics::CONFIG_RELOADS, &["error"]);
            tracing::error!("configuration reload failed, keeping the old one:\n{e}");
            Err(e)
        }
    }
}

/// What a signal service does when its signal arrives. Pingora 0.9 leaves
/// SIGHUP and SIGUSR1 at their default disposition (the process would die);
/// these services own them.
#[derive(Debug, Clone, Copy)]
pub enum OnSignal {
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGUSR1 (logrotate's `postrotate`): reopen the access and audit log files.
    ReopenLogs,
}

pub struct SignalService {
    state: Arc<GatewayState>,
    action: OnSignal,
}

impl SignalService {
    pub fn new(state: Arc<GatewayState>, action: OnSignal) -> Self {
        Self { state, action }
    }
}

#[async_trait]
impl BackgroundService for SignalService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (kind, name) = match self.action {
            OnSignal::Reload => (SignalKind::hangup(), "SIGHUP"),
            OnSignal::ReopenLogs => (SignalKind::user_defined1(), "SIGUSR1"),
        };
        let mut arrivals = match signal(kind) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install {name} handler: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                received = arrivals.recv() => {
                    if received.is_none() {
                        return;
                    }
                    match self.action {
                        OnSignal::Reload => {
                            tracing::info!("SIGHUP received: reloading configuration");
                            let _ = reload(&self.state).await;
                        }
                        OnSignal::ReopenLogs => {
                            tracing::info!("SIGUSR1 received: reopening log files");
                            self.state.logs.reopen();
                        }
                    }
                }
            }
        }
    }
}
