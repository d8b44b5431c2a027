//! API keys made through the admin API (DESIGN §5 "Keys"): stored as
//! SHA-256 digests in the ledger database (SQLite on one box, PostgreSQL
//! for a cluster), held in memory by every instance, and changed on every
//! instance within a second.
//!
//! Files: `record` (a stored key and how the API shows it), `request`
//! (strict parsing of the API's bodies), `change` (what an operation does
//! to a key, pure), `idempotency` (retried creates and rotations answered
//! the same), `store` (the database: SQLite or PostgreSQL), `registry`
//! (the in-memory table authentication reads), `sync` (propagation:
//! LISTEN/NOTIFY plus a version check, and last-use batches), `service`
//! (the operations the admin API calls), `client` (`tollgate keys`, the
//! command line over the admin API).

pub mod change;
pub mod client;
pub mod idempotency;
pub mod record;
pub mod registry;
pub mod request;
pub mod service;
pub mod store;
pub mod sync;

pub use record::StoredKey;
pub use registry::KeyRegistry;
pub use service::Keys;
