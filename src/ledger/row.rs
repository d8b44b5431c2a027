//! One settled LLM call as the ledger stores it, and the ledger's errors.

use crate::limits::budget::Charge;
use serde::Serialize;
use std::path::PathBuf;

/// One settled LLM call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Completion time, unix milliseconds.
    pub time_ms: u64,
    pub request_id: String,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub route: String,
    /// Model the client asked for.
    pub model: String,
    /// Model actually called upstream (after aliasing/fallback).
    pub upstream_model: String,
    /// Every input token of the call, whatever its price class: includes
    /// cache reads (`cached_tokens`) and cache writes (`cache_write_tokens`),
    /// so for Anthropic it is input + cache_read + cache_creation.
    pub prompt_tokens: u64,
    /// Includes reasoning tokens.
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub micro_usd: u64,
    /// HTTP status returned to the client.
    pub status: u16,
    /// True when usage was estimated (upstream reported none, stream cut).
    pub estimated: bool,
    /// The route's API (`openai_chat`, `openai_responses`,
    /// `openai_embeddings`, `anthropic_messages`).
    pub api: String,
    /// Anthropic `cache_creation_input_tokens` (inside `prompt_tokens`).
    pub cache_write_tokens: u64,
    /// The output went past the request's output cap (a runaway stream cut
    /// off by the gateway, or an upstream that reported more than asked).
    pub over_cap: bool,
    /// The model the client asked for (`model` is the one that served,
    /// after fallbacks).
    pub requested_model: String,
    /// The API of the upstream that served when the call was translated
    /// (`openai_chat`, `anthropic_messages`, `gemini`); empty when it spoke
    /// the route's `api`.
    pub upstream_api: String,
    /// The call's conversation id (client-chosen text, see
    /// `llm::conversation`), when it named one.
    pub conversation: Option<String>,
}

impl LedgerRow {
    /// What this call counts against budgets: prompt + completion tokens.
    pub fn charge(&self) -> Charge {
        Charge {
            tokens: self.prompt_tokens.saturating_add(self.completion_tokens),
            micro_usd: self.micro_usd,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger database {path} is not in WAL mode (journal_mode={mode})")]
    NotWal { path: PathBuf, mode: String },
    #[error("ledger writer thread has stopped")]
    WriterGone,
    #[error("ledger lost {rows} rows since the last flush: {last_error}")]
    RowsLost { rows: u64, last_error: String },
    #[error("shared ledger: {0}")]
    Postgres(#[from] PgError),
    #[error("ledger forwarder: {0}")]
    Forwarder(String),
}

/// Writer counters, cumulative since `open` (export them as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    /// Transactions committed.
    pub commits: u64,
    pub committed_rows: u64,
    /// Rows dropped because their batch failed to commit.
    pub failed_rows: u64,
}

/// The shared ledger's (PostgreSQL's) errors.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres: {0} timed out")]
    Timeout(&'static str),
}
