//! The usage page (`/admin/ui/`): one HTML page, its script and its style,
//! embedded in the binary. The assets hold no data and are served without
//! the admin token; the page asks for the token and calls the token-checked
//! admin API with it. A strict Content-Security-Policy allows only these
//! same-origin assets and same-origin requests: no inline script or style,
//! no third-party origin, no framing.

use http::{header, HeaderValue, Response, StatusCode};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (under `/admin/ui`), or 404.
pub fn asset(path: &str) -> Response<Vec<u8>> {
    let (status, content_type, body) = match path {
        // Relative asset URLs in the page need the trailing slash.
        "/admin/ui" => return redirect("/admin/ui/"),
        "/admin/ui/" | "/admin/ui/index.html" => {
            (StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        "/admin/ui/app.js" => (StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/admin/ui/app.css" => (StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    };
    with_headers(status, content_type, body.as_bytes().to_vec())
}

fn redirect(to: &'static str) -> Response<Vec<u8>> {
    let mut resp = with_headers(StatusCode::MOVED_PERMANENTLY, "text/plain", Vec::new());
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

fn with_headers(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_the_policy_and_the_page_has_no_inline_script() {
        for path in ["/admin/ui/", "/admin/ui/app.js", "/admin/ui/app.css"] {
            let resp = asset(path);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        }
        assert_eq!(asset("/admin/ui/other").status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("/admin/ui").status(), StatusCode::MOVED_PERMANENTLY);
        // Every <script> has a src: the policy would block an inline one.
        assert_eq!(
            INDEX_HTML.matches("<script").count(),
            INDEX_HTML.matches("<script src=").count()
        );
        assert!(!INDEX_HTML.contains("style=") && !INDEX_HTML.contains("http"));
    }
}
