//! What happens after a decision: audit lines for refused identities,
//! circuit-breaker feedback, metrics and the access log. Secrets never
//! reach this module: it sees key ids and subjects only.

use crate::admission::AuditEvent;
use crate::auth::AuthFailure;
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::llm::account::{AlertSink, CallFacts};
use crate::observe::access_line::{AccessLine, RequestFacts};
use crate::observe::metrics;
use crate::state::GatewayState;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn client_ip(session: &Session) -> String {
    crate::edge::client::client_ip(session)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// Audit line (and metric) for a refused identity; nothing for other refusals.
pub fn refusal(
    state: &GatewayState,
    session: &Session,
    ctx: &RequestCtx,
    event: Option<&AuditEvent>,
) {
    match event {
        Some(AuditEvent::AuthFailed(failure)) => auth_failure(state, session, ctx, failure),
        Some(AuditEvent::Denied(reason)) => denial(state, session, ctx, reason),
        Some(AuditEvent::AuthBlocked) => auth_blocked(state, session, ctx),
        None => {}
    }
}

/// A request refused unauthenticated by the credential-stuffing guard.
fn auth_blocked(state: &GatewayState, session: &Session, ctx: &RequestCtx) {
    state.logs.audit(|| {
        json!({
            "log": "audit",
            "time": now_rfc3339(),
            "event": "authentication_blocked",
            "request_id": ctx.request_id,
            "client_ip": client_ip(session),
            "principal": null,
            "route": ctx.route_name(),
            "reason": "too_many_failed_auth",
        })
    });
}

fn auth_failure(state: &GatewayState, session: &Session, ctx: &RequestCtx, failure: &AuthFailure) {
    metrics::inc(&metrics::AUTH_FAILURES, &[failure.reason()]);
    state.logs.audit(|| {
        json!({
            "log": "audit",
            "time": now_rfc3339(),
            "event": "authentication_failed",
            "request_id": ctx.request_id,
            "client_ip": client_ip(session),
            "principal": failure.principal(),
            "key_id": failure.key_id(),
            "route": ctx.route_name(),
            "reason": failure.reason(),
        })
    });
}

fn denial(state: &GatewayState, session: &Session, ctx: &RequestCtx, reason: &str) {
    let identity = ctx.identity.as_deref();
    state.logs.audit(|| {
        json!({
            "log": "audit",
            "time": now_rfc3339(),
            "event": "authorization_denied",
            "request_id": ctx.request_id,
            "client_ip": client_ip(session),
            "principal": identity.map(|i| i.key_id.as_str()),
            "user": identity.map(|i| i.user.as_str()),
            "route": ctx.route_name(),
            "method": session.req_header().method.as_str(),
            "reason": reason,
        })
    });
}

/// The upstream answered: 5xx counts against the peer's breaker.
pub fn upstream_answered(ctx: &mut RequestCtx, status: u16) {
    ctx.attempt_ended(Some(status));
    if let (Some(pool), Some(peer)) = (ctx.pool(), ctx.peer) {
        pool.report_status(peer, status);
    }
}

/// A connect, read or write failure on the current peer.
pub fn upstream_failed(ctx: &mut RequestCtx) {
    ctx.attempt_ended(None);
    if let (Some(pool), Some(peer)) = (ctx.pool(), ctx.peer) {
        pool.report_failure(peer);
    }
}

/// Maps Pingora's own failures to the contract's codes.
pub fn classify_error(e: &Error) -> GatewayError {
    if e.esource() == &ErrorSource::Downstream && matches!(e.etype(), ReadTimedout | WriteTimedout)
    {
        return GatewayError::RequestTimeout;
    }
    match e.etype() {
        HTTPStatus(413) => GatewayError::BodyTooLarge { limit: 0 },
        HTTPStatus(code) if *code == 400 => GatewayError::BadRequest(e.to_string()),
        ConnectTimedout | ReadTimedout | WriteTimedout => {
            GatewayError::UpstreamTimeout(e.etype().as_str().to_string())
        }
        _ => match e.esource() {
            ErrorSource::Upstream => GatewayError::UpstreamError(e.etype().as_str().to_string()),
            ErrorSource::Downstream => GatewayError::BadRequest("client connection error".into()),
            _ if matches!(
                e.etype(),
                ConnectRefused
                    | ConnectError
                    | ConnectNoRoute
                    | TLSHandshakeFailure
                    | ConnectProxyFailure
            ) =>
            {
                GatewayError::UpstreamError(e.etype().as_str().to_string())
            }
            _ => GatewayError::Internal(e.to_string()),
        },
    }
}

pub async fn request_done(
    state: &GatewayState,
    session: &Session,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    // The pool that answered: the route's, or for LLM calls the pool of
    // the model that served (after fallbacks).
    let mut upstream = ctx.route().and_then(|r| r.upstream()).map(str::to_string);
    if let Some(call) = ctx.llm.take() {
        if let Some(model) = &call.served {
            upstream = Some(model.upstream.clone());
        }
        let identity = ctx.identity.as_deref();
        let facts = CallFacts {
            request_id: &ctx.request_id,
            user: identity.map(|i| i.user.as_str()),
            tenant: identity.map(|i| i.tenant.as_str()),
            key_id: identity.map(|i| i.key_id.as_str()),
            route: ctx.route_name(),
            conversation: ctx.conversation.as_deref(),
        };
        // Boxed: the settlement's future is large (store round trips) and
        // would otherwise size every request's `logging` future.
        let alerts = AlertSink {
            alerts: &state.alerts,
            webhooks: &ctx.snapshot.webhooks,
        };
        let summary = Box::pin(call.settle(&state.ledger, alerts, &facts)).await;
        ctx.llm_summary = Some(summary);
    }
    let status_code = session.response_written().map(|r| r.status);
    let status = status_code.map_or(0, |s| s.as_u16());
    let route = ctx.route_name();
    let route_label = if route.is_empty() { "none" } else { route };
    let method = session.req_header().method.as_str();
    let elapsed = ctx.started.elapsed();
    metrics::inc(
        &metrics::REQUESTS,
        // `as_str`: the label without formatting a number per request.
        &[
            route_label,
            metrics::method_label(&session.req_header().method),
            status_code.as_ref().map_or("0", http::StatusCode::as_str),
        ],
    );
    metrics::observe(
        &metrics::REQUEST_DURATION,
        route_label,
        elapsed.as_secs_f64(),
    );
    metrics::observe(
        &metrics::OVERHEAD,
        route_label,
        ctx.gateway_time().as_secs_f64(),
    );
    if let Some(err) = &ctx.error {
        metrics::inc(&metrics::REJECTIONS, &[err.code()]);
    }
    if let (Some(started), Some(upstream)) = (ctx.upstream_started, upstream.as_deref()) {
        metrics::observe(
            &metrics::UPSTREAM_DURATION,
            upstream,
            started.elapsed().as_secs_f64(),
        );
    }
    if let Some(tracing) = &state.tracing {
        let incoming = session
            .req_header()
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        tracing.record(&crate::observe::otel::RequestSpan {
            ctx,
            method,
            path: session.req_header().uri.path(),
            status,
            incoming_parent: crate::observe::otel::remote_parent(incoming),
        });
    }
    let identity = ctx.identity.as_deref();
    state.logs.access(|| {
        let facts = RequestFacts {
            client_ip: crate::edge::client::client_ip(session),
            method,
            path: session.req_header().uri.path(),
            route,
            status,
            bytes_sent: session.body_bytes_sent(),
            request_id: &ctx.request_id,
            traceparent: &ctx.traceparent,
            user: identity.map(|i| i.user.as_str()),
            tenant: identity.map(|i| i.tenant.as_str()),
            key_id: identity.map(|i| i.key_id.as_str()),
            conversation: ctx.conversation.as_deref(),
            shadow_refusal: ctx.shadow_refused,
            upstream_peer: ctx.peer,
            upstream_attempts: ctx.attempts.len(),
            error: e.map(|e| e.etype().as_str()),
            error_code: ctx.error.as_ref().map(GatewayError::code),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            gateway_ms: ctx.gateway_time().as_secs_f64() * 1000.0,
        };
        AccessLine::new(facts, now_rfc3339(), ctx.llm_summary.as_ref())
    });
}
