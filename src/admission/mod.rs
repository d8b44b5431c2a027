//! The request-header decisions, in order: framing, route, identity,
//! authorization, then one store question (credential-stuffing lockout and
//! request rate). Pure over (snapshot, store, header), so it is benchmarked
//! as the per-request hot path.

use crate::auth::{AuthFailure, Identity};
use crate::config::snapshot::Route;
use crate::config::snapshot::Snapshot;
use crate::ctx::RequestCtx;
use crate::edge::framing;
use crate::error::GatewayError;
use crate::limits::rate::RateDecision;
use crate::limits::store::Store;
use crate::limits::types::{AdmitQuery, AdmitVerdict, FailedAuthQuery, KeyRateQuery, RateQuery};
use crate::sys::clock;
use crate::{authz, router};
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// Why a request was refused, with what the audit log needs.
#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub audit: Option<AuditEvent>,
}

#[derive(Debug)]
pub enum AuditEvent {
    AuthFailed(AuthFailure),
    Denied(&'static str),
    /// Refused unauthenticated: too many failed authentications from this IP.
    AuthBlocked,
}

/// What admission decided for a request it let through.
#[derive(Debug)]
#[must_use]
pub enum Admitted {
    /// Every question was asked and answered: serve the request.
    Done,
    /// An LLM call in redis mode: its store question (lockout and request
    /// rate) rides on the call's reservation, one round trip for both.
    Pending(Question),
}

/// An admitted LLM call's store question, left for its reservation to ask
/// (see [`admit`]). Consumed by [`Question::query`] + [`Question::judge`]
/// with the reservation, or on its own by [`Question::ask`].
#[derive(Debug, Clone, Copy)]
pub struct Question {
    failed_auth: Option<FailedAuthQuery>,
    /// `auth.failed_auth_per_ip_per_minute` when the question was left.
    stuffing_limit: Option<u32>,
}

impl From<GatewayError> for Refusal {
    fn from(error: GatewayError) -> Self {
        Refusal { error, audit: None }
    }
}

/// Fills `ctx` (route, upstream path, identity, rate decision) as it goes,
/// so a refusal is logged with whatever was learnt before it.
///
/// The store is asked once per request, after the local checks (route,
/// credentials, authorization): that single question counts the request
/// rate, records a failed authentication and reads the client IP's lockout,
/// so in redis mode one round trip decides. A locked-out IP is answered 429
/// whatever its credentials were, so a guessed key still cannot be
/// confirmed.
///
/// In redis mode an authorized LLM call's question is left pending
/// ([`Admitted::Pending`]): its reservation asks it in the same round trip
/// (`Store::admit_and_reserve`), and a refusal before the reservation asks
/// it first ([`Question::ask`]), so a rate-limited or locked-out caller is
/// still answered 429 before anything else.
pub async fn admit(
    store: &Store,
    client_ip: Option<IpAddr>,
    req: &RequestHeader,
    raw_head: impl FnOnce() -> Option<Bytes>,
    ctx: &mut RequestCtx,
) -> Result<Admitted, Refusal> {
    let snapshot = ctx.snapshot.clone();
    framing::check(req, snapshot.server(), raw_head)?;
    let stuffing_limit = snapshot.config.auth.failed_auth_per_ip_per_minute;
    let stuffing = |record: bool| match (stuffing_limit, client_ip) {
        (Some(limit), Some(ip)) => Some(FailedAuthQuery { ip, limit, record }),
        _ => None,
    };
    let now = clock::unix_secs().max(0).unsigned_abs();

    let path =
        router::normalize(req.uri.path()).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let method = req.method.as_str();
    let (route_index, params) = match router::lookup(&snapshot.routes, &path.segments, method) {
        router::RouteLookup::Found { index, params, .. } => (index, params),
        router::RouteLookup::MethodNotAllowed { allow } => {
            let query = AdmitQuery {
                failed_auth: stuffing(false),
                rate: None,
            };
            refuse_if_blocked(store, &query, now, stuffing_limit, ctx).await?;
            return Err(GatewayError::MethodNotAllowed {
                method: method.to_string(),
                allow,
            }
            .into());
        }
        router::RouteLookup::NotFound => {
            let query = AdmitQuery {
                failed_auth: stuffing(false),
                rate: None,
            };
            refuse_if_blocked(store, &query, now, stuffing_limit, ctx).await?;
            return Err(GatewayError::NoRoute(path.encoded).into());
        }
    };
    ctx.route_index = Some(route_index);
    ctx.upstream_uri = Some(upstream_uri(
        path.encoded,
        req.uri.query(),
        snapshot.server(),
    )?);
    let route = &snapshot.routes[route_index];

    let identity =
        match snapshot
            .auth
            .authenticate(req, clock::unix_secs(), ctx.made_keys.as_deref())
        {
            Ok(identity) => identity,
            Err(failure) => {
                // Only a presented, wrong credential counts as an attempt.
                let query = AdmitQuery {
                    failed_auth: stuffing(failure.is_attempt()),
                    rate: None,
                };
                refuse_if_blocked(store, &query, now, stuffing_limit, ctx).await?;
                return Err(Refusal {
                    error: match failure {
                        AuthFailure::Missing => GatewayError::MissingCredentials,
                        AuthFailure::InvalidApiKey { .. } => GatewayError::InvalidApiKey,
                        AuthFailure::InvalidToken { .. } => GatewayError::InvalidToken,
                        AuthFailure::TokenExpired { .. } => GatewayError::TokenExpired,
                    },
                    audit: Some(AuditEvent::AuthFailed(failure)),
                });
            }
        };
    ctx.identity = Some(identity.clone());

    let authorized = authz::authorize(&route.roles, route.owner.as_ref(), &identity, &params);
    if authorized.is_ok() && route.is_llm() && store.is_shared() {
        return Ok(Admitted::Pending(Question {
            failed_auth: stuffing(false),
            stuffing_limit,
        }));
    }
    let query = AdmitQuery {
        failed_auth: stuffing(false),
        // A denied request is not counted against the caller's rate.
        rate: authorized
            .is_ok()
            .then(|| rate_query(&snapshot, route, &identity)),
    };
    let verdict = refuse_if_blocked(store, &query, now, stuffing_limit, ctx).await?;
    authorized.map_err(|denial| Refusal {
        error: GatewayError::Forbidden(denial.message(&route.name)),
        audit: Some(AuditEvent::Denied(denial.reason())),
    })?;
    judge_rate(verdict, &identity, ctx)?;
    if let Some(pool) = route.pool() {
        ctx.retries_left = pool.retries();
    }
    Ok(Admitted::Done)
}

/// The normalised path (and the client's query) as the upstream target.
/// One that cannot be represented is refused, never replaced by the raw
/// target (fail closed); `server.max_uri_bytes` is capped so that the
/// re-encoded path (at most 3x the raw one) always fits.
pub fn upstream_uri(
    encoded_path: String,
    query: Option<&str>,
    server: &crate::config::schema::ServerConfig,
) -> Result<http::Uri, GatewayError> {
    let target = match query {
        Some(q) => format!("{encoded_path}?{q}"),
        None => encoded_path,
    };
    // `http::Uri` holds at most u16::MAX - 1 bytes.
    let too_long = target.len() >= usize::from(u16::MAX);
    http::Uri::try_from(target).map_err(|_| {
        if too_long {
            GatewayError::UriTooLong {
                limit: server.max_uri_bytes,
            }
        } else {
            GatewayError::BadRequest("the normalised path is not a valid request target".into())
        }
    })
}

/// The request-rate side of the store question of `identity` on `route`.
pub fn rate_query<'a>(
    snapshot: &'a Snapshot,
    route: &'a Route,
    identity: &'a Identity,
) -> RateQuery<'a> {
    RateQuery {
        user: &identity.user,
        tenant: &identity.tenant,
        route: &route.name,
        route_limit: route.rate_limit,
        default_limit: snapshot.default_rate_limit(&identity.user),
        enforced: match route.rate_limit {
            Some(_) => route.rate_limit_enforced,
            None => snapshot.default_rate_limit_enforced(),
        },
        key: identity
            .policy
            .as_deref()
            .and_then(|p| p.rate_limit)
            .map(|r| KeyRateQuery {
                id: &identity.key_id,
                limit: r.requests_per_minute,
                enforced: r.enforce,
            }),
    }
}

impl Question {
    /// The store question, for `identity` on `route`.
    pub fn query<'a>(
        &self,
        snapshot: &'a Snapshot,
        route: &'a Route,
        identity: &'a Identity,
    ) -> AdmitQuery<'a> {
        AdmitQuery {
            failed_auth: self.failed_auth,
            rate: Some(rate_query(snapshot, route, identity)),
        }
    }

    /// Refuses as admission would have: the lockout first, then the rate.
    pub fn judge(
        &self,
        verdict: AdmitVerdict,
        identity: &Identity,
        ctx: &mut RequestCtx,
    ) -> Result<(), Refusal> {
        if let (Some(retry_after), Some(limit)) = (verdict.blocked_retry_after, self.stuffing_limit)
        {
            return Err(locked_out(retry_after, limit, ctx));
        }
        judge_rate(verdict, identity, ctx)
    }

    /// Asks the question on its own, when the call is refused before its
    /// reservation: the caller learns it is over its rate (or locked out)
    /// before learning anything about its request.
    pub async fn ask(self, store: &Store, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let snapshot = ctx.snapshot.clone();
        let (Some(identity), Some(route)) = (ctx.identity.clone(), ctx.route_index) else {
            return Ok(());
        };
        let Some(route) = snapshot.routes.get(route) else {
            return Ok(());
        };
        let query = self.query(&snapshot, route, &identity);
        let now = clock::unix_secs().max(0).unsigned_abs();
        let verdict = store
            .admit(&query, now)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        self.judge(verdict, &identity, ctx)
    }
}

/// Records the rate decision (for the `RateLimit` headers) and refuses
/// with 429 when it is over: the user's counter, then the key's own. A
/// limit in shadow mode (`enforce: false`) never refuses and sends no
/// headers (the client sees what it would without it); a refusal it would
/// have answered is counted and logged. With both limits enforced, the
/// headers describe the one with fewer requests left.
fn judge_rate(
    verdict: AdmitVerdict,
    identity: &Identity,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    let mut shown: Option<RateDecision> = None;
    let mut refused = None;
    for (decision, who) in [(verdict.rate, "user"), (verdict.key_rate, "key")] {
        let Some(decision) = decision else {
            continue;
        };
        if !decision.enforced {
            if !decision.allowed {
                ctx.record_shadow_refusal(RATE_LIMITED);
            }
            continue;
        }
        if !decision.allowed && refused.is_none() {
            let id = if who == "user" {
                &identity.user
            } else {
                &identity.key_id
            };
            refused = Some(GatewayError::RateLimited {
                message: format!(
                    "request rate limit of {} per minute exceeded for {who} {id}",
                    decision.limit
                ),
                retry_after: decision.reset_secs,
            });
            shown = Some(decision);
        } else if refused.is_none()
            && shown
                .as_ref()
                .is_none_or(|s| decision.remaining < s.remaining)
        {
            shown = Some(decision);
        }
    }
    if shown.is_some() {
        ctx.rate = shown;
    }
    match refused {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// `GatewayError::RateLimited`'s code, for a refusal never made.
const RATE_LIMITED: &str = "rate_limited";

fn locked_out(retry_after: u64, limit: u32, ctx: &mut RequestCtx) -> Refusal {
    ctx.rate = Some(RateDecision {
        policy: "failed_auth".into(),
        limit: limit.into(),
        remaining: 0,
        reset_secs: retry_after,
        allowed: false,
        enforced: true,
    });
    Refusal {
        error: GatewayError::RateLimited {
            message: "too many failed authentication attempts from this address".into(),
            retry_after,
        },
        audit: Some(AuditEvent::AuthBlocked),
    }
}

/// Asks the store, and refuses with 429 when the client IP is locked out
/// (credential-stuffing guard), or 503 when the store is down under
/// `on_store_error: deny`.
async fn refuse_if_blocked(
    store: &Store,
    query: &AdmitQuery<'_>,
    now: u64,
    stuffing_limit: Option<u32>,
    ctx: &mut RequestCtx,
) -> Result<AdmitVerdict, Refusal> {
    if query.failed_auth.is_none() && query.rate.is_none() {
        return Ok(AdmitVerdict::default());
    }
    let verdict = store
        .admit(query, now)
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    if let (Some(retry_after), Some(limit)) = (verdict.blocked_retry_after, stuffing_limit) {
        return Err(locked_out(retry_after, limit, ctx));
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests;
