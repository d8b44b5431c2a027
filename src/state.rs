//! Process-wide state shared by the proxy, the admin API and background
//! services. Only the config snapshot is swapped on reload; counters,
//! budgets and the ledger live beside it and survive reloads.

use crate::alerts::Alerts;
use crate::config::snapshot::Snapshot;
use crate::keys::Keys;
use crate::ledger::Ledger;
use crate::limits::store::Store;
use crate::observe::logs::LogSink;
use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub struct GatewayState {
    pub snapshot: SharedSnapshot,
    pub config_path: PathBuf,
    pub logs: LogSink,
    /// Set once shutdown or an upgrade hand-over starts: /readyz turns 503.
    pub draining: AtomicBool,
    /// Every counter a decision needs: request rates, failed
    /// authentications per IP, token and USD budgets (local or Redis).
    pub store: Arc<Store>,
    /// Durable record of every settled LLM call.
    pub ledger: Ledger,
    /// Upstream connections for LLM routes, which tollgate drives itself.
    pub connector: Connector,
    /// OTLP trace export, when `observability.otlp` is set.
    pub tracing: Option<crate::observe::otel::Tracing>,
    /// MCP sessions pinned to their peer (survive reloads).
    pub mcp_sessions: crate::mcp::sessions::SessionPins,
    /// Budget threshold alerts waiting for their sender.
    pub alerts: Arc<Alerts>,
    /// API-made keys: their registry (read by authentication) and store.
    pub keys: Arc<Keys>,
}

/// What a gateway process needs besides its configuration.
pub struct Services {
    pub logs: LogSink,
    pub store: Arc<Store>,
    pub ledger: Ledger,
    pub connector: Connector,
    pub tracing: Option<crate::observe::otel::Tracing>,
    pub keys: Keys,
}

impl GatewayState {
    pub fn new(snapshot: Snapshot, config_path: PathBuf, services: Services) -> Arc<Self> {
        Arc::new(Self {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            config_path,
            logs: services.logs,
            draining: AtomicBool::new(false),
            store: services.store,
            ledger: services.ledger,
            connector: services.connector,
            tracing: services.tracing,
            mcp_sessions: Default::default(),
            alerts: Arc::new(Alerts::default()),
            keys: Arc::new(services.keys),
        })
    }

    /// Last words before exit: every recorded call reaches the ledger.
    pub fn shutdown(&self) {
        if let Some(tracing) = &self.tracing {
            tracing.shutdown();
        }
        if let Err(e) = self.ledger.flush() {
            tracing::error!("ledger flush at shutdown failed: {e}");
        }
        if let Some(pid_file) = &self.snapshot.load().server().pid_file {
            crate::sys::pidfile::remove_if_ours(std::path::Path::new(pid_file));
        }
    }
}
