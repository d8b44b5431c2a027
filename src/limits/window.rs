//! Budget windows aligned to UTC calendar boundaries.
//!
//! All functions take `now_unix` (seconds since the Unix epoch, UTC) so callers
//! and tests control the clock. Minute and day windows are fixed-length; month
//! windows are calendar months (28–31 days), computed with the `time` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime};

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;

/// A budget accounting window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Day,
    Month,
}

impl Window {
    /// Every window, in the order budgets are checked.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Day, Window::Month];
}

/// Current wall-clock time as unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Identifier of the window containing `now_unix`: unix minute, unix day, or
/// `year * 12 + (month - 1)` for months. Consecutive windows have consecutive ids.
pub fn window_id(w: Window, now_unix: u64) -> u64 {
    match w {
        Window::Minute => now_unix / MINUTE,
        Window::Day => now_unix / DAY,
        Window::Month => {
            let date = utc_date(now_unix);
            // Years are >= 1970 here (now_unix is unsigned), so the cast is lossless.
            date.year().unsigned_abs() as u64 * 12 + (u8::from(date.month()) as u64 - 1)
        }
    }
}

/// Unix seconds at which the window containing `now_unix` started.
pub fn window_start(w: Window, now_unix: u64) -> u64 {
    match w {
        Window::Minute => now_unix - now_unix % MINUTE,
        Window::Day => now_unix - now_unix % DAY,
        Window::Month => {
            let date = utc_date(now_unix);
            Date::from_calendar_date(date.year(), date.month(), 1)
                .map(date_to_unix)
                .unwrap_or(0)
        }
    }
}

/// Unix seconds of the next window boundary after `now_unix` (when usage resets).
///
/// Saturates to `u64::MAX` past year 9999, beyond the `time` crate's default range.
pub fn reset_at(w: Window, now_unix: u64) -> u64 {
    match w {
        Window::Minute => window_start(w, now_unix).saturating_add(MINUTE),
        Window::Day => window_start(w, now_unix).saturating_add(DAY),
        Window::Month => {
            let date = utc_date(now_unix);
            let (year, month) = match date.month() {
                Month::December => (date.year() + 1, Month::January),
                m => (date.year(), m.next()),
            };
            Date::from_calendar_date(year, month, 1)
                .map(date_to_unix)
                .unwrap_or(u64::MAX)
        }
    }
}

/// Seconds until the window containing `now_unix` resets (>= 1 for any sane clock).
pub fn seconds_to_reset(w: Window, now_unix: u64) -> u64 {
    reset_at(w, now_unix).saturating_sub(now_unix)
}

/// UTC calendar date of `now_unix`, clamped to the last representable day so
/// absurd clocks never panic.
fn utc_date(now_unix: u64) -> Date {
    i64::try_from(now_unix)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .map(|t| t.date())
        .unwrap_or(Date::MAX)
}

fn date_to_unix(d: Date) -> u64 {
    let ts = d.midnight().assume_utc().unix_timestamp();
    u64::try_from(ts).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ts(dt: time::PrimitiveDateTime) -> u64 {
        dt.assume_utc().unix_timestamp() as u64
    }

    /// `later` falls in the window right after `earlier`'s.
    fn assert_next_window(w: Window, earlier: u64, later: u64) {
        assert_eq!(window_id(w, earlier) + 1, window_id(w, later));
    }

    /// The last second of a window: the next one starts a second later
    /// (its reset), and the window started at `start`.
    #[test]
    fn last_second_of_each_window() {
        for (w, last, start) in [
            (
                Window::Minute,
                datetime!(2024-03-10 12:34:59),
                datetime!(2024-03-10 12:34:00),
            ),
            (
                Window::Day,
                datetime!(2024-03-10 23:59:59),
                datetime!(2024-03-10 00:00:00),
            ),
            (
                Window::Month,
                datetime!(2024-12-31 23:59:59),
                datetime!(2024-12-01 00:00:00),
            ),
        ] {
            let last = ts(last);
            assert_next_window(w, last, last + 1);
            assert_eq!(reset_at(w, last), last + 1, "{w:?}");
            assert_eq!(seconds_to_reset(w, last), 1, "{w:?}");
            assert_eq!(window_start(w, last), ts(start), "{w:?}");
        }
    }

    #[test]
    fn a_minute_resets_in_60_seconds_at_its_start() {
        let start = ts(datetime!(2024-03-10 12:35:00));
        assert_eq!(seconds_to_reset(Window::Minute, start), 60);
    }

    #[test]
    fn months_count_across_years() {
        let t = ts(datetime!(2024-12-31 23:59:59));
        assert_eq!(window_id(Window::Month, t), 2024 * 12 + 11);
        assert_eq!(window_id(Window::Month, t + 1), 2025 * 12);
    }

    #[test]
    fn february_in_leap_and_common_year() {
        let leap = ts(datetime!(2024-02-28 12:00:00));
        assert_eq!(
            reset_at(Window::Month, leap),
            ts(datetime!(2024-03-01 00:00:00))
        );
        // Feb 29 exists in 2024 and still belongs to February.
        let feb29 = ts(datetime!(2024-02-29 23:59:59));
        assert_eq!(
            window_id(Window::Month, feb29),
            window_id(Window::Month, leap)
        );
        assert_eq!(
            reset_at(Window::Month, feb29) - window_start(Window::Month, feb29),
            29 * DAY
        );
        let common = ts(datetime!(2023-02-15 00:00:00));
        assert_eq!(
            reset_at(Window::Month, common) - window_start(Window::Month, common),
            28 * DAY
        );
    }

    #[test]
    fn epoch_and_far_future_do_not_panic() {
        assert_eq!(window_start(Window::Month, 0), 0);
        assert_eq!(reset_at(Window::Month, 0), 31 * DAY);
        assert_eq!(reset_at(Window::Month, u64::MAX), u64::MAX);
        assert_eq!(seconds_to_reset(Window::Minute, u64::MAX), 0);
    }
}
