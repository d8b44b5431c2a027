//! Accounting of one LLM call: the reservation taken before it, what the
//! upstream reported after it, and the settlement that replaces the one by
//! the other. Settlement runs from Pingora's `logging` phase, which runs on
//! every path (success, upstream error, client disconnect); if even that is
//! skipped, dropping the `Reservation` releases it.

use super::model::Model;
use super::usage::ParsedUsage;
use crate::clock;
use crate::ctx::LlmSummary;
use crate::ledger::LedgerRow;
use crate::limits::budget::Charge;
use crate::limits::store::Reservation;
use crate::metrics;
use crate::state::GatewayState;
use std::sync::Arc;

pub struct LlmCall {
    /// None when the store was unreachable and `on_store_error: allow`.
    pub reservation: Option<Reservation>,
    pub requested_model: String,
    /// The model whose upstream answered (after fallbacks).
    pub served: Option<Arc<Model>>,
    /// Prompt tokens as estimated before the call.
    pub prompt_estimate: u64,
    pub upstream_status: Option<u16>,
    /// What the usage parser saw, including after an aborted stream.
    pub parsed: Option<ParsedUsage>,
    /// The client asked for an SSE stream.
    pub stream: bool,
}

/// Identity and route facts the ledger row needs.
pub struct CallFacts<'a> {
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub route: &'a str,
}

/// Tokens billed for the call, and whether they are an estimate.
fn billed(call: &LlmCall, status: u16) -> (u64, u64, u64, u64, bool) {
    let parsed = call.parsed.unwrap_or_default();
    match parsed.usage {
        Some(u) => (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
            false,
        ),
        // An upstream refusal (4xx/5xx) that reports no usage consumed
        // nothing: providers do not bill rejected requests.
        None if !(200..300).contains(&status) => (0, 0, 0, 0, false),
        // No usage (upstream omitted it, or the stream was cut before it):
        // bill the prompt estimate and the text actually produced, never 0.
        None => (
            call.prompt_estimate,
            parsed.completion_text_tokens,
            0,
            0,
            true,
        ),
    }
}

impl LlmCall {
    /// Settles the call; the returned summary feeds the access log and the
    /// trace span.
    pub fn settle(mut self, state: &GatewayState, facts: &CallFacts<'_>) -> LlmSummary {
        let api = "openai_chat";
        let mut summary = LlmSummary {
            model: self.requested_model.clone(),
            api,
            stream: self.stream,
            ..LlmSummary::default()
        };
        let reservation = self.reservation.take();
        let (Some(status), Some(model)) = (self.upstream_status, self.served.clone()) else {
            // No upstream ever answered: nothing was consumed.
            if let Some(r) = reservation {
                let _ = r.release();
            }
            return summary;
        };
        let (prompt, completion, cached, reasoning, estimated) = billed(&self, status);
        let micro_usd = model.price.cost_micro_usd(prompt, completion);
        summary.served_model = Some(model.name.clone());
        summary.upstream_model = Some(model.upstream_name().to_string());
        summary.prompt_tokens = prompt;
        summary.completion_tokens = completion;
        summary.cached_tokens = cached;
        summary.micro_usd = micro_usd;
        summary.estimated = estimated;
        if let Some(r) = reservation {
            let actual = Charge {
                tokens: prompt + completion,
                micro_usd,
            };
            if let Err(e) = r.settle(actual, clock::unix_secs().max(0) as u64) {
                metrics::inc(&metrics::STORE_ERRORS, &["local"]);
                tracing::error!(request_id = facts.request_id, "settling budget failed: {e}");
            }
        }
        let tenant = facts.tenant.unwrap_or("");
        if let Some(c) = metrics::LLM_TOKENS.as_ref() {
            c.with_label_values(&[&model.name, "prompt", tenant])
                .inc_by(prompt);
            c.with_label_values(&[&model.name, "completion", tenant])
                .inc_by(completion);
        }
        if let Some(c) = metrics::LLM_COST.as_ref() {
            c.with_label_values(&[&model.name, tenant])
                .inc_by(micro_usd as f64 / crate::llm::pricing::MICRO_USD_PER_USD as f64);
        }
        state.ledger.record(LedgerRow {
            time_ms: clock::unix_millis().max(0) as u64,
            request_id: facts.request_id.to_string(),
            user: facts.user.map(str::to_string),
            tenant: facts.tenant.map(str::to_string),
            key_id: facts.key_id.map(str::to_string),
            route: facts.route.to_string(),
            model: model.name.clone(),
            upstream_model: model.upstream_name().to_string(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            reasoning_tokens: reasoning,
            micro_usd,
            status,
            estimated,
            api: api.to_string(),
            ..LedgerRow::default()
        });
        summary
    }
}
