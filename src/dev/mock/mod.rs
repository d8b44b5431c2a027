//! The mock backend used by `tollgate demo`, the integration tests and the
//! benches: a support API that echoes what it received (so identity
//! propagation is visible) and the LLM APIs tollgate serves: OpenAI chat
//! completions, Responses and embeddings, Anthropic Messages and Gemini
//! (`/v1beta/models/MODEL:generateContent`, `:streamGenerateContent`), at their
//! `/v1/...` paths and at Azure-style deployment paths
//! (`/openai/deployments/NAME/chat/completions?api-version=...`: any POST
//! under `/openai/` whose path ends in the API's suffix).
//!
//! It is a Pingora `HttpServerApp` rather than a `ServeHttp` because SSE
//! answers must be streamed chunk by chunk, with delays between events.
//!
//! Knobs (request headers, all optional):
//! - `x-mock-status: 503` answer with this status
//! - `x-mock-delay-ms: 200` wait before answering
//! - `x-mock-completion-tokens: 40` completion length of an LLM answer
//!   (capped by the request's output limit)
//! - `x-mock-ignore-cap: 1` generate past the request's output limit (a
//!   runaway upstream; with a huge completion count, an endless stream)
//! - `x-mock-chunk-delay-ms: 50` delay between SSE events
//! - `x-mock-stall-after: 5` stop sending (connection kept open) after 5
//!   output events
//! - `x-mock-no-usage: 1` never report usage
//! - `x-mock-answer-b64: BASE64(["Hel", "lo"])` answer with these text
//!   pieces (one streamed delta each); `x-mock-echo-header: NAME` answer
//!   with the value of the request header NAME (as the gateway sent it)
//! - `x-mock-cached-tokens: 64`, `x-mock-cache-write-tokens: 32`,
//!   `x-mock-reasoning-tokens: 8` token classes to report
//! - `x-mock-tool-call: NAME` answer with a call of tool NAME (arguments
//!   `{"id": 42}`) unless the conversation holds a tool result already
//! - chat only: `x-mock-json-bytes: N` (an N-byte JSON answer),
//!   `x-mock-endless-event: 1` (one SSE event that never ends),
//!   `x-mock-headers: N` (N extra response headers)
//!
//! `/mcp` is a support-tools MCP server (Streamable HTTP, see `mcp`):
//! `x-mock-mcp-sse: 1` answers POSTs as SSE streams.
//! `/bench` answers a fixed small JSON body (load benchmarks).
//! Control endpoints: `POST /__mock/health/{ok|fail}` flips `/healthz`;
//! `POST /__mock/force-status/{code}` answers every other request with that
//! status (0 turns it off); `GET /__mock/stats` counts requests served.

mod anthropic;
mod chat;
mod embeddings;
mod gemini;
mod llm;
mod mcp;
mod reply;
mod responses;

use reply::{header_u64, write_reply, Reply};

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Request bodies larger than this are counted, not kept.
const MAX_ECHO_BODY: usize = 4 * 1024 * 1024;

pub struct MockBackend {
    name: String,
    healthy: AtomicBool,
    served: AtomicU64,
    forced_status: AtomicU16,
}

impl MockBackend {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            healthy: AtomicBool::new(true),
            served: AtomicU64::new(0),
            forced_status: AtomicU16::new(0),
        }
    }
}

/// The LLM APIs the mock answers.
#[derive(Clone, Copy)]
enum MockApi {
    Chat,
    Messages,
    Responses,
    Embeddings,
    Gemini,
}

impl MockApi {
    fn of(path: &str) -> Option<MockApi> {
        [
            ("/chat/completions", MockApi::Chat),
            ("/messages", MockApi::Messages),
            ("/responses", MockApi::Responses),
            ("/embeddings", MockApi::Embeddings),
        ]
        .into_iter()
        .find_map(|(suffix, api)| llm_api_path(path, suffix).then_some(api))
        .or_else(|| gemini::method_of(path).map(|_| MockApi::Gemini))
    }
}

impl MockBackend {
    /// One LLM call: misbehaviour knobs (chat), the body read as a call,
    /// then the API's handler.
    async fn llm_call(
        &self,
        session: &mut ServerSession,
        api: MockApi,
        body: &[u8],
    ) -> pingora::Result<()> {
        if matches!(api, MockApi::Chat) && llm::misbehave(session).await? {
            return Ok(());
        }
        let Some(call) = llm::read_call(session, &self.name, body).await? else {
            return Ok(());
        };
        match api {
            MockApi::Chat => chat::complete(session, call).await,
            MockApi::Messages => anthropic::messages(session, call).await,
            MockApi::Responses => responses::create(session, call).await,
            MockApi::Embeddings => embeddings::create(session, call).await,
            MockApi::Gemini => gemini::generate(session, call).await,
        }
    }
}

/// `/v1<suffix>`, or an Azure-style `/openai/...<suffix>` path. Other
/// paths (e.g. `/v2/chat/completions`) are echoed.
fn llm_api_path(path: &str, suffix: &str) -> bool {
    path.strip_prefix("/v1") == Some(suffix)
        || (path.starts_with("/openai/") && path.ends_with(suffix))
}

async fn read_body(session: &mut ServerSession) -> pingora::Result<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut total = 0;
    while let Some(chunk) = session.read_request_body().await? {
        total += chunk.len();
        if body.len() + chunk.len() <= MAX_ECHO_BODY {
            body.extend_from_slice(&chunk);
        }
    }
    Ok((body, total))
}

impl MockBackend {
    async fn handle(&self, session: &mut ServerSession) -> pingora::Result<()> {
        self.served.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = header_u64(session, "x-mock-delay-ms") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.as_str().to_string();
        // Expect: 100-continue comes from clients sending large bodies.
        if session.get_header("expect").is_some() {
            session.write_continue_response().await?;
        }
        let (body, body_len) = read_body(session).await?;

        if let Some(code) = path.strip_prefix("/__mock/force-status/") {
            let code = code.parse::<u16>().unwrap_or(0);
            self.forced_status.store(code, Ordering::Relaxed);
            return write_reply(session, Reply::json(200, &json!({"forced_status": code}))).await;
        }
        let forced = self.forced_status.load(Ordering::Relaxed);
        let forced = (forced != 0 && !path.starts_with("/__mock/") && path != "/healthz")
            .then_some(u64::from(forced));
        if let Some(status) = header_u64(session, "x-mock-status").or(forced) {
            let status = u16::try_from(status).unwrap_or(500);
            // Each API's own error shape, so translated errors are tested.
            let reply = match MockApi::of(&path) {
                Some(MockApi::Messages) => json!({"type": "error",
                    "error": {"type": if status == 529 { "overloaded_error" } else { "api_error" },
                              "message": "mock failure"}}),
                Some(MockApi::Gemini) => json!({"error": {"code": status,
                    "message": "mock failure", "status": "UNAVAILABLE"}}),
                _ => json!({"error": {"message": "mock failure", "code": status}}),
            };
            return write_reply(session, Reply::json(status, &reply)).await;
        }
        if let Some(api) = (method == "POST").then(|| MockApi::of(&path)).flatten() {
            return self.llm_call(session, api, &body).await;
        }
        if path == "/mcp" {
            return mcp::serve(session, &self.name, &method, &body).await;
        }
        let reply = match (method.as_str(), path.as_str()) {
            (_, "/healthz") => self.health_reply(),
            // Fixed small answer whatever the request carries: load tests
            // compare proxies, not the echo's cost of rendering headers.
            (_, "/bench") => Reply::json(200, &json!({"ok": true})),
            ("POST", "/__mock/health/ok") => self.set_health(true),
            ("POST", "/__mock/health/fail") => self.set_health(false),
            ("GET", "/__mock/stats") => Reply::json(
                200,
                &json!({"backend": self.name, "served": self.served.load(Ordering::Relaxed)}),
            ),
            _ => self.echo(session, &method, body, body_len),
        };
        write_reply(session, reply).await
    }

    fn health_reply(&self) -> Reply {
        if self.healthy.load(Ordering::Relaxed) {
            Reply::json(200, &json!({"status": "ok", "backend": self.name}))
        } else {
            Reply::json(503, &json!({"status": "failing", "backend": self.name}))
        }
    }

    fn set_health(&self, healthy: bool) -> Reply {
        self.healthy.store(healthy, Ordering::Relaxed);
        Reply::json(200, &json!({"healthy": healthy}))
    }

    fn echo(&self, session: &ServerSession, method: &str, body: Vec<u8>, body_len: usize) -> Reply {
        let req = session.req_header();
        let mut headers = serde_json::Map::new();
        for (name, value) in req.headers.iter() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::Array(list)) => list.push(Value::String(value)),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value)]);
                }
                None => {
                    headers.insert(name.as_str().to_string(), Value::String(value));
                }
            }
        }
        let body_text = String::from_utf8(body).unwrap_or_default();
        let echo = json!({
            "backend": self.name,
            "method": method,
            "path": req.uri.path(),
            "query": req.uri.query(),
            "headers": headers,
            "body_bytes": body_len,
            "body": if body_text.len() <= 64 * 1024 { Value::String(body_text) } else { Value::Null },
        });
        Reply::json(200, &echo)
    }
}

#[async_trait]
impl HttpServerApp for MockBackend {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) | Err(_) => return None,
        }
        let keepalive = if *shutdown.borrow() { None } else { Some(60) };
        session.set_keepalive(keepalive);
        if let Err(e) = self.handle(&mut session).await {
            tracing::debug!("mock backend: {e}");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

/// Runs the mock backend on `listen` until the process is stopped.
pub fn run(listen: &[String], threads: usize) -> Result<(), crate::cli::CliError> {
    use pingora::server::configuration::{Opt, ServerConf};
    use pingora::server::Server;
    use pingora::services::listening::Service;

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    for addr in listen {
        let mut service = Service::new(format!("mock {addr}"), MockBackend::new(addr.clone()));
        service.add_tcp(addr);
        server.add_service(service);
    }
    server.run_forever()
}
