//! Durable usage ledger: one SQLite row per settled LLM call.
//!
//! `record` only sends the row over a channel, so the request path never
//! waits on disk. A single writer thread owns the write connection and
//! group-commits: a batch is committed at most 10 ms after its first row
//! arrived, or as soon as it holds 512 rows. WAL + `synchronous=NORMAL` means
//! a committed batch survives a process crash (an OS crash may lose the last
//! few batches, which is acceptable for usage accounting).
//!
//! At start-up, `current_spend` sums the rows of the current minute, day and
//! month per user and tenant so the budget store can be re-seeded and a
//! restart never resets a budget.
//!
//! With `ledger.kind: postgres` every instance of a cluster shares one
//! ledger in PostgreSQL: rows are committed to a spool in the SQLite file
//! first and forwarded exactly once (spool.rs), so nothing waits for
//! PostgreSQL and nothing is lost while it is away.
//!
//! Files: `sqlite` (the handle: record, flush, reads), `writer` (the
//! group-committing thread), `scheduling` (its OS scheduling class),
//! `schema` (tables, migrations, row mapping), `spool` (forwarding to the
//! shared ledger), `postgres` (its connection, schema, writes and reads),
//! `report` (spend reports), `reader` (which ledger reports read),
//! `resync` (budget windows rebuilt from the ledger).

pub mod postgres;
pub mod reader;
pub mod report;
pub mod resync;
pub mod row;
mod scheduling;
pub mod schema;
mod spool;
pub mod sqlite;
mod writer;

pub use row::{LedgerError, LedgerRow, LedgerStats};
pub use sqlite::Ledger;

/// Waits for one of the ledger's threads to end. Called from `drop`, so a
/// panic in the thread is logged rather than raised again.
fn join_logged(thread: Option<std::thread::JoinHandle<()>>, name: &str) {
    if let Some(thread) = thread {
        if thread.join().is_err() {
            tracing::error!("ledger {name} thread panicked");
        }
    }
}
