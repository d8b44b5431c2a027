//! Who is on the other end of a downstream session.

use pingora::proxy::Session;
use std::net::IpAddr;

/// The client's IP address (none for unix-socket listeners).
pub fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
