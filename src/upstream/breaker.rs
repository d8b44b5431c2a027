//! Per-peer circuit breaker: consecutive failures open it; after
//! `open_seconds` exactly one request probes the peer (half-open); the
//! probe's success closes it, its failure re-opens it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// Monotonic ms until which the breaker is open; 0 = closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub open_ms: u64,
}

impl Breaker {
    /// Whether a request may go to this peer now. In the half-open state
    /// only the first caller gets `true`.
    pub fn allows(&self, now_ms: u64) -> bool {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return true;
        }
        if now_ms < open_until {
            return false;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// Returns true when this failure opened (or re-opened) the breaker.
    pub fn record_failure(&self, policy: BreakerPolicy, now_ms: u64) -> bool {
        if self.probing.swap(false, Ordering::AcqRel) {
            self.open_until_ms
                .store(now_ms + policy.open_ms, Ordering::Release);
            return true;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= policy.failure_threshold && !self.is_open() {
            self.open_until_ms
                .store(now_ms + policy.open_ms, Ordering::Release);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        open_ms: 1000,
    };

    #[test]
    fn opens_after_threshold_then_probes_once() {
        let b = Breaker::default();
        assert!(!b.record_failure(POLICY, 0));
        assert!(!b.record_failure(POLICY, 0));
        assert!(b.allows(0));
        assert!(b.record_failure(POLICY, 10));
        assert!(!b.allows(500));
        assert!(b.allows(1010), "first caller after open period probes");
        assert!(!b.allows(1011), "only one probe at a time");
        b.record_success();
        assert!(b.allows(1012));
        assert!(!b.is_open());
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breaker::default();
        for _ in 0..3 {
            b.record_failure(POLICY, 0);
        }
        assert!(b.allows(1000));
        assert!(b.record_failure(POLICY, 1000));
        assert!(!b.allows(1500));
        assert!(b.allows(2000));
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::default();
        b.record_failure(POLICY, 0);
        b.record_failure(POLICY, 0);
        b.record_success();
        b.record_failure(POLICY, 0);
        assert!(b.allows(0));
    }
}
