//! What the gateway tells its operators: the access line and log sinks,
//! Prometheus metrics, OTLP traces and trace context, and the per-request
//! bookkeeping that feeds them (`request`).

pub mod access_line;
pub mod logs;
pub mod metrics;
pub mod otel;
pub mod request;
pub mod trace;
