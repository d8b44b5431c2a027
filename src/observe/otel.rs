//! OpenTelemetry traces over OTLP/HTTP protobuf (`observability.otlp`).
//!
//! One `gateway.request` span per request and one `upstream.attempt` child
//! per upstream try, built in the `logging` phase from what the request
//! context recorded. The span's trace and span ids are those of the
//! `traceparent` sent upstream (trace.rs), so the upstream's spans join the
//! same trace under it; a valid incoming `traceparent` is its parent.
//!
//! Export is off the request path: the SDK's batch processor queues spans
//! (bounded) and a thread of its own sends them at least every 5 s with a
//! blocking HTTP client. An unreachable collector costs the request nothing;
//! spans that find the queue full or whose export fails are counted in
//! `tollgate_otlp_spans_dropped_total`.

use crate::config::schema::{LlmApi, OtlpConfig};
use crate::ctx::{RequestCtx, UpstreamAttempt};
use crate::mcp::record::{Outcome, ToolCall};
use crate::observe::metrics;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Spans waiting for export, at most (then new ones are dropped).
const MAX_QUEUE: usize = 4096;
const MAX_BATCH: usize = 512;
/// A batch is sent at least this often.
const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// One export may take this long before it is abandoned (and counted).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("observability.otlp: {0}")]
pub struct OtelError(String);

/// The process's trace pipeline.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Builds the exporter and its export thread. Call outside any async
    /// runtime: the blocking HTTP client may not be created inside one.
    pub fn start(config: &OtlpConfig) -> Result<Tracing, OtelError> {
        let endpoint = format!("{}/v1/traces", config.endpoint.trim_end_matches('/'));
        let exporter = OtlpExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtelError(e.to_string()))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let batch = BatchSpanProcessor::builder(CountingExporter {
            inner: exporter,
            pending: pending.clone(),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_max_export_batch_size(MAX_BATCH)
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedProcessor {
                inner: batch,
                pending,
            })
            .with_sampler(sampler)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "tollgate");
        Ok(Tracing { provider, tracer })
    }

    /// Exports what is queued now (blocks until done or timed out).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("trace export flush: {e}");
        }
    }

    /// Sends what is queued and stops the export thread (process exit).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("trace export shutdown: {e}");
        }
    }

    /// Records the finished request's spans.
    pub fn record(&self, request: &RequestSpan<'_>) {
        let Some((trace_id, span_id)) = ids(&request.ctx.traceparent) else {
            return;
        };
        let parent_cx = match &request.incoming_parent {
            Some(parent) => Context::new().with_remote_span_context(parent.clone()),
            None => Context::new(),
        };
        let ended = SystemTime::now();
        let started = ended
            .checked_sub(request.ctx.started.elapsed())
            .unwrap_or(ended);
        let mut span = self
            .tracer
            .span_builder("gateway.request")
            .with_kind(SpanKind::Server)
            .with_trace_id(trace_id)
            .with_span_id(span_id)
            .with_start_time(started)
            .with_attributes(request_attributes(request))
            .start_with_context(&self.tracer, &parent_cx);
        if !span.is_recording() {
            return;
        }
        if request.status >= 500 || request.status == 0 {
            span.set_status(Status::error(format!("status {}", request.status)));
        }
        let cx = parent_cx.with_span(span);
        let last = request.ctx.attempts.len().saturating_sub(1);
        for (i, attempt) in request.ctx.attempts.iter().enumerate() {
            // The answering attempt lasts until the answer is forwarded.
            let end = match attempt.ended {
                Some(end) if i != last || attempt.status.is_none() => end,
                _ => ended,
            };
            self.attempt_span(&cx, attempt, end);
        }
        for call in &request.ctx.mcp_calls {
            self.tool_call_span(&cx, call, request.ctx.mcp_session.as_deref());
        }
        cx.span().end_with_timestamp(ended);
    }

    /// One MCP `tools/call` (OTel's MCP semantic conventions: span
    /// `tools/call <tool>`); arguments are never attributes.
    fn tool_call_span(&self, cx: &Context, call: &ToolCall, session: Option<&str>) {
        let mut attributes = vec![
            KeyValue::new("mcp.method.name", "tools/call"),
            KeyValue::new("gen_ai.tool.name", call.tool.clone()),
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("jsonrpc.request.id", call.jsonrpc_id.clone()),
            KeyValue::new("tollgate.mcp.outcome", call.outcome.label()),
            KeyValue::new("tollgate.mcp.result", call.outcome.result()),
        ];
        if let Outcome::Denied(reason) = call.outcome {
            attributes.push(KeyValue::new("tollgate.mcp.denied_by", reason));
        }
        if let Some(session) = session {
            attributes.push(KeyValue::new("mcp.session.id", session.to_string()));
        }
        let mut span = self
            .tracer
            .span_builder(format!("tools/call {}", call.tool))
            .with_kind(SpanKind::Internal)
            .with_start_time(call.started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, cx);
        if call.outcome.label() != "allowed" {
            span.set_status(Status::error(call.outcome.result()));
        }
        span.end_with_timestamp(call.ended);
    }

    fn attempt_span(&self, cx: &Context, attempt: &UpstreamAttempt, end: SystemTime) {
        let mut attributes = vec![
            KeyValue::new("server.address", attempt.peer.ip().to_string()),
            KeyValue::new("server.port", i64::from(attempt.peer.port())),
        ];
        if let Some(model) = &attempt.model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
        }
        match attempt.status {
            Some(status) => attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            )),
            None => attributes.push(KeyValue::new("error.type", "connection")),
        }
        let mut span = self
            .tracer
            .span_builder("upstream.attempt")
            .with_kind(SpanKind::Client)
            .with_start_time(attempt.started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, cx);
        if attempt.status.is_none_or(|s| s >= 500) {
            span.set_status(Status::error("upstream attempt failed"));
        }
        span.end_with_timestamp(end);
    }
}

/// What the request span is made of.
pub struct RequestSpan<'a> {
    pub ctx: &'a RequestCtx,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The client's valid `traceparent`, if it sent one.
    pub incoming_parent: Option<SpanContext>,
}

fn request_attributes(request: &RequestSpan<'_>) -> Vec<KeyValue> {
    let ctx = request.ctx;
    let mut attributes = vec![
        KeyValue::new("http.request.method", request.method.to_string()),
        KeyValue::new("url.path", request.path.to_string()),
        KeyValue::new("http.response.status_code", i64::from(request.status)),
        KeyValue::new("tollgate.request_id", ctx.request_id.clone()),
    ];
    // The route's path template, as the config wrote it.
    let template = ctx.route().and_then(|route| {
        ctx.snapshot
            .config
            .routes
            .iter()
            .find(|r| r.name == route.name)
            .map(|r| r.path.clone())
    });
    if let Some(template) = template {
        attributes.push(KeyValue::new("http.route", template));
    }
    if let Some(identity) = ctx.identity.as_deref() {
        attributes.push(KeyValue::new("user.id", identity.user.clone()));
        attributes.push(KeyValue::new("tenant.id", identity.tenant.clone()));
    }
    if let Some(err) = &ctx.error {
        attributes.push(KeyValue::new("error.type", err.code()));
    }
    if let Some(llm) = &ctx.llm_summary {
        // GenAI semantic conventions.
        // The semantic conventions name two operations our APIs perform.
        let operation = if llm.api == LlmApi::OpenaiEmbeddings {
            "embeddings"
        } else {
            "chat"
        };
        attributes.push(KeyValue::new("gen_ai.operation.name", operation));
        attributes.push(KeyValue::new("gen_ai.request.model", llm.model.clone()));
        if let Some(model) = &llm.upstream_model {
            attributes.push(KeyValue::new("gen_ai.response.model", model.clone()));
        }
        attributes.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            llm.prompt_tokens as i64,
        ));
        attributes.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            llm.completion_tokens as i64,
        ));
    }
    attributes
}

/// (trace id, span id) of a `00-<trace>-<span>-<flags>` header.
fn ids(traceparent: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = traceparent.split('-');
    let _version = parts.next()?;
    let trace = TraceId::from_hex(parts.next()?).ok()?;
    let span = SpanId::from_hex(parts.next()?).ok()?;
    Some((trace, span))
}

/// The remote parent of a valid incoming `traceparent`.
pub fn remote_parent(header: Option<&str>) -> Option<SpanContext> {
    let (trace_id, parent_id, flags) = crate::observe::trace::parse_traceparent(header?)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(parent_id).ok()?,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

fn dropped(reason: &str, spans: usize) {
    if let Some(c) = metrics::OTLP_SPANS_DROPPED.as_ref() {
        c.with_label_values(&[reason]).inc_by(spans as u64);
    }
}

/// Bounds the spans between `on_end` and the end of their export: the
/// SDK's queue drops silently when full, so the bound is kept here, where
/// the drop can be counted.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUE {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts the spans of failed exports (collector down or too slow).
#[derive(Debug)]
struct CountingExporter {
    inner: OtlpExporter,
    pending: Arc<AtomicUsize>,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::AcqRel);
        if result.is_err() {
            dropped("export_failed", n);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_traceparent() {
        let (t, s) = ids("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap_or_else(|| panic!("valid"));
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        let parent = remote_parent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .unwrap_or_else(|| panic!("valid"));
        assert!(parent.is_remote() && parent.is_sampled());
        assert!(remote_parent(Some("00-0000-00f067aa0ba902b7-01")).is_none());
        assert!(remote_parent(None).is_none());
    }
}
