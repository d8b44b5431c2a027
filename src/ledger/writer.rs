//! The writer thread: owns the write connection and group-commits rows.

use super::row::{LedgerError, LedgerRow};
use super::scheduling::PriorityGuard;
use super::schema::{insert_batch, Table};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch is committed at most this long after its first row arrived.
/// Short on purpose: a commit is a burst of CPU on the writer thread that
/// grows with the batch (~6 µs per row with the rollup trigger). At 100 ms
/// a 4,000 calls/s gateway committed 400 rows in 2.4 ms bursts, and on a
/// 2-core box every call in flight during a burst waited for a core: the
/// p99 latency at one connection gained 1-2 ms (`perf sched latency`).
/// 10 ms bursts are ten times shorter for the same total work.
const MAX_BATCH_DELAY: Duration = Duration::from_millis(10);
/// A batch this large is committed immediately.
const MAX_BATCH_ROWS: usize = 512;
/// While a batch fills, the writer sleeps this long between drains of the
/// queue instead of waiting on it: a thread blocked on the channel is woken
/// by every row (a futex wake per LLM call, ~8% of the proxy's CPU under
/// load, measured with perf), a sleeping one by none.
const DRAIN_INTERVAL: Duration = MAX_BATCH_DELAY;
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) committed_rows: AtomicU64,
    pub(super) failed_rows: AtomicU64,
}

pub(super) enum Msg {
    Row(Box<LedgerRow>),
    /// Acknowledged once every earlier row is committed (or lost).
    Flush(Sender<Result<(), LedgerError>>),
}

/// The writer thread's state.
pub(super) struct Writer {
    conn: Connection,
    table: Table,
    counters: Arc<Counters>,
    /// Rows lost since the last flush, and why; reported to the next flush.
    lost: u64,
    last_error: String,
}

impl Writer {
    pub(super) fn new(conn: Connection, table: Table, counters: Arc<Counters>) -> Self {
        Writer {
            conn,
            table,
            counters,
            lost: 0,
            last_error: String::new(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut priority = PriorityGuard::start();
        let mut batch: Vec<LedgerRow> = Vec::with_capacity(MAX_BATCH_ROWS);
        // Blocks while idle; ends once every handle is dropped and drained.
        while let Ok(first) = rx.recv() {
            let deadline = Instant::now() + MAX_BATCH_DELAY;
            let mut next = Some(first);
            let mut flush_ack = None;
            let mut closed = false;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Row(row) => batch.push(*row),
                    Msg::Flush(ack) => {
                        flush_ack = Some(ack);
                        break;
                    }
                }
                if batch.len() >= MAX_BATCH_ROWS {
                    break;
                }
                match next_before(&rx, deadline) {
                    Ok(msg) => next = Some(msg),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => closed = true,
                }
            }
            if let Some(oldest) = batch.first() {
                let waited = crate::sys::clock::unix_millis()
                    .max(0)
                    .unsigned_abs()
                    .saturating_sub(oldest.time_ms);
                priority.observe(Duration::from_millis(waited).saturating_sub(MAX_BATCH_DELAY));
            }
            self.commit(&mut batch);
            if let Some(ack) = flush_ack {
                // The flusher may have given up waiting; nothing to do then.
                let _ = ack.send(self.take_flush_result());
            }
            if closed {
                break;
            }
        }
    }

    fn commit(&mut self, batch: &mut Vec<LedgerRow>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match insert_batch(&mut self.conn, self.table, batch) {
            Ok(()) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters.committed_rows.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                // No retry queue: a failing disk would grow it without bound.
                tracing::error!(rows = n, error = %e, "ledger batch commit failed; rows lost");
                self.counters.failed_rows.fetch_add(n, Ordering::Relaxed);
                crate::observe::metrics::inc(&crate::observe::metrics::LEDGER_ERRORS, &["sqlite"]);
                self.lost += n;
                self.last_error = e.to_string();
            }
        }
        batch.clear();
    }

    fn take_flush_result(&mut self) -> Result<(), LedgerError> {
        if self.lost == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.lost);
        Err(LedgerError::RowsLost {
            rows,
            last_error: std::mem::take(&mut self.last_error),
        })
    }
}

/// The next message queued before `deadline`, polling every
/// [`DRAIN_INTERVAL`] (see there why not `recv_timeout`). `Empty` once the
/// deadline has passed.
fn next_before<T>(rx: &Receiver<T>, deadline: Instant) -> Result<T, TryRecvError> {
    loop {
        match rx.try_recv() {
            Err(TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(TryRecvError::Empty);
                }
                std::thread::sleep(left.min(DRAIN_INTERVAL));
            }
            other => return other,
        }
    }
}
