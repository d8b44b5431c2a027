//! tollgate: an AI-aware API gateway for customer-support platforms, on
//! Cloudflare's Pingora. README.md describes the contract it implements.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod authz;
pub mod bare;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn_limit;
pub mod ctx;
pub mod demo;
pub mod error;
pub mod framing;
pub mod guards;
pub mod headers;
pub mod heap;
pub mod ledger;
pub mod limits;
pub mod llm;
pub mod logs;
pub mod metrics;
pub mod mock;
pub mod observe;
pub mod pidfile;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod resync;
pub mod router;
pub mod server;
pub mod state;
pub mod tls;
pub mod trace;
pub mod upstream;
