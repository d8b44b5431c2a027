//! `kind: mcp` routes: the Model Context Protocol's Streamable HTTP
//! transport proxied with per-tool authorization (roles, owner rules on
//! tool arguments, per-tool rates), filtered tool lists, guards on tool
//! traffic, sessions pinned to their peer, and an audit line per tool call.
//!
//! From the bottom up: `rules` (who may call what), `jsonrpc` (messages),
//! `sse` (bounded event splitting), `sessions` (pins), `record` (a call's
//! facts), `relay` (the server's messages rewritten), `exchange` (the
//! upstream side), `audit`, and `serve` (the flow).

pub mod audit;
pub mod exchange;
pub mod jsonrpc;
pub mod record;
pub mod relay;
pub mod rules;
pub mod serve;
pub mod sessions;
pub mod sse;
