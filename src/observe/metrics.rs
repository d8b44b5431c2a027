//! Prometheus metrics (DESIGN §6). No per-user labels: cardinality must stay
//! bounded under hostile traffic; per-user figures are in /admin/usage.

use once_cell::sync::Lazy;
use prometheus::{
    register_counter_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, CounterVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

macro_rules! metric {
    ($name:ident: $ty:ty = $register:ident!($($args:tt)*)) => {
        pub static $name: Lazy<Option<$ty>> = Lazy::new(|| match $register!($($args)*) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("metric registration failed: {e}");
                None
            }
        });
    };
}

metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "tollgate_requests_total", "Requests answered", &["route", "method", "status"]));
metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "tollgate_request_duration_seconds", "Whole request duration", &["route"], LATENCY_BUCKETS.to_vec()));
metric!(UPSTREAM_DURATION: HistogramVec = register_histogram_vec!(
    "tollgate_upstream_duration_seconds", "Upstream exchange duration", &["upstream"], LATENCY_BUCKETS.to_vec()));
metric!(OVERHEAD: HistogramVec = register_histogram_vec!(
    "tollgate_overhead_seconds", "Time spent inside the gateway, upstream excluded", &["route"], LATENCY_BUCKETS.to_vec()));
metric!(AUTH_FAILURES: IntCounterVec = register_int_counter_vec!(
    "tollgate_auth_failures_total", "Failed authentications", &["reason"]));
metric!(REJECTIONS: IntCounterVec = register_int_counter_vec!(
    "tollgate_rejections_total", "Requests refused by the gateway", &["code"]));
metric!(LLM_TOKENS: IntCounterVec = register_int_counter_vec!(
    "tollgate_llm_tokens_total", "LLM tokens billed", &["model", "kind", "tenant"]));
metric!(LLM_COST: CounterVec = register_counter_vec!(
    "tollgate_llm_cost_usd_total", "LLM cost billed in USD", &["model", "tenant"]));
metric!(GUARD_ACTIONS: IntCounterVec = register_int_counter_vec!(
    "tollgate_guard_actions_total", "Guard decisions", &["guard", "action", "direction"]));
metric!(PEER_HEALTHY: IntGaugeVec = register_int_gauge_vec!(
    "tollgate_upstream_peer_healthy", "1 when the peer passes health checks", &["upstream", "peer"]));
metric!(CIRCUIT_OPEN: IntGaugeVec = register_int_gauge_vec!(
    "tollgate_circuit_open", "1 when the peer's circuit breaker is open", &["upstream", "peer"]));
metric!(CONFIG_RELOADS: IntCounterVec = register_int_counter_vec!(
    "tollgate_config_reloads_total", "Configuration reloads", &["result"]));
metric!(CONFIG_GENERATION: IntGauge = register_int_gauge!(
    "tollgate_config_generation", "Generation of the active configuration"));
metric!(STORE_ERRORS: IntCounterVec = register_int_counter_vec!(
    "tollgate_store_errors_total", "Usage store failures", &["store"]));
metric!(LEDGER_SPOOL_ROWS: IntGauge = register_int_gauge!(
    "tollgate_ledger_spool_rows", "Usage rows waiting in the local spool for the shared ledger"));
metric!(LEDGER_ERRORS: IntCounterVec = register_int_counter_vec!(
    "tollgate_ledger_errors_total", "Failed writes to the usage ledger", &["ledger"]));
metric!(LLM_OVER_CAP: IntCounterVec = register_int_counter_vec!(
    "tollgate_llm_over_cap_total",
    "LLM calls whose output went past the request's cap (stream_cut: cut off by the gateway; reported: billed as the upstream reported)",
    &["model", "kind"]));
metric!(MCP_CALLS: IntCounterVec = register_int_counter_vec!(
    "tollgate_mcp_calls_total", "MCP tool calls by outcome (allowed, denied, error)", &["route", "tool", "outcome"]));
metric!(SHADOW_REFUSALS: IntCounterVec = register_int_counter_vec!(
    "tollgate_shadow_refusals_total",
    "Requests a limit with enforce: false would have refused (served anyway)", &["code"]));
metric!(ALERTS: IntCounterVec = register_int_counter_vec!(
    "tollgate_alerts_total",
    "Budget threshold alerts: sent, retried (one per retry), dropped (queue full or never taken)",
    &["result"]));
metric!(OTLP_SPANS_DROPPED: IntCounterVec = register_int_counter_vec!(
    "tollgate_otlp_spans_dropped_total", "Trace spans not exported", &["reason"]));

/// Registers every metric so /metrics lists them from the start.
pub fn init() {
    for lazy in [
        &REQUESTS,
        &AUTH_FAILURES,
        &REJECTIONS,
        &LLM_TOKENS,
        &GUARD_ACTIONS,
        &CONFIG_RELOADS,
        &STORE_ERRORS,
        &LEDGER_ERRORS,
        &LLM_OVER_CAP,
        &OTLP_SPANS_DROPPED,
        &MCP_CALLS,
        &SHADOW_REFUSALS,
        &ALERTS,
    ] {
        Lazy::force(lazy);
    }
    for lazy in [&REQUEST_DURATION, &UPSTREAM_DURATION, &OVERHEAD] {
        Lazy::force(lazy);
    }
    Lazy::force(&LLM_COST);
    Lazy::force(&PEER_HEALTHY);
    Lazy::force(&CIRCUIT_OPEN);
    Lazy::force(&CONFIG_GENERATION);
    Lazy::force(&LEDGER_SPOOL_ROWS);
    // Series that alert rules watch start at 0, so `increase()` sees the
    // first failure (a series born at 1 shows no increase).
    let zero = |counter: &Lazy<Option<IntCounterVec>>, labels: &[&str]| {
        if let Some(c) = counter.as_ref() {
            c.with_label_values(labels).inc_by(0);
        }
    };
    zero(&STORE_ERRORS, &["local"]);
    zero(&LEDGER_ERRORS, &["postgres"]);
    zero(&CONFIG_RELOADS, &["ok"]);
    zero(&CONFIG_RELOADS, &["error"]);
    zero(&OTLP_SPANS_DROPPED, &["queue_full"]);
    zero(&OTLP_SPANS_DROPPED, &["export_failed"]);
}

/// The `method` label: the standard methods by name, anything else
/// `other`, so a client cannot mint a new series per request.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

pub fn inc(counter: &Lazy<Option<IntCounterVec>>, labels: &[&str]) {
    if let Some(c) = counter.as_ref() {
        c.with_label_values(labels).inc();
    }
}

pub fn observe(hist: &Lazy<Option<HistogramVec>>, label: &str, seconds: f64) {
    if let Some(h) = hist.as_ref() {
        h.with_label_values(&[label]).observe(seconds);
    }
}

pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn unknown_methods_share_one_label() {
        for m in ["GET", "PATCH", "TRACE"] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap_or_default();
            assert_eq!(method_label(&method), m);
        }
        for m in ["ZZRT123", "get", "PROPFIND", &"X".repeat(4000)] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap_or_default();
            assert_eq!(method_label(&method), "other", "{m}");
        }
    }
}
