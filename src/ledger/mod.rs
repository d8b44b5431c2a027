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
//! Files: `sqlite` (the handle: record, flush, reads), `writer` (the
//! group-committing thread), `scheduling` (its OS scheduling class),
//! `schema` (tables, migrations, row mapping), `report` (spend reports),
//! `resync` (budget windows rebuilt from the ledger).

pub mod report;
pub mod resync;
pub mod row;
mod scheduling;
pub mod schema;
pub mod sqlite;
mod writer;

pub use row::{LedgerError, LedgerRow, LedgerStats};
pub use sqlite::Ledger;
