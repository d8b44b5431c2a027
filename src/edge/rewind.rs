//! Hands bytes read ahead of Pingora back to it: the listener reads each
//! request head itself (under the header deadline, `head_deadline`) and
//! Pingora then parses the same bytes as if it had read them.
//!
//! Plain TCP connections are Pingora's l4 `Stream`, which can replay bytes
//! itself (`rewind`), so they are unwrapped and keep their concrete type.
//! Any other transport (TLS) is wrapped once in `Rewound`, which replays its
//! prefix and delegates everything else; a connection that is already
//! wrapped (keep-alive) is re-used rather than wrapped again.

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `stream` with `data` to be read first, before anything still unread.
pub fn rewind(stream: Stream, data: &[u8]) -> Stream {
    if data.is_empty() {
        return stream;
    }
    if stream.as_any().is::<L4Stream>() {
        if let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() {
            l4.rewind(data);
            return l4;
        }
        unreachable_stream()
    } else if stream.as_any().is::<Rewound>() {
        match stream.into_any().downcast::<Rewound>() {
            Ok(mut wrapped) => {
                wrapped.prepend(data);
                wrapped
            }
            Err(_) => unreachable_stream(),
        }
    } else {
        Box::new(Rewound {
            prefix: BytesMut::from(data),
            inner: stream,
        })
    }
}

/// `is::<T>()` was checked just before `downcast::<T>()`, so this is never
/// reached; it exists because `into_any` consumes the box and a failed
/// downcast could not give the stream back. A closed connection is the safe
/// answer should it ever happen.
fn unreachable_stream() -> Stream {
    Box::new(std::io::Cursor::new(Vec::<u8>::new()))
}

/// A transport whose first reads come from `prefix`.
#[derive(Debug)]
pub struct Rewound {
    prefix: BytesMut,
    inner: Stream,
}

impl Rewound {
    fn prepend(&mut self, data: &[u8]) {
        let mut joined = BytesMut::with_capacity(data.len() + self.prefix.len());
        joined.extend_from_slice(data);
        joined.extend_from_slice(&self.prefix);
        self.prefix = joined;
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Rewound {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Rewound {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Rewound {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Rewound {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Rewound {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Rewound {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Rewound {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.prefix.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        let n = self.prefix.len().min(buf.len());
        buf[..n].copy_from_slice(&self.prefix[..n]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on_and_rewraps_without_nesting() {
        let (client, server) = tokio::io::duplex(64);
        let inner: Stream = Box::new(server);
        let mut stream = rewind(inner, b"GET / ");
        let mut client = client;
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        let mut got = vec![0u8; 16];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");

        let stream = rewind(stream, b"again");
        let stream = rewind(stream, b"once ");
        assert!(stream.as_any().is::<Rewound>());
        let mut stream = stream;
        let mut got = vec![0u8; 10];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"once again");
        let wrapped = stream.into_any().downcast::<Rewound>().unwrap();
        assert!(
            !wrapped.inner.as_any().is::<Rewound>(),
            "a rewound stream is never wrapped twice"
        );
    }
}
