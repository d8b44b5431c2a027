//! The spool (`ledger.kind: postgres`): every row is first committed to the
//! `spool` table of the SQLite file at `store.path` by the ledger's writer
//! thread (as in SQLite mode, off the request path), and the forwarder
//! thread moves the spool to PostgreSQL, oldest first, in batches.
//!
//! Exactly once: a batch is deleted from the spool only after PostgreSQL
//! committed it, so a row is never lost (a crash, `kill -9`, PostgreSQL
//! away: it stays in the SQLite file and is sent again). A batch sent again
//! after PostgreSQL committed it — the process died, or the answer was
//! lost, before the delete — is ignored there row by row, because rows are
//! unique by request id and the rollup counts only rows that were new.
//! Spool ids are AUTOINCREMENT, never reused, so deleting "up to the last
//! id sent" never removes a row written meanwhile, even when two processes
//! (an upgrade hand-over) forward the same file.

use super::postgres::{insert_batch, migrate, PgError, PgSettings};
use super::row::LedgerRow;
use super::schema::{read_row_at, BUSY_TIMEOUT, SELECT_SPOOLED};
use crate::observe::metrics;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Rows per forwarded batch: one statement each (see postgres.rs).
const BATCH_ROWS: usize = 2_000;
/// Pause between looks at an empty spool: a served call is in the shared
/// ledger within about this long after its SQLite commit.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Back-off after a failure, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest a forwarding statement (or connect + migrate) may take.
const PG_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, how long the forwarder keeps trying to empty the spool;
/// what is left waits in the file for the next start.
const FINAL_PASS: Duration = Duration::from_secs(2);

/// Where forwarded rows go: PostgreSQL, or a fake in tests.
pub(super) trait Sink {
    /// Commits `rows` durably; a row already committed before (same request
    /// id) must be skipped, not added twice.
    fn forward(&mut self, rows: &[LedgerRow]) -> Result<(), ForwardError>;
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ForwardError {
    #[error("spool: {0}")]
    Spool(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(#[from] PgError),
    #[error("forwarder runtime: {0}")]
    Runtime(String),
}

/// One pass: the oldest rows of the spool to `sink`, then out of the spool.
/// Returns how many rows were forwarded (0: the spool is empty).
pub(super) fn forward_once(
    conn: &Connection,
    sink: &mut dyn Sink,
    max_rows: usize,
) -> Result<usize, ForwardError> {
    let limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(SELECT_SPOOLED)?;
    let mut last_id = 0i64;
    let mut rows = Vec::new();
    for row in stmt.query_map([limit], |r| Ok((r.get::<_, i64>(0)?, read_row_at(r, 1)?)))? {
        let (id, row) = row?;
        last_id = id;
        rows.push(row);
    }
    if rows.is_empty() {
        return Ok(0);
    }
    sink.forward(&rows)?;
    conn.execute("DELETE FROM spool WHERE id <= ?1", [last_id])?;
    Ok(rows.len())
}

/// Rows waiting in the spool.
pub(super) fn spooled_rows(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM spool", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// PostgreSQL as a [`Sink`]: connects (and migrates) on first use and
/// again after any failure, on a runtime of the forwarder thread's own.
struct PgSink {
    settings: PgSettings,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl PgSink {
    async fn connected(settings: &PgSettings) -> Result<Client, PgError> {
        let mut client = settings.connect().await?;
        migrate(&mut client).await?;
        Ok(client)
    }
}

impl Sink for PgSink {
    fn forward(&mut self, rows: &[LedgerRow]) -> Result<(), ForwardError> {
        let client = self.client.take();
        let settings = &self.settings;
        let result = self.runtime.block_on(async {
            tokio::time::timeout(PG_TIMEOUT, async {
                let client = match client {
                    Some(c) if !c.is_closed() => c,
                    _ => Self::connected(settings).await?,
                };
                insert_batch(&client, rows).await?;
                Ok::<_, PgError>(client)
            })
            .await
            .unwrap_or(Err(PgError::Timeout("forwarding")))
        });
        // On failure the client is dropped: the next pass reconnects.
        self.client = Some(result?);
        Ok(())
    }
}

/// The forwarder thread's handle; dropping it stops the thread after a
/// last bounded pass.
#[derive(Debug)]
pub(super) struct Forwarder {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    pub(super) fn start(path: &Path, settings: PgSettings) -> Result<Forwarder, ForwardError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ForwardError::Runtime(e.to_string()))?;
        let sink = PgSink {
            settings,
            runtime,
            client: None,
        };
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tollgate-forward".into())
            .spawn(move || run(conn, sink, stopped))
            .map_err(|e| ForwardError::Runtime(e.to_string()))?;
        Ok(Forwarder {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.take();
        super::join_logged(self.thread.take(), "forwarder");
    }
}

fn run(conn: Connection, mut sink: impl Sink, stop: Receiver<()>) {
    let mut backoff = MIN_BACKOFF;
    let mut last_warning: Option<Instant> = None;
    let mut stopping_at: Option<Instant> = None;
    loop {
        let pass = forward_once(&conn, &mut sink, BATCH_ROWS);
        let left = spooled_rows(&conn).unwrap_or(0);
        set_gauge(left);
        let pause = match pass {
            Ok(n) if n > 0 => {
                backoff = MIN_BACKOFF;
                Duration::ZERO
            }
            Ok(_) => IDLE_POLL,
            Err(e) => {
                metrics::inc(&metrics::LEDGER_ERRORS, &["postgres"]);
                // One warning per back-off period at most, not per pass.
                if last_warning.is_none_or(|t| t.elapsed() >= MAX_BACKOFF) {
                    tracing::warn!(error = %e, spooled = left, "ledger forwarding failed; rows wait in the spool");
                    last_warning = Some(Instant::now());
                }
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        if let Some(deadline) = stopping_at {
            if left == 0 || Instant::now() >= deadline || pause > Duration::ZERO {
                if left > 0 {
                    tracing::info!(
                        spooled = left,
                        "ledger rows left in the spool for the next start"
                    );
                }
                return;
            }
            continue;
        }
        match stop.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => {}
            // The handle is gone: a last pass, bounded, then out.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                stopping_at = Some(Instant::now() + FINAL_PASS);
            }
        }
    }
}

fn set_gauge(rows: u64) {
    if let Some(g) = metrics::LEDGER_SPOOL_ROWS.as_ref() {
        g.set(i64::try_from(rows).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::schema::{insert_batch as spool_rows, open_writer, Table};
    use std::collections::BTreeMap;

    fn row(i: usize) -> LedgerRow {
        LedgerRow {
            time_ms: 1_715_774_430_000 + i as u64,
            request_id: format!("req-{i}"),
            user: Some("alice".into()),
            tenant: Some("acme".into()),
            route: "chat".into(),
            model: "m".into(),
            upstream_model: "m".into(),
            prompt_tokens: 10,
            completion_tokens: i as u64,
            api: "openai_chat".into(),
            ..LedgerRow::default()
        }
    }

    /// A PostgreSQL stand-in: unique by request id like the real table,
    /// and able to fail before committing or after (answer lost).
    #[derive(Default)]
    struct FakePg {
        rows: BTreeMap<String, LedgerRow>,
        order: Vec<String>,
        fail_before: usize,
        fail_after_commit: usize,
    }

    impl Sink for FakePg {
        fn forward(&mut self, rows: &[LedgerRow]) -> Result<(), ForwardError> {
            if self.fail_before > 0 {
                self.fail_before -= 1;
                return Err(ForwardError::Runtime("connection refused".into()));
            }
            for r in rows {
                if !self.rows.contains_key(&r.request_id) {
                    self.order.push(r.request_id.clone());
                    self.rows.insert(r.request_id.clone(), r.clone());
                }
            }
            if self.fail_after_commit > 0 {
                self.fail_after_commit -= 1;
                return Err(ForwardError::Runtime("connection reset".into()));
            }
            Ok(())
        }
    }

    /// A fresh ledger (its directory kept alive by the guard) whose spool
    /// holds rows `n`: the guard, the ledger's path, and a connection.
    fn spooled(n: std::ops::Range<usize>) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("usage.db");
        let conn = spool_with(&path, n);
        (dir, path, conn)
    }

    fn spool_with(path: &Path, n: std::ops::Range<usize>) -> Connection {
        let mut conn = open_writer(path).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<LedgerRow> = n.map(row).collect();
        spool_rows(&mut conn, Table::Spool, &rows).unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    #[test]
    fn every_row_arrives_once_in_order_across_failures() {
        let (_dir, path, conn) = spooled(0..25);
        let mut pg = FakePg {
            fail_before: 2,
            fail_after_commit: 2,
            ..FakePg::default()
        };
        let mut passes = 0;
        loop {
            passes += 1;
            assert!(passes < 50, "forwarding never finished");
            if let Ok(0) = forward_once(&conn, &mut pg, 10) {
                break;
            }
            if passes == 3 {
                // Rows written while forwarding goes on come after.
                let mut writer = open_writer(&path).unwrap_or_else(|e| panic!("{e}"));
                let more: Vec<LedgerRow> = (25..30).map(row).collect();
                spool_rows(&mut writer, Table::Spool, &more).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let expected: Vec<String> = (0..30).map(|i| format!("req-{i}")).collect();
        assert_eq!(pg.order, expected);
        assert_eq!(spooled_rows(&conn).ok(), Some(0));
        assert_eq!(pg.rows.get("req-7").map(|r| r.completion_tokens), Some(7));
    }

    #[test]
    fn a_crash_between_commit_and_delete_sends_the_batch_again_and_counts_it_once() {
        let (_dir, path, conn) = spooled(0..5);
        // PostgreSQL committed, the process died before the delete: the
        // same rows are in both places.
        let mut pg = FakePg {
            fail_after_commit: 1,
            ..FakePg::default()
        };
        assert!(forward_once(&conn, &mut pg, 100).is_err());
        assert_eq!(spooled_rows(&conn).ok(), Some(5));
        drop(conn);
        // Restart: a new connection to the same file.
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forward_once(&conn, &mut pg, 100).ok(), Some(5));
        assert_eq!(forward_once(&conn, &mut pg, 100).ok(), Some(0));
        assert_eq!(pg.rows.len(), 5);
        assert_eq!(pg.order.len(), 5);
    }

    #[test]
    fn spool_ids_are_never_reused_after_the_spool_empties() {
        let (_dir, path, conn) = spooled(0..3);
        let mut pg = FakePg::default();
        assert_eq!(forward_once(&conn, &mut pg, 100).ok(), Some(3));
        let _more = spool_with(&path, 3..4);
        let id: i64 = conn
            .query_row("SELECT id FROM spool", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        // A slow second forwarder deleting "up to id 3" cannot hit it.
        assert!(id > 3, "id {id} reused");
    }
}
