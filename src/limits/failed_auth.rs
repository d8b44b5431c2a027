//! Credential-stuffing guard: failed authentications per client IP per
//! minute (`auth.failed_auth_per_ip_per_minute`). Once an IP reaches the
//! limit, every request from it is refused with 429 — valid credentials
//! included, so a guessed key cannot be confirmed — until the window passes.
//!
//! Counting is a pingora-limits `Rate` (count-min sketch): fixed memory
//! whatever the number of attacking addresses. It is the local store's
//! counter (`limits::store::LocalCounters`), not the config snapshot's, so a
//! reload does not reset it; in redis mode the count is shared through
//! Redis instead (`limits::redis_store`, same /64 grouping for IPv6).

use crate::limits::rate::new_rate;
use pingora_limits::rate::Rate;
use std::net::IpAddr;

pub struct FailedAuthGuard {
    rate: Rate,
}

impl Default for FailedAuthGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// The counting key: IPv4 as is; IPv6 by /64, since one client (one LAN,
/// one subscriber) typically owns a whole /64 and could rotate through it.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64 << 64) | 1,
        },
    }
}

impl FailedAuthGuard {
    pub fn new() -> Self {
        Self { rate: new_rate() }
    }

    /// `Some(seconds until the window resets)` when `ip` already has
    /// `limit` failures in the current window. Does not count anything.
    pub fn blocked(&self, ip: IpAddr, limit: u32) -> Option<u64> {
        let k = key(ip);
        let (failures, elapsed) = self
            .rate
            .rate_with(&k, |c| (c.curr_samples, c.current_interval_fraction));
        (failures >= isize::try_from(limit).unwrap_or(isize::MAX)).then(|| {
            let window = 60.0;
            ((1.0 - elapsed) * window).ceil().max(1.0) as u64
        })
    }

    /// Counts one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.rate.observe(&key(ip), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_and_only_that_ip() {
        let guard = FailedAuthGuard::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let other: IpAddr = "192.0.2.8".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        for _ in 0..3 {
            assert_eq!(guard.blocked(ip, 3), None);
            guard.record_failure(ip);
        }
        let retry = guard.blocked(ip, 3);
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(guard.blocked(other, 3), None);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let b: IpAddr = "2001:db8:1:2::ffff"
            .parse()
            .unwrap_or(IpAddr::from([0u8; 16]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
    }
}
