//! Request ids and W3C trace context.

use pingora::http::RequestHeader;
use rand::RngCore;

const MAX_REQUEST_ID: usize = 64;

/// The client's `X-Request-Id` when it is safe to echo and log (≤ 64 of
/// `[A-Za-z0-9._-]`), else a fresh ULID.
pub fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::new().to_string())
}

/// A `traceparent` for the upstream request: the client's trace id is kept
/// and a new span id (ours) is issued; an invalid or absent header starts a
/// new trace.
pub fn traceparent(req: &RequestHeader) -> String {
    let mut rng = rand::thread_rng();
    let mut span = [0u8; 8];
    rng.fill_bytes(&mut span);
    if span == [0; 8] {
        span[7] = 1;
    }
    let incoming = req
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    // Written into one buffer: this runs for every request, and one
    // allocation is all it needs (hex::encode + format! took four).
    let mut out = [0u8; TRACEPARENT_LEN];
    out[..3].copy_from_slice(b"00-");
    out[35] = b'-';
    out[52] = b'-';
    let flags = match incoming {
        Some((trace_id, _, flags)) => {
            out[3..35].copy_from_slice(trace_id.as_bytes());
            flags
        }
        None => {
            let mut trace = [0u8; 16];
            rng.fill_bytes(&mut trace);
            if trace == [0; 16] {
                trace[15] = 1;
            }
            // 16 bytes into 32 hex digits: the lengths always match.
            let _ = hex::encode_to_slice(trace, &mut out[3..35]);
            "01"
        }
    };
    let _ = hex::encode_to_slice(span, &mut out[36..52]);
    out[53..].copy_from_slice(flags.as_bytes());
    // Hex digits and dashes only (the incoming parts were checked as hex).
    String::from_utf8_lossy(&out).into_owned()
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

/// Returns (trace-id, parent-id, flags) of a valid version-00 traceparent.
pub fn parse_traceparent(value: &str) -> Option<(&str, &str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then_some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn request_id_accepts_safe_ids_only() {
        assert_eq!(
            request_id(&req(&[("x-request-id", "abc-1.2_3")])),
            "abc-1.2_3"
        );
        let generated = request_id(&req(&[("x-request-id", "bad id!")]));
        assert_eq!(generated.len(), 26);
        assert_eq!(
            request_id(&req(&[("x-request-id", &"a".repeat(65))])).len(),
            26
        );
    }

    #[test]
    fn traceparent_keeps_trace_id() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = traceparent(&req(&[("traceparent", incoming)]));
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!out.contains("00f067aa0ba902b7"));
        assert!(out.ends_with("-01"));
        let fresh = traceparent(&req(&[("traceparent", "garbage")]));
        assert_eq!(fresh.len(), 55);
        assert!(parse_traceparent(&fresh).is_some());
    }
}
