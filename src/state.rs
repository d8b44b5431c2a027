//! Process-wide state shared by the proxy, the admin API and background
//! services. Only the config snapshot is swapped on reload; counters,
//! budgets and the ledger live beside it and survive reloads.

use crate::config::Snapshot;
use crate::limits::rate::RequestLimiter;
use crate::logs::LogSink;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub struct GatewayState {
    pub snapshot: SharedSnapshot,
    pub config_path: PathBuf,
    pub limiter: RequestLimiter,
    pub logs: LogSink,
    /// Set once shutdown or an upgrade hand-over starts: /readyz turns 503.
    pub draining: AtomicBool,
}

impl GatewayState {
    pub fn new(snapshot: Snapshot, config_path: PathBuf, logs: LogSink) -> Arc<Self> {
        Arc::new(Self {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            config_path,
            limiter: RequestLimiter::new(),
            logs,
            draining: AtomicBool::new(false),
        })
    }
}
