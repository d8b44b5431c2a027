//! Sends a request's header and body to the upstream as one TCP write.
//!
//! Pingora's client session flushes the request header on its own and then
//! the body: two `sendto`s, and on loopback each one runs the receiver's
//! whole network path and wakes the upstream twice (measured: the header
//! write alone was ~11% of the LLM route's CPU). `TCP_CORK` holds partial
//! segments until it is lifted, so both leave in one segment. Pingora has
//! no vectored "header + body" write for client sessions, and the socket
//! option is not exposed by `socket2` without owning the socket: hence the
//! direct `setsockopt`.

use pingora::protocols::http::client::HttpSession;

/// A socket whose writes are held back until [`release`] is called.
pub struct Corked(i32);

/// Corks the session's TCP socket (HTTP/1 over TCP, plain or TLS). `None`
/// when there is nothing to cork (HTTP/2, a unix socket, or the option was
/// refused): writes then go out as they are made, as before.
pub fn hold(session: &HttpSession) -> Option<Corked> {
    let fd = session.stream()?.id();
    set_cork(fd, true).then_some(Corked(fd))
}

/// Lifts the cork: whatever is held leaves now. Call it while the session
/// still owns the socket (before a shutdown or drop closes the descriptor).
pub fn release(corked: Option<Corked>) {
    if let Some(Corked(fd)) = corked {
        set_cork(fd, false);
    }
}

// setsockopt(TCP_CORK) on a descriptor Pingora owns: neither std nor
// socket2 (which needs to own the socket) can set it on a borrowed fd.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_cork(fd: i32, on: bool) -> bool {
    let value: libc::c_int = on.into();
    // SAFETY: `fd` is the descriptor of a socket the caller's session owns
    // and keeps open for the duration of this call; the value pointer and
    // length describe a live `c_int`, as setsockopt(2) requires. A wrong
    // kind of descriptor only returns an error.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// `TCP_CORK` is Linux's; elsewhere writes go out as they are made.
#[cfg(not(target_os = "linux"))]
fn set_cork(_fd: i32, _on: bool) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Corked writes stay in the sender until the cork is lifted, then
    /// arrive together.
    #[test]
    fn corked_writes_wait_for_release() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        sender.set_nodelay(true).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let fd = sender.as_raw_fd();

        assert!(set_cork(fd, true));
        sender.write_all(b"head").unwrap();
        sender.write_all(b"body").unwrap();
        let written = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let early = receiver.read(&mut buf);
        // The kernel sends a corked partial segment after 200 ms anyway: a
        // read that only returned past that (a stalled test thread) says
        // nothing.
        assert!(
            early.is_err() || written.elapsed() >= Duration::from_millis(190),
            "nothing may arrive while corked: {early:?}"
        );

        release(Some(Corked(fd)));
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = match early {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        };
        while got.len() < 8 {
            let n = receiver.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"headbody");
    }

    #[test]
    fn a_descriptor_that_is_not_tcp_is_not_corked() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!set_cork(file.as_raw_fd(), true));
    }
}
