//! Who is on the other end of a downstream session, and whether they are
//! still there.

use pingora::proxy::Session;
use std::net::IpAddr;

/// The client's IP address (none for unix-socket listeners).
pub fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Resolves when the client closes (or resets) its connection while an
/// answer streams to it: the request body is fully read by then, so
/// anything arriving is the end. `answer` names the stream in the log.
pub async fn gone(session: &mut Session, answer: &str) {
    let _ = session.as_downstream_mut().read_body_or_idle(true).await;
    tracing::info!("client went away mid {answer}");
}
