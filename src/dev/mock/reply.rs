//! The mock's answers: a whole reply and the request-header knobs every
//! API's handler reads.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::Value;

/// A fully formed answer; chat streams are written by `chat` directly.
pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }
}

pub(crate) fn header_str<'a>(session: &'a ServerSession, name: &str) -> Option<&'a str> {
    session.get_header(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn header_u64(session: &ServerSession, name: &str) -> Option<u64> {
    header_str(session, name).and_then(|v| v.trim().parse().ok())
}

pub(crate) async fn write_reply(session: &mut ServerSession, reply: Reply) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(3))?;
    header.insert_header("content-type", reply.content_type)?;
    header.insert_header("content-length", reply.body.len().to_string())?;
    session.write_response_header(Box::new(header)).await?;
    session
        .write_response_body(Bytes::from(reply.body), true)
        .await?;
    Ok(())
}
