//! Per-request context carried through Pingora's phases.

use crate::auth::key_table::KeyTable;
use crate::auth::Identity;
use crate::config::snapshot::Route;
use crate::config::snapshot::Snapshot;
use crate::error::GatewayError;
use crate::limits::rate::RateDecision;
use crate::llm::account::{LlmCall, LlmSummary};
use crate::mcp::record::ToolCall;
use crate::observe::metrics;
use crate::upstream::pool::Pool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct RequestCtx {
    pub started: Instant,
    pub request_id: String,
    pub traceparent: String,
    /// The snapshot this request runs on, loaded once when the context is
    /// made: a reload mid-flight never mixes two configurations.
    pub snapshot: Arc<Snapshot>,
    /// The API-made keys as they were when the request began (one more
    /// `ArcSwap` load; `None` where no registry runs: tests, benches).
    pub made_keys: Option<Arc<KeyTable>>,
    /// Index of the matched route in `snapshot.routes`.
    pub route_index: Option<usize>,
    /// The normalised path (plus the client's query) sent upstream: the
    /// target the route was matched on, already checked to be representable.
    pub upstream_uri: Option<http::Uri>,
    /// `X-Forwarded-Proto`: the scheme the client used (`http`/`https`).
    pub forwarded_proto: &'static str,
    pub identity: Option<Arc<Identity>>,
    pub rate: Option<RateDecision>,
    /// The refusal answered to the client, for logs and metrics.
    pub error: Option<GatewayError>,
    /// Request body bytes seen so far (for max_body_bytes on chunked bodies).
    pub body_bytes: u64,
    /// Peers already tried by this request (retries go elsewhere).
    pub tried_peers: Vec<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub retries_left: u32,
    /// When the upstream exchange began / the response header arrived.
    pub upstream_started: Option<Instant>,
    /// OpenAI-style `x-ratelimit-*-tokens` headers of an LLM call.
    pub token_headers: Vec<(&'static str, String)>,
    /// The LLM call's conversation id (validated, client-chosen): its
    /// budget scope, the ledger's and the access line's `conversation`.
    pub conversation: Option<String>,
    /// The `error.code` a limit in shadow mode (`enforce: false`) would
    /// have answered: the first one (access log `shadow_refusal`).
    pub shadow_refused: Option<&'static str>,
    /// Accounting of an LLM call, settled in `logging`.
    pub llm: Option<LlmCall>,
    /// What the settled LLM call was billed (access log, trace span).
    pub llm_summary: Option<LlmSummary>,
    /// Each upstream attempt, for the trace's child spans.
    pub attempts: Vec<UpstreamAttempt>,
    /// The MCP session of the request (`Mcp-Session-Id`, sent or made).
    pub mcp_session: Option<String>,
    /// The MCP tool calls of the request, for the trace's child spans.
    pub mcp_calls: Vec<ToolCall>,
}

/// One try of one upstream peer.
#[derive(Debug, Clone)]
pub struct UpstreamAttempt {
    pub peer: SocketAddr,
    /// The model this attempt asked for (LLM calls: a fallback's own).
    pub model: Option<String>,
    pub started: SystemTime,
    pub ended: Option<SystemTime>,
    /// The response status, when a response header arrived.
    pub status: Option<u16>,
}

impl RequestCtx {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            started: Instant::now(),
            request_id: String::new(),
            traceparent: String::new(),
            snapshot,
            made_keys: None,
            route_index: None,
            upstream_uri: None,
            forwarded_proto: "http",
            identity: None,
            rate: None,
            error: None,
            body_bytes: 0,
            tried_peers: Vec::new(),
            peer: None,
            retries_left: 0,
            upstream_started: None,
            token_headers: Vec::new(),
            conversation: None,
            shadow_refused: None,
            llm: None,
            llm_summary: None,
            attempts: Vec::new(),
            mcp_session: None,
            mcp_calls: Vec::new(),
        }
    }

    pub fn attempt_started(&mut self, peer: SocketAddr, model: Option<&str>) {
        self.attempts.push(UpstreamAttempt {
            peer,
            model: model.map(str::to_string),
            started: SystemTime::now(),
            ended: None,
            status: None,
        });
    }

    /// Closes the latest open attempt: `status` None means it failed
    /// before a response header.
    pub fn attempt_ended(&mut self, status: Option<u16>) {
        if let Some(a) = self.attempts.last_mut().filter(|a| a.ended.is_none()) {
            a.ended = Some(SystemTime::now());
            a.status = status;
        }
    }

    /// A refusal a limit in shadow mode would have answered, served
    /// instead: counted in `tollgate_shadow_refusals_total{code}`, the
    /// first one kept for the access log.
    pub fn record_shadow_refusal(&mut self, code: &'static str) {
        metrics::inc(&metrics::SHADOW_REFUSALS, &[code]);
        self.shadow_refused.get_or_insert(code);
    }

    pub fn route(&self) -> Option<&Route> {
        self.snapshot.routes.get(self.route_index?)
    }

    /// The pool of the matched route (`kind: http` routes).
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.route()?.pool()
    }

    pub fn route_name(&self) -> &str {
        self.route().map(|r| r.name.as_str()).unwrap_or("")
    }

    /// Time spent inside the gateway before the upstream exchange began
    /// (or so far, when there was none): the `Server-Timing` figure.
    pub fn gateway_time(&self) -> Duration {
        match self.upstream_started {
            Some(at) => at.saturating_duration_since(self.started),
            None => self.started.elapsed(),
        }
    }
}
