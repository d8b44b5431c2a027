//! Command line (DESIGN §2).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "AI-aware API gateway for customer-support platforms"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (for the default `run` command).
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Zero-downtime upgrade (for the default `run` command).
    #[arg(short = 'u', long = "upgrade", global = true)]
    pub upgrade: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway.
    Run,
    /// Validate a config: exit 0, or print every problem and exit 1.
    Check,
    /// Start the mock backends and the gateway with conf/demo.yaml.
    Demo,
    /// Generate a new API key and the line to paste into the config.
    HashKey {
        /// Id for the key entry (appears in logs).
        #[arg(long, default_value = "new-key")]
        id: String,
    },
    /// Run the mock support/LLM backend alone.
    MockBackend {
        /// Address to listen on; repeat for several backends.
        #[arg(long = "listen", required = true)]
        listen: Vec<String>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Usage report from the ledger file (read-only; works while the
    /// gateway runs): JSON, or CSV with --csv.
    Usage {
        /// First UTC day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        from: String,
        /// Last UTC day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: String,
        /// Comma-separated keys: tenant, user, key, model, day, conversation.
        #[arg(long = "group-by", default_value = "")]
        group_by: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// CSV instead of JSON.
        #[arg(long)]
        csv: bool,
    },
    /// Manage API keys through the admin API (token from
    /// TOLLGATE_ADMIN_TOKEN); create and rotate print the new secret once.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// The admin listener, e.g. http://127.0.0.1:9090.
        #[arg(
            long = "admin-url",
            env = "TOLLGATE_ADMIN_URL",
            global = true,
            default_value = "http://127.0.0.1:9090"
        )]
        admin_url: String,
        /// The API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Baseline for benchmarks: a bare Pingora proxy hop (bench builds only).
    #[cfg(feature = "bench-tools")]
    BareProxy {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write the contract's request and answer headers (benches/ablation.sh).
        #[arg(long)]
        contract_headers: bool,
    },
}

/// `tollgate keys ...` (DESIGN §2, §5).
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a key: prints its secret once.
    Create {
        #[arg(long)]
        user: String,
        /// Required with the full admin token; a tenant-bound token's own by default.
        #[arg(long)]
        tenant: Option<String>,
        /// Repeat for several roles.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// RFC 3339, e.g. 2027-06-30T00:00:00Z.
        #[arg(long = "expires-at")]
        expires_at: Option<String>,
        /// Model allow-list; repeat for several models.
        #[arg(long = "model")]
        models: Vec<String>,
        #[arg(long = "requests-per-minute")]
        requests_per_minute: Option<u32>,
        #[arg(long = "tokens-per-day")]
        tokens_per_day: Option<u64>,
        #[arg(long = "usd-per-month")]
        usd_per_month: Option<f64>,
        #[arg(long)]
        note: Option<String>,
        /// Retrying with the same value returns the same key (24 h).
        #[arg(long = "idempotency-key")]
        idempotency_key: Option<String>,
    },
    /// List keys (every page), optionally one tenant's or user's.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// One key.
    Show { id: String },
    /// New secret, same id: prints it once; the old one works for the grace.
    Rotate {
        id: String,
        #[arg(long = "grace-seconds", default_value_t = 0)]
        grace_seconds: u64,
        #[arg(long = "idempotency-key")]
        idempotency_key: Option<String>,
    },
    /// Revoke a key (refused everywhere within a second).
    Revoke { id: String },
}

pub const DEFAULT_CONFIG: &str = "conf/tollgate.yaml";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::problems::ConfigError),
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// DESIGN §2: 1 bad config, 2 runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Config(_) => 1,
            CliError::Runtime(_) => 2,
        }
    }
}
