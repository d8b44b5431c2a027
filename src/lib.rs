//! tollgate: an AI-aware API gateway for customer-support platforms, on
//! Cloudflare's Pingora. README.md describes the contract it implements and
//! the layout below (lower layers never import higher ones; `make lint`
//! checks that the module graph has no circle).

#![deny(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod dev;
pub mod edge;
pub mod error;
pub mod guards;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod llm;
pub mod mcp;
pub mod observe;
pub mod proxy;
pub mod router;
pub mod server;
pub mod state;
pub mod sys;
pub mod upstream;
