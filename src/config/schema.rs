//! The YAML configuration file as written by operators (DESIGN §3).
//!
//! These types mirror the file one to one; `deny_unknown_fields` everywhere
//! so a misspelled field is an error, not a silently ignored default.
//! Validation and compilation into a request-ready snapshot live elsewhere.

use super::api_keys::ApiKeyList;
use super::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub guards: Option<GuardsConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub observability: ObservabilityConfig,
    #[serde(default)]
    pub attribution: AttributionConfig,
    #[serde(default)]
    pub alerts: Option<AlertsConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: Vec<String>,
    pub tls: Option<TlsListenerConfig>,
    pub admin_listen: String,
    pub admin_token_sha256: Option<Secret<String>>,
    /// More admin tokens, each bound to one tenant (DESIGN §3, §5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_tokens: Vec<AdminTokenConfig>,
    pub threads: Option<usize>,
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "defaults::max_uri_bytes")]
    pub max_uri_bytes: usize,
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    #[serde(default = "defaults::body_timeout_ms")]
    pub body_timeout_ms: u64,
    pub max_connections_per_ip: Option<u32>,
    #[serde(default = "defaults::grace_period_seconds")]
    pub grace_period_seconds: u64,
    pub upgrade_sock: Option<String>,
    pub pid_file: Option<String>,
}

/// An admin token that sees and manages only one tenant's keys, usage
/// and report rows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    /// Non-secret; names the token in the audit log.
    pub id: String,
    pub sha256: Secret<String>,
    pub tenant: String,
    /// The roles this token may give its keys (create, PATCH) and that a
    /// key must stay within for this token to change or rotate it. Unset:
    /// any role (`tollgate check` warns: `admin` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_roles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub listen: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Compiled while parsed (see `api_keys`): a large key list is never
    /// held as parsed entries.
    #[serde(default)]
    pub api_keys: ApiKeyList,
    pub jwt: Option<JwtConfig>,
    pub failed_auth_per_ip_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: Option<u64>,
    pub max_lifetime_seconds: Option<u64>,
    pub keys: Vec<JwtKeyConfig>,
    #[serde(default)]
    pub claims: ClaimsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    pub kid: String,
    pub alg: String,
    pub public_key_file: Option<String>,
    pub secret_env: Option<Secret<String>>,
    pub secret_file: Option<Secret<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsConfig {
    #[serde(default = "defaults::claim_user")]
    pub user: String,
    #[serde(default = "defaults::claim_tenant")]
    pub tenant: String,
    #[serde(default = "defaults::claim_roles")]
    pub roles: String,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self {
            user: defaults::claim_user(),
            tenant: defaults::claim_tenant(),
            roles: defaults::claim_roles(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    #[default]
    RoundRobin,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub peers: Vec<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub selection: Selection,
    pub health_check: Option<HealthCheckConfig>,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub retries: u32,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub pins_sha256: Vec<String>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, Secret<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    Http,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: usize,
    #[serde(default = "defaults::healthy_after")]
    pub healthy_after: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub failure_threshold: u32,
    pub open_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default = "defaults::connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "defaults::read_ms")]
    pub read_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: defaults::connect_ms(),
            read_ms: defaults::read_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    #[default]
    Http,
    Llm,
    /// Model Context Protocol tool servers (Streamable HTTP transport).
    Mcp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub path: String,
    /// Required, except on `kind: mcp` routes (POST, GET and DELETE).
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub kind: RouteKind,
    pub upstream: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub owner: Option<OwnerRule>,
    #[serde(default)]
    pub guards: Vec<String>,
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub websocket: bool,
    /// `kind: llm` only: the API the route speaks (default `openai_chat`).
    pub api: Option<LlmApi>,
    /// `kind: llm` only: guards on the model's answer (`pii`, `secrets`).
    #[serde(default)]
    pub output_guards: Vec<String>,
    /// `kind: mcp` only: per-tool rules (absent: every tool denied).
    #[serde(default)]
    pub tools: Option<ToolsConfig>,
    /// `kind: mcp` only: bounds on the protocol's messages.
    #[serde(default)]
    pub mcp: Option<McpConfig>,
}

/// Whether a tool no rule names may be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolDefault {
    #[default]
    Deny,
    Allow,
}

/// A `kind: mcp` route's `tools:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    #[serde(default)]
    pub default: ToolDefault,
    #[serde(default)]
    pub rules: Vec<ToolRuleConfig>,
}

/// One tool's rule: who may call it, on whose behalf, how often.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRuleConfig {
    pub name: String,
    /// Empty: every caller the route admits.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub owner: Option<ArgumentOwnerRule>,
    /// Per user, for this tool alone (on top of the route's rate).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// The named `tools/call` argument must equal the caller's user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentOwnerRule {
    pub argument: String,
    #[serde(default)]
    pub bypass_roles: Vec<String>,
}

/// A `kind: mcp` route's `mcp:` bounds (hostile clients and servers).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Most JSON-RPC messages in one POST (a batch); 400 above.
    #[serde(default = "defaults::mcp_max_batch")]
    pub max_batch: usize,
    /// Methods refused with a JSON-RPC error (`name`, or `prefix/*`);
    /// every other method is passed through.
    #[serde(default)]
    pub deny_methods: Vec<String>,
    /// Largest message from the server: a JSON answer, one SSE event.
    #[serde(default = "defaults::mcp_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Longest a server stream (GET, or a POST answered as SSE) is relayed.
    #[serde(default = "defaults::mcp_max_stream_seconds")]
    pub max_stream_seconds: u64,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            max_batch: defaults::mcp_max_batch(),
            deny_methods: Vec::new(),
            max_message_bytes: defaults::mcp_max_message_bytes(),
            max_stream_seconds: defaults::mcp_max_stream_seconds(),
        }
    }
}

/// The LLM API of a `kind: llm` route: how its body is read, guarded,
/// estimated, rewritten and billed, and the shape of the gateway's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmApi {
    #[default]
    OpenaiChat,
    OpenaiResponses,
    OpenaiEmbeddings,
    AnthropicMessages,
}

impl LlmApi {
    /// The name used in the config, the ledger's `api` column and logs.
    pub fn name(self) -> &'static str {
        match self {
            LlmApi::OpenaiChat => "openai_chat",
            LlmApi::OpenaiResponses => "openai_responses",
            LlmApi::OpenaiEmbeddings => "openai_embeddings",
            LlmApi::AnthropicMessages => "anthropic_messages",
        }
    }

    /// Whether the API generates output (embeddings do not).
    pub fn has_output(self) -> bool {
        self != LlmApi::OpenaiEmbeddings
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRule {
    pub param: String,
    #[serde(default)]
    pub bypass_roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
    /// `false`: shadow mode, the would-be refusal is counted and logged,
    /// the request served.
    #[serde(default = "defaults::enforce")]
    pub enforce: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub upstream: String,
    pub upstream_model: Option<String>,
    /// Optional in serde so a missing price is reported by validation with
    /// its location ("unpriced models are refused"), not as a parse error.
    pub input_usd_per_mtok: Option<f64>,
    pub output_usd_per_mtok: Option<f64>,
    pub max_tokens: u64,
    /// Most answers one request may ask for (chat's `n`): each is priced
    /// and may use the whole `max_tokens`, so `n` is bounded too.
    #[serde(default = "defaults::max_n")]
    pub max_n: u64,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Path (and query) sent upstream instead of the client's (Azure).
    pub upstream_path: Option<String>,
    /// Cache-read input tokens (default: the input price).
    pub cached_input_usd_per_mtok: Option<f64>,
    /// Anthropic cache-creation input tokens (default: the input price).
    pub cache_write_usd_per_mtok: Option<f64>,
    /// The API the upstream speaks (default: the route's); when it differs
    /// the gateway translates the request and the answer.
    #[serde(default)]
    pub upstream_api: Option<UpstreamApi>,
}

/// The APIs an LLM upstream can speak (`models[].upstream_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamApi {
    OpenaiChat,
    AnthropicMessages,
    /// Gemini `generateContent` / `streamGenerateContent?alt=sse`.
    Gemini,
}

impl UpstreamApi {
    /// The name used in the config, the ledger and logs.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamApi::OpenaiChat => "openai_chat",
            UpstreamApi::AnthropicMessages => "anthropic_messages",
            UpstreamApi::Gemini => "gemini",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub default: Option<RateLimitConfig>,
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub overrides: BTreeMap<String, OverrideConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    User,
    Tenant,
    /// Per API key (every key; a key's own `budgets` replace its fields).
    Key,
    /// Per tenant and conversation id (`attribution`).
    Conversation,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub scope: BudgetScope,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub usd_per_month: Option<f64>,
    /// Conversation scope only.
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    /// `false`: shadow mode (see `RateLimitConfig::enforce`).
    #[serde(default = "defaults::enforce")]
    pub enforce: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub usd_per_month: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    Block,
    Redact,
    Log,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsConfig {
    pub pii: Option<PiiGuardConfig>,
    pub injection: Option<InjectionGuardConfig>,
    pub max_messages: Option<usize>,
    pub max_prompt_tokens: Option<u64>,
    /// Guards on the model's answer, for routes' `output_guards`.
    pub output: Option<OutputGuardsConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputGuardsConfig {
    pub pii: Option<PiiGuardConfig>,
    pub secrets: Option<SecretsGuardConfig>,
    /// Most streamed text held back while a match may still be completing.
    #[serde(default = "defaults::holdback_bytes")]
    pub holdback_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsGuardConfig {
    pub action: GuardAction,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PiiGuardConfig {
    pub detect: Vec<String>,
    pub action: GuardAction,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionGuardConfig {
    pub action: GuardAction,
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    #[serde(default = "defaults::store_path")]
    pub path: String,
    pub redis_url: Option<Secret<String>>,
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Name of the environment variable holding the Redis password.
    pub redis_password_env: Option<String>,
    /// File holding the Redis password (trailing newline ignored).
    pub redis_password_file: Option<String>,
    #[serde(default = "defaults::redis_prefix")]
    pub redis_prefix: String,
    #[serde(default)]
    pub redis_timeouts: RedisTimeoutsConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Local,
            path: defaults::store_path(),
            redis_url: None,
            on_store_error: OnStoreError::Deny,
            redis_password_env: None,
            redis_password_file: None,
            redis_prefix: defaults::redis_prefix(),
            redis_timeouts: RedisTimeoutsConfig::default(),
        }
    }
}

/// Where the usage ledger lives (DESIGN §3 `ledger:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// The SQLite file at `store.path`: one instance.
    #[default]
    Sqlite,
    /// One PostgreSQL database for every instance; `store.path` is the spool.
    Postgres,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    #[serde(default)]
    pub kind: LedgerKind,
    /// `postgres://user@host:port/db?sslmode=...`, without a password.
    pub postgres_url: Option<Secret<String>>,
    /// Name of the environment variable holding the PostgreSQL password.
    pub postgres_password_env: Option<String>,
    /// File holding the PostgreSQL password (trailing newline ignored).
    pub postgres_password_file: Option<String>,
    /// PEM file of the CA that signed the server's certificate
    /// (`sslmode=verify-full`); without it the system's roots.
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTimeoutsConfig {
    #[serde(default = "defaults::redis_connect_ms")]
    pub connect_ms: u64,
    #[serde(default = "defaults::redis_command_ms")]
    pub command_ms: u64,
}

impl Default for RedisTimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: defaults::redis_connect_ms(),
            command_ms: defaults::redis_command_ms(),
        }
    }
}

/// Where a log stream goes: written `stdout`, `stderr`, `off` or a file
/// path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub enum LogTarget {
    Off,
    #[default]
    Stdout,
    Stderr,
    File(String),
}

impl From<String> for LogTarget {
    fn from(value: String) -> Self {
        match value.as_str() {
            "off" => LogTarget::Off,
            "stdout" => LogTarget::Stdout,
            "stderr" => LogTarget::Stderr,
            _ => LogTarget::File(value),
        }
    }
}

impl From<LogTarget> for String {
    fn from(target: LogTarget) -> Self {
        match target {
            LogTarget::Off => "off".into(),
            LogTarget::Stdout => "stdout".into(),
            LogTarget::Stderr => "stderr".into(),
            LogTarget::File(path) => path,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    #[serde(default)]
    pub access_log: LogTarget,
    /// Extension: where audit lines go (default: the access log's target,
    /// or stderr when the access log is off).
    pub audit_log: Option<LogTarget>,
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// Optional: OTLP/HTTP trace export (otel.rs).
    pub otlp: Option<OtlpConfig>,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            access_log: LogTarget::default(),
            audit_log: None,
            log_level: defaults::log_level(),
            otlp: None,
        }
    }
}

/// Who a call is billed to beyond the caller (DESIGN §3 `attribution`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// The request header naming the conversation; absent, the body's
    /// `metadata.conversation_id`.
    #[serde(default = "defaults::conversation_header")]
    pub conversation_header: String,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            conversation_header: defaults::conversation_header(),
        }
    }
}

/// Budget threshold alerts (DESIGN §3 `alerts`, §4 "Alerts").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A secret: chat webhooks carry their credential in the URL.
    pub url: Secret<String>,
    /// The HMAC-SHA256 key of `X-Tollgate-Signature`.
    pub secret_env: String,
    /// Budget scopes whose crossings are sent (default: every scope).
    #[serde(default = "defaults::alert_scopes")]
    pub scopes: Vec<BudgetScope>,
    /// Fractions of a budget window's limit, e.g. `[0.5, 0.8, 1.0]`.
    pub thresholds: Vec<f64>,
    /// Extension: how long an undelivered event is retried before it is
    /// dropped (counted).
    #[serde(default = "defaults::alert_retry_for_seconds")]
    pub retry_for_seconds: u64,
    /// Extension: one delivery attempt's deadline.
    #[serde(default = "defaults::alert_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Collector base URL, e.g. `http://127.0.0.1:4318`; spans go to
    /// `{endpoint}/v1/traces`.
    pub endpoint: String,
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Share of new traces recorded (0.0 to 1.0); a sampled or unsampled
    /// incoming `traceparent` decides for its own trace.
    #[serde(default = "defaults::sample_ratio")]
    pub sample_ratio: f64,
}

mod defaults {
    pub fn mcp_max_batch() -> usize {
        32
    }
    pub fn mcp_max_message_bytes() -> usize {
        4 * 1024 * 1024
    }
    pub fn mcp_max_stream_seconds() -> u64 {
        300
    }
    pub fn alert_scopes() -> Vec<super::BudgetScope> {
        use super::BudgetScope::*;
        vec![User, Tenant, Key, Conversation]
    }
    pub fn alert_retry_for_seconds() -> u64 {
        600
    }
    pub fn alert_timeout_ms() -> u64 {
        5000
    }
    pub fn enforce() -> bool {
        true
    }
    pub fn conversation_header() -> String {
        "X-Conversation-Id".into()
    }
    pub fn service_name() -> String {
        "tollgate".into()
    }
    pub fn sample_ratio() -> f64 {
        1.0
    }
    pub fn max_body_bytes() -> u64 {
        1024 * 1024
    }
    pub fn max_n() -> u64 {
        8
    }
    pub fn holdback_bytes() -> usize {
        256
    }
    pub fn max_uri_bytes() -> usize {
        8192
    }
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn header_timeout_ms() -> u64 {
        10_000
    }
    pub fn body_timeout_ms() -> u64 {
        30_000
    }
    pub fn grace_period_seconds() -> u64 {
        5
    }
    pub fn claim_user() -> String {
        "sub".into()
    }
    pub fn claim_tenant() -> String {
        "tenant".into()
    }
    pub fn claim_roles() -> String {
        "roles".into()
    }
    pub fn health_path() -> String {
        "/healthz".into()
    }
    pub fn health_interval_ms() -> u64 {
        1000
    }
    pub fn health_timeout_ms() -> u64 {
        500
    }
    pub fn unhealthy_after() -> usize {
        3
    }
    pub fn healthy_after() -> usize {
        2
    }
    pub fn connect_ms() -> u64 {
        1000
    }
    pub fn read_ms() -> u64 {
        30_000
    }
    pub fn store_path() -> String {
        "/var/lib/tollgate/usage.db".into()
    }
    pub fn redis_prefix() -> String {
        "tg:".into()
    }
    pub fn redis_connect_ms() -> u64 {
        50
    }
    pub fn redis_command_ms() -> u64 {
        100
    }
    pub fn log_level() -> String {
        "info".into()
    }
}
