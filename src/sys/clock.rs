//! Time sources: a monotonic millisecond clock for durations (breakers,
//! health schedules) and wall-clock unix seconds for expiry and windows.

use once_cell::sync::Lazy;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static START: Lazy<Instant> = Lazy::new(Instant::now);

/// Milliseconds since the process started; never goes backwards.
/// Starts at 1 so that 0 can mean "unset" in atomics.
pub fn mono_ms() -> u64 {
    START.elapsed().as_millis() as u64 + 1
}

pub fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
