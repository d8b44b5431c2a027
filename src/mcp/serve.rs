//! An MCP request end to end (Streamable HTTP transport): a POST's
//! JSON-RPC messages read and judged one by one (deny-listed methods,
//! per-tool roles, owner rules on arguments, per-tool rates, input
//! guards), the refused ones answered by the gateway with a JSON-RPC
//! error for their id, the rest forwarded to the session's peer; the
//! answer (JSON, or an SSE stream) relayed message by message; GET
//! streams and DELETE forwarded to the session's peer.
//!
//! Why tollgate drives the upstream exchange itself, as for LLM calls
//! (llm::serve): the body must be read whole and rewritten before it is
//! sent, and Pingora 0.9.1 replays a body read in `request_filter` only up
//! to 64 KiB.

use super::exchange::{self, Opened, Outgoing};
use super::jsonrpc::{self, Kind, Post};
use super::record::{arguments_digest, Outcome, ToolCall};
use super::relay::{PendingCall, Relay, ResultGuard};
use super::rules::{method_denied, ToolDenial};
use super::sessions::Pin;
use super::sse::{self, Splitter};
use crate::admission::Refusal;
use crate::auth::Identity;
use crate::config::snapshot::{McpTarget, Snapshot};
use crate::ctx::RequestCtx;
use crate::edge::client;
use crate::edge::headers::{client_response_header, decorate_response};
use crate::error::GatewayError;
use crate::limits::types::{AdmitQuery, RateQuery};
use crate::llm::serve::read_body;
use crate::observe::metrics;
use crate::state::GatewayState;
use crate::sys::clock;
use crate::upstream;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

const SESSION_HEADER: &str = "mcp-session-id";
/// Longest `Mcp-Session-Id` accepted (the spec: visible ASCII).
const MAX_SESSION_ID: usize = 256;
/// How long a relayed POST stream's end is awaited after its last answer,
/// so its connection can be pooled (the client already has everything).
const STREAM_END_GRACE: Duration = Duration::from_millis(100);

/// The POST's messages after the gateway's judgement.
struct Plan {
    batch: bool,
    /// Forwarded upstream, possibly rewritten (guards).
    forward: Vec<Value>,
    /// The gateway's own answers (refusals), by id.
    local: Vec<Value>,
    /// Refused tool calls, for the audit.
    refused: Vec<ToolCall>,
}

/// Serves the MCP request admission let through. `Err` is a refusal
/// answered by the caller before anything was sent.
pub async fn serve(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    client_ip: Option<IpAddr>,
) -> Result<(), Refusal> {
    let snapshot = ctx.snapshot.clone();
    let route = ctx.route_index.and_then(|i| snapshot.routes.get(i));
    let (Some(target), Some(identity)) = (route.and_then(|r| r.mcp()), ctx.identity.clone()) else {
        return Err(GatewayError::Internal("mcp call on a route of another kind".into()).into());
    };
    let session_id = session_id(session)?;
    ctx.mcp_session = session_id.clone();
    let owner = format!("{}/{}", identity.tenant, identity.user);
    let pin = match &session_id {
        Some(id) => state.mcp_sessions.lookup(&target.upstream, id),
        None => None,
    };
    if pin.as_ref().is_some_and(|p| p.owner != owner) {
        // Another caller's session: answered as if it did not exist.
        return Err(GatewayError::SessionNotFound.into());
    }
    let method = session.req_header().method.clone();
    let request_id = ctx.request_id.clone();
    let guard = result_guard(&snapshot, target);
    let mut relay = Relay::new(&target.tools, &identity, guard, &request_id);
    let outcome = if method == Method::POST {
        post(
            state,
            session,
            ctx,
            (target, &identity),
            &request_id,
            pin.as_ref(),
            client_ip,
            &mut relay,
        )
        .await
    } else if method == Method::GET || method == Method::DELETE {
        let out = Outgoing {
            client: session.req_header(),
            client_ip,
            body: None,
            read_timeout: (method == Method::GET)
                .then(|| Duration::from_secs(target.limits.max_stream_seconds)),
        };
        let route = peer_route(pin.as_ref(), session_id.as_deref(), &identity);
        let opened = exchange::open(&state.connector, &target.pool, route, &out, ctx).await?;
        relay_answer(
            state,
            session,
            ctx,
            target,
            opened,
            &mut relay,
            Vec::new(),
            false,
            &owner,
        )
        .await
    } else {
        Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            allow: vec!["POST".into(), "GET".into(), "DELETE".into()],
        }
        .into())
    };
    // Calls still waiting were lost with the exchange.
    let _ = relay.unanswered("");
    let finished = std::mem::take(&mut relay.finished);
    let findings = relay.findings;
    drop(relay);
    if !findings.is_empty() {
        for (guard, action) in findings.actions() {
            metrics::inc(&metrics::GUARD_ACTIONS, &[guard, action, "output"]);
        }
        tracing::warn!(kinds = ?findings.kinds(), "output guard matched a tool result");
    }
    super::audit::record(state, ctx, &target.tools, finished);
    outcome
}

/// The output guards of the route, when it names configured ones.
fn result_guard(snapshot: &Snapshot, target: &McpTarget) -> Option<ResultGuard> {
    let scanner = snapshot.output_guards.as_ref()?;
    (!target.output.is_empty() && scanner.guards_any(target.output)).then(|| ResultGuard {
        scanner: scanner.clone(),
        set: target.output,
    })
}

/// The client's `Mcp-Session-Id`, checked: visible ASCII, bounded.
fn session_id(session: &Session) -> Result<Option<String>, GatewayError> {
    let Some(value) = session.req_header().headers.get(SESSION_HEADER) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_SESSION_ID
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(GatewayError::BadRequest(
            "Mcp-Session-Id must be 1 to 256 visible ASCII characters".into(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The pinned peer; else, with a session id the gateway does not hold
/// (a restart), the peer its hash picks; else the caller's.
fn peer_route<'a>(
    pin: Option<&Pin>,
    session_id: Option<&'a str>,
    identity: &'a Identity,
) -> exchange::Route<'a> {
    match (pin, session_id) {
        (Some(pin), _) => exchange::Route::Pinned(pin.peer),
        (None, Some(id)) => exchange::Route::Balanced { key: id.as_bytes() },
        (None, None) => exchange::Route::Balanced {
            key: identity.user.as_bytes(),
        },
    }
}

#[allow(clippy::too_many_arguments)]
async fn post(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    (target, identity): (&McpTarget, &Identity),
    request_id: &str,
    pin: Option<&Pin>,
    client_ip: Option<IpAddr>,
    relay: &mut Relay<'_>,
) -> Result<(), Refusal> {
    let snapshot = ctx.snapshot.clone();
    let body = read_body(session, &snapshot).await?;
    let parsed = jsonrpc::parse_post(&body, target.limits.max_batch)?;
    drop(body);
    relay.client_batch = parsed.batch;
    let plan = judge(
        state, &snapshot, target, identity, request_id, parsed, relay,
    )
    .await;
    let mut refused = plan.refused;
    relay.finished.append(&mut refused);
    if plan.forward.is_empty() {
        // Nothing left for the server: the gateway answers alone.
        return respond_local(session, ctx, plan.local, plan.batch).await;
    }
    // A batch left with one message goes as that message: servers of
    // protocol 2025-06-18 (which dropped batching) still serve it, and the
    // answer goes back as a batch with the gateway's refusals.
    let forward = if plan.forward.len() > 1 {
        Value::Array(plan.forward)
    } else {
        plan.forward.into_iter().next().unwrap_or(Value::Null)
    };
    let body = serde_json::to_vec(&forward).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let out = Outgoing {
        client: session.req_header(),
        client_ip,
        body: Some(Bytes::from(body)),
        read_timeout: None,
    };
    let owner = format!("{}/{}", identity.tenant, identity.user);
    let sent_session = ctx.mcp_session.clone();
    let route = peer_route(pin, sent_session.as_deref(), identity);
    let opened = exchange::open(&state.connector, &target.pool, route, &out, ctx).await?;
    relay_answer(
        state, session, ctx, target, opened, relay, plan.local, true, &owner,
    )
    .await
}

/// Judges each message: refused ones get the gateway's answer, the others
/// are forwarded (tool calls' arguments guarded) and awaited.
async fn judge(
    state: &GatewayState,
    snapshot: &Snapshot,
    target: &McpTarget,
    identity: &Identity,
    request_id: &str,
    post: Post,
    relay: &mut Relay<'_>,
) -> Plan {
    let mut plan = Plan {
        batch: post.batch,
        forward: Vec::with_capacity(post.messages.len()),
        local: Vec::new(),
        refused: Vec::new(),
    };
    for mut message in post.messages {
        let (id, method) = match jsonrpc::kind(&message) {
            Some(Kind::Request { id, method }) => (id.clone(), method.to_string()),
            Some(Kind::Notification { method }) => {
                // A denied notification is dropped: it has no answer.
                if !method_denied(&target.limits.deny_methods, method) {
                    plan.forward.push(message);
                }
                continue;
            }
            _ => {
                plan.forward.push(message);
                continue;
            }
        };
        if method_denied(&target.limits.deny_methods, &method) {
            let message = ToolDenial::Method.message(&method);
            plan.local
                .push(jsonrpc::refused(&id, &message, "forbidden", request_id));
            continue;
        }
        if method != "tools/call" {
            relay.expect(&id, None);
            plan.forward.push(message);
            continue;
        }
        let started = SystemTime::now();
        match judge_call(state, snapshot, target, identity, &mut message).await {
            Ok(call) => {
                relay.expect(
                    &id,
                    Some(PendingCall {
                        tool: call.0,
                        arguments_sha256: call.1,
                        started,
                    }),
                );
                plan.forward.push(message);
            }
            Err(refusal) => {
                let jsonrpc_id = jsonrpc::id_key(&id);
                plan.local.push(jsonrpc::refused(
                    &id,
                    &refusal.message,
                    refusal.code,
                    request_id,
                ));
                plan.refused.push(ToolCall {
                    tool: refusal.tool,
                    jsonrpc_id,
                    arguments_sha256: refusal.arguments_sha256,
                    started,
                    ended: SystemTime::now(),
                    outcome: Outcome::Denied(refusal.reason),
                });
            }
        }
    }
    plan
}

/// Why a tool call was refused.
struct CallRefusal {
    tool: String,
    arguments_sha256: String,
    message: String,
    /// The contract's `error.code`.
    code: &'static str,
    /// The audit line's `reason`.
    reason: &'static str,
}

/// A `tools/call` judged: `(tool, arguments digest)` when it may go on
/// (its arguments possibly redacted in `message`).
async fn judge_call(
    state: &GatewayState,
    snapshot: &Snapshot,
    target: &McpTarget,
    identity: &Identity,
    message: &mut Value,
) -> Result<(String, String), CallRefusal> {
    let params = message.get("params");
    let tool = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let arguments = params.and_then(|p| p.get("arguments"));
    let digest = arguments_digest(arguments);
    let refuse = |message: String, code, reason| CallRefusal {
        tool: tool.clone(),
        arguments_sha256: digest.clone(),
        message,
        code,
        reason,
    };
    if tool.is_empty() {
        return Err(refuse(
            "tools/call without a tool name".into(),
            "invalid_request",
            "no_tool_name",
        ));
    }
    if let Err(denial) = target.tools.authorize(identity, &tool, arguments) {
        return Err(refuse(denial.message(&tool), "forbidden", denial.reason()));
    }
    if let Some((rule_key, limit)) = target
        .tools
        .rule(&tool)
        .and_then(|r| Some((r.rate_key.as_str(), r.rate_limit?)))
    {
        let query = AdmitQuery {
            failed_auth: None,
            rate: Some(RateQuery {
                user: &identity.user,
                tenant: &identity.tenant,
                route: rule_key,
                route_limit: Some(limit),
                default_limit: None,
                enforced: true,
                key: None,
            }),
        };
        let now = clock::unix_secs().max(0).unsigned_abs();
        match state.store.admit(&query, now).await {
            Ok(verdict) => {
                if let Some(rate) = verdict.rate.filter(|r| !r.allowed) {
                    return Err(refuse(
                        format!(
                            "tool {tool} rate limit of {} per minute exceeded for user {} (retry after {} s)",
                            rate.limit, identity.user, rate.reset_secs
                        ),
                        "rate_limited",
                        "rate_limited",
                    ));
                }
            }
            Err(_) => {
                return Err(refuse(
                    "usage store unavailable".into(),
                    "store_unavailable",
                    "store_unavailable",
                ))
            }
        }
    }
    if let (Some(guards), Some(arguments)) = (
        snapshot.guards.as_ref(),
        message
            .get_mut("params")
            .and_then(|p| p.get_mut("arguments")),
    ) {
        if let Err(e) = guards.apply_json(target.guards, arguments) {
            return Err(refuse(
                format!("tool {tool} arguments blocked: {e}"),
                e.code(),
                "guard_blocked",
            ));
        }
    }
    Ok((tool, digest))
}

async fn respond_local(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut answers: Vec<Value>,
    batch: bool,
) -> Result<(), Refusal> {
    let internal = |e: pingora::BError| Refusal::from(GatewayError::Internal(e.to_string()));
    if answers.is_empty() {
        // Only notifications or responses, all dropped: accepted.
        let mut resp = ResponseHeader::build(202, Some(4)).map_err(internal)?;
        resp.insert_header("content-length", "0")
            .map_err(internal)?;
        decorate_response(&mut resp, ctx).map_err(internal)?;
        let _ = session.write_response_header(Box::new(resp), true).await;
        return Ok(());
    }
    let value = if batch || answers.len() > 1 {
        Value::Array(answers)
    } else {
        answers.pop().unwrap_or(Value::Null)
    };
    let body = Bytes::from(value.to_string());
    let mut resp = ResponseHeader::build(200, Some(4)).map_err(internal)?;
    resp.insert_header("content-type", "application/json")
        .map_err(internal)?;
    resp.insert_header("content-length", body.len().to_string())
        .map_err(internal)?;
    if let Some(id) = &ctx.mcp_session {
        resp.insert_header(SESSION_HEADER, id.as_str())
            .map_err(internal)?;
    }
    decorate_response(&mut resp, ctx).map_err(internal)?;
    let written = async {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
    .await;
    if let Err(e) = written {
        tracing::info!("client went away before its MCP answer: {e}");
    }
    Ok(())
}

/// How the relay of an answer ended.
#[derive(PartialEq)]
enum End {
    /// Both sides done: the upstream connection may be pooled.
    Clean,
    /// Ended early (limit, failure, client gone): the connection closes.
    Cut,
}

fn content_type(resp: &ResponseHeader) -> &str {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Relays the upstream's answer: pins a new session, unpins an ended one,
/// rewrites JSON and SSE messages; other answers pass as they are.
#[allow(clippy::too_many_arguments)]
async fn relay_answer(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    target: &McpTarget,
    mut opened: Opened,
    relay: &mut Relay<'_>,
    local: Vec<Value>,
    post: bool,
    owner: &str,
) -> Result<(), Refusal> {
    let response = &opened.response;
    let status = response.status.as_u16();
    keep_sessions(
        state,
        ctx,
        target,
        response,
        opened.addr,
        owner,
        session.req_header().method == Method::DELETE,
    );
    let is_sse = content_type(response).starts_with("text/event-stream");
    let is_json = content_type(response).starts_with("application/json");
    let limits = &target.limits;
    let end = if (200..300).contains(&status) && is_sse {
        let mut header = client_response_header(ctx, response)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        // The stream is rewritten: its length is unknown. Chunked, or the
        // client's connection would end with the answer.
        header.remove_header(&http::header::CONTENT_LENGTH);
        header
            .insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if session
            .write_response_header(Box::new(header), false)
            .await
            .is_err()
        {
            End::Cut
        } else {
            relay_stream(session, &mut opened.session, relay, local, limits, post).await
        }
    } else {
        let (body, end) = read_whole(&mut opened.session, limits.max_message_bytes).await?;
        let rewritten = if status == 202 && !local.is_empty() {
            // The forwarded part needed no answer; the refusals do.
            Some((
                200,
                serde_json::to_vec(&Value::Array(local)).unwrap_or_default(),
            ))
        } else if (200..300).contains(&status) && is_json {
            relay.json_body(&body, local).map(|b| (status, b))
        } else {
            None
        };
        let mut header = client_response_header(ctx, response)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let body = match rewritten {
            Some((status, rewritten)) => {
                header
                    .set_status(status)
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                header
                    .insert_header("content-type", "application/json")
                    .map_err(|e| GatewayError::Internal(e.to_string()))?;
                rewritten
            }
            None => body,
        };
        if client::send_whole(session, header, body).await.is_err() {
            End::Cut
        } else {
            end
        }
    };
    upstream::give_back(
        &state.connector,
        opened.session,
        &opened.peer,
        end == End::Clean,
    )
    .await;
    Ok(())
}

/// A session the upstream just made is pinned to its peer (with its
/// owner); one it ended (DELETE) or no longer knows (404) is unpinned.
fn keep_sessions(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    target: &McpTarget,
    response: &ResponseHeader,
    addr: std::net::SocketAddr,
    owner: &str,
    deleted: bool,
) {
    let status = response.status.as_u16();
    if let Some(sent) = ctx.mcp_session.as_deref() {
        if status == 404 || (deleted && (200..300).contains(&status)) {
            state.mcp_sessions.unpin(&target.upstream, sent);
            return;
        }
    }
    let made = response
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_SESSION_ID);
    if let Some(made) = made {
        if ctx.mcp_session.as_deref() != Some(made) {
            state.mcp_sessions.pin(
                &target.upstream,
                made,
                Pin {
                    peer: addr,
                    owner: owner.to_string(),
                },
            );
            ctx.mcp_session = Some(made.to_string());
        }
    }
}

/// A whole (non-streamed) answer, at most `limit` bytes: above, the
/// server misbehaves and the client gets a 502 instead of a truncation.
async fn read_whole(upstream: &mut HttpSession, limit: usize) -> Result<(Vec<u8>, End), Refusal> {
    let mut body = Vec::new();
    loop {
        match upstream.read_response_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(GatewayError::UpstreamError(format!(
                        "MCP server answer exceeds max_message_bytes ({limit})"
                    ))
                    .into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((body, End::Clean)),
            Err(e) => {
                return Err(GatewayError::UpstreamError(format!("reading the answer: {e}")).into())
            }
        }
    }
}

/// Sends what `out` holds to the client (nothing when it is empty);
/// false when the client is gone.
async fn write_pending(session: &mut Session, out: &mut BytesMut) -> bool {
    out.is_empty()
        || session
            .write_response_body(Some(out.split().freeze()), false)
            .await
            .is_ok()
}

/// Relays an SSE stream event by event. A POST's stream ends once every
/// forwarded request is answered (the spec's servers close it then; one
/// that does not is not waited for); any stream ends at
/// `max_stream_seconds`, at an event over `max_message_bytes`, or when a
/// side fails. Requests left unanswered get an error each.
async fn relay_stream(
    session: &mut Session,
    upstream: &mut HttpSession,
    relay: &mut Relay<'_>,
    local: Vec<Value>,
    limits: &crate::config::schema::McpConfig,
    post: bool,
) -> End {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limits.max_stream_seconds);
    let mut out = BytesMut::new();
    for refusal in local {
        out.extend_from_slice(&sse::message_event(&refusal.to_string(), None));
    }
    if !write_pending(session, &mut out).await {
        return End::Cut;
    }
    session.as_downstream_mut().set_abort_on_close(true);
    let mut splitter = Splitter::new(limits.max_message_bytes);
    loop {
        let read = tokio::select! {
            read = upstream.read_response_body() => read,
            _ = client::gone(session, "MCP stream") => return End::Cut,
            _ = tokio::time::sleep_until(deadline) => {
                return end_stream(session, relay, "the server stream exceeded max_stream_seconds").await;
            }
        };
        let chunk = match read {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                let end = end_stream(
                    session,
                    relay,
                    "the server ended the stream without answering",
                )
                .await;
                return if end == End::Clean {
                    End::Clean
                } else {
                    End::Cut
                };
            }
            Err(e) => {
                tracing::warn!("mcp upstream failed mid-stream: {e}");
                end_stream(session, relay, "the server failed mid-stream").await;
                return End::Cut;
            }
        };
        let events = match splitter.push(&chunk) {
            Ok(events) => events,
            Err(sse::TooLarge) => {
                end_stream(
                    session,
                    relay,
                    "a server message exceeded max_message_bytes",
                )
                .await;
                return End::Cut;
            }
        };
        for event in events {
            out.extend_from_slice(&relay.event(event));
        }
        if !write_pending(session, &mut out).await {
            return End::Cut;
        }
        if post && relay.all_answered() && splitter.pending() == 0 {
            if session
                .write_response_body(Some(Bytes::new()), true)
                .await
                .is_err()
            {
                return End::Cut;
            }
            // The client has everything; the upstream's end is awaited
            // briefly so its connection can be reused.
            return match tokio::time::timeout(STREAM_END_GRACE, upstream.read_response_body()).await
            {
                Ok(Ok(None)) => End::Clean,
                _ => End::Cut,
            };
        }
    }
}

/// Ends the client's stream: an error for each request still unanswered.
async fn end_stream(session: &mut Session, relay: &mut Relay<'_>, why: &str) -> End {
    let mut out = BytesMut::new();
    for error in relay.unanswered(why) {
        out.extend_from_slice(&sse::message_event(&error.to_string(), None));
    }
    match session.write_response_body(Some(out.freeze()), true).await {
        Ok(()) => End::Clean,
        Err(_) => End::Cut,
    }
}
