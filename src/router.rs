//! Path normalisation and route matching.
//!
//! Paths are percent-decoded and dot-segments resolved BEFORE matching, and
//! the normalised form is what goes upstream: a request for
//! `/api/v1/agents/bob/../../users/1` is matched (and forwarded) as
//! `/api/v1/users/1`, so it can never reach a backend path that its route
//! did not authorise.
//!
//! Only escapes of unreserved characters are decoded: reserved ones
//! (RFC 3986 §2.2) stay encoded, as §6.2.2.2 requires, because decoding
//! them changes what the path means to the backend. `;` is refused
//! outright, raw or encoded: Tomcat/Spring-style backends cut path
//! parameters at it before resolving dot segments, so `/a/..;/b` would
//! be `/b` to them while it is a segment named `..;` here.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters re-encoded when the normalised path is rebuilt for upstream.
/// Not `%`: in a normalised segment every `%` starts a kept escape.
const SEGMENT_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// RFC 3986 §2.2 gen-delims and sub-delims.
const RESERVED: &[u8] = b":/?#[]@!$&'()*+,;=";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains '\\', an encoded '/', '\\' or NUL, or invalid UTF-8")]
    ForbiddenEncoding,
    #[error("path contains an invalid percent-escape")]
    InvalidEscape,
    #[error("';' (path parameters) is not accepted in a path")]
    PathParameter,
}

/// A request path after decoding and dot-segment removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    /// Segments without empty ones: unreserved escapes decoded, reserved
    /// ones kept as upper-case `%XX`.
    pub segments: Vec<String>,
    /// The path re-encoded for the upstream request (no query).
    pub encoded: String,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One raw segment in its normal form (see [`NormalizedPath::segments`]).
fn normalize_segment(raw: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b';' {
            return Err(PathError::PathParameter);
        }
        // Not valid in a URI, and a separator to some backends.
        if b == b'\\' {
            return Err(PathError::ForbiddenEncoding);
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::InvalidEscape);
        };
        let value = hi << 4 | lo;
        match value {
            // An encoded separator would let one segment act as two after
            // a backend decodes it again; refuse rather than guess.
            b'/' | b'\\' | 0 => return Err(PathError::ForbiddenEncoding),
            b';' => return Err(PathError::PathParameter),
            v if v == b'%' || RESERVED.contains(&v) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
            }
            v => out.push(v),
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| PathError::ForbiddenEncoding)
}

pub fn normalize(raw_path: &str) -> Result<NormalizedPath, PathError> {
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in raw_path.split('/') {
        let segment = normalize_segment(raw)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let trailing_slash = raw_path.len() > 1 && raw_path.ends_with('/') && !segments.is_empty();
    let mut encoded = String::with_capacity(raw_path.len());
    for segment in &segments {
        encoded.push('/');
        encoded.extend(utf8_percent_encode(segment, SEGMENT_ENCODE));
    }
    if encoded.is_empty() || trailing_slash {
        encoded.push('/');
    }
    Ok(NormalizedPath { segments, encoded })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A route path template: literal segments, `{param}` segments, and an
/// optional `/**` suffix matching any rest (including nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    any_rest: bool,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        if !template.starts_with('/') {
            return Err("must start with '/'".into());
        }
        let (body, any_rest) = match template.strip_suffix("/**") {
            Some(body) => (body, true),
            None => (template, false),
        };
        let mut segments = Vec::new();
        for part in body.split('/').filter(|s| !s.is_empty()) {
            if part.contains('*') {
                return Err("'**' is only allowed as the final '/**' suffix".into());
            }
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("invalid parameter name '{name}'"));
                }
                if segments.contains(&Segment::Param(name.to_string())) {
                    return Err(format!("parameter '{name}' appears twice"));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if part.contains(['{', '}']) {
                return Err("a '{param}' must be a whole segment".into());
            } else if part == "." || part == ".." {
                return Err("dot segments are not allowed".into());
            } else {
                // The same normal form as request segments, so they compare.
                let literal = normalize_segment(part).map_err(|e| e.to_string())?;
                segments.push(Segment::Literal(literal));
            }
        }
        Ok(Self { segments, any_rest })
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// Matches decoded segments; on success returns the parameters in
    /// template order.
    pub fn matches<'a>(&'a self, path: &'a [String]) -> Option<Vec<(&'a str, &'a str)>> {
        let fits = if self.any_rest {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        if !fits {
            return None;
        }
        let mut params = Vec::new();
        for (template, actual) in self.segments.iter().zip(path) {
            match template {
                Segment::Literal(lit) if lit == actual => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.as_str(), actual.as_str())),
            }
        }
        Some(params)
    }
}

/// HTTP methods a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    Any,
    Only(Vec<String>),
}

impl MethodSet {
    pub fn from_config(methods: &[String]) -> Self {
        if methods.iter().any(|m| m == "*") {
            MethodSet::Any
        } else {
            MethodSet::Only(methods.iter().map(|m| m.to_ascii_uppercase()).collect())
        }
    }

    pub fn allows(&self, method: &str) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => list.iter().any(|m| m == method),
        }
    }
}

/// Outcome of matching a request against the ordered route list.
#[derive(Debug)]
pub enum RouteLookup<'a, R> {
    Found {
        /// Position of the route in the list given to `lookup`.
        index: usize,
        route: &'a R,
        params: Vec<(&'a str, &'a str)>,
    },
    /// Some route matches the path but none the method: 405 with `Allow`.
    MethodNotAllowed {
        allow: Vec<String>,
    },
    NotFound,
}

pub trait Routable {
    fn template(&self) -> &PathTemplate;
    fn methods(&self) -> &MethodSet;
}

/// First route (in configuration order) whose path and method both match.
pub fn lookup<'a, R: Routable>(
    routes: &'a [R],
    path: &'a [String],
    method: &str,
) -> RouteLookup<'a, R> {
    let mut allow: Vec<String> = Vec::new();
    let mut path_matched = false;
    for (index, route) in routes.iter().enumerate() {
        let Some(params) = route.template().matches(path) else {
            continue;
        };
        if route.methods().allows(method) {
            return RouteLookup::Found {
                index,
                route,
                params,
            };
        }
        path_matched = true;
        if let MethodSet::Only(list) = route.methods() {
            for m in list {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
    }
    if path_matched {
        RouteLookup::MethodNotAllowed { allow }
    } else {
        RouteLookup::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        normalize(p).unwrap().segments
    }

    #[test]
    fn normalizes_dot_segments_and_encoding() {
        assert_eq!(
            normalize("/api/v1/agents/bob/../../users/1")
                .unwrap()
                .encoded,
            "/api/v1/users/1"
        );
        assert_eq!(normalize("/a/./b//c/").unwrap().encoded, "/a/b/c/");
        assert_eq!(normalize("/a/%2e%2e/b").unwrap().encoded, "/b");
        assert_eq!(normalize("/../../x").unwrap().encoded, "/x");
        assert_eq!(normalize("/").unwrap().encoded, "/");
        assert_eq!(normalize("/a%20b").unwrap().encoded, "/a%20b");
        assert_eq!(segs("/a%20b"), vec!["a b"]);
    }

    #[test]
    fn refuses_encoded_separators() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize("/a%5Cb"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize("/a\\b"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize("/a%00"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize("/a%ff"), Err(PathError::ForbiddenEncoding));
        assert_eq!(normalize("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn reserved_escapes_stay_encoded_and_semicolons_are_refused() {
        for p in [
            "/t/..;/users/1",
            "/t/..%3B/users/1",
            "/t/%2e%2e%3b/users/1",
            "/t/x;jsessionid=1",
            "/t/%3b",
        ] {
            assert_eq!(normalize(p), Err(PathError::PathParameter), "{p}");
        }
        // Kept encoded (upper-case hex), not decoded into delimiters.
        assert_eq!(normalize("/a%3fb%23c").unwrap().encoded, "/a%3Fb%23c");
        assert_eq!(segs("/a%3fb%23c"), vec!["a%3Fb%23c"]);
        assert_eq!(normalize("/a%2Cb%40c%3D").unwrap().encoded, "/a%2Cb%40c%3D");
        assert_eq!(normalize("/100%25").unwrap().encoded, "/100%25");
        // Unreserved escapes are decoded, so `..` spelt any way resolves.
        assert_eq!(normalize("/a/%2E%2e/b%7e").unwrap().encoded, "/b~");
        // A reserved escape is never a dot segment.
        assert_eq!(normalize("/a/.%2C/b").unwrap().encoded, "/a/.%2C/b");
        for p in ["/a%", "/a%2", "/a%zz", "/a%%41"] {
            assert_eq!(normalize(p), Err(PathError::InvalidEscape), "{p}");
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in [
            "/a/%2e%2e/b%20c/%3F/",
            "/x/%C3%A9t%C3%A9",
            "/a/\"q\"",
            "/%25/%2541",
        ] {
            let once = normalize(p).unwrap();
            let twice = normalize(&once.encoded).unwrap();
            assert_eq!(once, twice, "{p}");
        }
    }

    #[test]
    fn template_params_and_rest() {
        let t = PathTemplate::parse("/api/v1/agents/{agent}/tickets").unwrap();
        let p = segs("/api/v1/agents/bob/tickets");
        assert_eq!(t.matches(&p), Some(vec![("agent", "bob")]));
        assert_eq!(t.matches(&segs("/api/v1/agents/bob/tickets/1")), None);
        let rest = PathTemplate::parse("/api/v1/tickets/**").unwrap();
        assert!(rest.matches(&segs("/api/v1/tickets")).is_some());
        assert!(rest.matches(&segs("/api/v1/tickets/1/comments")).is_some());
        assert!(rest.matches(&segs("/api/v1/ticketsX")).is_none());
        assert!(PathTemplate::parse("/a/**/b").is_err());
        assert!(PathTemplate::parse("/a/x{p}").is_err());
        assert!(PathTemplate::parse("a").is_err());
    }

    #[derive(Debug)]
    struct R(PathTemplate, MethodSet);
    impl Routable for R {
        fn template(&self) -> &PathTemplate {
            &self.0
        }
        fn methods(&self) -> &MethodSet {
            &self.1
        }
    }

    #[test]
    fn first_match_wins_and_405_lists_methods() {
        let routes = vec![
            R(
                PathTemplate::parse("/t/**").unwrap(),
                MethodSet::from_config(&["GET".into()]),
            ),
            R(
                PathTemplate::parse("/t/{id}").unwrap(),
                MethodSet::from_config(&["PATCH".into()]),
            ),
        ];
        let p = segs("/t/1");
        assert!(matches!(
            lookup(&routes, &p, "GET"),
            RouteLookup::Found { .. }
        ));
        match lookup(&routes, &p, "PATCH") {
            RouteLookup::Found {
                index,
                route,
                params,
            } => {
                assert_eq!(index, 1);
                assert!(std::ptr::eq(route, &routes[1]));
                assert_eq!(params, vec![("id", "1")]);
            }
            other => panic!("{other:?}"),
        }
        match lookup(&routes, &p, "DELETE") {
            RouteLookup::MethodNotAllowed { allow } => assert_eq!(allow, vec!["GET", "PATCH"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup(&routes, &segs("/x"), "GET"),
            RouteLookup::NotFound
        ));
    }
}
