//! An LLM call end to end: read and check the body, resolve the model,
//! reserve budget, exchange with the upstream, stream the answer back while
//! counting usage.
//!
//! Why tollgate drives the upstream exchange itself (Pingora's connector,
//! pooled connections) instead of the normal proxy path: Pingora 0.9.1
//! replays a request body read in `request_filter` only up to 64 KiB (the
//! retry buffer); a larger one never reaches the upstream. LLM routes must
//! read the whole body first (model routing, guards, token estimate), so
//! the exchange happens here, which also makes fallback to another model
//! with the full body possible and detects client disconnects at once.

use super::account::{billed_by_count, LlmCall};
use super::api::{LlmApi, LlmRequest};
use super::exchange::{self, Candidate, Opened};
use super::model::Model;
use super::output_guard::{guard_json, Guarding, SseGuard};
use super::pricing::Price;
use super::pump::{pump, CutOff, PumpEnd, Source};
use super::tokens;
use super::translate::Translation;
use super::usage::UsageParser;
use crate::admission::{Admitted, Question, Refusal};
use crate::auth::Identity;
use crate::config::snapshot::Snapshot;
use crate::config::snapshot::Target;
use crate::ctx::RequestCtx;
use crate::edge::client;
use crate::edge::headers::client_response_header;
use crate::error::GatewayError;
use crate::guards::output::Findings;
use crate::limits::budget::{BudgetRefusal, Charge, ScopeKey};
use crate::limits::store::{Reservation, Store};
use crate::limits::types::{ReserveError, TokensInUse};
use crate::limits::window::{now_unix, seconds_to_reset, Window};
use crate::observe::metrics;
use crate::state::GatewayState;
use crate::upstream;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on a JSON answer buffered for usage parsing.
const MAX_USAGE_BUFFER: usize = 8 * 1024 * 1024;

/// Serves the call admission let through. `Err` is a refusal answered by
/// the caller; once the response has started, problems end the stream and
/// are only logged.
pub async fn serve(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    client_ip: Option<IpAddr>,
    admitted: Admitted,
) -> Result<(), Refusal> {
    let mut pending = match admitted {
        Admitted::Pending(question) => Some(question),
        Admitted::Done => None,
    };
    let served = serve_call(state, session, ctx, client_ip, &mut pending).await;
    if let (Err(_), Some(question)) = (&served, pending) {
        // Refused before its reservation asked the admission's question
        // (redis mode): that question is answered first, as it would
        // have been before the body was read.
        question.ask(&state.store, ctx).await?;
    }
    served
}

/// A reservation's outcome that is not answered at once.
enum Reserved {
    Held(Reservation),
    /// Over a token or USD budget (429 once the token headers are known).
    OverBudget(GatewayError),
}

async fn serve_call(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    client_ip: Option<IpAddr>,
    pending: &mut Option<Question>,
) -> Result<(), Refusal> {
    let snapshot = ctx.snapshot.clone();
    let Some((api, guards, output)) = ctx.route().and_then(|r| match &r.target {
        Target::Llm {
            api,
            guards,
            output,
        } => Some((*api, *guards, *output)),
        Target::Http { .. } | Target::Mcp(_) => None,
    }) else {
        return Err(GatewayError::Internal("llm call on a route of another kind".into()).into());
    };
    let body = read_body(session, &snapshot).await?;
    let mut request =
        LlmRequest::parse(api, &body).map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    drop(body);
    ctx.conversation = snapshot
        .attribution
        .conversation(&session.req_header().headers, request.body_mut())?;
    check_shape(&request, &snapshot)?;
    if let Some(compiled) = snapshot.guards.as_ref() {
        compiled.apply(guards, &mut request)?;
    }

    let Some(identity) = ctx.identity.clone() else {
        return Err(GatewayError::Internal("llm call without identity".into()).into());
    };
    let candidates = candidates(&snapshot, api, request.model(), &identity)?;
    let primary = candidates[0].model.clone();
    // Each answer may use the whole output cap: `n` multiplies the cost
    // (and the reservation), so it is bounded per model.
    if request.choices() > primary.max_n {
        return Err(GatewayError::InvalidRequest(format!(
            "n of {} exceeds the limit of {} for model {}",
            request.choices(),
            primary.max_n,
            primary.name
        ))
        .into());
    }

    // The prompt is reserved at a bound that needs no tokenizer (one token
    // per byte of text); it is counted only when the bound is not enough.
    let prompt_bound = request.prompt_tokens_bound();
    let mut prompt_counted = None;
    if let Some(max) = snapshot
        .config
        .guards
        .as_ref()
        .and_then(|g| g.max_prompt_tokens)
    {
        if prompt_bound > max {
            let (counted_request, counted) = estimate_off_loop(request).await?;
            request = counted_request;
            prompt_counted = Some(counted);
            if counted > max {
                return Err(GatewayError::InvalidRequest(format!(
                    "prompt of about {counted} tokens exceeds the limit of {max}"
                ))
                .into());
            }
        }
    }
    let output_cap = request.output_cap(primary.max_tokens);
    // Any candidate may serve (a fallback of another provider too): the
    // call is reserved at the dearest of them, tokens and USD apart, so the
    // budget holds whichever answers; settlement bills the one that did.
    let priced: Vec<(u64, Price)> = candidates
        .iter()
        .map(|c| (request.output_cap(c.model.max_tokens), c.model.price))
        .collect();
    let charge = |prompt: u64| dearest_charge(&priced, prompt);
    // An admission refusal (rate, lockout) or a store failure is answered
    // at once; a budget refusal after the token headers.
    let mut reserved = reserve(
        &state.store,
        &snapshot,
        ctx,
        charge(prompt_counted.unwrap_or(prompt_bound)),
        &candidates,
        pending.take(),
    )
    .await?;
    if prompt_counted.is_none() && matches!(reserved, Reserved::OverBudget(_)) {
        // The bound over-reserves (about 4x for English): a call that fits
        // its budget by the real count must not be refused for it.
        let (counted_request, counted) = estimate_off_loop(request).await?;
        request = counted_request;
        prompt_counted = Some(counted);
        if counted < prompt_bound {
            reserved = reserve(
                &state.store,
                &snapshot,
                ctx,
                charge(counted),
                &candidates,
                None,
            )
            .await?;
        }
    }
    let held = match &reserved {
        Reserved::Held(reservation) => Some(reservation),
        Reserved::OverBudget(_) => None,
    };
    // Refusals and answers alike tell SDKs how many tokens remain.
    ctx.token_headers = token_headers(state, &snapshot, ctx, held).await;
    let reservation = match reserved {
        Reserved::Held(reservation) => reservation,
        Reserved::OverBudget(refusal) => return Err(refusal.into()),
    };
    ctx.llm = Some(LlmCall {
        reservation: Some(reservation),
        api,
        upstream_api: None,
        requested_model: request.model().to_string(),
        served: None,
        prompt_bound,
        prompt_counted,
        output_cap,
        upstream_status: None,
        parsed: None,
        cut_off: false,
        stream: request.is_stream(),
        output_guard: Vec::new(),
    });

    let opened = exchange::open(
        &state.connector,
        &candidates,
        request,
        session.req_header(),
        ctx,
        client_ip,
    )
    .await?;
    // Only a route naming output guards pays for them.
    let guarding = snapshot
        .output_guards
        .as_ref()
        .filter(|scanner| !output.is_empty() && scanner.guards_any(output))
        .map(|scanner| Guarding::new(scanner.clone(), output));
    stream_back(state, session, ctx, opened, guarding).await
}

/// The largest charge of the candidates `(output cap, price)` for a
/// prompt of `prompt` tokens.
fn dearest_charge(priced: &[(u64, Price)], prompt: u64) -> Charge {
    priced
        .iter()
        .fold(Charge::default(), |dearest, (cap, price)| Charge {
            tokens: dearest.tokens.max(prompt + cap),
            micro_usd: dearest.micro_usd.max(price.cost_micro_usd(prompt, *cap)),
        })
}

/// Bodies above this are tokenized on the blocking pool: BPE costs about
/// 0.1 ms per KiB, which must not stall the other requests of a worker.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

/// The prompt's exact estimate (tokenizer), off the event loop when the
/// text is large or the tokenizer is not built yet.
async fn estimate_off_loop(request: LlmRequest) -> Result<(LlmRequest, u64), GatewayError> {
    if request.text_bytes() <= INLINE_TOKENIZE_BYTES {
        tokens::load_off_loop().await;
        let estimate = request.estimate_prompt_tokens();
        return Ok((request, estimate));
    }
    tokio::task::spawn_blocking(move || {
        let estimate = request.estimate_prompt_tokens();
        (request, estimate)
    })
    .await
    .map_err(|e| GatewayError::Internal(format!("token estimation failed: {e}")))
}

pub async fn read_body(
    session: &mut Session,
    snapshot: &Snapshot,
) -> Result<Vec<u8>, GatewayError> {
    let limit = snapshot.server().max_body_bytes;
    let idle = Duration::from_millis(snapshot.server().body_timeout_ms);
    // Pingora never answers `Expect: 100-continue`; curl would otherwise
    // wait a second before sending bodies over 1 MiB.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| GatewayError::BadRequest(format!("client connection: {e}")))?;
    }
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, session.read_request_body()).await {
            Err(_) => return Err(GatewayError::RequestTimeout),
            Ok(Err(e)) => return Err(GatewayError::BadRequest(format!("reading the body: {e}"))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn check_shape(request: &LlmRequest, snapshot: &Snapshot) -> Result<(), GatewayError> {
    let max = snapshot.config.guards.as_ref().and_then(|g| g.max_messages);
    if let (Some(max), Some(count)) = (max, request.message_count()) {
        if count > max {
            return Err(GatewayError::InvalidRequest(format!(
                "{count} messages exceed the limit of {max}"
            )));
        }
    }
    Ok(())
}

/// The requested model and its fallbacks, in order, each with its pool
/// and the translation its upstream's API needs. A fallback whose API the
/// route's cannot be translated to is left out; such a requested model is
/// a 400. The caller's roles and its key's allow-list decide alike: a
/// requested model outside them is a 403, a fallback outside them is
/// skipped (a key limited to cheap models is never served by a dear one).
fn candidates(
    snapshot: &Snapshot,
    api: LlmApi,
    requested: &str,
    identity: &Identity,
) -> Result<Vec<Candidate>, GatewayError> {
    let model = snapshot
        .models
        .get(requested)
        .ok_or_else(|| GatewayError::ModelNotFound(requested.to_string()))?;
    let allowed = |m: &Model| m.allows(&identity.roles) && identity.allows_model(&m.name);
    if !allowed(model) {
        return Err(GatewayError::ModelNotAllowed(requested.to_string()));
    }
    let chain = std::iter::once(model.clone()).chain(
        model
            .fallbacks
            .iter()
            .filter_map(|name| snapshot.models.get(name))
            .filter(|m| allowed(m))
            .cloned(),
    );
    let translation_for = |model: &Model| match model.upstream_api {
        None => Ok(None),
        Some(upstream) => Translation::between(api, upstream),
    };
    if let Err(why) = translation_for(model) {
        return Err(GatewayError::InvalidRequest(format!(
            "model {requested}: {why}"
        )));
    }
    let list: Vec<Candidate> = chain
        .filter_map(|model: Arc<Model>| {
            let pool = snapshot.pools.get(&model.upstream)?.clone();
            let translation = translation_for(&model).ok()?;
            Some(Candidate {
                model,
                pool,
                translation,
            })
        })
        .collect();
    if list.is_empty() {
        return Err(GatewayError::UpstreamUnavailable {
            upstream: model.upstream.clone(),
            retry_after: 1,
        });
    }
    Ok(list)
}

/// How long a reservation outlives an instance that dies mid-call (Redis
/// mode): every candidate's connect and read timeouts, plus this margin.
const RESERVATION_MARGIN: Duration = Duration::from_secs(5);

fn reservation_hold(snapshot: &Snapshot, candidates: &[Candidate]) -> Duration {
    let upstreams = &snapshot.config.upstreams;
    let ms: u64 = candidates
        .iter()
        .filter_map(|c| upstreams.get(&c.model.upstream))
        .map(|u| u.timeouts.connect_ms.saturating_add(u.timeouts.read_ms))
        .sum();
    Duration::from_millis(ms) + RESERVATION_MARGIN
}

/// Reserves the call's estimate; an admission question left for it (redis
/// mode) is asked in the same round trip and judged first.
async fn reserve(
    store: &Arc<Store>,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    estimate: Charge,
    candidates: &[Candidate],
    question: Option<Question>,
) -> Result<Reserved, Refusal> {
    let Some(identity) = ctx.identity.clone() else {
        return Err(GatewayError::Internal("llm call without identity".into()).into());
    };
    let scopes = snapshot
        .budgets
        .scopes_for(&identity, ctx.conversation.as_deref());
    let hold = reservation_hold(snapshot, candidates);
    let now = now_unix();
    let route = ctx.route_index.and_then(|i| snapshot.routes.get(i));
    let reserved = match (question, route) {
        (Some(question), Some(route)) => {
            let query = question.query(snapshot, route, &identity);
            let admitted = store
                .admit_and_reserve(&query, &scopes, estimate, now, hold)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            // Guarded before judging: a refused call must not keep a hold.
            let reserved = admitted
                .reserved
                .map(|r| r.map(|ticket| Reservation::hold(store, ticket)));
            question.judge(admitted.verdict, &identity, ctx)?;
            reserved.unwrap_or_else(|| {
                Err(ReserveError::Unavailable(
                    "admitted without a reservation".into(),
                ))
            })
        }
        _ => Reservation::reserve(store, &scopes, estimate, now, hold).await,
    };
    match reserved {
        Ok(r) => {
            if let Some(shadow) = r.shadow_refusal() {
                ctx.record_shadow_refusal(over_budget_code(shadow));
            }
            Ok(Reserved::Held(r))
        }
        Err(ReserveError::Refused(refusal)) => {
            let message = refusal.to_string();
            let retry_after = refusal.retry_after_secs.max(1);
            Ok(Reserved::OverBudget(if refusal.kind.is_usd() {
                GatewayError::UsdBudgetExceeded {
                    message,
                    retry_after,
                }
            } else {
                GatewayError::TokenBudgetExceeded {
                    message,
                    retry_after,
                }
            }))
        }
        // The store counted and logged it; with `allow` it answered from
        // its local counters instead of failing.
        Err(ReserveError::Unavailable(_)) => Err(GatewayError::StoreUnavailable.into()),
    }
}

/// The `error.code` a budget refusal is answered with.
fn over_budget_code(refusal: &BudgetRefusal) -> &'static str {
    if refusal.kind.is_usd() {
        "usd_budget_exceeded"
    } else {
        "token_budget_exceeded"
    }
}

/// OpenAI's `x-ratelimit-*-tokens` headers for the caller's tightest token
/// window, so AI SDKs back off on their own. The use comes from the
/// reservation when it read it (no second store round trip); a refused
/// call reads the store.
async fn token_headers(
    state: &GatewayState,
    snapshot: &Snapshot,
    ctx: &RequestCtx,
    reservation: Option<&Reservation>,
) -> Vec<(&'static str, String)> {
    let Some(identity) = ctx.identity.as_ref() else {
        return Vec::new();
    };
    let limits = snapshot.budgets.user_limits(&identity.user);
    let (limit, window) = match (limits.tokens_per_minute, limits.tokens_per_day) {
        (Some(l), _) => (l, Window::Minute),
        (None, Some(l)) => (l, Window::Day),
        (None, None) => return Vec::new(),
    };
    let now = now_unix();
    let scope = ScopeKey::User(identity.user.clone());
    let held = reservation
        .and_then(|r| r.tokens_in_use(&scope))
        .and_then(|in_use| in_use.of(window));
    let used = match held {
        Some(used) => used,
        None => match state.store.usage(&scope, &identity.tenant, now).await {
            Ok((usage, _)) => TokensInUse::from(usage).of(window).unwrap_or_default(),
            Err(_) => return Vec::new(),
        },
    };
    let remaining = limit.saturating_sub(used);
    vec![
        ("x-ratelimit-limit-tokens", limit.to_string()),
        ("x-ratelimit-remaining-tokens", remaining.to_string()),
        (
            "x-ratelimit-reset-tokens",
            format!("{}s", seconds_to_reset(window, now)),
        ),
    ]
}

/// Forwards the answer chunk by chunk, counting usage as it passes. Stops
/// at once if the client goes away; the upstream connection is then closed
/// so the model stops generating (and billing).
async fn stream_back(
    state: &GatewayState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    opened: Opened,
    guarding: Option<Guarding>,
) -> Result<(), Refusal> {
    let Opened {
        session: mut upstream,
        peer,
        model,
        response,
        output_cap,
        body,
        translation,
        primed,
        ..
    } = opened;
    let api = ctx.llm.as_ref().map(|c| c.api).unwrap_or_default();
    let status = response.status.as_u16();
    let content_type = response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut parser = UsageParser::for_content_type(api, content_type.as_deref(), MAX_USAGE_BUFFER);
    let cut_off = CutOff {
        api,
        model: model.upstream_name().to_string(),
        cap: output_cap,
    };
    if let Some(call) = ctx.llm.as_mut() {
        call.served = Some(model);
        call.upstream_status = Some(status);
        call.output_cap = output_cap;
    }
    if let Some(call) = ctx.llm.as_mut() {
        call.upstream_api = translation.map(|t| t.upstream);
    }
    let header = match client_response_header(ctx, &response) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("building the client response failed: {e}");
            upstream.shutdown().await;
            return Ok(());
        }
    };
    let mut translator = None;
    let mut header = header;
    if let Some(t) = translation {
        if !parser.is_sse() || !(200..300).contains(&status) {
            let read = (&mut upstream, &mut parser);
            let end =
                translated_json(session, read, header, (api, status, t), guarding, ctx).await?;
            return finish_call(state, ctx, parser, upstream, peer, body, api, status, end).await;
        }
        translator = Some(t.stream());
    }
    let mut sse_guard = None;
    if let Some(g) = guarding {
        // An error answer is the upstream's, not the model's: only the
        // gateway's own secrets are taken out of it.
        let answer = (200..300).contains(&status);
        if !parser.is_sse() || !answer {
            let read = (&mut upstream, &mut parser);
            let end = guarded_json(session, read, header, (api, answer), g, ctx).await?;
            return finish_call(state, ctx, parser, upstream, peer, body, api, status, end).await;
        }
        sse_guard = Some(SseGuard::new(api, g));
    }
    // While the answer streams we watch the client socket for a close.
    // Pipelining keeps a next request that arrives meanwhile (its bytes are
    // stashed for it, not consumed), and abort-on-close turns a FIN into
    // an error at once instead of waiting for a failed write.
    session.as_downstream_mut().set_pipelining_enabled(true);
    session.as_downstream_mut().set_abort_on_close(true);
    stream_framing(
        &mut header,
        status,
        translator.is_some() || sse_guard.is_some(),
    )?;
    let mut end = PumpEnd::Failed;
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
    {
        let mut source = Source::new(&mut upstream, translator.as_mut(), primed);
        end = pump(
            session,
            &mut source,
            &mut parser,
            &cut_off,
            sse_guard.as_mut(),
        )
        .await;
    }
    if let Some(g) = &sse_guard {
        record_findings(ctx, g.findings());
    }
    finish_call(state, ctx, parser, upstream, peer, body, api, status, end).await
}

/// Settles what the answer revealed and returns the upstream connection:
/// pooled after a clean end, closed otherwise (providers stop generating,
/// and billing, when the connection goes).
#[allow(clippy::too_many_arguments)]
async fn finish_call(
    state: &GatewayState,
    ctx: &mut RequestCtx,
    mut parser: UsageParser,
    upstream: HttpSession,
    peer: Box<HttpPeer>,
    body: Bytes,
    api: LlmApi,
    status: u16,
    end: PumpEnd,
) -> Result<(), Refusal> {
    if parser.needs_text_count() {
        tokens::load_off_loop().await;
    }
    let parsed = parser.finish_for_billing();
    if let Some(call) = ctx.llm.as_mut() {
        if billed_by_count(&parsed, status) && call.prompt_counted.is_none() {
            call.prompt_counted = count_sent_prompt(api, body).await;
        }
        call.parsed = Some(parsed);
        call.cut_off = end == PumpEnd::CutOff;
    }
    upstream::give_back(&state.connector, upstream, &peer, end == PumpEnd::Clean).await;
    Ok(())
}

/// Counts the guards' actions and keeps the kinds for the access log.
fn record_findings(ctx: &mut RequestCtx, findings: Findings) {
    if findings.is_empty() {
        return;
    }
    for (guard, action) in findings.actions() {
        metrics::inc(&metrics::GUARD_ACTIONS, &[guard, action, "output"]);
    }
    let kinds = findings.kinds();
    tracing::warn!(kinds = ?kinds, "output guard matched");
    if let Some(call) = ctx.llm.as_mut() {
        call.output_guard = kinds;
    }
}

/// A JSON answer under output guards: read whole (it is parsed for usage
/// anyway), guarded, sent with its new length.
/// `answer`: a 2xx model answer (else an error body: secrets only).
async fn guarded_json(
    session: &mut Session,
    (upstream, parser): (&mut HttpSession, &mut UsageParser),
    header: ResponseHeader,
    (api, answer): (LlmApi, bool),
    mut g: Guarding,
    ctx: &mut RequestCtx,
) -> Result<PumpEnd, Refusal> {
    let Some(body) = read_whole(upstream, Some(parser), "guard").await? else {
        return Ok(PumpEnd::Failed);
    };
    let guarded = if answer {
        guard_json(api, &mut g, &body)
    } else {
        g.scrub_error_body(&body)
    };
    let body = guarded.unwrap_or(body);
    record_findings(ctx, g.findings);
    send_whole(session, header, body).await
}

/// A JSON answer (or any error answer) of an upstream speaking another
/// API: read whole, translated into the client's API (errors re-shaped,
/// status included), guarded when the route says so, sent with its length.
/// The usage parser reads the translated answer: usage is billed as the
/// client's SDK reports it.
async fn translated_json(
    session: &mut Session,
    (upstream, parser): (&mut HttpSession, &mut UsageParser),
    mut header: ResponseHeader,
    (api, status, translation): (LlmApi, u16, Translation),
    guarding: Option<Guarding>,
    ctx: &mut RequestCtx,
) -> Result<PumpEnd, Refusal> {
    let Some(raw) = read_whole(upstream, None, "translate").await? else {
        return Ok(PumpEnd::Failed);
    };
    let answer = (200..300).contains(&status);
    let body = if answer {
        translation.answer(&raw).unwrap_or(raw)
    } else {
        let (client_status, body) = translation.error(status, &raw);
        header
            .set_status(client_status)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        body
    };
    header
        .insert_header(http::header::CONTENT_TYPE, "application/json")
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    parser.feed(&body);
    let body = match guarding {
        None => body,
        Some(mut g) => {
            let guarded = if answer {
                guard_json(api, &mut g, &body)
            } else {
                g.scrub_error_body(&body)
            };
            record_findings(ctx, g.findings);
            guarded.unwrap_or(body)
        }
    };
    send_whole(session, header, body).await
}

/// The whole body of a JSON answer (fed to `parser` as it comes, when
/// given); `None` when the upstream failed mid-body. Bounded: an answer
/// over the limit fails closed (`why`: what needed it whole).
async fn read_whole(
    upstream: &mut HttpSession,
    mut parser: Option<&mut UsageParser>,
    why: &str,
) -> Result<Option<Vec<u8>>, Refusal> {
    let mut body = Vec::new();
    loop {
        match upstream.read_response_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_USAGE_BUFFER {
                    return Err(
                        GatewayError::UpstreamError(format!("answer too large to {why}")).into(),
                    );
                }
                if let Some(p) = parser.as_deref_mut() {
                    p.feed(&chunk);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Some(body)),
            Err(e) => {
                tracing::warn!("upstream failed mid-response: {e}");
                return Ok(None);
            }
        }
    }
}

/// The framing of an answer passed on as it arrives. A rewritten one
/// (translated, guarded) changes size, so its upstream length no longer
/// holds; and without a length the answer is chunked, never ended by
/// closing the client's connection as an upstream may end its own (an
/// HTTP/1.1 client would lose its keep-alive connection with every
/// streamed answer). HTTP/2 sessions drop the header: their frames carry
/// the ends.
fn stream_framing(
    header: &mut ResponseHeader,
    status: u16,
    rewritten: bool,
) -> Result<(), Refusal> {
    if rewritten {
        header.remove_header(&http::header::CONTENT_LENGTH);
    }
    let bodiless = status < 200 || status == 204 || status == 304;
    if !bodiless && header.headers.get(http::header::CONTENT_LENGTH).is_none() {
        header
            .insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
    }
    Ok(())
}

/// Sends a whole (rewritten) answer; the pump ended cleanly when the
/// client took it.
async fn send_whole(
    session: &mut Session,
    header: ResponseHeader,
    body: Vec<u8>,
) -> Result<PumpEnd, Refusal> {
    Ok(match client::send_whole(session, header, body).await {
        Ok(()) => PumpEnd::Clean,
        Err(_) => PumpEnd::Failed,
    })
}

/// The prompt's exact estimate from the body as sent upstream (its texts
/// are the client's, after guards), for billing an answer without usage.
async fn count_sent_prompt(api: LlmApi, body: Bytes) -> Option<u64> {
    let request = LlmRequest::parse(api, &body).ok()?;
    estimate_off_loop(request).await.ok().map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    //! The call's decisions before any upstream byte: which models serve
    //! it, how long its hold lasts, and how a reservation is answered.
    use super::*;
    use crate::auth::Identity;
    use crate::config::load::load_snapshot_from_str;

    fn snapshot(budget: &str) -> Arc<Snapshot> {
        let yaml = format!(
            r#"
server: {{ listen: ["127.0.0.1:1"], admin_listen: "127.0.0.1:2" }}
upstreams:
  main: {{ peers: ["127.0.0.1:9"], timeouts: {{ connect_ms: 100, read_ms: 900 }} }}
  spare: {{ peers: ["127.0.0.1:9"], timeouts: {{ connect_ms: 50, read_ms: 950 }} }}
routes:
  - {{ name: chat, path: /v1/chat/completions, methods: [POST], kind: llm, roles: [agent, admin] }}
models:
  - {{ name: fast, upstream: main, input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0, max_tokens: 16, fallbacks: [admin-only, spare] }}
  - {{ name: admin-only, upstream: spare, input_usd_per_mtok: 0.0, output_usd_per_mtok: 0.0, max_tokens: 16, roles: [admin] }}
  - {{ name: spare, upstream: spare, input_usd_per_mtok: 0.0, output_usd_per_mtok: 0.0, max_tokens: 16 }}
limits:
  budgets: [{budget}]
"#
        );
        Arc::new(
            load_snapshot_from_str(&yaml, "serve.yaml", 1, None).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    fn agent() -> Vec<String> {
        vec!["agent".into()]
    }

    fn names(list: &[Candidate]) -> Vec<&str> {
        list.iter().map(|c| c.model.name.as_str()).collect()
    }

    #[test]
    fn a_call_is_reserved_at_its_dearest_candidate() {
        let price = |input, output| {
            Price::from_usd_per_mtok(input, output).unwrap_or_else(|e| panic!("{e}"))
        };
        // A cheap primary with a long cap, a dear fallback with a short one:
        // tokens come from the first, dollars from the second.
        let priced = [(1_000, price(1.0, 1.0)), (100, price(10.0, 100.0))];
        let charge = dearest_charge(&priced, 50);
        assert_eq!(charge.tokens, 1_050);
        assert_eq!(
            charge.micro_usd,
            priced[1]
                .1
                .cost_micro_usd(50, 100)
                .max(priced[0].1.cost_micro_usd(50, 1_000))
        );
        assert_eq!(charge.micro_usd, 10_500);
        assert_eq!(dearest_charge(&priced[..1], 50).micro_usd, 1_050);
    }

    #[test]
    fn candidates_are_the_model_then_the_fallbacks_the_caller_may_use() {
        let s = snapshot("{ scope: user, tokens_per_day: 100 }");
        let list = candidates(&s, LlmApi::OpenaiChat, "fast", &caller(agent()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&list), ["fast", "spare"]);
        let admin = candidates(
            &s,
            LlmApi::OpenaiChat,
            "fast",
            &caller(vec!["admin".into()]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&admin), ["fast", "admin-only", "spare"]);
        assert!(matches!(
            candidates(&s, LlmApi::OpenaiChat, "nope", &caller(agent())).err(),
            Some(GatewayError::ModelNotFound(_))
        ));
        assert!(matches!(
            candidates(&s, LlmApi::OpenaiChat, "admin-only", &caller(agent())).err(),
            Some(GatewayError::ModelNotAllowed(_))
        ));
    }

    fn caller(roles: Vec<String>) -> Identity {
        Identity {
            roles,
            ..Identity::default()
        }
    }

    #[test]
    fn a_keys_allow_list_refuses_other_models_and_skips_their_fallbacks() {
        let s = snapshot("{ scope: user, tokens_per_day: 100 }");
        let mut who = caller(vec!["admin".into()]);
        who.policy = Some(Arc::new(crate::auth::KeyPolicy {
            models: Some(vec!["fast".to_string(), "spare".to_string()].into_boxed_slice()),
            ..crate::auth::KeyPolicy::default()
        }));
        let list =
            candidates(&s, LlmApi::OpenaiChat, "fast", &who).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&list), ["fast", "spare"], "admin-only is not listed");
        assert!(matches!(
            candidates(&s, LlmApi::OpenaiChat, "admin-only", &who).err(),
            Some(GatewayError::ModelNotAllowed(_))
        ));
    }

    #[test]
    fn a_hold_outlives_every_candidates_timeouts() {
        let s = snapshot("{ scope: user, tokens_per_day: 100 }");
        let list = candidates(&s, LlmApi::OpenaiChat, "fast", &caller(agent()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            reservation_hold(&s, &list),
            Duration::from_millis(1000 + 1000) + RESERVATION_MARGIN
        );
    }

    fn call(snapshot: &Arc<Snapshot>) -> RequestCtx {
        let mut ctx = RequestCtx::new(snapshot.clone());
        ctx.route_index = Some(0);
        ctx.identity = Some(Arc::new(Identity {
            user: "bob".into(),
            tenant: "acme".into(),
            roles: agent(),
            key_id: "bob-1".into(),
            ..Identity::default()
        }));
        ctx
    }

    fn reserve_now(
        store: &Arc<Store>,
        s: &Arc<Snapshot>,
        charge: Charge,
    ) -> Result<Reserved, Refusal> {
        let list = candidates(s, LlmApi::OpenaiChat, "fast", &caller(agent()))
            .unwrap_or_else(|e| panic!("{e}"));
        futures::executor::block_on(reserve(store, s, &mut call(s), charge, &list, None))
    }

    #[test]
    fn a_reservation_is_held_or_answered_as_the_budget_it_exceeds() {
        let store = Arc::new(Store::local());
        let s = snapshot("{ scope: user, tokens_per_day: 100, usd_per_month: 0.001 }");
        let held =
            reserve_now(&store, &s, Charge::tokens(60)).unwrap_or_else(|r| panic!("{:?}", r.error));
        assert!(matches!(held, Reserved::Held(_)));
        // The first is still held: 60 + 60 tokens exceed the day's 100.
        match reserve_now(&store, &s, Charge::tokens(60)) {
            Ok(Reserved::OverBudget(GatewayError::TokenBudgetExceeded { retry_after, .. })) => {
                assert!(retry_after >= 1)
            }
            other => panic!("{:?}", other.map(|_| ()).map_err(|r| r.error)),
        }
        drop(held);
        let usd = Charge {
            tokens: 1,
            micro_usd: 2_000,
        };
        assert!(matches!(
            reserve_now(&store, &s, usd),
            Ok(Reserved::OverBudget(GatewayError::UsdBudgetExceeded { .. }))
        ));
    }
}
