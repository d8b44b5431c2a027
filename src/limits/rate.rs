//! Per-user request rate limits on pingora-limits' `Rate` (count-min
//! sketches): memory is fixed whatever the number of users, at the price
//! of rare over-estimates on hash collisions (never under-estimates).
//!
//! Counters live outside the config snapshot so a reload never resets them.

use pingora_limits::rate::Rate;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(60);
/// Sketch shape: 4 rows × 16384 counters × 2 windows ≈ 1 MiB per limiter,
/// wide enough that collisions among thousands of active users are rare.
const HASHES: usize = 4;
const SLOTS: usize = 16 * 1024;

/// `RateLimit-Policy`'s name for a key's own rate.
pub const KEY_POLICY: &str = "key";

pub fn new_rate() -> Rate {
    Rate::new_with_estimator_config(WINDOW, HASHES, SLOTS)
}

/// The outcome of counting one request, with what the RateLimit headers
/// (draft-ietf-httpapi-ratelimit-headers) need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    pub policy: String,
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    pub allowed: bool,
    /// `false`: the limit is in shadow mode (`enforce: false`); a refusal
    /// is counted and logged, never answered.
    pub enforced: bool,
}

impl RateDecision {
    /// `RateLimit-Policy` and `RateLimit` header values (structured fields).
    /// Built by hand: they go on every answer, and `format!` was a
    /// measurable share of the plain route's CPU.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        let field = |a: (&str, u64), b: (&str, u64)| {
            let mut numbers = itoa::Buffer::new();
            let mut v = String::with_capacity(self.policy.len() + 32);
            v.push('"');
            v.push_str(&self.policy);
            v.push_str("\";");
            v.push_str(a.0);
            v.push_str(numbers.format(a.1));
            v.push(';');
            v.push_str(b.0);
            v.push_str(numbers.format(b.1));
            v
        };
        [
            (
                "ratelimit-policy",
                field(("q=", self.limit), ("w=", WINDOW.as_secs())),
            ),
            (
                "ratelimit",
                field(("r=", self.remaining), ("t=", self.reset_secs)),
            ),
        ]
    }
}

/// Counts one event for `key` in `rate` and decides against `limit`.
pub fn count(rate: &Rate, key: &str, limit: u64, policy: &str) -> RateDecision {
    let seen = rate.observe(&key, 1).max(0) as u64;
    let elapsed = rate.rate_with(&key, |c| c.current_interval_fraction);
    let reset_secs = ((1.0 - elapsed) * WINDOW.as_secs_f64()).ceil().max(1.0) as u64;
    RateDecision {
        policy: policy.to_string(),
        limit,
        remaining: limit.saturating_sub(seen),
        reset_secs,
        allowed: seen <= limit,
        enforced: true,
    }
}

pub struct RequestLimiter {
    default: Rate,
    routes: RwLock<HashMap<String, Arc<Rate>>>,
    /// Per-key counters (keys with a `rate_limit`), one sketch for all:
    /// fixed memory however many key ids are seen.
    keys: Rate,
}

impl Default for RequestLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestLimiter {
    pub fn new() -> Self {
        Self {
            default: new_rate(),
            routes: RwLock::new(HashMap::new()),
            keys: new_rate(),
        }
    }

    fn route_rate(&self, route: &str) -> Arc<Rate> {
        if let Ok(map) = self.routes.read() {
            if let Some(rate) = map.get(route) {
                return rate.clone();
            }
        }
        let mut map = self.routes.write().unwrap_or_else(|p| p.into_inner());
        map.entry(route.to_string())
            .or_insert_with(|| Arc::new(new_rate()))
            .clone()
    }

    /// Counts a request made with API key `key_id` against its own rate.
    pub fn check_key(&self, key_id: &str, limit: u32) -> RateDecision {
        count(&self.keys, key_id, limit.into(), KEY_POLICY)
    }

    /// Counts a request of `user`: on the route's own counter when the route
    /// has a `rate_limit`, else on the shared default counter.
    pub fn check(
        &self,
        user: &str,
        route: &str,
        route_limit: Option<u32>,
        default_limit: Option<u32>,
    ) -> Option<RateDecision> {
        match (route_limit, default_limit) {
            (Some(limit), _) => Some(count(&self.route_rate(route), user, limit.into(), route)),
            (None, Some(limit)) => Some(count(&self.default, user, limit.into(), "default")),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleventh_request_is_refused_and_others_unaffected() {
        let limiter = RequestLimiter::new();
        for i in 1..=10 {
            let d = limiter.check("alice", "r", None, Some(10)).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 10 - i);
        }
        let refused = limiter.check("alice", "r", None, Some(10)).unwrap();
        assert!(!refused.allowed);
        assert!(refused.reset_secs >= 1 && refused.reset_secs <= 60);
        assert!(limiter.check("bob", "r", None, Some(10)).unwrap().allowed);
        // A key counts on its own counter, whatever its user's.
        for _ in 0..2 {
            assert!(limiter.check_key("alice-1", 2).allowed);
        }
        let key = limiter.check_key("alice-1", 2);
        assert!(!key.allowed);
        assert_eq!(key.policy, "key");
        assert!(limiter.check_key("alice-2", 2).allowed);
        // A route with its own limit counts separately.
        assert!(
            limiter
                .check("alice", "chat", Some(5), Some(10))
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn header_syntax() {
        let d = RateDecision {
            policy: "default".into(),
            limit: 100,
            remaining: 42,
            reset_secs: 30,
            allowed: true,
            enforced: true,
        };
        let [policy, current] = d.headers();
        assert_eq!(policy.1, "\"default\";q=100;w=60");
        assert_eq!(current.1, "\"default\";r=42;t=30");
    }
}
