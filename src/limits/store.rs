//! The budget store abstraction and the `Reservation` guard.
//!
//! A store counts settled usage per scope and window plus in-flight
//! reservations. The gateway reserves an estimate before an LLM call and
//! settles the real usage after it; the guard makes sure a reservation is
//! always either settled or released.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::limits::budget::{BudgetLimits, BudgetRefusal, Charge, ScopeKey};

/// Why `reserve` did not reserve anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// A budget would be exceeded (429 with `Retry-After`).
    #[error("{0}")]
    Refused(BudgetRefusal),
    /// The backend failed; the caller applies `on_store_error` (deny/allow).
    #[error("budget store unavailable: {0}")]
    Unavailable(String),
}

/// Backend failure outside of `reserve`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("budget store unavailable: {0}")]
    Unavailable(String),
}

/// Settled usage of one scope in the windows current at a given time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendInWindows {
    pub tokens_minute: u64,
    pub tokens_day: u64,
    pub micro_usd_month: u64,
}

/// Usage of one scope for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScopeUsage {
    /// Settled tokens in the current minute / day, micro-USD in the current month.
    pub tokens_minute: u64,
    pub tokens_day: u64,
    pub micro_usd_month: u64,
    /// Held by in-flight requests; counted against every current window.
    pub reserved_tokens: u64,
    pub reserved_micro_usd: u64,
}

/// The raw record of a successful reservation, returned by `Store::reserve`.
///
/// Deliberately not `Clone`: settling or releasing consumes it, so a
/// reservation cannot be undone twice. Use the [`Reservation`] guard rather
/// than handling tickets directly.
#[derive(Debug, PartialEq, Eq)]
pub struct ReservationTicket {
    /// Unique per store instance.
    pub id: u64,
    /// Scopes the charge was reserved against, in request order.
    pub scopes: Vec<ScopeKey>,
    pub charge: Charge,
    /// `now_unix` at reserve time, so a backend can locate per-window holds.
    pub reserved_at: u64,
}

/// Budget counters shared by all workers. Object-safe; used as `Arc<dyn Store>`.
///
/// Methods are synchronous: the local store is in-memory, and a networked
/// store is expected to be wrapped in a blocking task by the caller.
pub trait Store: Send + Sync {
    /// Atomically reserves `charge` in every scope, or nothing.
    ///
    /// For every scope and limited window, fails when
    /// `settled + reserved + charge > limit`. When several limits fail, the
    /// first one is reported, in `scopes` order (the gateway passes user, then
    /// tenant) and minute → day → month within a scope.
    fn reserve(
        &self,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
    ) -> Result<ReservationTicket, ReserveError>;

    /// Replaces the reservation by the real usage, counted in the windows
    /// current at `now_unix`. `actual` may exceed the reservation and push
    /// usage over the limit; later requests are then refused.
    fn settle(
        &self,
        ticket: ReservationTicket,
        actual: Charge,
        now_unix: u64,
    ) -> Result<(), StoreError>;

    /// Drops the reservation without recording usage.
    fn release(&self, ticket: ReservationTicket) -> Result<(), StoreError>;

    /// Current usage of `scope` (zeros for an unknown scope).
    fn usage(&self, scope: &ScopeKey, now_unix: u64) -> Result<ScopeUsage, StoreError>;

    /// Seeds settled usage of the windows current at `now_unix` (start-up,
    /// from the ledger). Replaces any settled usage held for those scopes in
    /// those windows, so it is idempotent; reservations are untouched.
    fn restore(
        &self,
        spend: &[(ScopeKey, SpendInWindows)],
        now_unix: u64,
    ) -> Result<(), StoreError>;
}

/// An open reservation that is settled explicitly or released on drop.
///
/// Keep it in the request context: if the upstream fails, the client
/// disconnects mid-stream or the task panics, dropping it returns the
/// reserved budget.
pub struct Reservation {
    store: Arc<dyn Store>,
    ticket: Option<ReservationTicket>,
}

impl Reservation {
    /// Reserves `charge` in every scope and wraps the ticket in a guard.
    pub fn reserve(
        store: &Arc<dyn Store>,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
    ) -> Result<Reservation, ReserveError> {
        let ticket = store.reserve(scopes, charge, now_unix)?;
        Ok(Reservation {
            store: Arc::clone(store),
            ticket: Some(ticket),
        })
    }

    /// The reserved (estimated) charge.
    pub fn charge(&self) -> Charge {
        self.ticket.as_ref().map(|t| t.charge).unwrap_or_default()
    }

    pub fn id(&self) -> u64 {
        self.ticket.as_ref().map(|t| t.id).unwrap_or_default()
    }

    /// Records the real usage in place of the reservation.
    pub fn settle(mut self, actual: Charge, now_unix: u64) -> Result<(), StoreError> {
        match self.ticket.take() {
            Some(ticket) => self.store.settle(ticket, actual, now_unix),
            None => Ok(()),
        }
    }

    /// Returns the reservation without usage (same as dropping, but reports errors).
    pub fn release(mut self) -> Result<(), StoreError> {
        match self.ticket.take() {
            Some(ticket) => self.store.release(ticket),
            None => Ok(()),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let id = ticket.id;
            if let Err(e) = self.store.release(ticket) {
                tracing::warn!(reservation = id, error = %e, "failed to release budget reservation");
            }
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
    use std::sync::Mutex;

    /// Records which calls reached the store.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
        fn push(&self, s: String) {
            if let Ok(mut c) = self.calls.lock() {
                c.push(s);
            }
        }
    }

    impl Store for Recorder {
        fn reserve(
            &self,
            scopes: &[(ScopeKey, BudgetLimits)],
            charge: Charge,
            now_unix: u64,
        ) -> Result<ReservationTicket, ReserveError> {
            self.push(format!("reserve {}", charge.tokens));
            Ok(ReservationTicket {
                id: 7,
                scopes: scopes.iter().map(|(k, _)| k.clone()).collect(),
                charge,
                reserved_at: now_unix,
            })
        }
        fn settle(&self, t: ReservationTicket, actual: Charge, _: u64) -> Result<(), StoreError> {
            self.push(format!("settle {} {}", t.id, actual.tokens));
            Ok(())
        }
        fn release(&self, t: ReservationTicket) -> Result<(), StoreError> {
            self.push(format!("release {}", t.id));
            Err(StoreError::Unavailable("down".into()))
        }
        fn usage(&self, _: &ScopeKey, _: u64) -> Result<ScopeUsage, StoreError> {
            Ok(ScopeUsage::default())
        }
        fn restore(&self, _: &[(ScopeKey, SpendInWindows)], _: u64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn charge(tokens: u64) -> Charge {
        Charge {
            tokens,
            micro_usd: 0,
        }
    }

    #[test]
    fn guard_can_live_in_a_shared_request_context() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Reservation>();
        assert_send_sync::<Arc<dyn Store>>();
    }

    #[test]
    fn settle_does_not_release_again_on_drop() {
        let rec = Arc::new(Recorder::default());
        let store: Arc<dyn Store> = rec.clone();
        let r = Reservation::reserve(&store, &[], charge(5), 0);
        assert!(r.is_ok());
        if let Ok(r) = r {
            assert_eq!(r.charge(), charge(5));
            assert_eq!(r.id(), 7);
            assert!(r.settle(charge(3), 1).is_ok());
        }
        assert_eq!(rec.calls(), vec!["reserve 5", "settle 7 3"]);
    }

    #[test]
    fn drop_releases_and_swallows_errors() {
        let rec = Arc::new(Recorder::default());
        let store: Arc<dyn Store> = rec.clone();
        drop(Reservation::reserve(&store, &[], charge(5), 0));
        assert_eq!(rec.calls(), vec!["reserve 5", "release 7"]);
    }

    #[test]
    fn explicit_release_reports_errors_once() {
        let rec = Arc::new(Recorder::default());
        let store: Arc<dyn Store> = rec.clone();
        let released = Reservation::reserve(&store, &[], charge(1), 0).map(Reservation::release);
        assert!(matches!(released, Ok(Err(StoreError::Unavailable(_)))));
        assert_eq!(rec.calls(), vec!["reserve 1", "release 7"]);
    }

    #[test]
    fn release_on_panic_unwind() {
        let rec = Arc::new(Recorder::default());
        let store: Arc<dyn Store> = rec.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _r = Reservation::reserve(&store, &[], charge(2), 0);
            panic!("handler blew up");
        }));
        assert!(result.is_err());
        assert_eq!(rec.calls(), vec!["reserve 2", "release 7"]);
    }
}
