//! Budget limits and spends the store tests write again and again.

use super::budget::BudgetLimits;
use super::types::SpendInWindows;

pub fn tokens_per_minute(n: u64) -> BudgetLimits {
    BudgetLimits {
        tokens_per_minute: Some(n),
        ..Default::default()
    }
}

pub fn tokens_per_day(n: u64) -> BudgetLimits {
    BudgetLimits {
        tokens_per_day: Some(n),
        ..Default::default()
    }
}

pub fn micro_usd_per_month(n: u64) -> BudgetLimits {
    BudgetLimits {
        micro_usd_per_month: Some(n),
        ..Default::default()
    }
}

/// Every window of a user or tenant limited (not a conversation's day).
pub fn limited(
    tokens_per_minute: u64,
    tokens_per_day: u64,
    micro_usd_per_month: u64,
) -> BudgetLimits {
    BudgetLimits {
        tokens_per_minute: Some(tokens_per_minute),
        tokens_per_day: Some(tokens_per_day),
        micro_usd_per_month: Some(micro_usd_per_month),
        ..Default::default()
    }
}

/// Settled spend in the windows of a user or tenant (nothing in a
/// conversation's day).
pub fn spent(tokens_minute: u64, tokens_day: u64, micro_usd_month: u64) -> SpendInWindows {
    SpendInWindows {
        tokens_minute,
        tokens_day,
        micro_usd_month,
        micro_usd_day: 0,
    }
}
