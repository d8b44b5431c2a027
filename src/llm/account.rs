//! Accounting of one LLM call: the reservation taken before it, what the
//! upstream reported after it, and the settlement that replaces the one by
//! the other. Settlement runs from Pingora's `logging` phase, which runs on
//! every path (success, upstream error, client disconnect); if even that is
//! skipped, dropping the `Reservation` releases it.

use super::api::LlmApi;
use super::model::Model;
use super::pricing::TokenClasses;
use super::tally::{ParsedUsage, Usage};
use crate::alerts::webhook::Webhook;
use crate::alerts::Alerts;
use crate::config::schema::UpstreamApi;
use crate::ledger::{Ledger, LedgerRow};
use crate::limits::budget::Charge;
use crate::limits::store::Reservation;
use crate::limits::types::Backend;
use crate::observe::metrics;
use crate::sys::clock;
use std::sync::Arc;

/// The billed figures of one LLM call, filled where it is settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmSummary {
    /// The model as the client asked for it.
    pub model: String,
    /// The configured model that served, after fallbacks.
    pub served_model: Option<String>,
    /// The model name sent upstream.
    pub upstream_model: Option<String>,
    /// The client API of the route.
    pub api: LlmApi,
    /// The upstream's API when the call was translated.
    pub upstream_api: Option<&'static str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub micro_usd: u64,
    /// Usage was estimated: the upstream reported none.
    pub estimated: bool,
    pub stream: bool,
    /// Kinds the output guards found in the answer (never the text).
    pub output_guard: Vec<&'static str>,
}

pub struct LlmCall {
    /// None when the store was unreachable and `on_store_error: allow`.
    pub reservation: Option<Reservation>,
    /// The route's API (the ledger's `api`).
    pub api: LlmApi,
    /// The API of the upstream that served, when the call was translated.
    pub upstream_api: Option<UpstreamApi>,
    pub requested_model: String,
    /// The model whose upstream answered (after fallbacks).
    pub served: Option<Arc<Model>>,
    /// Upper bound on the prompt's tokens (text bytes), reserved when
    /// nothing needed the exact estimate.
    pub prompt_bound: u64,
    /// The prompt's tokens by the tokenizer, when something needed them:
    /// `max_prompt_tokens`, a budget the bound did not fit, or an answer
    /// without usage (billed by this estimate).
    pub prompt_counted: Option<u64>,
    /// The output cap sent upstream (0 for APIs without output).
    pub output_cap: u64,
    pub upstream_status: Option<u16>,
    /// What the usage parser saw, including after an aborted stream.
    pub parsed: Option<ParsedUsage>,
    /// The stream ran past the output cap and the gateway cut it off.
    pub cut_off: bool,
    /// The client asked for an SSE stream.
    pub stream: bool,
    /// Kinds the output guards found in the answer.
    pub output_guard: Vec<&'static str>,
}

/// Where a settlement's threshold crossings go.
pub struct AlertSink<'a> {
    pub alerts: &'a Alerts,
    pub webhooks: &'a [Arc<Webhook>],
}

/// Identity and route facts the ledger row needs.
pub struct CallFacts<'a> {
    pub request_id: &'a str,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub route: &'a str,
    pub conversation: Option<&'a str>,
}

/// Tokens billed for the call, and whether they are an estimate.
fn billed(call: &LlmCall, status: u16) -> (Usage, bool) {
    let parsed = call.parsed.unwrap_or_default();
    match parsed.usage {
        // Only the input side was reported (a stream cut before its end):
        // the output is the larger of the reported and the counted.
        Some(mut u) if parsed.partial => {
            u.completion_tokens = u.completion_tokens.max(parsed.completion_text_tokens);
            (u, true)
        }
        Some(u) => (u, false),
        // No usage (upstream omitted it, or the stream was cut before it):
        // bill the prompt estimate and the text actually produced, never 0.
        None if billed_by_count(&parsed, status) => (
            Usage {
                // Counted by `serve` before settling; the bound (never
                // below the count) if that failed.
                prompt_tokens: call.prompt_counted.unwrap_or(call.prompt_bound),
                completion_tokens: parsed
                    .completion_text_tokens
                    .max(unread_output(call, &parsed)),
                ..Usage::default()
            },
            true,
        ),
        // An upstream refusal (4xx/5xx) that reports no usage consumed
        // nothing: providers do not bill rejected requests.
        None => (Usage::default(), false),
    }
}

/// Typical bytes per token of generated text (OpenAI's rule of thumb).
const BYTES_PER_TOKEN: u64 = 4;

/// The output of an answer too large to parse (and without a usage object
/// in its tail): it was delivered, so it is billed at the larger of the
/// output cap the reservation priced and what its size suggests, never 0.
fn unread_output(call: &LlmCall, parsed: &ParsedUsage) -> u64 {
    if parsed.unread_bytes == 0 || !call.api.has_output() {
        return 0;
    }
    call.output_cap
        .max(parsed.unread_bytes.div_ceil(BYTES_PER_TOKEN))
}

/// Whether the call is billed by the gateway's own counts: a successful
/// answer that reported no usage. `serve` counts the prompt exactly then.
pub fn billed_by_count(parsed: &ParsedUsage, status: u16) -> bool {
    parsed.usage.is_none() && (200..300).contains(&status)
}

/// Why a call's output went past its cap, if it did: cut off by the
/// gateway, or reported over by the upstream (billed as reported).
fn over_cap(call: &LlmCall, usage: &Usage) -> Option<&'static str> {
    if call.cut_off {
        Some("stream_cut")
    } else if call.api.has_output()
        && call.output_cap > 0
        && usage.completion_tokens > call.output_cap
    {
        Some("reported")
    } else {
        None
    }
}

impl LlmCall {
    /// Settles the call; the returned summary feeds the access log and the
    /// trace span.
    pub async fn settle(
        mut self,
        ledger: &Ledger,
        alerts: AlertSink<'_>,
        facts: &CallFacts<'_>,
    ) -> LlmSummary {
        let api = self.api;
        let mut summary = LlmSummary {
            model: self.requested_model.clone(),
            api,
            upstream_api: self.upstream_api.map(UpstreamApi::name),
            stream: self.stream,
            output_guard: std::mem::take(&mut self.output_guard),
            ..LlmSummary::default()
        };
        let reservation = self.reservation.take();
        let (Some(status), Some(model)) = (self.upstream_status, self.served.clone()) else {
            // No upstream ever answered: nothing was consumed.
            if let Some(r) = reservation {
                // A failure is counted by the store; the hold expires anyway.
                let _ = r.release().await;
            }
            return summary;
        };
        let (usage, estimated) = billed(&self, status);
        let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
        let micro_usd = model.price.cost_of(&TokenClasses {
            input_tokens: prompt,
            cached_tokens: usage.cached_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            output_tokens: completion,
        });
        let over_cap = over_cap(&self, &usage);
        if let Some(kind) = over_cap {
            metrics::inc(&metrics::LLM_OVER_CAP, &[&model.name, kind]);
            tracing::warn!(
                request_id = facts.request_id,
                model = %model.name,
                cap = self.output_cap,
                completion,
                kind,
                "output past the request's cap"
            );
        }
        summary.served_model = Some(model.name.clone());
        summary.upstream_model = Some(model.upstream_name().to_string());
        summary.prompt_tokens = prompt;
        summary.completion_tokens = completion;
        summary.cached_tokens = usage.cached_tokens;
        summary.micro_usd = micro_usd;
        summary.estimated = estimated;
        if let Some(r) = reservation {
            let actual = Charge {
                tokens: prompt + completion,
                micro_usd,
            };
            let backend = r.backend();
            let now = clock::unix_secs().max(0) as u64;
            match r.settle(actual, now).await {
                Ok(settled) => alerts.alerts.observe(
                    alerts.webhooks,
                    &settled,
                    facts.tenant.unwrap_or(""),
                    now,
                ),
                Err(e) => {
                    // Redis failures are counted by the store itself.
                    if backend == Backend::Local {
                        metrics::inc(&metrics::STORE_ERRORS, &[backend.name()]);
                    }
                    tracing::error!(request_id = facts.request_id, "settling budget failed: {e}");
                }
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
        ledger.record(LedgerRow {
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
            cached_tokens: usage.cached_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            micro_usd,
            status,
            estimated,
            api: self.api.name().to_string(),
            cache_write_tokens: usage.cache_write_tokens,
            over_cap: over_cap.is_some(),
            requested_model: self.requested_model.clone(),
            upstream_api: self
                .upstream_api
                .map_or_else(String::new, |u| u.name().to_string()),
            conversation: facts.conversation.map(str::to_string),
        });
        summary
    }
}
