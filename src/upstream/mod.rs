//! Upstream pools: load balancing, active health checks, circuit breakers.

pub mod breaker;
pub mod health;
pub mod pool;
pub mod tls;
