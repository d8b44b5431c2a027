//! LLM routes: OpenAI-compatible chat completions. Parsing, token counting,
//! usage and pricing are transport-free; `serve` performs the upstream
//! exchange itself (see its module doc for why).

pub mod account;
pub mod chat;
pub mod exchange;
pub mod model;
pub mod pricing;
pub mod serve;
pub mod tokens;
pub mod usage;
