//! Every `tools/call` leaves an audit line (caller, tenant, session, tool,
//! decision and why, duration, result; the arguments only as a SHA-256)
//! and a `tollgate_mcp_calls_total` count. Its trace span is made with
//! the request's (observe::otel), from the calls kept in the context.

use super::record::{Outcome, ToolCall};
use super::rules::ToolPolicy;
use crate::ctx::RequestCtx;
use crate::observe::metrics;
use crate::state::GatewayState;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

/// The metric's `tool` label: a tool a rule names, else one shared
/// label, so a client cannot mint a series per made-up tool name.
pub fn tool_label<'a>(tools: &ToolPolicy, tool: &'a str) -> &'a str {
    if tools.rule(tool).is_some() {
        tool
    } else {
        "_unlisted"
    }
}

/// Writes the calls' audit lines and metrics and keeps them in `ctx`.
pub fn record(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    tools: &ToolPolicy,
    calls: Vec<ToolCall>,
) {
    let route = ctx.route_name().to_string();
    let identity = ctx.identity.clone();
    for call in &calls {
        metrics::inc(
            &metrics::MCP_CALLS,
            &[&route, tool_label(tools, &call.tool), call.outcome.label()],
        );
        let duration_ms = call
            .ended
            .duration_since(call.started)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let (decision, reason) = match call.outcome {
            Outcome::Denied(reason) => ("denied", Some(reason)),
            _ => ("allowed", None),
        };
        state.logs.audit(|| {
            json!({
                "log": "audit",
                "time": time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
                "event": "mcp_tool_call",
                "request_id": ctx.request_id,
                "route": route,
                "principal": identity.as_deref().map(|i| i.key_id.as_str()),
                "user": identity.as_deref().map(|i| i.user.as_str()),
                "tenant": identity.as_deref().map(|i| i.tenant.as_str()),
                "session": ctx.mcp_session,
                "tool": call.tool,
                "jsonrpc_id": call.jsonrpc_id,
                "decision": decision,
                "reason": reason,
                "result": call.outcome.result(),
                "duration_ms": duration_ms,
                "arguments_sha256": call.arguments_sha256,
            })
        });
    }
    ctx.mcp_calls.extend(calls);
}
