//! Where reports read: the SQLite file, or the shared ledger. The admin
//! report, the usage page (it calls the report) and `tollgate usage` all
//! read through this, so every instance of a cluster shows the same numbers.

use super::postgres::{self, PgSettings};
use super::report::{open_ledger, Report, ReportError, ReportQuery};
use std::path::PathBuf;
use std::time::Duration;

/// Longest a report on the shared ledger may take, connect included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub enum LedgerReader {
    Sqlite(PathBuf),
    Postgres(PgSettings),
}

impl LedgerReader {
    /// The ledger `ledger:` names (`tollgate usage`, without a gateway).
    pub fn configured(
        ledger: &crate::config::schema::LedgerConfig,
        store_path: &str,
    ) -> Result<LedgerReader, postgres::PgError> {
        Ok(match ledger.kind {
            crate::config::schema::LedgerKind::Sqlite => {
                LedgerReader::Sqlite(PathBuf::from(store_path))
            }
            crate::config::schema::LedgerKind::Postgres => {
                LedgerReader::Postgres(PgSettings::from_config(ledger)?)
            }
        })
    }

    /// Runs `query` without blocking the calling runtime: SQLite on the
    /// blocking pool, PostgreSQL on a connection of its own.
    pub async fn report(&self, query: ReportQuery) -> Result<Report, ReportError> {
        match self {
            LedgerReader::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || query.run(&open_ledger(&path)?))
                    .await
                    .map_err(|e| ReportError::Task(e.to_string()))?
            }
            LedgerReader::Postgres(settings) => {
                let run = async {
                    let client = settings.connect().await?;
                    query.run_shared(&client).await
                };
                tokio::time::timeout(REPORT_TIMEOUT, run)
                    .await
                    .unwrap_or(Err(ReportError::Shared(postgres::PgError::Timeout(
                        "report",
                    ))))
            }
        }
    }
}
