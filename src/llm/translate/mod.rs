//! Translation between LLM APIs (`models[].upstream_api` differing from the
//! route's `api`): the request into the upstream's API, the answer (JSON,
//! error or SSE, event by event) back into the client's.
//!
//! Three translators do the work, each pure and transport-free:
//! `chat_messages` (OpenAI chat ↔ Anthropic Messages, both ways),
//! `chat_gemini` (OpenAI chat → Gemini request, Gemini answer → OpenAI
//! chat). An Anthropic client served by Gemini goes through OpenAI chat in
//! the middle (what neither end has, OpenAI chat does not need to carry).
//!
//! A field with no equivalent in the target is refused (400
//! `invalid_request` naming it), never dropped: a silently dropped
//! `cache_control` or `n` shows up only on the bill.

mod chat_gemini;
mod chat_messages;
mod chat_request;
mod errors;
mod hop;
mod sse;
#[cfg(test)]
mod tests;
mod wire;

use crate::config::schema::{LlmApi, UpstreamApi};
use crate::llm::api::RequestError;
use hop::Hop;
use serde_json::{Map, Value};

pub use sse::StreamTranslator;

/// How a route's client API reaches an upstream speaking another API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub client: LlmApi,
    pub upstream: UpstreamApi,
    hops: &'static [Hop],
}

impl Translation {
    /// `None` when the upstream speaks the client's API (nothing to do);
    /// `Err` when the client API cannot be translated to it.
    pub fn between(client: LlmApi, upstream: UpstreamApi) -> Result<Option<Translation>, String> {
        let hops: &'static [Hop] = match (client, upstream) {
            (LlmApi::OpenaiChat, UpstreamApi::OpenaiChat)
            | (LlmApi::AnthropicMessages, UpstreamApi::AnthropicMessages) => return Ok(None),
            (LlmApi::OpenaiChat, UpstreamApi::AnthropicMessages) => &[Hop::ChatToMessages],
            (LlmApi::OpenaiChat, UpstreamApi::Gemini) => &[Hop::ChatToGemini],
            (LlmApi::AnthropicMessages, UpstreamApi::OpenaiChat) => &[Hop::MessagesToChat],
            (LlmApi::AnthropicMessages, UpstreamApi::Gemini) => {
                &[Hop::MessagesToChat, Hop::ChatToGemini]
            }
            (LlmApi::OpenaiResponses | LlmApi::OpenaiEmbeddings, _) => {
                return Err(format!(
                    "{} requests cannot be translated to {}",
                    client.name(),
                    upstream.name()
                ))
            }
        };
        Ok(Some(Translation {
            client,
            upstream,
            hops,
        }))
    }

    /// The request body in the upstream's API. `body` is the client's,
    /// already rewritten for the model (name, output cap).
    pub fn request(&self, body: Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
        let mut body = body;
        for hop in self.hops {
            body = match hop {
                Hop::ChatToMessages => chat_messages::chat_request_to_messages(body)?,
                Hop::MessagesToChat => chat_messages::messages_request_to_chat(body)?,
                Hop::ChatToGemini => chat_gemini::chat_request_to_gemini(body)?,
            };
        }
        Ok(body)
    }

    /// A successful JSON answer in the client's API; `None` when it is not
    /// a JSON object (forwarded as it came: the client sees the upstream's
    /// bytes rather than an invented answer).
    pub fn answer(&self, upstream_body: &[u8]) -> Option<Vec<u8>> {
        let mut answer: Value = serde_json::from_slice(upstream_body).ok()?;
        answer.as_object()?;
        for hop in self.hops.iter().rev() {
            answer = match hop {
                Hop::ChatToMessages => chat_messages::messages_answer_to_chat(&answer),
                Hop::MessagesToChat => chat_messages::chat_answer_to_messages(&answer),
                Hop::ChatToGemini => chat_gemini::gemini_answer_to_chat(&answer),
            };
        }
        serde_json::to_vec(&answer).ok()
    }

    /// An upstream error answer re-shaped into the client's error format;
    /// returns the status the client sees (Anthropic's 529 "overloaded" is
    /// a 503 to OpenAI clients) and the body.
    pub fn error(&self, status: u16, upstream_body: &[u8]) -> (u16, Vec<u8>) {
        errors::reshape(self.upstream, self.client, status, upstream_body)
    }

    /// A translator for an SSE answer, event by event.
    pub fn stream(&self) -> StreamTranslator {
        StreamTranslator::new(self.client, self.hops)
    }

    /// The path of the upstream's endpoint for this call (the model's
    /// `upstream_path` wins for OpenAI and Anthropic upstreams).
    pub fn upstream_path(&self, upstream_model: &str, stream: bool) -> String {
        match self.upstream {
            UpstreamApi::OpenaiChat => "/v1/chat/completions".to_string(),
            UpstreamApi::AnthropicMessages => "/v1/messages".to_string(),
            UpstreamApi::Gemini => chat_gemini::path(upstream_model, stream),
        }
    }
}
