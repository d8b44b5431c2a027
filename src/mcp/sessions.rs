//! MCP sessions pinned to the peer that created them: a Streamable HTTP
//! session lives in one server process, so every later request carrying
//! its `Mcp-Session-Id` must reach that peer. The pin also remembers who
//! opened the session: another caller presenting the id is answered as if
//! it did not exist (a leaked id does not hand over a session).
//!
//! Bounded (least recently used pins go first), in process memory: after a
//! restart an unknown id goes to a peer chosen by hashing the id, and a
//! peer that does not know it answers 404, which tells MCP clients to
//! start a new session.

use lru::LruCache;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Most sessions pinned at once.
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub peer: SocketAddr,
    /// `tenant/user` of the caller that opened the session.
    pub owner: String,
}

pub struct SessionPins {
    /// Keyed by (upstream, session id): two pools never share a pin.
    pins: Mutex<LruCache<(String, String), Pin>>,
}

impl Default for SessionPins {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl SessionPins {
    pub fn with_capacity(capacity: usize) -> SessionPins {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        SessionPins {
            pins: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub fn pin(&self, upstream: &str, session: &str, pin: Pin) {
        if let Ok(mut pins) = self.pins.lock() {
            pins.put((upstream.to_string(), session.to_string()), pin);
        }
    }

    pub fn lookup(&self, upstream: &str, session: &str) -> Option<Pin> {
        let mut pins = self.pins.lock().ok()?;
        pins.get(&(upstream.to_string(), session.to_string()))
            .cloned()
    }

    pub fn unpin(&self, upstream: &str, session: &str) {
        if let Ok(mut pins) = self.pins.lock() {
            pins.pop(&(upstream.to_string(), session.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(port: u16) -> Pin {
        Pin {
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            owner: "acme/bob".into(),
        }
    }

    #[test]
    fn pins_per_upstream_and_forgets_the_least_recent() {
        let pins = SessionPins::with_capacity(2);
        pins.pin("tools", "s1", pin(1));
        pins.pin("other", "s1", pin(2));
        assert_eq!(pins.lookup("tools", "s1"), Some(pin(1)));
        assert_eq!(pins.lookup("other", "s1"), Some(pin(2)));
        pins.pin("tools", "s2", pin(3));
        // "tools/s1" was the least recently used.
        assert_eq!(pins.lookup("tools", "s1"), None);
        assert_eq!(pins.pins.lock().map(|p| p.len()).ok(), Some(2));
        pins.unpin("other", "s1");
        assert_eq!(pins.lookup("other", "s1"), None);
        assert_eq!(pins.lookup("tools", "s2"), Some(pin(3)));
    }
}
