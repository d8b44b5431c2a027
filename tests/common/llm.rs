//! LLM calls and what they cost: a config with a route per API and priced
//! models (cache classes, fallbacks, Azure paths), request bodies, and
//! readers of the ledger, the usage API and SSE streams.

use super::*;
use serde_json::{json, Value};
use std::time::Duration;

impl ConfigBuilder {
    /// A route per API (chat, messages, responses, embeddings; guards pii
    /// and injection on each) for bob and alice; `llm` the primary pool,
    /// `backup` the fallback pool (connect 300 ms, read 5 s);
    /// `user_tokens_per_day` each user's budget; 2 MiB bodies.
    pub fn llm_apis(llm: &str, backup: &str, user_tokens_per_day: u64) -> ConfigBuilder {
        let guarded = |route: Route| route.guards(&["pii", "injection"]);
        ConfigBuilder::new()
            .max_body_bytes(2_097_152)
            .keys(&[BOB, ALICE])
            .pool("llm", Pool::new(&[llm]).timeouts(300, 5000))
            .pool("backup", Pool::new(&[backup]).timeouts(300, 5000))
            .route(guarded(Route::llm("chat", "/v1/chat/completions")))
            .route(guarded(
                Route::llm("messages", "/v1/messages").api("anthropic_messages"),
            ))
            .route(guarded(
                Route::llm("responses", "/v1/responses").api("openai_responses"),
            ))
            .route(guarded(
                Route::llm("embeddings", "/v1/embeddings").api("openai_embeddings"),
            ))
            .model(
                Model::new("gpt", "llm", 0.15, 0.60, 100)
                    .upstream_model("gpt-4o-mini")
                    .cached_input_usd_per_mtok(0.075)
                    .fallbacks(&["gpt-backup"]),
            )
            .model(Model::new("gpt-backup", "backup", 1.0, 2.0, 100).upstream_model("backup-model"))
            .model(
                Model::new("claude", "llm", 3.0, 15.0, 100)
                    .upstream_model("claude-3-5-haiku")
                    .cached_input_usd_per_mtok(0.30)
                    .cache_write_usd_per_mtok(3.75)
                    .fallbacks(&["claude-backup"]),
            )
            .model(
                Model::new("claude-backup", "backup", 1.0, 5.0, 100)
                    .upstream_model("claude-backup-model"),
            )
            .model(
                Model::new("embed", "llm", 0.02, 0.0, 1)
                    .upstream_model("text-embedding-3-small")
                    .fallbacks(&["embed-backup"]),
            )
            .model(Model::new("embed-backup", "backup", 0.13, 0.0, 1))
            .model(
                Model::new("azure-gpt", "llm", 0.15, 0.60, 100).upstream_path(
                    "/openai/deployments/fast/chat/completions?api-version=2024-10-21",
                ),
            )
            .model(
                Model::new("azure-responses", "llm", 0.15, 0.60, 100)
                    .upstream_path("/openai/responses?api-version=2025-04-01-preview"),
            )
            .model(
                Model::new("azure-embed", "llm", 0.02, 0.0, 1)
                    .upstream_path("/openai/deployments/embed/embeddings?api-version=2024-10-21"),
            )
            .default_rate_limit(100_000)
            .budget(Budget::user().tokens_per_day(user_tokens_per_day))
            .pii(&["email"], "redact")
            .injection("block", &[])
    }

    /// `llm_apis` plus models served by another API than their route's
    /// (`models[].upstream_api`), and an OpenAI primary with an Anthropic
    /// fallback; `llm` is the primary pool, `backup` the fallback one.
    pub fn translating(llm: &str, backup: &str) -> ConfigBuilder {
        ConfigBuilder::llm_apis(llm, backup, 1_000_000)
            .model(
                Model::new("claude-via-chat", "llm", 3.0, 15.0, 100)
                    .upstream_api("anthropic_messages")
                    .upstream_model("claude-sonnet-4-5")
                    .cached_input_usd_per_mtok(0.30)
                    .cache_write_usd_per_mtok(3.75),
            )
            .model(
                Model::new("gemini-via-chat", "llm", 0.30, 2.50, 100)
                    .upstream_api("gemini")
                    .upstream_model("gemini-2.5-flash")
                    .cached_input_usd_per_mtok(0.075),
            )
            .model(
                Model::new("gpt-via-messages", "llm", 0.15, 0.60, 100)
                    .upstream_api("openai_chat")
                    .upstream_model("gpt-4o-mini")
                    .cached_input_usd_per_mtok(0.075),
            )
            .model(
                Model::new("gemini-via-messages", "llm", 0.30, 2.50, 100)
                    .upstream_api("gemini")
                    .upstream_model("gemini-2.5-flash"),
            )
            // An OpenAI primary whose fallback is an Anthropic upstream.
            .model(
                Model::new("gpt-first", "llm", 0.15, 0.60, 100)
                    .upstream_api("openai_chat")
                    .fallbacks(&["claude-second"]),
            )
            .model(
                Model::new("claude-second", "backup", 3.0, 15.0, 100)
                    .upstream_api("anthropic_messages")
                    .upstream_model("claude-backup"),
            )
    }
}

/// µUSD of a call at $/Mtok prices, rounded up once.
pub fn cost(classes: &[(u64, f64)]) -> u64 {
    let micro: u128 = classes
        .iter()
        .map(|(tokens, usd)| u128::from(*tokens) * (usd * 1_000_000.0).round() as u128)
        .sum();
    micro.div_ceil(1_000_000) as u64
}

/// Tokens of `text` as the gateway counts them.
pub fn count_tokens(text: &str) -> u64 {
    tollgate::llm::tokens::count_text(text)
}

/// An empty ledger (the gateway's schema) at `path`, to seed before a
/// gateway starts on it.
pub fn create_ledger(path: &Path) {
    drop(tollgate::ledger::Ledger::open(path).unwrap());
}

/// A mock backend and a gateway on `ConfigBuilder::llm_apis` with the
/// backend as both pools.
pub fn start_llm_apis(user_tokens_per_day: u64) -> (Backend, Gateway) {
    let llm = Backend::start();
    let gw = ConfigBuilder::llm_apis(&llm.addr, &llm.addr, user_tokens_per_day).start();
    (llm, gw)
}

/// `body` with the fields of the object `extra` added or replaced.
pub fn with_fields(mut body: Value, extra: Value) -> Value {
    if let Value::Object(map) = extra {
        for (k, v) in map {
            body[k] = v;
        }
    }
    body
}

/// A chat completion body: one user message saying `text`.
pub fn user_says(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// A chat completion body for `model` asking "How do I reset my
/// password?", with the fields of `extra`.
pub fn chat_body(model: &str, extra: Value) -> Value {
    with_fields(user_says(model, "How do I reset my password?"), extra)
}

/// POSTs `body` to the chat completions route as `key`.
pub fn chat(
    gw: &Gateway,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    post(gw, "/v1/chat/completions", key, body, headers)
}

/// POSTs a raw (maybe malformed) JSON body to `path` as `key`.
pub fn post_raw(gw: &Gateway, path: &str, key: &str, body: &str) -> reqwest::blocking::Response {
    client()
        .post(gw.url(path))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

/// POSTs the JSON `body` to `path` as `key`, with more headers.
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

/// `/admin/usage` of `user`.
pub fn usage_of(gw: &Gateway, user: &str) -> Value {
    gw.admin_get(&format!("/admin/usage?user={user}"))
        .json()
        .unwrap()
}

/// Today's UTC date, `YYYY-MM-DD`, as the usage report takes it.
pub fn today() -> String {
    let secs = unix_millis() / 1000;
    let date = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// `/admin/usage/report` of today, grouped by `group_by`, in `format`.
pub fn report(gw: &Gateway, group_by: &str, format: &str) -> reqwest::blocking::Response {
    let day = today();
    gw.admin_get(&format!(
        "/admin/usage/report?from={day}&to={day}&group_by={group_by}&format={format}"
    ))
}

/// `tollgate usage -c CONFIG` of today grouped by `group_by`, as JSON
/// (the command must succeed).
pub fn usage_cli_today(config: &Path, group_by: &str) -> Value {
    let day = today();
    let out = tollgate(
        "usage",
        config,
        &["--from", &day, "--to", &day, "--group-by", group_by],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Settlement runs in `logging`, just after the answer: polls the usage of
/// `user` until `pred` holds (5 s at most) and returns the last reading.
pub fn wait_usage(gw: &Gateway, user: &str, pred: impl Fn(&Value) -> bool) -> Value {
    poll_until(Duration::from_secs(5), || usage_of(gw, user), pred)
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
    /// The model the client asked for (`model`: the one that served).
    pub requested_model: String,
    /// The upstream's API of a translated call ("" otherwise).
    pub upstream_api: String,
}

/// The ledger rows once there are `n` of them (5 s at most: the ledger
/// commits in groups).
pub fn rows_eventually(gw: &Gateway, n: usize) -> Vec<Row> {
    poll_until(Duration::from_secs(5), || rows(gw), |rows| rows.len() >= n)
}

/// The rows of the gateway's ledger, in order.
pub fn rows(gw: &Gateway) -> Vec<Row> {
    let Ok(conn) = rusqlite::Connection::open(gw.dir.path().join("usage.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(
        "SELECT api, model, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
                reasoning_tokens, micro_usd, estimated, over_cap, requested_model, upstream_api
         FROM usage ORDER BY id",
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
            requested_model: r.get(10)?,
            upstream_api: r.get(11)?,
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
