//! Finds the end of an HTTP/1 request head in bytes that arrive piecemeal,
//! and measures it against the limits, without parsing it: Pingora parses
//! the head afterwards. Each byte is looked at once however the head is
//! split across reads (a full re-parse per read would cost O(n²) against a
//! client that sends one byte at a time).

use crate::error::GatewayError;

/// More header fields than Pingora's parser accepts (its `MAX_HEADERS`);
/// above it Pingora would answer a bare 400.
pub const MAX_HEADER_FIELDS: usize = 256;

/// Room for the method, the spaces and the version around the URI when the
/// request line is bounded by `max_uri_bytes`.
const REQUEST_LINE_SLACK: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// `server.max_header_bytes`: the header fields, request line excluded.
    pub max_header_bytes: usize,
    /// `server.max_uri_bytes`: bounds the request line.
    pub max_uri_bytes: usize,
}

#[derive(Debug, Default)]
pub struct HeadScanner {
    /// Bytes already looked at.
    scanned: usize,
    line_start: usize,
    /// Offset just past the request line's LF, once seen.
    request_line_end: Option<usize>,
    fields: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    Incomplete,
    /// The head ends at this offset (just past its empty line).
    Complete(usize),
}

impl HeadScanner {
    /// Scans what was appended to `buf` since the last call, then checks the
    /// limits. Lines may end in LF or CRLF, as Pingora's parser accepts;
    /// empty lines before the request line are skipped as RFC 9112 §2.2 allows.
    pub fn scan(&mut self, buf: &[u8], limits: &HeadLimits) -> Result<Scan, GatewayError> {
        let mut outcome = Scan::Incomplete;
        while let Some(at) = memchr::memchr(b'\n', buf.get(self.scanned..).unwrap_or_default()) {
            let newline = self.scanned + at;
            let line = buf.get(self.line_start..newline).unwrap_or_default();
            let empty = line.is_empty() || line == b"\r";
            self.scanned = newline + 1;
            self.line_start = newline + 1;
            match (empty, self.request_line_end) {
                (true, None) => {}
                (true, Some(_)) => {
                    outcome = Scan::Complete(newline + 1);
                    break;
                }
                (false, None) => self.request_line_end = Some(newline + 1),
                (false, Some(_)) => self.fields += 1,
            }
        }
        if outcome == Scan::Incomplete {
            self.scanned = buf.len();
        }
        self.check(buf.len(), &outcome, limits)?;
        Ok(outcome)
    }

    fn check(&self, len: usize, outcome: &Scan, limits: &HeadLimits) -> Result<(), GatewayError> {
        let end = match outcome {
            Scan::Complete(end) => *end,
            Scan::Incomplete => len,
        };
        let too_large = GatewayError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        };
        if self.fields > MAX_HEADER_FIELDS {
            return Err(too_large);
        }
        match self.request_line_end {
            None if end > limits.max_uri_bytes + REQUEST_LINE_SLACK => {
                Err(GatewayError::UriTooLong {
                    limit: limits.max_uri_bytes,
                })
            }
            Some(start) if end - start > limits.max_header_bytes => Err(too_large),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 200,
        max_uri_bytes: 100,
    };

    fn scan_in_pieces(head: &[u8], piece: usize) -> Result<Scan, GatewayError> {
        let mut scanner = HeadScanner::default();
        let mut outcome = Scan::Incomplete;
        for end in (piece..head.len() + piece).step_by(piece) {
            outcome = scanner.scan(&head[..end.min(head.len())], &LIMITS)?;
            if outcome != Scan::Incomplete {
                break;
            }
        }
        Ok(outcome)
    }

    #[test]
    fn finds_the_end_however_the_head_is_split() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\nBODY";
        for piece in [1, 2, 3, 7, 100] {
            assert_eq!(
                scan_in_pieces(head, piece).unwrap(),
                Scan::Complete(head.len() - 4),
                "piece {piece}"
            );
        }
        let lf_only = b"\r\n\nGET / HTTP/1.1\nHost: a\n\nrest";
        assert_eq!(
            scan_in_pieces(lf_only, 1).unwrap(),
            Scan::Complete(lf_only.len() - 4)
        );
        assert_eq!(
            scan_in_pieces(b"GET / HTTP/1.1\r\nHost: a\r\n", 5).unwrap(),
            Scan::Incomplete
        );
    }

    #[test]
    fn too_many_fields_and_too_many_bytes_are_headers_too_large() {
        let limits = HeadLimits {
            max_header_bytes: 1 << 20,
            max_uri_bytes: 100,
        };
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADER_FIELDS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut scanner = HeadScanner::default();
        let with_max = [head.as_slice(), b"\r\n"].concat();
        assert!(matches!(
            scanner.scan(&with_max, &limits),
            Ok(Scan::Complete(_))
        ));
        head.extend_from_slice(b"X-one-more: v\r\n");
        let e = HeadScanner::default().scan(&head, &limits).unwrap_err();
        assert_eq!(e.code(), "headers_too_large");

        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "v".repeat(200));
        let e = scan_in_pieces(big.as_bytes(), 9).unwrap_err();
        assert_eq!(e.code(), "headers_too_large");
    }

    #[test]
    fn an_endless_request_line_is_uri_too_long() {
        let line = format!("GET /{}", "a".repeat(200));
        let e = scan_in_pieces(line.as_bytes(), 10).unwrap_err();
        assert_eq!(e.code(), "uri_too_long");
        let endless_blank = "\r\n".repeat(100);
        let e = scan_in_pieces(endless_blank.as_bytes(), 10).unwrap_err();
        assert_eq!(e.code(), "uri_too_long");
    }
}
