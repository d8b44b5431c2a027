//! `server.max_connections_per_ip`: concurrent client connections per IP,
//! counted with pingora-limits' `Inflight` (a fixed-size count-min sketch:
//! memory does not grow with the number of addresses; a collision can only
//! over-count, never let an address past its limit).

use pingora::protocols::Stream;
use pingora_limits::inflight::{Guard, Inflight};
use std::net::IpAddr;

pub struct ConnectionLimiter {
    open: Inflight,
}

impl Default for ConnectionLimiter {
    fn default() -> Self {
        Self {
            open: Inflight::new(),
        }
    }
}

/// The peer's IP, or None for a non-inet socket (unix socket listeners).
pub fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

impl ConnectionLimiter {
    /// Counts one more open connection from `ip`; `None` when that makes
    /// more than `limit`. The count drops when the guard is dropped.
    pub fn admit(&self, ip: IpAddr, limit: u32) -> Option<Guard> {
        let (guard, open) = self.open.incr(ip, 1);
        (open <= limit as isize).then_some(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_frees_on_drop() {
        let limiter = ConnectionLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.admit(a, 2).unwrap();
        let _second = limiter.admit(a, 2).unwrap();
        assert!(limiter.admit(a, 2).is_none(), "third from the same IP");
        assert!(limiter.admit(b, 2).is_some(), "another IP is unaffected");
        drop(first);
        assert!(
            limiter.admit(a, 2).is_some(),
            "a closed connection frees a slot"
        );
    }
}
