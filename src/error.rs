//! Every refusal the gateway itself produces, with its HTTP status and the
//! `error.code` of the contract (DESIGN §4). The only place that turns one
//! into bytes is `respond::send_error`.

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no credentials: send X-API-Key or Authorization: Bearer")]
    MissingCredentials,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("{0}")]
    Forbidden(String),
    #[error("your roles may not use model {0}")]
    ModelNotAllowed(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("model {0} not found")]
    ModelNotFound(String),
    #[error("method {method} not allowed on this route")]
    MethodNotAllowed { method: String, allow: Vec<String> },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request blocked by the {0} guard")]
    GuardBlocked(String),
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request URI exceeds {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("request not received in time")]
    RequestTimeout,
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    #[error("{message}")]
    TokenBudgetExceeded { message: String, retry_after: u64 },
    #[error("{message}")]
    UsdBudgetExceeded { message: String, retry_after: u64 },
    #[error("no healthy peer in upstream {upstream}")]
    UpstreamUnavailable { upstream: String, retry_after: u64 },
    #[error("upstream failed: {0}")]
    UpstreamError(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    #[error("usage store unavailable")]
    StoreUnavailable,
    #[error("internal error")]
    Internal(String),
    /// An `Mcp-Session-Id` the gateway does not hold for this caller.
    #[error("MCP session not found: start a new session")]
    SessionNotFound,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            MissingCredentials | InvalidApiKey | InvalidToken | TokenExpired => 401,
            Forbidden(_) | ModelNotAllowed(_) => 403,
            NoRoute(_) | ModelNotFound(_) | SessionNotFound => 404,
            MethodNotAllowed { .. } => 405,
            InvalidRequest(_) | GuardBlocked(_) | BadRequest(_) => 400,
            BodyTooLarge { .. } => 413,
            UriTooLong { .. } => 414,
            HeadersTooLarge { .. } => 431,
            RequestTimeout => 408,
            RateLimited { .. } | TokenBudgetExceeded { .. } | UsdBudgetExceeded { .. } => 429,
            UpstreamUnavailable { .. } | StoreUnavailable => 503,
            UpstreamError(_) => 502,
            UpstreamTimeout(_) => 504,
            Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            MissingCredentials => "missing_credentials",
            InvalidApiKey => "invalid_api_key",
            InvalidToken => "invalid_token",
            TokenExpired => "token_expired",
            Forbidden(_) => "forbidden",
            ModelNotAllowed(_) => "model_not_allowed",
            NoRoute(_) => "no_route",
            ModelNotFound(_) => "model_not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            InvalidRequest(_) => "invalid_request",
            GuardBlocked(_) => "guard_blocked",
            BodyTooLarge { .. } => "body_too_large",
            UriTooLong { .. } => "uri_too_long",
            HeadersTooLarge { .. } => "headers_too_large",
            RequestTimeout => "request_timeout",
            BadRequest(_) => "bad_request",
            RateLimited { .. } => "rate_limited",
            TokenBudgetExceeded { .. } => "token_budget_exceeded",
            UsdBudgetExceeded { .. } => "usd_budget_exceeded",
            UpstreamUnavailable { .. } => "upstream_unavailable",
            UpstreamError(_) => "upstream_error",
            UpstreamTimeout(_) => "upstream_timeout",
            StoreUnavailable => "store_unavailable",
            Internal(_) => "internal_error",
            SessionNotFound => "session_not_found",
        }
    }

    /// The OpenAI-style `error.type`, so AI SDKs classify it well.
    pub fn error_type(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// Extra response headers this refusal carries.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        use GatewayError::*;
        match self {
            MissingCredentials | InvalidApiKey => {
                vec![("www-authenticate", "Bearer realm=\"tollgate\"".into())]
            }
            InvalidToken | TokenExpired => vec![(
                "www-authenticate",
                "Bearer realm=\"tollgate\", error=\"invalid_token\"".into(),
            )],
            MethodNotAllowed { allow, .. } => vec![("allow", allow.join(", "))],
            RateLimited { retry_after, .. }
            | TokenBudgetExceeded { retry_after, .. }
            | UsdBudgetExceeded { retry_after, .. }
            | UpstreamUnavailable { retry_after, .. } => {
                vec![("retry-after", retry_after.to_string())]
            }
            // The store is retried on every request: come back at once.
            StoreUnavailable => vec![("retry-after", "1".into())],
            _ => Vec::new(),
        }
    }

    /// Whether the connection must be closed after this answer: the request
    /// framing or body can no longer be trusted or drained cheaply.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::RequestTimeout
                | GatewayError::BodyTooLarge { .. }
                | GatewayError::HeadersTooLarge { .. }
                | GatewayError::UriTooLong { .. }
        )
    }
}
