//! The types both store backends (local and Redis) and their callers
//! share: the questions (admission, rate, failed authentication), the
//! answers, reservations' raw records and the errors.

use std::net::IpAddr;

use serde::Serialize;

use crate::limits::budget::{BudgetLimits, BudgetRefusal, Charge, LimitKind, ScopeKey};
use crate::limits::rate::RateDecision;
use crate::limits::window::Window;

/// Why `reserve` did not reserve anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// A budget would be exceeded (429 with `Retry-After`).
    #[error("{0}")]
    Refused(BudgetRefusal),
    /// The backend failed and `on_store_error: deny` (503).
    #[error("budget store unavailable: {0}")]
    Unavailable(String),
}

/// Backend failure outside of `reserve`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Settled usage of one scope in the windows current at a given time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendInWindows {
    pub tokens_minute: u64,
    pub tokens_day: u64,
    pub micro_usd_month: u64,
    /// Counted for conversations only (their one USD window).
    pub micro_usd_day: u64,
}

impl SpendInWindows {
    /// The settled amount in the window of `kind`.
    pub fn of(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::TokensPerMinute => self.tokens_minute,
            LimitKind::TokensPerDay => self.tokens_day,
            LimitKind::UsdPerDay => self.micro_usd_day,
            LimitKind::UsdPerMonth => self.micro_usd_month,
        }
    }

    /// The larger of each window's two figures.
    pub fn max(self, other: SpendInWindows) -> SpendInWindows {
        SpendInWindows {
            tokens_minute: self.tokens_minute.max(other.tokens_minute),
            tokens_day: self.tokens_day.max(other.tokens_day),
            micro_usd_month: self.micro_usd_month.max(other.micro_usd_month),
            micro_usd_day: self.micro_usd_day.max(other.micro_usd_day),
        }
    }
}

/// Where Redis mode rebuilds a scope's budget windows that Redis lost:
/// the settled spend the ledger holds for the windows current at
/// `now_unix` (the shared ledger; implemented in `ledger`).
#[async_trait::async_trait]
pub trait SpendSource: Send + Sync {
    async fn spend(&self, scope: &ScopeKey, now_unix: u64) -> Result<SpendInWindows, String>;
}

/// One scope after a settlement: its settled spend in the windows it
/// counts (this call included), what this call added, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledScope {
    pub scope: ScopeKey,
    pub limits: BudgetLimits,
    pub spent: SpendInWindows,
    pub added: Charge,
}

/// Usage of one scope for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScopeUsage {
    /// Settled tokens in the current minute / day, micro-USD in the current month.
    pub tokens_minute: u64,
    pub tokens_day: u64,
    pub micro_usd_month: u64,
    /// Settled micro-USD today (conversations only).
    pub micro_usd_day: u64,
    /// Held by in-flight requests; counted against every current window.
    pub reserved_tokens: u64,
    pub reserved_micro_usd: u64,
}

/// Which backend holds a reservation (in `allow` mode a Redis outage makes
/// the local counters take over, and a ticket must go back where it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Local,
    Redis,
}

impl Backend {
    /// The `store` label of `tollgate_store_errors_total` and `/admin/usage`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Redis => "redis",
        }
    }
}

/// The raw record of a successful reservation, returned by `Store::reserve`.
///
/// Deliberately not `Clone`: settling or releasing consumes it, so a
/// reservation cannot be undone twice. Use the [`Reservation`] guard rather
/// than handling tickets directly.
#[derive(Debug, PartialEq, Eq)]
pub struct ReservationTicket {
    /// Unique per store instance (random in Redis, shared by instances).
    pub id: u64,
    /// Scopes the charge was reserved against, in request order, deduplicated.
    pub scopes: Vec<ScopeKey>,
    /// Each scope's limits (same order): what a settlement's threshold
    /// alerts are measured against.
    pub limits: Vec<BudgetLimits>,
    pub charge: Charge,
    /// `now_unix` at reserve time, so a backend can locate per-window holds.
    pub reserved_at: u64,
    pub backend: Backend,
    /// The first scope's token use as the reservation saw it.
    pub tokens_in_use: TokensInUse,
    /// The refusal a budget in shadow mode (`enforce: false`) would have
    /// answered: the first such, in check order. The charge is held in it
    /// all the same, so its counters show the real use.
    pub shadow: Option<BudgetRefusal>,
}

/// Tokens in use (settled + every hold, this reservation's included) in
/// the first scope's current minute and day, as read while reserving: what
/// the `x-ratelimit-*-tokens` headers report, without a second read of the
/// store (a Redis round trip per LLM call). `None` for a window the
/// backend did not read (Redis reads only windows with a limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokensInUse {
    pub minute: Option<u64>,
    pub day: Option<u64>,
}

impl TokensInUse {
    /// The use in `window`'s token count (the day's for any longer window).
    pub fn of(self, window: Window) -> Option<u64> {
        match window {
            Window::Minute => self.minute,
            _ => self.day,
        }
    }
}

impl From<ScopeUsage> for TokensInUse {
    /// Settled plus held, as a reservation reports it.
    fn from(u: ScopeUsage) -> Self {
        TokensInUse {
            minute: Some(u.tokens_minute.saturating_add(u.reserved_tokens)),
            day: Some(u.tokens_day.saturating_add(u.reserved_tokens)),
        }
    }
}

/// The failed-authentication side of one admission decision.
#[derive(Debug, Clone, Copy)]
pub struct FailedAuthQuery {
    pub ip: IpAddr,
    /// `auth.failed_auth_per_ip_per_minute`.
    pub limit: u32,
    /// Count this request as one more failed attempt.
    pub record: bool,
}

/// The request-rate side of one admission decision.
#[derive(Debug, Clone, Copy)]
pub struct RateQuery<'a> {
    pub user: &'a str,
    /// Redis keys are tagged by tenant (one hash slot per tenant).
    pub tenant: &'a str,
    pub route: &'a str,
    /// The route's own `rate_limit`: counted per route, else on the default counter.
    pub route_limit: Option<u32>,
    pub default_limit: Option<u32>,
    /// The user's limit refuses (`false`: shadow mode, counted only).
    pub enforced: bool,
    /// The API key's own rate, counted next to the user's.
    pub key: Option<KeyRateQuery<'a>>,
}

/// A key's own request rate (`rate_limit` of the key).
#[derive(Debug, Clone, Copy)]
pub struct KeyRateQuery<'a> {
    pub id: &'a str,
    pub limit: u32,
    pub enforced: bool,
}

/// Everything one request's admission asks the store, answered at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitQuery<'a> {
    pub failed_auth: Option<FailedAuthQuery>,
    pub rate: Option<RateQuery<'a>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmitVerdict {
    /// `Some(seconds to the window's end)` when the client IP is locked out.
    pub blocked_retry_after: Option<u64>,
    pub rate: Option<RateDecision>,
    /// The API key's own rate, when it has one.
    pub key_rate: Option<RateDecision>,
}

impl AdmitVerdict {
    /// Neither locked out nor over an enforced request rate.
    pub fn admits(&self) -> bool {
        let within = |r: &Option<RateDecision>| r.as_ref().is_none_or(|r| r.allowed || !r.enforced);
        self.blocked_retry_after.is_none() && within(&self.rate) && within(&self.key_rate)
    }
}

/// An admission asked together with a reservation (`Store::admit_and_reserve`).
#[derive(Debug)]
pub struct AdmittedReservation {
    pub verdict: AdmitVerdict,
    /// The reservation, or why none was made; `None` when the verdict
    /// refuses the call (nothing is held then).
    pub reserved: Option<Result<ReservationTicket, ReserveError>>,
}
