//! Every field of the schema, classified: a leaf of the serialised config
//! (what `/admin/config` shows) is either public or a `Secret` printed
//! `"<redacted>"`. A field added to the schema fails this test until it is
//! classified here, so a new secret cannot leak by default.

use super::api_keys::ApiKeyConfig;
use super::schema::Config;
use serde_json::Value;
use std::collections::BTreeSet;

type Leaves = Vec<(String, Value)>;

/// A config with every optional section present.
const EVERY_FIELD: &str = r#"
server:
  listen: ["127.0.0.1:8080"]
  tls: { listen: "127.0.0.1:8443", cert_file: c.pem, key_file: k.pem }
  admin_listen: "127.0.0.1:9090"
  admin_token_sha256: "SECRET"
  admin_tokens: [{ id: acme-admin, sha256: "SECRET", tenant: acme, grant_roles: [agent] }]
  threads: 2
  max_body_bytes: 1
  max_uri_bytes: 1
  max_header_bytes: 1
  header_timeout_ms: 1
  body_timeout_ms: 1
  max_connections_per_ip: 1
  grace_period_seconds: 1
  upgrade_sock: /tmp/u.sock
  pid_file: /tmp/p.pid
auth:
  api_keys:
    - { id: k, sha256: "SECRET", user: u, tenant: t, roles: [r], expires_at: "2030-01-01T00:00:00Z" }
  jwt:
    issuer: i
    audience: a
    leeway_seconds: 1
    max_lifetime_seconds: 1
    keys:
      - { kid: a, alg: RS256, public_key_file: p.pem, secret_env: SECRET, secret_file: SECRET }
    claims: { user: sub, tenant: tenant, roles: roles }
  failed_auth_per_ip_per_minute: 1
upstreams:
  pool:
    peers: ["127.0.0.1:1"]
    tls: true
    sni: s
    selection: round_robin
    health_check: { kind: http, path: /h, interval_ms: 1, timeout_ms: 1, unhealthy_after: 1, healthy_after: 1 }
    circuit_breaker: { failure_threshold: 1, open_seconds: 1 }
    timeouts: { connect_ms: 1, read_ms: 1 }
    retries: 1
    ca_file: ca.pem
    pins_sha256: ["aa"]
    set_headers: { Authorization: "SECRET" }
routes:
  - name: r
    path: /r
    methods: [GET]
    kind: llm
    upstream: pool
    roles: [r]
    owner: { param: p, bypass_roles: [r] }
    guards: [pii]
    rate_limit: { requests_per_minute: 1, enforce: false }
    websocket: false
    api: openai_chat
    output_guards: [pii]
    tools:
      default: deny
      rules:
        - { name: t, roles: [r], owner: { argument: a, bypass_roles: [r] }, rate_limit: { requests_per_minute: 1 } }
    mcp: { max_batch: 1, deny_methods: [m], max_message_bytes: 1, max_stream_seconds: 1 }
models:
  - name: m
    upstream: pool
    upstream_model: u
    input_usd_per_mtok: 1.0
    output_usd_per_mtok: 1.0
    max_tokens: 1
    max_n: 1
    roles: [r]
    fallbacks: [m]
    upstream_path: /p
    cached_input_usd_per_mtok: 1.0
    cache_write_usd_per_mtok: 1.0
    upstream_api: anthropic_messages
limits:
  default: { requests_per_minute: 1, enforce: false }
  budgets: [{ scope: user, tokens_per_minute: 1, tokens_per_day: 1, usd_per_month: 1.0 }, { scope: conversation, tokens_per_day: 1, usd_per_day: 1.0, enforce: false }]
  overrides: { alice: { requests_per_minute: 1, tokens_per_minute: 1, tokens_per_day: 1, usd_per_month: 1.0 } }
guards:
  pii: { detect: [email], action: redact }
  injection: { action: block, patterns: ["x"] }
  max_messages: 1
  max_prompt_tokens: 1
  output: { pii: { detect: [email], action: redact }, secrets: { action: block }, holdback_bytes: 256 }
store:
  kind: redis
  path: /tmp/u.db
  redis_url: "SECRET"
  on_store_error: deny
  redis_password_env: NAME
  redis_password_file: /run/secret
  redis_prefix: "tg:"
  redis_timeouts: { connect_ms: 1, command_ms: 1 }
ledger:
  kind: postgres
  postgres_url: "SECRET"
  postgres_password_env: NAME
  postgres_password_file: /run/secret
  ca_file: ca.pem
observability:
  access_log: stdout
  audit_log: stderr
  log_level: info
  otlp: { endpoint: "http://127.0.0.1:4318", service_name: s, sample_ratio: 1.0 }
attribution:
  conversation_header: X-Conversation-Id
alerts:
  webhooks:
    - { url: "SECRET", secret_env: NAME, scopes: [tenant], thresholds: [0.5], retry_for_seconds: 1, timeout_ms: 1 }
"#;

/// Fields that hold a secret, or point at one by a name an operator may
/// consider sensitive: shown as "<redacted>".
const SECRET: &[&str] = &[
    "auth.api_keys[].sha256",
    "auth.jwt.keys[].secret_env",
    "auth.jwt.keys[].secret_file",
    "alerts.webhooks[].url",
    "ledger.postgres_url",
    "server.admin_token_sha256",
    "server.admin_tokens[].sha256",
    "store.redis_url",
    "upstreams.*.set_headers.*",
];

/// Maps whose keys are names, not fields.
const MAPS: &[&str] = &["upstreams", "limits.overrides", "upstreams.*.set_headers"];

fn leaves(value: &Value, path: String, out: &mut Leaves) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let key = if MAPS.contains(&path.as_str()) {
                    "*"
                } else {
                    key
                };
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                leaves(v, child, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                leaves(v, format!("{path}[]"), out);
            }
        }
        other => {
            out.push((path, other.clone()));
        }
    }
}

#[test]
fn every_field_is_public_or_redacted() {
    let config: Config = serde_yaml::from_str(EVERY_FIELD).unwrap();
    let mut value = serde_json::to_value(&config).unwrap();
    // The keys live in the auth index once parsed; `/admin/config` shows
    // them as `ApiKeyConfig`s, as here.
    let key: ApiKeyConfig = serde_yaml::from_str(
        r#"{ id: k, sha256: "SECRET", user: u, tenant: t, roles: [r], expires_at: "2030-01-01T00:00:00Z" }"#,
    )
    .unwrap();
    value["auth"]["api_keys"] = serde_json::to_value(vec![key]).unwrap();
    let mut found = Leaves::new();
    leaves(&value, String::new(), &mut found);
    let public: BTreeSet<&str> = PUBLIC.iter().copied().collect();
    let mut unclassified = Vec::new();
    for (path, value) in &found {
        if SECRET.contains(&path.as_str()) {
            assert_eq!(value, super::secret::REDACTED, "{path} is shown");
        } else if !public.contains(path.as_str()) {
            unclassified.push(path.clone());
        }
        assert_ne!(value, "SECRET", "{path} shows a secret");
    }
    assert!(
        unclassified.is_empty(),
        "classify these config fields as SECRET (type them `Secret`) or PUBLIC: {unclassified:#?}"
    );
    // Every listed field still exists (a renamed one is listed anew).
    for path in SECRET.iter().chain(PUBLIC) {
        assert!(
            found.iter().any(|(p, _)| p == path),
            "{path} is no longer in the schema"
        );
    }
}

/// Fields shown as they are.
const PUBLIC: &[&str] = &[
    "server.admin_tokens[].id",
    "server.admin_tokens[].tenant",
    "server.admin_tokens[].grant_roles[]",
    "attribution.conversation_header",
    "limits.budgets[].usd_per_day",
    "limits.budgets[].enforce",
    "limits.default.enforce",
    "routes[].rate_limit.enforce",
    "routes[].tools.rules[].rate_limit.enforce",
    "alerts.webhooks[].secret_env",
    "alerts.webhooks[].scopes[]",
    "alerts.webhooks[].thresholds[]",
    "alerts.webhooks[].retry_for_seconds",
    "alerts.webhooks[].timeout_ms",
    "auth.api_keys[].expires_at",
    "auth.api_keys[].id",
    "auth.api_keys[].roles[]",
    "auth.api_keys[].tenant",
    "auth.api_keys[].user",
    "auth.failed_auth_per_ip_per_minute",
    "auth.jwt.audience",
    "auth.jwt.claims.roles",
    "auth.jwt.claims.tenant",
    "auth.jwt.claims.user",
    "auth.jwt.issuer",
    "auth.jwt.keys[].alg",
    "auth.jwt.keys[].kid",
    "auth.jwt.keys[].public_key_file",
    "auth.jwt.leeway_seconds",
    "auth.jwt.max_lifetime_seconds",
    "guards.injection.action",
    "guards.injection.patterns[]",
    "guards.max_messages",
    "guards.max_prompt_tokens",
    "guards.pii.action",
    "guards.pii.detect[]",
    "ledger.ca_file",
    "ledger.kind",
    "ledger.postgres_password_env",
    "ledger.postgres_password_file",
    "guards.output.holdback_bytes",
    "guards.output.pii.action",
    "guards.output.pii.detect[]",
    "guards.output.secrets.action",
    "limits.budgets[].scope",
    "limits.budgets[].tokens_per_day",
    "limits.budgets[].tokens_per_minute",
    "limits.budgets[].usd_per_month",
    "limits.default.requests_per_minute",
    "limits.overrides.*.requests_per_minute",
    "limits.overrides.*.tokens_per_day",
    "limits.overrides.*.tokens_per_minute",
    "limits.overrides.*.usd_per_month",
    "models[].cache_write_usd_per_mtok",
    "models[].cached_input_usd_per_mtok",
    "models[].fallbacks[]",
    "models[].input_usd_per_mtok",
    "models[].max_n",
    "models[].max_tokens",
    "models[].name",
    "models[].output_usd_per_mtok",
    "models[].roles[]",
    "models[].upstream",
    "models[].upstream_api",
    "models[].upstream_model",
    "models[].upstream_path",
    "observability.access_log",
    "observability.audit_log",
    "observability.log_level",
    "observability.otlp.endpoint",
    "observability.otlp.sample_ratio",
    "observability.otlp.service_name",
    "routes[].api",
    "routes[].guards[]",
    "routes[].output_guards[]",
    "routes[].kind",
    "routes[].methods[]",
    "routes[].name",
    "routes[].owner.bypass_roles[]",
    "routes[].owner.param",
    "routes[].path",
    "routes[].rate_limit.requests_per_minute",
    "routes[].roles[]",
    "routes[].upstream",
    "routes[].websocket",
    "routes[].tools.default",
    "routes[].tools.rules[].name",
    "routes[].tools.rules[].roles[]",
    "routes[].tools.rules[].owner.argument",
    "routes[].tools.rules[].owner.bypass_roles[]",
    "routes[].tools.rules[].rate_limit.requests_per_minute",
    "routes[].mcp.max_batch",
    "routes[].mcp.deny_methods[]",
    "routes[].mcp.max_message_bytes",
    "routes[].mcp.max_stream_seconds",
    "server.admin_listen",
    "server.body_timeout_ms",
    "server.grace_period_seconds",
    "server.header_timeout_ms",
    "server.listen[]",
    "server.max_body_bytes",
    "server.max_connections_per_ip",
    "server.max_header_bytes",
    "server.max_uri_bytes",
    "server.pid_file",
    "server.threads",
    "server.tls.cert_file",
    "server.tls.key_file",
    "server.tls.listen",
    "server.upgrade_sock",
    "store.kind",
    "store.on_store_error",
    "store.path",
    "store.redis_password_env",
    "store.redis_password_file",
    "store.redis_prefix",
    "store.redis_timeouts.command_ms",
    "store.redis_timeouts.connect_ms",
    "upstreams.*.ca_file",
    "upstreams.*.circuit_breaker.failure_threshold",
    "upstreams.*.circuit_breaker.open_seconds",
    "upstreams.*.health_check.healthy_after",
    "upstreams.*.health_check.interval_ms",
    "upstreams.*.health_check.kind",
    "upstreams.*.health_check.path",
    "upstreams.*.health_check.timeout_ms",
    "upstreams.*.health_check.unhealthy_after",
    "upstreams.*.peers[]",
    "upstreams.*.pins_sha256[]",
    "upstreams.*.retries",
    "upstreams.*.selection",
    "upstreams.*.sni",
    "upstreams.*.timeouts.connect_ms",
    "upstreams.*.timeouts.read_ms",
    "upstreams.*.tls",
];
