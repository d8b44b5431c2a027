//! The store seam: every counter a request decision reads or writes —
//! request rate per user and route, failed authentications per client IP,
//! token and USD budgets — behind one async interface with two backends.
//!
//! `Store` is an enum rather than a trait object: local mode, the hot path
//! of every single-box install, then runs its synchronous counters inside
//! an `async fn` that never suspends, with no boxed future per call (the
//! `hot_path` bench measures it). Redis mode pays one network round trip
//! per decision.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::budget::{BudgetLimits, BudgetRefusal, Charge, ScopeKey};
use crate::limits::local_counters::LocalCounters;
use crate::limits::redis_store::RedisStore;
use crate::limits::types::{
    AdmitQuery, AdmitVerdict, AdmittedReservation, Backend, ReservationTicket, ReserveError,
    ScopeUsage, SettledScope, StoreError, TokensInUse,
};

/// The counters of this gateway: in process, or shared through Redis.
///
/// Redis calls are boxed: their futures are kilobytes (pipelines, retries)
/// and would otherwise size, and be copied into, every request's futures in
/// local mode too; a network round trip dwarfs the allocation.
// One per process, behind an `Arc`: the variants' sizes do not matter, and
// unboxed variants keep every call one match away from the counters.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Local(LocalCounters),
    Redis(RedisStore),
}

impl Store {
    pub fn local() -> Store {
        Store::Local(LocalCounters::default())
    }

    /// The in-process counters: the store itself in local mode, the
    /// fallback in redis mode.
    pub fn local_counters(&self) -> &LocalCounters {
        match self {
            Store::Local(local) => local,
            Store::Redis(redis) => redis.fallback(),
        }
    }

    /// `Local` only in local mode: what the ledger re-seeds at start-up.
    pub fn as_local(&self) -> Option<&LocalCounters> {
        match self {
            Store::Local(local) => Some(local),
            Store::Redis(_) => None,
        }
    }

    /// Counts a request against its rate limit and the failed-auth guard,
    /// and says whether it may pass: one round trip in redis mode.
    pub async fn admit(
        &self,
        q: &AdmitQuery<'_>,
        now_unix: u64,
    ) -> Result<AdmitVerdict, StoreError> {
        match self {
            Store::Local(local) => Ok(local.admit(q)),
            Store::Redis(redis) => Box::pin(redis.admit(q, now_unix)).await,
        }
    }

    /// Whether every instance shares these counters (redis): a store
    /// question then costs a network round trip, worth saving.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// [`Self::admit`] and, when it admits, [`Self::reserve`]: one round
    /// trip in redis mode, where an LLM call's admission waits for its
    /// reservation (see `admission::admit`).
    pub async fn admit_and_reserve(
        &self,
        q: &AdmitQuery<'_>,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> Result<AdmittedReservation, StoreError> {
        match self {
            Store::Local(local) => Ok(local.admit_and_reserve(q, scopes, charge, now_unix)),
            Store::Redis(redis) => {
                Box::pin(redis.admit_and_reserve(q, scopes, charge, now_unix, hold)).await
            }
        }
    }

    /// Atomically reserves `charge` in every scope, or nothing.
    ///
    /// For every scope and limited window, fails when
    /// `settled + reserved + charge > limit`. When several limits fail, the
    /// first one is reported, in `scopes` order (the gateway passes user, then
    /// tenant) and minute → day → month within a scope. `hold` bounds how
    /// long a reservation survives an instance that dies before settling it
    /// (Redis; local holds die with the process).
    pub async fn reserve(
        &self,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> Result<ReservationTicket, ReserveError> {
        match self {
            Store::Local(local) => local.budgets.reserve(scopes, charge, now_unix),
            Store::Redis(redis) => Box::pin(redis.reserve(scopes, charge, now_unix, hold)).await,
        }
    }

    /// Replaces the reservation by the real usage, counted in the windows
    /// current at `now_unix`. `actual` may exceed the reservation and push
    /// usage over the limit; later requests are then refused. Returns each
    /// scope's settled spend after it (threshold alerts).
    pub async fn settle(
        &self,
        ticket: ReservationTicket,
        actual: Charge,
        now_unix: u64,
    ) -> Result<Vec<SettledScope>, StoreError> {
        match (self, ticket.backend) {
            (Store::Redis(redis), Backend::Redis) => {
                Box::pin(redis.settle(ticket, actual, now_unix)).await
            }
            _ => self
                .local_counters()
                .budgets
                .settle(ticket, actual, now_unix),
        }
    }

    /// Drops the reservation without recording usage.
    pub async fn release(&self, ticket: ReservationTicket) -> Result<(), StoreError> {
        match (self, ticket.backend) {
            (Store::Redis(redis), Backend::Redis) => Box::pin(redis.release(ticket)).await,
            _ => self.local_counters().budgets.release(ticket),
        }
    }

    /// Claims `token` for `ttl_secs` across every instance: `Some(true)`
    /// for the first claim, `Some(false)` when another made it; `None` in
    /// local mode (the caller keeps its own record). A Redis failure is an
    /// error: the caller decides.
    pub async fn claim_once(
        &self,
        tenant: &str,
        token: &str,
        ttl_secs: u64,
    ) -> Result<Option<bool>, StoreError> {
        match self {
            Store::Local(_) => Ok(None),
            Store::Redis(redis) => Box::pin(redis.claim_once(tenant, token, ttl_secs))
                .await
                .map(Some),
        }
    }

    /// Current usage of `scope` (zeros for an unknown scope) and the backend
    /// that answered. `tenant` locates a user's keys in Redis.
    pub async fn usage(
        &self,
        scope: &ScopeKey,
        tenant: &str,
        now_unix: u64,
    ) -> Result<(ScopeUsage, Backend), StoreError> {
        match self {
            Store::Local(local) => Ok((local.budgets.usage(scope, now_unix), Backend::Local)),
            Store::Redis(redis) => Box::pin(redis.usage(scope, tenant, now_unix)).await,
        }
    }

    /// Releases without waiting: from `Drop`, which cannot await. Local
    /// tickets are released at once; Redis ones on the current runtime, or
    /// left to expire when there is none.
    fn release_detached(self: &Arc<Self>, ticket: ReservationTicket) {
        if ticket.backend == Backend::Local {
            self.local_counters()
                .budgets
                .release(ticket)
                .unwrap_or_else(
                    |e| tracing::warn!(error = %e, "failed to release budget reservation"),
                );
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(self);
            runtime.spawn(async move {
                let id = ticket.id;
                if let Err(e) = store.release(ticket).await {
                    tracing::warn!(reservation = id, error = %e, "failed to release budget reservation");
                }
            });
        }
    }
}

/// An open reservation that is settled explicitly or released on drop.
///
/// Keep it in the request context: if the upstream fails, the client
/// disconnects mid-stream or the task panics, dropping it returns the
/// reserved budget.
pub struct Reservation {
    store: Arc<Store>,
    ticket: Option<ReservationTicket>,
}

impl Reservation {
    /// Reserves `charge` in every scope and wraps the ticket in a guard.
    pub async fn reserve(
        store: &Arc<Store>,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> Result<Reservation, ReserveError> {
        let ticket = store.reserve(scopes, charge, now_unix, hold).await?;
        Ok(Reservation::hold(store, ticket))
    }

    /// Guards a ticket the store returned (`Store::admit_and_reserve`).
    pub fn hold(store: &Arc<Store>, ticket: ReservationTicket) -> Reservation {
        Reservation {
            store: Arc::clone(store),
            ticket: Some(ticket),
        }
    }

    /// The reserved (estimated) charge.
    pub fn charge(&self) -> Charge {
        self.ticket.as_ref().map(|t| t.charge).unwrap_or_default()
    }

    pub fn id(&self) -> u64 {
        self.ticket.as_ref().map(|t| t.id).unwrap_or_default()
    }

    /// Token use of `scope` as reserving saw it, if `scope` came first.
    pub fn tokens_in_use(&self, scope: &ScopeKey) -> Option<TokensInUse> {
        self.ticket
            .as_ref()
            .filter(|t| t.scopes.first() == Some(scope))
            .map(|t| t.tokens_in_use)
    }

    /// The refusal a budget in shadow mode would have answered.
    pub fn shadow_refusal(&self) -> Option<&BudgetRefusal> {
        self.ticket.as_ref().and_then(|t| t.shadow.as_ref())
    }

    /// Which backend holds it (its errors are counted under that name).
    pub fn backend(&self) -> Backend {
        self.ticket.as_ref().map_or(Backend::Local, |t| t.backend)
    }

    /// Records the real usage in place of the reservation; each scope's
    /// spend after it.
    pub async fn settle(
        mut self,
        actual: Charge,
        now_unix: u64,
    ) -> Result<Vec<SettledScope>, StoreError> {
        match self.ticket.take() {
            Some(ticket) => self.store.settle(ticket, actual, now_unix).await,
            None => Ok(Vec::new()),
        }
    }

    /// Returns the reservation without usage (same as dropping, but reports errors).
    pub async fn release(mut self) -> Result<(), StoreError> {
        match self.ticket.take() {
            Some(ticket) => self.store.release(ticket).await,
            None => Ok(()),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.store.release_detached(ticket);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::budget::LimitKind;
    use crate::limits::types::{FailedAuthQuery, RateQuery};
    use std::net::IpAddr;

    const NOW: u64 = 1_715_774_400;
    const HOLD: Duration = Duration::from_secs(60);

    fn scopes() -> [(ScopeKey, BudgetLimits); 1] {
        [(
            ScopeKey::User("alice".into()),
            BudgetLimits {
                tokens_per_minute: Some(100),
                ..Default::default()
            },
        )]
    }

    fn charge(tokens: u64) -> Charge {
        Charge {
            tokens,
            micro_usd: 0,
        }
    }

    fn reserved(store: &Store) -> u64 {
        store
            .local_counters()
            .budgets
            .usage(&ScopeKey::User("alice".into()), NOW)
            .reserved_tokens
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    fn reserve_local(store: &Arc<Store>, tokens: u64) -> Result<Reservation, ReserveError> {
        block_on(Reservation::reserve(
            store,
            &scopes(),
            charge(tokens),
            NOW,
            HOLD,
        ))
    }

    #[test]
    fn guard_can_live_in_a_shared_request_context() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Reservation>();
        assert_send_sync::<Arc<Store>>();
    }

    #[test]
    fn settle_does_not_release_again_on_drop() {
        let store = Arc::new(Store::local());
        let r = reserve_local(&store, 60).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.charge(), charge(60));
        assert_eq!(r.backend(), Backend::Local);
        assert!(block_on(r.settle(charge(30), NOW)).is_ok());
        // Released once by settle: 30 settled + 70 free, not 30 + 60 more back.
        assert_eq!(reserved(&store), 0);
        let refused = block_on(store.reserve(&scopes(), charge(71), NOW, HOLD));
        assert!(
            matches!(refused, Err(ReserveError::Refused(r)) if r.kind == LimitKind::TokensPerMinute && r.used == 30)
        );
    }

    #[test]
    fn drop_releases() {
        let store = Arc::new(Store::local());
        let r = reserve_local(&store, 60);
        assert!(r.is_ok());
        assert_eq!(reserved(&store), 60);
        drop(r);
        assert_eq!(reserved(&store), 0);
    }

    #[test]
    fn release_on_panic_unwind() {
        let store = Arc::new(Store::local());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _r = reserve_local(&store, 5);
            panic!("handler blew up");
        }));
        assert!(result.is_err());
        assert_eq!(reserved(&store), 0);
    }

    #[test]
    fn local_admit_and_reserve_holds_only_what_it_admits() {
        let store = Store::local();
        let q = AdmitQuery {
            failed_auth: None,
            rate: Some(RateQuery {
                user: "alice",
                tenant: "acme",
                route: "chat",
                route_limit: Some(1),
                default_limit: None,
                enforced: true,
                key: None,
            }),
        };
        let first = block_on(store.admit_and_reserve(&q, &scopes(), charge(10), NOW, HOLD))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(first.verdict.admits());
        assert!(matches!(first.reserved, Some(Ok(ref t)) if t.charge == charge(10)));
        let second = block_on(store.admit_and_reserve(&q, &scopes(), charge(10), NOW, HOLD))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!second.verdict.admits());
        assert!(second.reserved.is_none());
        assert_eq!(reserved(&store), 10);
    }

    #[test]
    fn local_admit_counts_rate_and_failed_auth() {
        let store = Store::local();
        let ip: IpAddr = IpAddr::from([192, 0, 2, 9]);
        let rate = RateQuery {
            user: "bob",
            tenant: "acme",
            route: "r",
            route_limit: Some(2),
            default_limit: None,
            enforced: true,
            key: None,
        };
        for expected in [true, true, false] {
            let v = block_on(store.admit(
                &AdmitQuery {
                    failed_auth: None,
                    rate: Some(rate),
                },
                NOW,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v.rate.map(|r| r.allowed), Some(expected));
        }
        let fail = FailedAuthQuery {
            ip,
            limit: 1,
            record: true,
        };
        let q = AdmitQuery {
            failed_auth: Some(fail),
            rate: None,
        };
        let first = block_on(store.admit(&q, NOW)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.blocked_retry_after, None);
        let second = block_on(store.admit(&q, NOW)).unwrap_or_else(|e| panic!("{e}"));
        assert!(second.blocked_retry_after.is_some());
    }
}
