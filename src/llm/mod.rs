//! Pure (transport-free) helpers for OpenAI-compatible chat-completions traffic.

pub mod chat;
pub mod pricing;
pub mod tokens;
pub mod usage;
