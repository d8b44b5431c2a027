//! Where API keys are kept: the ledger's database. SQLite (the ledger
//! file at `store.path`) for one instance, PostgreSQL (`ledger.kind:
//! postgres`) for a cluster. Tables and migrations are the ledger's
//! (ledger::schema, ledger::postgres); this module reads and writes them.
//!
//! Every change is one transaction: the idempotency window is checked,
//! the key read, the change applied (keys::change), the row and the
//! sealed answer written, the version stamped. A failure anywhere leaves
//! nothing behind (PostgreSQL down: 503, nothing half-done).

mod postgres;
mod row;
mod sqlite;

pub use self::postgres::{
    load_since as pg_load_since, max_version as pg_max_version, PgKeys, CHANNEL,
};
pub use self::sqlite::{load_since_all as sqlite_load_all, SqliteKeys};

pub use self::row::{Answer, Idempotent, KeyWrite, ListQuery, StoreError, Written};
use super::record::StoredKey;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum KeyStore {
    Sqlite(Arc<SqliteKeys>),
    Postgres(Arc<PgKeys>),
}

impl KeyStore {
    pub fn kind(&self) -> &'static str {
        match self {
            KeyStore::Sqlite(_) => "sqlite",
            KeyStore::Postgres(_) => "postgres",
        }
    }

    pub async fn load_since(&self, version: i64) -> Result<Vec<StoredKey>, StoreError> {
        match self {
            KeyStore::Sqlite(s) => {
                s.clone()
                    .blocking(move |c| sqlite::load_since(c, version))
                    .await
            }
            KeyStore::Postgres(p) => p.load_since(version).await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let id = id.to_string();
        match self {
            KeyStore::Sqlite(s) => s.clone().blocking(move |c| sqlite::get(c, &id)).await,
            KeyStore::Postgres(p) => p.get(&id).await,
        }
    }

    pub async fn list(&self, q: ListQuery) -> Result<Vec<StoredKey>, StoreError> {
        match self {
            KeyStore::Sqlite(s) => s.clone().blocking(move |c| sqlite::list(c, &q)).await,
            KeyStore::Postgres(p) => p.list(&q).await,
        }
    }

    pub async fn write(&self, w: KeyWrite) -> Result<Written, StoreError> {
        match self {
            KeyStore::Sqlite(s) => s.clone().blocking(move |c| sqlite::write(c, &w)).await,
            KeyStore::Postgres(p) => p.write(w).await,
        }
    }

    /// Last uses, coarse to the minute: never moves a time back, never
    /// bumps a version (not a change other instances must load).
    pub async fn touch(&self, used: Vec<(String, i64)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        match self {
            KeyStore::Sqlite(s) => s.clone().blocking(move |c| sqlite::touch(c, &used)).await,
            KeyStore::Postgres(p) => p.touch(&used).await,
        }
    }
}
