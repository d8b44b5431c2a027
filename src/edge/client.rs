//! Who is on the other end of a downstream session, whether they are
//! still there, and sending them a whole answer.

use bytes::Bytes;
use pingora::http::ResponseHeader;
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

/// Sends a whole answer with its length (a rewritten answer's upstream
/// framing no longer applies). Fails when the client is gone.
pub async fn send_whole(
    session: &mut Session,
    mut header: ResponseHeader,
    body: Vec<u8>,
) -> pingora::Result<()> {
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session
        .write_response_header(Box::new(header), body.is_empty())
        .await?;
    if !body.is_empty() {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}
