//! The in-process counters: the whole store in local mode, the fallback
//! of the Redis store under `on_store_error: allow`.

use crate::limits::budget::{BudgetLimits, Charge, ScopeKey};
use crate::limits::failed_auth::FailedAuthGuard;
use crate::limits::local_store::LocalStore;
use crate::limits::rate::{RateDecision, RequestLimiter};
use crate::limits::types::{AdmitQuery, AdmitVerdict, AdmittedReservation};

/// The in-process counters: the whole store in local mode, the fallback of
/// the Redis store under `on_store_error: allow`.
#[derive(Default)]
pub struct LocalCounters {
    pub limiter: RequestLimiter,
    pub failed_auth: FailedAuthGuard,
    pub budgets: LocalStore,
}

impl LocalCounters {
    pub fn admit(&self, q: &AdmitQuery<'_>) -> AdmitVerdict {
        let blocked_retry_after = q.failed_auth.and_then(|fa| {
            let blocked = self.failed_auth.blocked(fa.ip, fa.limit);
            if fa.record {
                self.failed_auth.record_failure(fa.ip);
            }
            blocked
        });
        let rate = q.rate.and_then(|r| {
            self.limiter
                .check(r.user, r.route, r.route_limit, r.default_limit)
                .map(|d| RateDecision {
                    enforced: r.enforced,
                    ..d
                })
        });
        let key_rate = q.rate.and_then(|r| r.key).map(|k| RateDecision {
            enforced: k.enforced,
            ..self.limiter.check_key(k.id, k.limit)
        });
        AdmitVerdict {
            blocked_retry_after,
            rate,
            key_rate,
        }
    }

    /// [`Self::admit`], then the reservation only if it admits.
    pub fn admit_and_reserve(
        &self,
        q: &AdmitQuery<'_>,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
    ) -> AdmittedReservation {
        let verdict = self.admit(q);
        let reserved = verdict
            .admits()
            .then(|| self.budgets.reserve(scopes, charge, now_unix));
        AdmittedReservation { verdict, reserved }
    }
}
