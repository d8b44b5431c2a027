//! Shared by the LLM API test files: a config with a route per API and
//! priced models (cache classes, fallbacks, Azure paths), and readers of
//! the ledger, the usage API and SSE streams.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Routes for each API; `{llm}` the primary pool, `{backup}` the fallback
/// pool; `user_tokens_per_day` bob's and alice's budget.
pub fn apis_config(llm: &str, backup: &str, user_tokens_per_day: u64) -> String {
    apis_config_with_read_ms(llm, backup, user_tokens_per_day, 5000)
}

/// As [`apis_config`], with the pools' upstream read timeout.
pub fn apis_config_with_read_ms(
    llm: &str,
    backup: &str,
    user_tokens_per_day: u64,
    read_ms: u64,
) -> String {
    format!(
        r#"{head}upstreams:
  llm:
    peers: ["{llm}"]
    timeouts: {{ connect_ms: 300, read_ms: {read_ms} }}
  backup:
    peers: ["{backup}"]
    timeouts: {{ connect_ms: 300, read_ms: {read_ms} }}
routes:
  - name: chat
    path: /v1/chat/completions
    methods: [POST]
    kind: llm
    guards: [pii, injection]
  - name: messages
    path: /v1/messages
    methods: [POST]
    kind: llm
    api: anthropic_messages
    guards: [pii, injection]
  - name: responses
    path: /v1/responses
    methods: [POST]
    kind: llm
    api: openai_responses
    guards: [pii, injection]
  - name: embeddings
    path: /v1/embeddings
    methods: [POST]
    kind: llm
    api: openai_embeddings
    guards: [pii, injection]
models:
  - name: gpt
    upstream: llm
    upstream_model: gpt-4o-mini
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.60
    cached_input_usd_per_mtok: 0.075
    max_tokens: 100
    fallbacks: [gpt-backup]
  - name: gpt-backup
    upstream: backup
    upstream_model: backup-model
    input_usd_per_mtok: 1.0
    output_usd_per_mtok: 2.0
    max_tokens: 100
  - name: claude
    upstream: llm
    upstream_model: claude-3-5-haiku
    input_usd_per_mtok: 3.0
    output_usd_per_mtok: 15.0
    cached_input_usd_per_mtok: 0.30
    cache_write_usd_per_mtok: 3.75
    max_tokens: 100
    fallbacks: [claude-backup]
  - name: claude-backup
    upstream: backup
    upstream_model: claude-backup-model
    input_usd_per_mtok: 1.0
    output_usd_per_mtok: 5.0
    max_tokens: 100
  - name: embed
    upstream: llm
    upstream_model: text-embedding-3-small
    input_usd_per_mtok: 0.02
    output_usd_per_mtok: 0.0
    max_tokens: 1
    fallbacks: [embed-backup]
  - name: embed-backup
    upstream: backup
    input_usd_per_mtok: 0.13
    output_usd_per_mtok: 0.0
    max_tokens: 1
  - name: azure-gpt
    upstream: llm
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.60
    max_tokens: 100
    upstream_path: "/openai/deployments/fast/chat/completions?api-version=2024-10-21"
  - name: azure-responses
    upstream: llm
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.60
    max_tokens: 100
    upstream_path: "/openai/responses?api-version=2025-04-01-preview"
  - name: azure-embed
    upstream: llm
    input_usd_per_mtok: 0.02
    output_usd_per_mtok: 0.0
    max_tokens: 1
    upstream_path: "/openai/deployments/embed/embeddings?api-version=2024-10-21"
limits:
  default: {{ requests_per_minute: 100000 }}
  budgets:
    - scope: user
      tokens_per_day: {user_tokens_per_day}
guards:
  pii: {{ detect: [email], action: redact }}
  injection: {{ action: block }}
store:
  path: "{{dir}}/usage.db"
observability:
  access_log: "{{dir}}/access.log"
  log_level: warn
"#,
        head = config_head(2, Some(2097152), &[BOB, ALICE]),
    )
}

pub fn post(
    gw: &Gateway,
    path: &str,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut req = client()
        .post(gw.url(path))
        .header("X-API-Key", key)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

pub fn usage_of(gw: &Gateway, user: &str) -> Value {
    client()
        .get(gw.admin_url(&format!("/admin/usage?user={user}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

pub fn wait_usage(gw: &Gateway, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let u = usage_of(gw, user);
        if pred(&u) || Instant::now() > deadline {
            return u;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One ledger row with the columns these tests check.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub api: String,
    pub model: String,
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub micro_usd: u64,
    pub estimated: bool,
    pub over_cap: bool,
}

pub fn rows_eventually(gw: &Gateway, n: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = rows(gw);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn rows(gw: &Gateway) -> Vec<Row> {
    let Ok(conn) = rusqlite::Connection::open(gw.dir.path().join("usage.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT api, model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                reasoning_tokens, micro_usd, estimated, over_cap FROM usage ORDER BY id",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        Ok(Row {
            api: r.get(0)?,
            model: r.get(1)?,
            prompt: r.get::<_, i64>(2)? as u64,
            completion: r.get::<_, i64>(3)? as u64,
            cached: r.get::<_, i64>(4)? as u64,
            cache_write: r.get::<_, i64>(5)? as u64,
            reasoning: r.get::<_, i64>(6)? as u64,
            micro_usd: r.get::<_, i64>(7)? as u64,
            estimated: r.get::<_, i64>(8)? != 0,
            over_cap: r.get::<_, i64>(9)? != 0,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `(event name, data)` of every SSE event in `text`.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = String::new();
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(d).unwrap_or(Value::String(d.into())));
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}
