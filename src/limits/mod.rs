//! Limits: request rates, token and USD budgets, and the stores that hold
//! their counters.

pub mod budget;
pub mod failed_auth;
pub mod local_counters;
pub mod local_store;
pub mod policy;
pub mod rate;
pub mod redis_store;
pub mod store;
#[cfg(test)]
mod test_limits;
pub mod types;
pub mod window;
