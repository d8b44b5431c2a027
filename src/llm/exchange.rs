//! Opens the upstream exchange of an LLM call: picks a peer of the model's
//! pool, sends the rewritten body, reads the response header, and moves on
//! to another peer (connect failure) or the next fallback model (pool down,
//! connection failed, 5xx or 429) while nothing has reached the client yet.

use super::api::LlmRequest;
use super::model::Model;
use super::translate::Translation;
use crate::config::schema::{LlmApi, UpstreamApi};
use crate::ctx::RequestCtx;
use crate::edge::headers;
use crate::error::GatewayError;
use crate::upstream::cork;
use crate::upstream::pool::Pool;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An upstream that answered with a response header we will forward.
pub struct Opened {
    pub session: HttpSession,
    pub peer: Box<HttpPeer>,
    pub pool: Arc<Pool>,
    pub addr: SocketAddr,
    pub model: Arc<Model>,
    pub response: ResponseHeader,
    /// The output cap sent to this model (0 for APIs without output).
    pub output_cap: u64,
    /// The request body sent to it.
    pub body: Bytes,
    /// Set when the upstream speaks another API than the client.
    pub translation: Option<Translation>,
    /// The start of a streamed answer read before it was chosen (up to its
    /// first content event): forwarded before the rest.
    pub primed: Bytes,
}

/// Most bytes of a stream read while waiting for its first content event.
const MAX_PRIMED: usize = 64 * 1024;

/// Whether the start of an SSE answer holds a content event (text or a
/// tool call) in the upstream's API. A byte search, not a parse: the events
/// before the first content are a handful of small, fixed shapes.
fn has_content(upstream: UpstreamApi, start: &[u8]) -> bool {
    let find = |needle: &[u8]| memchr::memmem::find(start, needle).is_some();
    match upstream {
        UpstreamApi::AnthropicMessages => find(b"content_block_delta") || find(b"\"tool_use\""),
        UpstreamApi::Gemini => find(b"\"text\"") || find(b"\"functionCall\""),
        UpstreamApi::OpenaiChat => {
            find(b"\"tool_calls\"")
                || memchr::memmem::find_iter(start, b"\"content\":\"")
                    .any(|at| start.get(at + 11).is_some_and(|&b| b != b'"'))
        }
    }
}

/// Reads a streamed answer up to its first content event. `Err` when the
/// stream ends, fails or stalls (the pool's read timeout) before it: the
/// next model can still serve, nothing has reached the client.
async fn prime(session: &mut HttpSession, upstream: UpstreamApi) -> Result<Bytes, String> {
    let mut start = Vec::new();
    loop {
        match session.read_response_body().await {
            Ok(Some(bytes)) => {
                start.extend_from_slice(&bytes);
                if start.len() >= MAX_PRIMED || has_content(upstream, &start) {
                    return Ok(Bytes::from(start));
                }
            }
            Ok(None) => return Err("the stream ended before its first content event".into()),
            Err(e) => {
                return Err(format!(
                    "the stream failed before its first content event: {e}"
                ))
            }
        }
    }
}

fn is_sse(response: &ResponseHeader) -> bool {
    response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// One model to try, with its pool.
pub struct Candidate {
    pub model: Arc<Model>,
    pub pool: Arc<Pool>,
    /// How the client's API reaches this model's upstream, if it differs.
    pub translation: Option<Translation>,
}

/// The Messages API version sent to an Anthropic upstream reached by
/// translation (the client, speaking another API, sends none); a
/// `set_headers` entry wins.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Client headers of one provider's API: meaningless to another's
/// upstream, so not forwarded when the call is translated.
fn is_provider_header(name: &str) -> bool {
    ["anthropic-", "openai-", "x-goog-", "x-stainless-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Why the last attempt failed, kept to answer the client if all fail.
enum Failure {
    NoPeer(String),
    Connect(String),
    Timeout(String),
}

impl Failure {
    fn from_error(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Failure::Timeout(e.etype().as_str().to_string())
            }
            _ => Failure::Connect(e.etype().as_str().to_string()),
        }
    }

    fn into_error(self) -> GatewayError {
        match self {
            Failure::NoPeer(upstream) => GatewayError::UpstreamUnavailable {
                upstream,
                retry_after: 1,
            },
            Failure::Connect(why) => GatewayError::UpstreamError(why),
            Failure::Timeout(why) => GatewayError::UpstreamTimeout(why),
        }
    }
}

/// The request header sent upstream: the client's, cleaned like any proxied
/// request, with framing rewritten for the new body, and sent to the
/// model's `upstream_path` when it has one (Azure deployments).
fn upstream_request(
    client: &RequestHeader,
    ctx: &RequestCtx,
    target: (&Pool, &Candidate, SocketAddr),
    client_ip: Option<IpAddr>,
    (body_len, stream): (usize, bool),
) -> pingora::Result<RequestHeader> {
    let (pool, candidate, addr) = target;
    let model = candidate.model.as_ref();
    let mut req = client.clone();
    // The gateway's credentials pay for the call: nothing the client sends
    // may pick the account (or smuggle its own key) next to them.
    headers::strip_folded(&mut req, headers::LLM_ACCOUNT_HEADERS);
    if candidate.translation.is_some() {
        let foreign: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|k| is_provider_header(k.as_str()))
            .cloned()
            .collect();
        for name in foreign {
            req.remove_header(&name);
        }
    }
    headers::prepare_upstream_request(&mut req, ctx, &pool.set_headers, client_ip, false)?;
    if let Some(t) = &candidate.translation {
        if t.upstream == UpstreamApi::AnthropicMessages
            && req.headers.get("anthropic-version").is_none()
        {
            req.insert_header("anthropic-version", ANTHROPIC_VERSION)?;
        }
    }
    // After the common preparation: the configured path, never the
    // client's query string or trailing slash (an `api-version` or a
    // different endpoint would be the client's choice).
    let uri = match (&model.upstream_path, &candidate.translation) {
        (Some(path), _) => http::Uri::try_from(path.as_str()),
        (None, Some(t)) => http::Uri::try_from(t.upstream_path(model.upstream_name(), stream)),
        (None, None) => {
            let matched = req.uri.path();
            let path = match matched.trim_end_matches('/') {
                "" => "/",
                trimmed => trimmed,
            };
            http::Uri::try_from(path)
        }
    }
    .map_err(|e| Error::explain(ErrorType::InternalError, format!("upstream path: {e}")))?;
    req.set_uri(uri);
    req.set_version(http::Version::HTTP_11);
    for name in ["transfer-encoding", "expect", "content-length", "host"] {
        req.remove_header(name);
    }
    // Usage can only be read from an uncompressed answer.
    req.insert_header("accept-encoding", "identity")?;
    req.insert_header("content-type", "application/json")?;
    req.insert_header("content-length", body_len.to_string())?;
    let host = if pool.definition.sni.is_empty() {
        addr.to_string()
    } else {
        pool.definition.sni.clone()
    };
    req.insert_header("host", host)?;
    Ok(req)
}

async fn attempt(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    body: Bytes,
) -> pingora::Result<HttpSession> {
    let (mut session, _reused) = connector.get_http_session(peer).await?;
    // The connector leaves these unset (Pingora's proxy sets them itself):
    // without them a stalled upstream would hold the call, and its budget
    // reservation, forever.
    session.set_read_timeout(peer.options.read_timeout);
    session.set_write_timeout(peer.options.write_timeout);
    if let Err(e) = crate::upstream::tls::verify_pins(peer, session.digest()) {
        session.shutdown().await;
        return Err(e);
    }
    // Header and body leave as one segment (upstream::cork).
    let corked = cork::hold(&session);
    let sent = async {
        session.write_request_header(Box::new(req)).await?;
        session.write_request_body(body, true).await?;
        session.finish_request_body().await
    }
    .await;
    cork::release(corked);
    let result = match sent {
        Ok(()) => session.read_response_header().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(session),
        Err(e) => {
            session.shutdown().await;
            Err(e)
        }
    }
}

/// Tries each candidate in order until one answers with something to
/// forward. The last candidate's answer is forwarded whatever its status.
pub async fn open(
    connector: &Connector,
    candidates: &[Candidate],
    original: LlmRequest,
    client: &RequestHeader,
    ctx: &mut RequestCtx,
    client_ip: Option<IpAddr>,
) -> Result<Opened, GatewayError> {
    let key = ctx
        .identity
        .as_ref()
        .map(|i| i.user.clone())
        .unwrap_or_default();
    let mut failure = Failure::NoPeer(String::new());
    // Fallbacks need the request as the client sent it; the last candidate
    // takes it without a copy (bodies go up to max_body_bytes).
    let mut original = Some(original);
    for (index, candidate) in candidates.iter().enumerate() {
        let is_last = index + 1 == candidates.len();
        let Some(mut request) = (if is_last {
            original.take()
        } else {
            original.clone()
        }) else {
            break;
        };
        let output_cap =
            request.rewrite(candidate.model.upstream_name(), candidate.model.max_tokens);
        let stream = request.is_stream();
        // Streams of the APIs whose content events `has_content` knows.
        let client_upstream_api = match request.api() {
            LlmApi::AnthropicMessages => Some(UpstreamApi::AnthropicMessages),
            LlmApi::OpenaiChat => Some(UpstreamApi::OpenaiChat),
            LlmApi::OpenaiResponses | LlmApi::OpenaiEmbeddings => None,
        };
        let body = match &candidate.translation {
            None => Bytes::from(request.to_vec()),
            Some(t) => match t.request(request.into_body()) {
                Ok(translated) => Bytes::from(serde_json::to_vec(&translated).unwrap_or_default()),
                // The client's request has no equivalent in the primary's
                // API: its 400 names the field. A fallback is only skipped.
                Err(e) if index == 0 => return Err(GatewayError::InvalidRequest(e.to_string())),
                Err(e) => {
                    tracing::warn!(model = %candidate.model.name, "fallback skipped: {e}");
                    continue;
                }
            },
        };
        let pool = &candidate.pool;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let attempts = 1 + pool.retries();
        for _ in 0..attempts {
            let Some(addr) = pool.select(key.as_bytes(), &tried) else {
                if tried.is_empty() {
                    failure = Failure::NoPeer(pool.name.clone());
                }
                break;
            };
            tried.push(addr);
            let Some(peer) = pool.http_peer(addr) else {
                break;
            };
            ctx.peer = Some(addr);
            ctx.upstream_started
                .get_or_insert_with(std::time::Instant::now);
            ctx.attempt_started(addr, Some(&candidate.model.name));
            let target = (pool.as_ref(), candidate, addr);
            let req = upstream_request(client, ctx, target, client_ip, (body.len(), stream))
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            match attempt(connector, &peer, req, body.clone()).await {
                Ok(mut session) => {
                    let response = match session.response_header() {
                        Some(r) => r.clone(),
                        None => {
                            ctx.attempt_ended(None);
                            session.shutdown().await;
                            failure = Failure::Connect("no response header".into());
                            continue;
                        }
                    };
                    let status = response.status.as_u16();
                    ctx.attempt_ended(Some(status));
                    pool.report_status(addr, status);
                    if !is_last && (status >= 500 || status == 429) {
                        tracing::warn!(model = %candidate.model.name, status, "upstream refused; trying the next model");
                        session.shutdown().await;
                        break;
                    }
                    // With a fallback left, a stream is chosen only once it
                    // has produced content: one that dies or stalls first
                    // goes to the next model, unseen by the client.
                    let mut primed = Bytes::new();
                    let upstream_api = candidate
                        .translation
                        .map(|t| t.upstream)
                        .or(client_upstream_api);
                    if let Some(upstream) = upstream_api
                        .filter(|_| !is_last && (200..300).contains(&status) && is_sse(&response))
                    {
                        match prime(&mut session, upstream).await {
                            Ok(start) => primed = start,
                            Err(why) => {
                                tracing::warn!(model = %candidate.model.name, "{why}; trying the next model");
                                pool.report_failure(addr);
                                session.shutdown().await;
                                failure = Failure::Connect(why);
                                break;
                            }
                        }
                    }
                    return Ok(Opened {
                        session,
                        peer,
                        pool: pool.clone(),
                        addr,
                        model: candidate.model.clone(),
                        response,
                        output_cap,
                        body,
                        translation: candidate.translation,
                        primed,
                    });
                }
                Err(e) => {
                    ctx.attempt_ended(None);
                    pool.report_failure(addr);
                    tracing::warn!(model = %candidate.model.name, peer = %addr, "upstream attempt failed: {e}");
                    failure = Failure::from_error(&e);
                }
            }
        }
    }
    Err(failure.into_error())
}
