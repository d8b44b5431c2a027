//! Request framing and size checks done before anything else looks at the
//! request: request smuggling (CL+TE, conflicting Content-Length, odd
//! Transfer-Encoding) and the URI, header and body size limits.

use crate::config::schema::ServerConfig;
use crate::error::GatewayError;
use pingora::http::RequestHeader;

/// `raw_headers` is the request head as received (HTTP/1): Pingora drops
/// `Content-Length` when `Transfer-Encoding` is also present, so the
/// CL+TE smuggling shape is only visible in the original bytes.
pub fn check(
    req: &RequestHeader,
    server: &ServerConfig,
    raw_headers: impl FnOnce() -> Option<bytes::Bytes>,
) -> Result<(), GatewayError> {
    let uri_len = req
        .uri
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if uri_len > server.max_uri_bytes {
        return Err(GatewayError::UriTooLong {
            limit: server.max_uri_bytes,
        });
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > server.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            limit: server.max_header_bytes,
        });
    }

    // `Connection: content-length` would have a proxy drop the framing
    // header as hop-by-hop and forward the body unframed (or drop it).
    for value in req.headers.get_all(http::header::CONNECTION) {
        let listed = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        if let Some(name) = listed
            .split(',')
            .map(|t| crate::edge::headers::fold_name(t.trim()).into_owned())
            .find(|t| ["content-length", "transfer-encoding", "host"].contains(&t.as_str()))
        {
            return Err(GatewayError::BadRequest(format!(
                "Connection may not name {name}"
            )));
        }
    }

    let te: Vec<_> = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .collect();
    let cl: Vec<_> = req
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    let cl_in_raw = || {
        raw_headers().is_some_and(|raw| {
            raw.split(|b| *b == b'\n').skip(1).any(|line| {
                line.split(|b| *b == b':')
                    .next()
                    .is_some_and(|name| name.trim_ascii().eq_ignore_ascii_case(b"content-length"))
            })
        })
    };
    if !te.is_empty() && (!cl.is_empty() || cl_in_raw()) {
        return Err(GatewayError::BadRequest(
            "both Content-Length and Transfer-Encoding present".into(),
        ));
    }
    if te.len() > 1
        || te
            .first()
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(GatewayError::BadRequest(
            "unsupported Transfer-Encoding (only a single 'chunked' is accepted)".into(),
        ));
    }
    let mut length: Option<u64> = None;
    for value in cl {
        // "5, 5" in one header is as ambiguous as two headers.
        for item in value.to_str().unwrap_or("x").split(',') {
            let item = item.trim();
            let parsed = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                .then(|| item.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| GatewayError::BadRequest("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(GatewayError::BadRequest(
                    "conflicting Content-Length values".into(),
                ));
            }
            length = Some(parsed);
        }
    }
    if length.is_some_and(|l| l > server.max_body_bytes) {
        return Err(GatewayError::BodyTooLarge {
            limit: server.max_body_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerConfig {
        serde_yaml::from_str("listen: ['127.0.0.1:1']\nadmin_listen: '127.0.0.1:2'\nmax_body_bytes: 100\nmax_uri_bytes: 20\nmax_header_bytes: 200").unwrap()
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let s = server();
        let bad = [
            vec![("content-length", "5"), ("transfer-encoding", "chunked")],
            vec![("content-length", "5"), ("content-length", "6")],
            vec![("content-length", "5, 6")],
            vec![("content-length", "+5")],
            vec![("transfer-encoding", "gzip, chunked")],
            vec![
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("connection", "close, Content-Length")],
            vec![("connection", "transfer-encoding")],
            vec![("connection", "keep-alive"), ("connection", "HOST")],
            vec![("connection", "content_length")],
        ];
        for headers in bad {
            let e = check(&req("/", &headers), &s, || None).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{headers:?}");
        }
        assert!(check(
            &req("/", &[("content-length", "5"), ("content-length", "5")]),
            &s,
            || None
        )
        .is_ok());
        assert!(check(&req("/", &[("transfer-encoding", "Chunked")]), &s, || None).is_ok());
        assert!(check(
            &req("/", &[("connection", "keep-alive, x-foo")]),
            &s,
            || None
        )
        .is_ok());
    }

    #[test]
    fn cl_removed_by_the_parser_is_found_in_the_raw_head() {
        let raw = bytes::Bytes::from_static(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n");
        let e = check(
            &req("/", &[("transfer-encoding", "chunked")]),
            &server(),
            || Some(raw),
        )
        .unwrap_err();
        assert_eq!(e.code(), "bad_request");
    }

    #[test]
    fn sizes() {
        let s = server();
        assert_eq!(
            check(&req("/", &[("content-length", "101")]), &s, || None)
                .unwrap_err()
                .code(),
            "body_too_large"
        );
        assert_eq!(
            check(&req(&format!("/{}", "a".repeat(20)), &[]), &s, || None)
                .unwrap_err()
                .code(),
            "uri_too_long"
        );
        let big = "v".repeat(300);
        assert_eq!(
            check(&req("/", &[("x-big", &big)]), &s, || None)
                .unwrap_err()
                .code(),
            "headers_too_large"
        );
    }
}
