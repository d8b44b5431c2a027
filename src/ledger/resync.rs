//! Budget resync during a binary upgrade hand-over.
//!
//! Both processes serve for a while during a hand-over: the old one accepts
//! for Pingora's 5 s close timeout after SIGQUIT and then finishes its
//! in-flight requests during the grace period; the new one rebuilt its
//! budgets from the ledger once, at start-up. Each process would therefore
//! miss the other's spend of that overlap. Both write the same SQLite ledger
//! (WAL, one writer connection each), so while the overlap lasts each process
//! periodically re-reads the ledger's sums and re-seeds its store.
//!
//! Why this is safe: `LocalStore::restore` only replaces *settled* usage of the
//! current windows and never touches open reservations. A pass flushes this
//! process's own rows first (`current_spend` does), so the ledger holds every
//! settle of both processes up to that moment. A settle that lands between
//! that flush and the restore would be overwritten, so each field is set to
//! the larger of the ledger's sum and what this process already counts:
//! both are lower bounds of the true spend, so the larger never over-counts,
//! and the next pass picks up anything still missing.

use crate::ledger::LedgerError;
use crate::limits::types::{SpendInWindows, StoreError};
use crate::limits::window::now_unix;
use crate::state::GatewayState;
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;

/// Time between passes while the overlap lasts.
const INTERVAL: Duration = Duration::from_secs(2);
/// Shortest resync window of a new process; a longer grace period extends it.
const MIN_WINDOW: Duration = Duration::from_secs(30);
/// Pingora's fixed wait between sending the sockets and shutting down
/// (`CLOSE_TIMEOUT`), plus its runtime shutdown timeout and some slack.
const HANDOVER_SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("cannot read the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("cannot re-seed the budget store: {0}")]
    Store(#[from] StoreError),
    #[error("resync task failed: {0}")]
    Task(String),
}

/// One pass: ledger sums merged (max) with this process's own counts, then
/// written into the store. Blocking (SQLite): run it off the async threads.
/// Redis mode has nothing to resync: both processes count in Redis.
pub fn resync_once(state: &GatewayState) -> Result<usize, ResyncError> {
    let Some(local) = state.store.as_local() else {
        return Ok(0);
    };
    let now = now_unix();
    let spend = state.ledger.current_spend(now)?;
    let mut merged = Vec::with_capacity(spend.len());
    for (key, from_ledger) in spend {
        let mine = local.budgets.usage(&key, now);
        let best = from_ledger.max(SpendInWindows {
            tokens_minute: mine.tokens_minute,
            tokens_day: mine.tokens_day,
            micro_usd_month: mine.micro_usd_month,
            micro_usd_day: mine.micro_usd_day,
        });
        merged.push((key, best));
    }
    local.budgets.restore(&merged, now)?;
    Ok(merged.len())
}

async fn resync_off_thread(state: &Arc<GatewayState>) {
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || resync_once(&worker))
        .await
        .unwrap_or_else(|e| Err(ResyncError::Task(e.to_string())));
    match result {
        Ok(scopes) => tracing::debug!(scopes, "budgets resynced from the ledger"),
        // Not fatal: the store keeps its own counts, a later pass retries.
        Err(e) => tracing::warn!("budget resync failed: {e}"),
    }
}

/// Resyncs budgets while this process overlaps with another one: from the
/// start when started with `-u`, and from SIGQUIT on in the old process.
pub struct BudgetResync {
    state: Arc<GatewayState>,
    upgrading: bool,
    /// Taken by `start`; `BackgroundService::start` only gets `&self`.
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl BudgetResync {
    pub fn new(
        state: Arc<GatewayState>,
        upgrading: bool,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> Self {
        Self {
            state,
            upgrading,
            phases: Mutex::new(Some(phases)),
        }
    }

    /// The new process: passes for the whole time the old one may still
    /// settle calls (its close timeout plus grace period), at least 30 s.
    async fn follow_old_process(&self, shutdown: &mut ShutdownWatch) {
        let grace = Duration::from_secs(self.state.snapshot.load().server().grace_period_seconds);
        let window = MIN_WINDOW.max(grace + HANDOVER_SLACK);
        let deadline = tokio::time::Instant::now() + window;
        let mut tick = tokio::time::interval(INTERVAL);
        // The first tick fires at once; start-up has just restored.
        tick.tick().await;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => resync_off_thread(&self.state).await,
            }
        }
        tracing::info!("upgrade hand-over over: budget resync stops");
    }

    /// The old process: from SIGQUIT until shutdown (about 5 s later) it
    /// still accepts requests, while the new process already serves too.
    async fn follow_new_process(&self, shutdown: &mut ShutdownWatch) {
        let taken = self
            .phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut phases) = taken else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => break,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => resync_off_thread(&self.state).await,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for BudgetResync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.upgrading {
            self.follow_old_process(&mut shutdown).await;
        }
        if *shutdown.borrow() {
            return;
        }
        self.follow_new_process(&mut shutdown).await;
    }
}
