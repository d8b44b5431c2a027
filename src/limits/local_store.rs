//! In-process budget store: one mutex-protected map of per-scope counters.
//!
//! A single mutex is held across the check *and* the reservation for all
//! scopes, which makes `reserve` atomic all-or-none without lock ordering.
//! The critical section is a few hash lookups, far below the cost of the LLM
//! call it guards, so sharding is not worth the complexity.
//!
//! Reservation semantics: a reservation is a window-less hold. While open it
//! counts against whichever minute/day/month is current, and settling or
//! releasing removes exactly what was added, even after a window boundary
//! passed (so there is no drift). Actual usage goes into the windows current
//! at settle time — a long stream that started at 23:59 is billed to the new
//! day, where its tokens were really produced.
//!
//! Memory: an entry exists per scope that spent in a current window it
//! counts or has an open reservation. Every `prune_every` mutating
//! operations (or as many as there are entries, when more: the sweep's
//! cost stays constant per operation), entries with no open reservation
//! and no usage in any current window are dropped, so memory grows only
//! with the users and tenants who spend this month and the conversations
//! that spend today (a conversation counts only its day).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::limits::budget::{BudgetLimits, BudgetRefusal, Charge, LimitKind, ScopeKey};
use crate::limits::types::{
    Backend, ReservationTicket, ReserveError, ScopeUsage, SettledScope, SpendInWindows, StoreError,
    TokensInUse,
};
use crate::limits::window::{seconds_to_reset, window_id, Window};

/// Default number of mutating operations between prune sweeps.
pub const DEFAULT_PRUNE_EVERY: u64 = 4096;
/// Below this many entries the table keeps its capacity after a sweep.
const MIN_KEPT_CAPACITY: usize = 1024;

/// Settled amount in one window; stale once `window` is not the current id.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    window: u64,
    amount: u64,
}

impl Slot {
    fn current(&self, id: u64) -> u64 {
        if self.window == id {
            self.amount
        } else {
            0
        }
    }

    /// True when nothing in this slot can count again: empty, or from an
    /// earlier window (a later one means the clock stepped back: keep it).
    fn is_spent_or_empty(&self, id: u64) -> bool {
        self.amount == 0 || self.window < id
    }

    fn add(&mut self, id: u64, amount: u64) {
        if self.window != id {
            *self = Slot {
                window: id,
                amount: 0,
            };
        }
        self.amount = self.amount.saturating_add(amount);
    }
}

/// Ids of the minute, day and month containing one instant.
#[derive(Debug, Clone, Copy)]
struct WindowIds {
    minute: u64,
    day: u64,
    month: u64,
}

impl WindowIds {
    fn at(now_unix: u64) -> Self {
        WindowIds {
            minute: window_id(Window::Minute, now_unix),
            day: window_id(Window::Day, now_unix),
            month: window_id(Window::Month, now_unix),
        }
    }

    fn of(&self, kind: LimitKind) -> u64 {
        match kind.window() {
            Window::Minute => self.minute,
            Window::Day => self.day,
            Window::Month => self.month,
        }
    }
}

#[derive(Debug, Default)]
struct ScopeState {
    /// Settled amounts, one per [`LimitKind::ALL`] entry (those the
    /// scope does not count stay empty).
    settled: [Slot; 4],
    reserved: Charge,
    open_reservations: u64,
}

impl ScopeState {
    fn settled(&self, kind: LimitKind, ids: WindowIds) -> u64 {
        self.settled[kind.index()].current(ids.of(kind))
    }

    fn usage(&self, ids: WindowIds) -> ScopeUsage {
        ScopeUsage {
            tokens_minute: self.settled(LimitKind::TokensPerMinute, ids),
            tokens_day: self.settled(LimitKind::TokensPerDay, ids),
            micro_usd_month: self.settled(LimitKind::UsdPerMonth, ids),
            micro_usd_day: self.settled(LimitKind::UsdPerDay, ids),
            reserved_tokens: self.reserved.tokens,
            reserved_micro_usd: self.reserved.micro_usd,
        }
    }

    fn add_settled(&mut self, scope: &ScopeKey, c: Charge, ids: WindowIds) {
        for kind in LimitKind::ALL {
            if scope.counts(kind) {
                self.settled[kind.index()].add(ids.of(kind), c.amount(kind));
            }
        }
    }

    fn unhold(&mut self, c: Charge) {
        self.reserved = self.reserved.saturating_sub(c);
        self.open_reservations = self.open_reservations.saturating_sub(1);
    }

    fn is_idle(&self, ids: WindowIds) -> bool {
        self.open_reservations == 0
            && LimitKind::ALL
                .into_iter()
                .all(|kind| self.settled[kind.index()].is_spent_or_empty(ids.of(kind)))
    }
}

#[derive(Debug, Default)]
struct Inner {
    scopes: HashMap<ScopeKey, ScopeState>,
    next_id: u64,
    ops_since_prune: u64,
}

/// What checking a charge against every scope found.
#[derive(Debug, Default)]
struct Verdict {
    /// The first enforced limit the charge would pass: refused.
    refusal: Option<BudgetRefusal>,
    /// The first limit in shadow mode it would pass: reported only.
    shadow: Option<BudgetRefusal>,
}

impl Inner {
    fn check(&self, scopes: &[(ScopeKey, BudgetLimits)], charge: Charge, now_unix: u64) -> Verdict {
        let ids = WindowIds::at(now_unix);
        let mut verdict = Verdict::default();
        for (key, limits) in scopes {
            let state = self.scopes.get(key);
            for kind in LimitKind::ALL {
                let Some(limit) = limits.limit(kind) else {
                    continue;
                };
                let used = state.map_or(0, |s| {
                    s.settled(kind, ids).saturating_add(s.reserved.amount(kind))
                });
                if used.saturating_add(charge.amount(kind)) > limit {
                    let refusal = BudgetRefusal {
                        scope: key.clone(),
                        kind,
                        limit,
                        used,
                        retry_after_secs: seconds_to_reset(kind.window(), now_unix),
                    };
                    if !limits.shadow {
                        verdict.refusal = Some(refusal);
                        return verdict;
                    }
                    // One report per scope: its other windows are not read.
                    verdict.shadow.get_or_insert(refusal);
                    break;
                }
            }
        }
        verdict
    }

    /// Counts a mutating operation and sweeps idle entries when due.
    /// `now_unix` is `None` when the caller has no clock reading (release):
    /// the sweep then waits for the next reserve/settle.
    fn tick(&mut self, prune_every: u64, now_unix: Option<u64>) {
        self.ops_since_prune = self.ops_since_prune.saturating_add(1);
        let Some(now_unix) = now_unix else {
            return;
        };
        // At least one operation per entry between sweeps: a sweep visits
        // every entry, so its cost per operation stays constant.
        let due = prune_every.max(self.scopes.len() as u64);
        if self.ops_since_prune >= due {
            self.ops_since_prune = 0;
            let ids = WindowIds::at(now_unix);
            self.scopes.retain(|_, s| !s.is_idle(ids));
            // A day's million conversations gone: give the table back too.
            if self.scopes.capacity() > 4 * self.scopes.len().max(MIN_KEPT_CAPACITY) {
                self.scopes.shrink_to_fit();
            }
        }
    }
}

/// In-memory budget counters for a single gateway process (see [`crate::limits::store::Store`]).
#[derive(Debug)]
pub struct LocalStore {
    inner: Mutex<Inner>,
    prune_every: u64,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalStore {
    pub fn new() -> Self {
        Self::with_prune_every(DEFAULT_PRUNE_EVERY)
    }

    /// Prunes idle entries every `prune_every` reserve/settle/release calls.
    pub fn with_prune_every(prune_every: u64) -> Self {
        LocalStore {
            inner: Mutex::new(Inner::default()),
            prune_every: prune_every.max(1),
        }
    }

    /// Number of scopes currently tracked (for metrics and tests).
    pub fn tracked_scopes(&self) -> usize {
        self.lock().scopes.len()
    }

    /// Never panics on a poisoned lock: every update below is a handful of
    /// saturating integer writes, so the counters are consistent even if a
    /// panic happened elsewhere while the lock was held.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LocalStore {
    pub fn reserve(
        &self,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
    ) -> Result<ReservationTicket, ReserveError> {
        let mut inner = self.lock();
        // Check everything before touching anything: all-or-none.
        let verdict = inner.check(scopes, charge, now_unix);
        if let Some(refusal) = verdict.refusal {
            return Err(ReserveError::Refused(refusal));
        }
        let mut keys: Vec<ScopeKey> = Vec::with_capacity(scopes.len());
        let mut limits = Vec::with_capacity(scopes.len());
        for (key, scope_limits) in scopes {
            // A scope listed twice is held once, matching how it was checked.
            if keys.contains(key) {
                continue;
            }
            let state = inner.scopes.entry(key.clone()).or_default();
            state.reserved = state.reserved.saturating_add(charge);
            state.open_reservations += 1;
            keys.push(key.clone());
            limits.push(*scope_limits);
        }
        let ids = WindowIds::at(now_unix);
        let tokens_in_use = keys
            .first()
            .and_then(|key| inner.scopes.get(key))
            .map(|s| TokensInUse::from(s.usage(ids)))
            .unwrap_or_default();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.tick(self.prune_every, Some(now_unix));
        Ok(ReservationTicket {
            id,
            scopes: keys,
            limits,
            charge,
            reserved_at: now_unix,
            backend: Backend::Local,
            tokens_in_use,
            shadow: verdict.shadow,
        })
    }

    pub fn settle(
        &self,
        ticket: ReservationTicket,
        actual: Charge,
        now_unix: u64,
    ) -> Result<Vec<SettledScope>, StoreError> {
        let ids = WindowIds::at(now_unix);
        let mut settled = Vec::with_capacity(ticket.scopes.len());
        let mut inner = self.lock();
        for (i, key) in ticket.scopes.into_iter().enumerate() {
            // Entries with open reservations are never pruned, so this is
            // normally present; re-create it rather than lose usage.
            let state = inner.scopes.entry(key.clone()).or_default();
            state.unhold(ticket.charge);
            state.add_settled(&key, actual, ids);
            let u = state.usage(ids);
            settled.push(SettledScope {
                scope: key,
                limits: ticket.limits.get(i).copied().unwrap_or_default(),
                spent: SpendInWindows {
                    tokens_minute: u.tokens_minute,
                    tokens_day: u.tokens_day,
                    micro_usd_month: u.micro_usd_month,
                    micro_usd_day: u.micro_usd_day,
                },
                added: actual,
            });
        }
        inner.tick(self.prune_every, Some(now_unix));
        Ok(settled)
    }

    pub fn release(&self, ticket: ReservationTicket) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for key in &ticket.scopes {
            if let Some(state) = inner.scopes.get_mut(key) {
                state.unhold(ticket.charge);
            }
        }
        inner.tick(self.prune_every, None);
        Ok(())
    }

    pub fn usage(&self, scope: &ScopeKey, now_unix: u64) -> ScopeUsage {
        let ids = WindowIds::at(now_unix);
        let inner = self.lock();
        inner
            .scopes
            .get(scope)
            .map(|s| s.usage(ids))
            .unwrap_or_default()
    }

    /// Seeds settled usage of the windows current at `now_unix` (start-up,
    /// from the ledger). Replaces any settled usage held for those scopes in
    /// those windows, so it is idempotent; reservations are untouched.
    pub fn restore(
        &self,
        spend: &[(ScopeKey, SpendInWindows)],
        now_unix: u64,
    ) -> Result<(), StoreError> {
        let ids = WindowIds::at(now_unix);
        let mut inner = self.lock();
        for (key, s) in spend {
            let state = inner.scopes.entry(key.clone()).or_default();
            for kind in LimitKind::ALL.into_iter().filter(|k| key.counts(*k)) {
                state.settled[kind.index()] = Slot {
                    window: ids.of(kind),
                    amount: s.of(kind),
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::test_limits::{
        limited, micro_usd_per_month, spent, tokens_per_day, tokens_per_minute,
    };
    use std::sync::{Arc, Barrier};

    // 2024-05-15 12:00:00 UTC, mid-minute/day/month.
    const NOW: u64 = 1_715_774_400;

    fn usage(store: &LocalStore, k: &ScopeKey, now: u64) -> ScopeUsage {
        store.usage(k, now)
    }
    /// User alice, then her tenant acme.
    fn alice_in_acme(alice: BudgetLimits, acme: BudgetLimits) -> [(ScopeKey, BudgetLimits); 2] {
        [
            (ScopeKey::user("alice"), alice),
            (ScopeKey::tenant("acme"), acme),
        ]
    }
    fn ticket(r: Result<ReservationTicket, ReserveError>) -> ReservationTicket {
        r.unwrap_or_else(|e| panic!("expected a reservation, got {e:?}"))
    }
    /// Reserves `c` and settles exactly that.
    fn spend(s: &LocalStore, scopes: &[(ScopeKey, BudgetLimits)], c: Charge, now: u64) {
        let t = ticket(s.reserve(scopes, c, now));
        assert!(s.settle(t, c, now).is_ok());
    }
    fn refusal(r: Result<ReservationTicket, ReserveError>) -> BudgetRefusal {
        match r {
            Err(ReserveError::Refused(r)) => r,
            other => panic!("expected refusal, got {other:?}"),
        }
    }

    #[test]
    fn reserve_counts_until_limit_then_refuses() {
        let s = LocalStore::new();
        let scopes = [(ScopeKey::user("alice"), tokens_per_minute(100))];
        let a = s.reserve(&scopes, Charge::tokens(60), NOW);
        assert!(a.is_ok());
        let r = refusal(s.reserve(&scopes, Charge::tokens(41), NOW));
        assert_eq!(r.kind, LimitKind::TokensPerMinute);
        assert_eq!((r.limit, r.used), (100, 60));
        assert_eq!(r.retry_after_secs, 60);
        assert!(s.reserve(&scopes, Charge::tokens(40), NOW).is_ok());
    }

    #[test]
    fn a_reservation_reports_the_first_scopes_tokens_in_use_as_a_read_would() {
        let s = LocalStore::new();
        let scopes = alice_in_acme(tokens_per_minute(1_000), tokens_per_minute(5_000));
        let first = ticket(s.reserve(&scopes, Charge::tokens(100), NOW));
        assert!(s.settle(first, Charge::tokens(70), NOW).is_ok());
        let open = ticket(s.reserve(&scopes, Charge::tokens(30), NOW));
        let t = ticket(s.reserve(&scopes, Charge::tokens(25), NOW));
        let read = usage(&s, &ScopeKey::user("alice"), NOW);
        // Settled 70 + holds 30 and 25 (its own).
        assert_eq!(t.tokens_in_use.minute, Some(125));
        assert_eq!(
            t.tokens_in_use.minute,
            Some(read.tokens_minute + read.reserved_tokens)
        );
        assert_eq!(
            t.tokens_in_use.day,
            Some(read.tokens_day + read.reserved_tokens)
        );
        assert_eq!(t.scopes.first(), Some(&ScopeKey::user("alice")));
        drop(open);
    }

    #[test]
    fn refusal_is_all_or_none_across_scopes() {
        let s = LocalStore::new();
        let scopes = alice_in_acme(tokens_per_minute(1000), micro_usd_per_month(1_000));
        let c = Charge {
            tokens: 10,
            micro_usd: 2_000,
        };
        let r = refusal(s.reserve(&scopes, c, NOW));
        assert_eq!(r.scope, ScopeKey::tenant("acme"));
        assert_eq!(r.kind, LimitKind::UsdPerMonth);
        // The user scope passed its check but must hold nothing.
        assert_eq!(
            usage(&s, &ScopeKey::user("alice"), NOW),
            ScopeUsage::default()
        );
        assert_eq!(s.tracked_scopes(), 0);
    }

    #[test]
    fn first_failure_reported_in_scope_then_window_order() {
        let s = LocalStore::new();
        let tight = limited(5, 5, 5);
        let scopes = alice_in_acme(tight, tight);
        // Both scopes and both kinds fail for 10 tokens; USD alone for 1.
        for (tokens, kind) in [
            (10, LimitKind::TokensPerMinute),
            (1, LimitKind::UsdPerMonth),
        ] {
            let c = Charge {
                tokens,
                micro_usd: 10,
            };
            let r = refusal(s.reserve(&scopes, c, NOW));
            assert_eq!((r.scope, r.kind), (ScopeKey::user("alice"), kind));
        }
    }

    #[test]
    fn settle_replaces_reservation_with_actual_even_over_limit() {
        let store = LocalStore::new();
        let scopes = [(ScopeKey::user("alice"), tokens_per_minute(100))];
        let r = ticket(store.reserve(&scopes, Charge::tokens(50), NOW));
        assert_eq!(
            usage(&store, &ScopeKey::user("alice"), NOW).reserved_tokens,
            50
        );
        assert!(store.settle(r, Charge::tokens(150), NOW + 1).is_ok());
        let u = usage(&store, &ScopeKey::user("alice"), NOW + 1);
        assert_eq!(
            (u.tokens_minute, u.tokens_day, u.reserved_tokens),
            (150, 150, 0)
        );
        let refused = refusal(store.reserve(&scopes, Charge::tokens(1), NOW + 2));
        assert_eq!(refused.used, 150);
    }

    #[test]
    fn released_reservation_returns_budget() {
        let store = LocalStore::new();
        let scopes = alice_in_acme(tokens_per_minute(100), tokens_per_minute(100));
        let r = ticket(store.reserve(&scopes, Charge::tokens(100), NOW));
        assert!(store.reserve(&scopes, Charge::tokens(1), NOW).is_err());
        assert!(store.release(r).is_ok());
        assert_eq!(
            usage(&store, &ScopeKey::user("alice"), NOW),
            ScopeUsage::default()
        );
        assert_eq!(
            usage(&store, &ScopeKey::tenant("acme"), NOW),
            ScopeUsage::default()
        );
    }

    #[test]
    fn settle_across_minute_boundary_moves_usage_to_new_window() {
        let s = LocalStore::new();
        let scopes = [(ScopeKey::user("bob"), tokens_per_minute(100))];
        let t = ticket(s.reserve(&scopes, Charge::tokens(80), NOW + 59));
        // The hold still counts right after the boundary…
        assert!(s.reserve(&scopes, Charge::tokens(30), NOW + 60).is_err());
        assert!(s.settle(t, Charge::tokens(70), NOW + 61).is_ok());
        // …and settling removes it exactly, charging the new minute.
        let u = usage(&s, &ScopeKey::user("bob"), NOW + 61);
        assert_eq!((u.tokens_minute, u.reserved_tokens), (70, 0));
        assert_eq!(
            usage(&s, &ScopeKey::user("bob"), NOW + 120).tokens_minute,
            0
        );
        assert_eq!(usage(&s, &ScopeKey::user("bob"), NOW + 120).tokens_day, 70);
    }

    #[test]
    fn windows_reset_independently() {
        let s = LocalStore::new();
        let limits = BudgetLimits {
            tokens_per_minute: Some(100),
            tokens_per_day: Some(150),
            micro_usd_per_month: None,
            micro_usd_per_day: None,
            shadow: false,
        };
        let scopes = [(ScopeKey::user("u"), limits)];
        for now in [NOW, NOW + 60] {
            spend(&s, &scopes, Charge::tokens(70), now);
        }
        let r = refusal(s.reserve(&scopes, Charge::tokens(70), NOW + 120));
        assert_eq!((r.kind, r.used), (LimitKind::TokensPerDay, 140));
        assert_eq!(r.retry_after_secs, 12 * 3600 - 120);
    }

    #[test]
    fn concurrent_reservations_admit_exactly_capacity() {
        let store = Arc::new(LocalStore::new());
        let barrier = Arc::new(Barrier::new(50));
        let scopes = alice_in_acme(tokens_per_minute(100), tokens_per_minute(1_000));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (store, barrier, scopes) = (store.clone(), barrier.clone(), scopes.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Keep tickets alive: we count admissions, not throughput.
                    store.reserve(&scopes, Charge::tokens(10), NOW).ok()
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(
            usage(&store, &ScopeKey::user("alice"), NOW).reserved_tokens,
            100
        );
        assert_eq!(
            usage(&store, &ScopeKey::tenant("acme"), NOW).reserved_tokens,
            100
        );
    }

    #[test]
    fn restore_seeds_current_windows() {
        let s = LocalStore::new();
        let spend = spent(10, 90, 5_000);
        assert!(s.restore(&[(ScopeKey::user("a"), spend)], NOW).is_ok());
        assert!(s.restore(&[(ScopeKey::user("a"), spend)], NOW).is_ok()); // idempotent
        let u = usage(&s, &ScopeKey::user("a"), NOW);
        assert_eq!(
            (u.tokens_minute, u.tokens_day, u.micro_usd_month),
            (10, 90, 5_000)
        );
        let limits = tokens_per_day(100);
        let r = refusal(s.reserve(&[(ScopeKey::user("a"), limits)], Charge::tokens(11), NOW));
        assert_eq!(r.used, 90);
        assert_eq!(usage(&s, &ScopeKey::user("a"), NOW + 60).tokens_minute, 0);
    }

    #[test]
    fn idle_entries_are_pruned_but_spenders_and_holders_kept() {
        let s = LocalStore::with_prune_every(1);
        let scopes = |id: &str| [(ScopeKey::user(id), BudgetLimits::default())];
        // Spent this month: kept.
        spend(&s, &scopes("spender"), Charge::tokens(5), NOW);
        // Open reservation: kept.
        let held = s.reserve(&scopes("holder"), Charge::tokens(5), NOW);
        assert!(held.is_ok());
        // Reserved then released with no usage: dropped.
        let t = ticket(s.reserve(&scopes("idle"), Charge::tokens(5), NOW));
        assert!(s.release(t).is_ok());
        // Next sweep runs on this op.
        assert!(s.reserve(&scopes("holder"), Charge::tokens(0), NOW).is_ok());
        assert_eq!(s.tracked_scopes(), 2);
        // Next month the spender's usage is stale: dropped by the sweep
        // after as many operations as there are entries (two).
        let next_month = NOW + 31 * 86_400;
        for _ in 0..2 {
            assert!(s
                .reserve(&scopes("holder"), Charge::tokens(0), next_month)
                .is_ok());
        }
        assert_eq!(s.tracked_scopes(), 1);
        assert_eq!(
            usage(&s, &ScopeKey::user("spender"), next_month),
            ScopeUsage::default()
        );
    }

    fn conversation_limits() -> BudgetLimits {
        BudgetLimits {
            tokens_per_day: Some(1_000),
            micro_usd_per_day: Some(2_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn a_conversation_counts_its_day_only_and_per_tenant() {
        let s = LocalStore::new();
        let acme = ScopeKey::conversation("acme", "c-1");
        let globex = ScopeKey::conversation("globex", "c-1");
        let c = Charge {
            tokens: 600,
            micro_usd: 1_500_000,
        };
        spend(&s, &[(acme.clone(), conversation_limits())], c, NOW);
        let u = usage(&s, &acme, NOW);
        assert_eq!((u.tokens_day, u.micro_usd_day), (600, 1_500_000));
        // Neither the minute nor the month is counted for a conversation.
        assert_eq!((u.tokens_minute, u.micro_usd_month), (0, 0));
        // The USD day refuses the call that would pass it, naming the scope.
        let r = refusal(s.reserve(
            &[(acme.clone(), conversation_limits())],
            Charge {
                tokens: 1,
                micro_usd: 500_001,
            },
            NOW,
        ));
        assert_eq!(
            (r.scope.clone(), r.kind),
            (acme.clone(), LimitKind::UsdPerDay)
        );
        assert_eq!(r.used, 1_500_000);
        assert!(r.to_string().contains("conversation c-1"));
        // globex's c-1 is another conversation.
        assert!(s
            .reserve(&[(globex, conversation_limits())], c, NOW)
            .is_ok());
        // The next day it starts again.
        assert!(s
            .reserve(&[(acme, conversation_limits())], c, NOW + 86_400)
            .is_ok());
    }

    #[test]
    fn a_day_of_conversations_is_dropped_the_next_day() {
        let s = LocalStore::with_prune_every(1);
        let c = Charge {
            tokens: 1,
            micro_usd: 1,
        };
        let n = 20_000;
        for i in 0..n {
            let key = ScopeKey::conversation("acme", format!("c-{i}"));
            spend(&s, &[(key, conversation_limits())], c, NOW);
        }
        assert_eq!(s.tracked_scopes(), n);
        // Sweeps come at most once per `len` operations, so a day later the
        // next `len` operations see them all gone.
        let tomorrow = NOW + 86_400;
        let user = [(ScopeKey::user("u"), BudgetLimits::default())];
        for _ in 0..=n {
            let t = ticket(s.reserve(&user, Charge::tokens(0), tomorrow));
            assert!(s.release(t).is_ok());
        }
        assert!(s.tracked_scopes() <= 1, "{}", s.tracked_scopes());
        assert!(s.lock().scopes.capacity() < 4 * MIN_KEPT_CAPACITY + 1);
    }

    #[test]
    fn restore_seeds_a_conversations_day() {
        let s = LocalStore::new();
        let key = ScopeKey::conversation("acme", "c-1");
        let spend = SpendInWindows {
            tokens_day: 900,
            micro_usd_day: 1_900_000,
            micro_usd_month: 7,
            ..Default::default()
        };
        assert!(s.restore(&[(key.clone(), spend)], NOW).is_ok());
        let u = usage(&s, &key, NOW);
        assert_eq!(
            (u.tokens_day, u.micro_usd_day, u.micro_usd_month),
            (900, 1_900_000, 0)
        );
        let r = refusal(s.reserve(&[(key, conversation_limits())], Charge::tokens(101), NOW));
        assert_eq!((r.kind, r.used), (LimitKind::TokensPerDay, 900));
    }

    #[test]
    fn a_shadow_budget_holds_and_reports_but_never_refuses() {
        let s = LocalStore::new();
        let shadow = BudgetLimits {
            shadow: true,
            ..tokens_per_minute(100)
        };
        let scopes = alice_in_acme(shadow, tokens_per_minute(1_000));
        let first = ticket(s.reserve(&scopes, Charge::tokens(80), NOW));
        assert_eq!(first.shadow, None);
        // Past the shadow limit: held all the same, the would-be refusal reported.
        let second = ticket(s.reserve(&scopes, Charge::tokens(80), NOW));
        let r = second
            .shadow
            .clone()
            .unwrap_or_else(|| panic!("no shadow refusal"));
        assert_eq!(
            (r.scope, r.kind, r.used),
            (ScopeKey::user("alice"), LimitKind::TokensPerMinute, 80)
        );
        assert!(s.settle(first, Charge::tokens(80), NOW).is_ok());
        assert!(s.settle(second, Charge::tokens(80), NOW).is_ok());
        assert_eq!(usage(&s, &ScopeKey::user("alice"), NOW).tokens_minute, 160);
        // An enforced limit still refuses, whatever a shadow one says.
        let r = refusal(s.reserve(&scopes, Charge::tokens(900), NOW));
        assert_eq!(r.scope, ScopeKey::tenant("acme"));
    }

    #[test]
    fn duplicate_scope_is_held_once() {
        let s = LocalStore::new();
        let scopes = [
            (ScopeKey::user("a"), tokens_per_minute(100)),
            (ScopeKey::user("a"), tokens_per_minute(100)),
        ];
        let t = s.reserve(&scopes, Charge::tokens(60), NOW);
        assert!(t.is_ok());
        assert_eq!(usage(&s, &ScopeKey::user("a"), NOW).reserved_tokens, 60);
        if let Ok(t) = t {
            assert!(s.release(t).is_ok());
        }
        assert_eq!(usage(&s, &ScopeKey::user("a"), NOW).reserved_tokens, 0);
    }
}
