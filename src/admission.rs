//! The request-header decisions, in order: framing, route, identity,
//! authorization, request rate. Pure over (snapshot, limiter, header), so
//! it is benchmarked as the per-request hot path.

use crate::auth::stuffing::FailedAuthGuard;
use crate::auth::AuthFailure;
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::limits::rate::{RateDecision, RequestLimiter};
use crate::{authz, clock, framing, router};
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

impl From<GatewayError> for Refusal {
    fn from(error: GatewayError) -> Self {
        Refusal { error, audit: None }
    }
}

/// Fills `ctx` (route, upstream path, identity, rate decision) as it goes,
/// so a refusal is logged with whatever was learnt before it.
pub fn admit(
    limiter: &RequestLimiter,
    failed_auth: &FailedAuthGuard,
    client_ip: Option<IpAddr>,
    req: &RequestHeader,
    raw_head: impl FnOnce() -> Option<Bytes>,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    let snapshot = ctx
        .snapshot
        .clone()
        .ok_or_else(|| GatewayError::Internal("no config snapshot".into()))?;
    framing::check(req, snapshot.server(), raw_head)?;
    // Credential-stuffing guard, before anything else: a blocked IP gets 429
    // on every request and its credentials are not even looked at.
    let stuffing_limit = snapshot.config.auth.failed_auth_per_ip_per_minute;
    if let (Some(limit), Some(ip)) = (stuffing_limit, client_ip) {
        if let Some(retry_after) = failed_auth.blocked(ip, limit) {
            ctx.rate = Some(RateDecision {
                policy: "failed_auth".into(),
                limit: limit.into(),
                remaining: 0,
                reset_secs: retry_after,
                allowed: false,
            });
            return Err(Refusal {
                error: GatewayError::RateLimited {
                    message: "too many failed authentication attempts from this address".into(),
                    retry_after,
                },
                audit: Some(AuditEvent::AuthBlocked),
            });
        }
    }

    let path =
        router::normalize(req.uri.path()).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let method = req.method.as_str();
    let (route_index, params) = match router::lookup(&snapshot.routes, &path.segments, method) {
        router::RouteLookup::Found { index, params, .. } => (index, params),
        router::RouteLookup::MethodNotAllowed { allow } => {
            return Err(GatewayError::MethodNotAllowed {
                method: method.to_string(),
                allow,
            }
            .into())
        }
        router::RouteLookup::NotFound => return Err(GatewayError::NoRoute(path.encoded).into()),
    };
    ctx.route_index = Some(route_index);
    ctx.upstream_path = Some(match req.uri.query() {
        Some(q) => format!("{}?{q}", path.encoded),
        None => path.encoded,
    });
    let route = &snapshot.routes[route_index];

    let identity = snapshot
        .auth
        .authenticate(req, clock::unix_secs())
        // Counted after the fact: only a presented, wrong credential counts.
        .inspect_err(|failure| {
            if let (Some(_), Some(ip), true) = (stuffing_limit, client_ip, failure.is_attempt()) {
                failed_auth.record_failure(ip);
            }
        })
        .map_err(|failure| Refusal {
            error: match failure {
                AuthFailure::Missing => GatewayError::MissingCredentials,
                AuthFailure::InvalidApiKey { .. } => GatewayError::InvalidApiKey,
                AuthFailure::InvalidToken { .. } => GatewayError::InvalidToken,
                AuthFailure::TokenExpired { .. } => GatewayError::TokenExpired,
            },
            audit: Some(AuditEvent::AuthFailed(failure)),
        })?;
    ctx.identity = Some(identity.clone());

    authz::authorize(route, &identity, &params).map_err(|denial| Refusal {
        error: GatewayError::Forbidden(denial.message(&route.name)),
        audit: Some(AuditEvent::Denied(denial.reason())),
    })?;

    if let Some(decision) = limiter.check(
        &identity.user,
        &route.name,
        route.rate_limit,
        snapshot.default_rate_limit(&identity.user),
    ) {
        let refused = (!decision.allowed).then(|| GatewayError::RateLimited {
            message: format!(
                "request rate limit of {} per minute exceeded for user {}",
                decision.limit, identity.user
            ),
            retry_after: decision.reset_secs,
        });
        ctx.rate = Some(decision);
        if let Some(error) = refused {
            return Err(error.into());
        }
    }
    if let Some(pool) = route.upstream.as_ref().and_then(|u| snapshot.pools.get(u)) {
        ctx.retries_left = pool.retries();
    }
    Ok(())
}
