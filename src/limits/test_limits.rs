//! Budget limits the store tests write again and again: one window limited.

use super::budget::BudgetLimits;

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
