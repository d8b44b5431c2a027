//! LLM routes: OpenAI chat completions, OpenAI Responses, OpenAI
//! embeddings and Anthropic Messages, one flow for all (`serve`), what
//! differs per API behind `api`. Parsing, token counting, usage and pricing
//! are transport-free; `serve` performs the upstream exchange itself (see
//! its module doc for why).

pub mod account;
pub mod api;
pub mod bpe;
pub mod conversation;
pub mod exchange;
pub mod model;
pub mod output_guard;
pub mod pricing;
pub mod pump;
pub mod runaway;
pub mod serve;
pub mod tally;
pub mod tokens;
pub mod translate;
pub mod usage;
