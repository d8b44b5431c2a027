//! The whole-head deadline (`server.header_timeout_ms`) and the head size
//! limits, enforced where connections enter, before Pingora sees a byte.
//!
//! Pingora reads a request head with a per-read timeout only (60 s), so a
//! client sending one byte at a time could hold a connection for ever, and
//! it answers more than 256 header fields with a bare 400. Its HTTP/1 loop
//! over keep-alive requests runs inside `process_new` (pingora-core 0.9.1
//! `apps/mod.rs`), out of a wrapper's reach. So this module runs that loop
//! itself: for every request on the connection it reads the head under the
//! deadline, checks the limits as the bytes arrive (`head_scan`), hands the
//! bytes back (`rewind`) and lets Pingora parse and serve the request.
//!
//! - First request: the deadline runs from the moment the connection is
//!   accepted (after the TLS handshake on TLS listeners).
//! - Later keep-alive requests: the connection may idle up to Pingora's
//!   keep-alive timeout (60 s) for the first byte, as before; the deadline
//!   runs from that byte (nginx's `client_header_timeout` works the same).
//! - A head begun but still incomplete after `SLOW_AFTER` counts as slow:
//!   one client address may hold `SLOW_CONNECTIONS_PER_IP` of them at most.
//! - HTTP/2 (ALPN h2 on TLS) is left to Pingora: heads travel in frames.

use crate::edge::conn_limit::{peer_ip, ConnectionLimiter};
use crate::edge::head_scan::{HeadLimits, HeadScanner, Scan};
use crate::edge::rewind::rewind;
use crate::error::GatewayError;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

/// Pingora's keep-alive timeout (`set_keepalive(Some(60))` in its loop):
/// how long a kept-alive connection may wait for its next request.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// A head not complete after this long is "slow" (see the cap below); a
/// normal client sends its head in one go, in well under a second.
const SLOW_AFTER: Duration = Duration::from_secs(1);
/// Slow connections one client address may hold at once.
pub const SLOW_CONNECTIONS_PER_IP: u32 = 16;
/// Reads grow the head buffer by this much (Pingora's first read is 4 KiB too).
const READ_CHUNK: usize = 4096;
/// How long writing a refusal may take before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a refusal, unread request bytes are drained for this long (at most
/// `LINGER_BYTES`) before closing: closing a socket with unread data sends
/// a reset, which can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What the listener needs to hold heads to the deadline.
pub struct HeadGuard {
    /// Connections of each client address whose head is slow to arrive.
    pub slow: ConnectionLimiter,
}

/// How one request head ended.
enum Head {
    /// In `buf`, complete, within the limits.
    Complete,
    /// The client closed, or a kept-alive connection idled out, before a
    /// byte of a new request: nothing to answer.
    Gone,
    /// Read error or close mid-head: no answer possible.
    Broken,
    /// Answered with this refusal, then closed.
    Refused(GatewayError),
}

impl HeadGuard {
    pub fn new() -> Self {
        Self {
            slow: ConnectionLimiter::default(),
        }
    }

    /// Serves one client connection: every HTTP/1 request on it passes the
    /// head deadline before Pingora serves it.
    pub async fn serve<A>(
        &self,
        app: &Arc<A>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
        settings: impl Fn() -> (HeadLimits, Duration),
    ) -> Option<Stream>
    where
        A: HttpServerApp + Send + Sync + 'static,
    {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return app.process_new(stream, shutdown).await;
        }
        let ip = peer_ip(&stream);
        let mut buf = BytesMut::new();
        let mut reused: Option<Option<HttpPersistentSettings>> = None;
        loop {
            let (limits, header_timeout) = settings();
            let idle = reused.is_some().then_some(KEEPALIVE_IDLE);
            let head = self
                .read_head(&mut stream, &mut buf, ip, &limits, header_timeout, idle)
                .await;
            match head {
                Head::Complete => {}
                Head::Gone | Head::Broken => return None,
                Head::Refused(err) => {
                    refuse(&mut stream, &err).await;
                    return None;
                }
            }
            stream = rewind(stream, &buf);
            buf.clear();
            if buf.capacity() > 2 * READ_CHUNK {
                // A large head does not pin its buffer for the connection's life.
                buf = BytesMut::new();
            }
            let mut session = ServerSession::new_http1(stream);
            match reused.take() {
                // As Pingora's own loop does (pingora-core 0.9.1 apps/mod.rs).
                Some(Some(persistent)) => persistent.apply_to_session(&mut session),
                Some(None) => {}
                None => {
                    let shutting_down = *shutdown.borrow();
                    session.set_keepalive((!shutting_down).then_some(KEEPALIVE_IDLE.as_secs()));
                    session.set_keepalive_reuses_remaining(
                        app.server_options().and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            let (next, persistent) = app.process_new_http(session, shutdown).await?.consume();
            stream = next;
            reused = Some(persistent);
        }
    }

    async fn read_head(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        ip: Option<IpAddr>,
        limits: &HeadLimits,
        header_timeout: Duration,
        idle: Option<Duration>,
    ) -> Head {
        let mut scanner = HeadScanner::default();
        let mut start = Instant::now();
        if let Some(idle) = idle {
            // A kept-alive connection: wait for the next request's first byte.
            buf.reserve(READ_CHUNK);
            match timeout(idle, stream.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Head::Gone,
            }
            start = Instant::now();
            match scanner.scan(buf, limits) {
                Ok(Scan::Complete(_)) => return Head::Complete,
                Ok(Scan::Incomplete) => {}
                Err(e) => return Head::Refused(e),
            }
        }
        let deadline = start + header_timeout;
        let slow_at = start + SLOW_AFTER;
        let mut slow_guard = None;
        loop {
            // Only a head that has begun can be slow: an idle new connection
            // (a browser's preconnect) is bounded by the deadline alone.
            let watch_slow = slow_guard.is_none() && ip.is_some() && !buf.is_empty();
            let wake = if watch_slow {
                slow_at.min(deadline)
            } else {
                deadline
            };
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            // `read_buf` is cancel-safe: a timed-out read loses no bytes.
            match timeout_at(wake, stream.read_buf(buf)).await {
                Err(_) if Instant::now() >= deadline => {
                    return Head::Refused(GatewayError::RequestTimeout)
                }
                Err(_) => {}
                Ok(Ok(0)) if buf.is_empty() => return Head::Gone,
                Ok(Ok(0)) | Ok(Err(_)) => return Head::Broken,
                Ok(Ok(_)) => match scanner.scan(buf, limits) {
                    Ok(Scan::Complete(_)) => return Head::Complete,
                    Ok(Scan::Incomplete) => {}
                    Err(e) => return Head::Refused(e),
                },
            }
            if let Some(ip) = ip.filter(|_| slow_guard.is_none() && Instant::now() >= slow_at) {
                match self.slow.admit(ip, SLOW_CONNECTIONS_PER_IP) {
                    Some(guard) => slow_guard = Some(guard),
                    None => {
                        tracing::warn!(%ip, limit = SLOW_CONNECTIONS_PER_IP,
                            "connection closed: too many slow request heads from this address");
                        return Head::Refused(GatewayError::RequestTimeout);
                    }
                }
            }
        }
    }
}

impl Default for HeadGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// Answers `err` (where the client can still read it) and closes.
async fn refuse(stream: &mut Stream, err: &GatewayError) {
    crate::observe::metrics::inc(&crate::observe::metrics::REJECTIONS, &[err.code()]);
    tracing::debug!(code = err.code(), "request head refused");
    let answer = crate::edge::respond::raw_error_response(err);
    let write = async {
        stream.write_all(&answer).await?;
        stream.flush().await
    };
    let _ = timeout(REFUSAL_WRITE_TIMEOUT, write).await;
    let _ = timeout(
        REFUSAL_WRITE_TIMEOUT,
        pingora::protocols::Shutdown::shutdown(stream.as_mut()),
    )
    .await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}
