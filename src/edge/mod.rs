//! The client side of the gateway: listener settings, connection limits,
//! the request-head deadline and scan, framing checks, downstream TLS, the
//! headers written to upstreams and clients, and the one JSON error writer.

pub mod client;
pub mod conn_limit;
pub mod framing;
pub mod head_deadline;
pub mod head_scan;
pub mod headers;
pub mod respond;
pub mod rewind;
pub mod tls;
