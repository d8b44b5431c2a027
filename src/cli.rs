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
