//! `kind: mcp` routes against a real MCP server: the official Python SDK's
//! MCPServer (formerly FastMCP) over Streamable HTTP, started by each test
//! (tests/mcp/tools_server.py), in JSON and SSE answer modes; hostile
//! servers from tests/mcp/hostile_server.py; the official SDK as client
//! (tests/mcp/sdk_client.py). Skipped, with the reason printed, only when
//! the test virtualenv (`make sdk-venv`) has no `mcp` package.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::otlp::{attr, wait_spans, Collector};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test virtualenv's Python when it has the MCP SDK.
fn python() -> Option<PathBuf> {
    let python = repo_root().join("target/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import mcp.server.mcpserver"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// A Python server process on a loopback port, killed on drop.
struct Server {
    addr: String,
    child: Child,
}

impl Server {
    fn start(python: &Path, script: &str, args: &[&str]) -> Server {
        let addr = free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let child = Command::new(python)
            .arg(repo_root().join("tests/mcp").join(script))
            .arg(&port)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the MCP server");
        assert!(
            wait_for_port(&addr, Duration::from_secs(20)),
            "{script} did not start"
        );
        Server { addr, child }
    }

    /// The support tools, answering POSTs as SSE streams (or JSON).
    fn tools(python: &Path, name: &str, json: bool) -> Server {
        let mode: &[&str] = if json { &["json"] } else { &[] };
        Server::start(python, "tools_server.py", &[&[name][..], mode].concat())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The route `tools` at /mcp: every staff role; get_ticket and headers for
/// all, list_agent_tickets with the owner rule on `agent`, refund_ticket
/// for admins at 2 a minute; search_kb and leak_secret not listed.
fn config(peers: &[&str]) -> ConfigBuilder {
    ConfigBuilder::new()
        .keys(&[BOB, ALICE, ROOT])
        .default_rate_limit(1000)
        .pool("tools", Pool::new(peers).timeouts(1000, 10_000))
        .route(
            Route::mcp("tools", "/mcp", "tools")
                .roles(&["agent", "admin"])
                .tools(
                    "deny",
                    json!([
                        {"name": "get_ticket"},
                        {"name": "headers", "roles": ["agent", "admin"]},
                        {"name": "list_agent_tickets", "roles": ["agent", "admin"],
                         "owner": {"argument": "agent", "bypass_roles": ["admin"]}},
                        {"name": "refund_ticket", "roles": ["admin"],
                         "rate_limit": {"requests_per_minute": 2}},
                    ]),
                ),
        )
}

/// An MCP client speaking raw JSON-RPC over the gateway (one session).
struct Mcp<'a> {
    gw: &'a Gateway,
    key: &'a str,
    session: Option<String>,
}

/// One POST's answer: status, headers, and its JSON-RPC messages (from a
/// JSON body or every SSE `data:`).
struct Answer {
    status: u16,
    request_id: String,
    content_type: String,
    /// `transfer-encoding` (a relayed stream must stay keep-alive).
    framing: String,
    messages: Vec<Value>,
    text: String,
}

impl Answer {
    fn one(&self) -> &Value {
        assert_eq!(self.messages.len(), 1, "{}", self.text);
        &self.messages[0]
    }
}

fn messages_of(content_type: &str, text: &str) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        text.split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
            })
            .collect()
    } else {
        match serde_json::from_str(text) {
            Ok(Value::Array(list)) => list,
            Ok(v @ Value::Object(_)) => vec![v],
            _ => Vec::new(),
        }
    }
}

impl<'a> Mcp<'a> {
    fn new(gw: &'a Gateway, key: &'a str) -> Mcp<'a> {
        Mcp {
            gw,
            key,
            session: None,
        }
    }

    fn post(&mut self, body: &Value) -> Answer {
        self.post_raw(body.to_string())
    }

    fn post_raw(&mut self, body: String) -> Answer {
        let mut req = self
            .gw
            .request(reqwest::Method::POST, "/mcp", self.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body);
        if let Some(id) = &self.session {
            req = req.header("mcp-session-id", id);
        }
        let resp = req.send().unwrap();
        if let Some(id) = resp.headers().get("mcp-session-id") {
            self.session = Some(id.to_str().unwrap().to_string());
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (status, request_id, content_type) = (
            resp.status().as_u16(),
            header("x-request-id"),
            header("content-type"),
        );
        let framing = header("transfer-encoding");
        let text = resp.text().unwrap();
        Answer {
            status,
            request_id,
            messages: messages_of(&content_type, &text),
            content_type,
            framing,
            text,
        }
    }

    fn initialize(&mut self) -> Answer {
        let answer = self.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "tollgate-test", "version": "1"}}}));
        assert_eq!(answer.status, 200, "{}", answer.text);
        let done = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(done.status, 202, "{}", done.text);
        answer
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Answer {
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}))
    }

    fn list(&mut self, id: u64) -> Vec<String> {
        let answer = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}));
        let mut names: Vec<String> = answer.one()["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

/// The text of a tool result's first content block, parsed as JSON.
fn result_json(message: &Value) -> Value {
    let text = message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("null");
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn assert_refused(answer: &Answer, id: u64, code: &str, words: &[&str]) {
    let m = answer.one();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["error"]["code"], -32003, "{m}");
    assert_eq!(m["error"]["data"]["code"], code, "{m}");
    assert_eq!(
        m["error"]["data"]["request_id"],
        answer.request_id.as_str(),
        "{m}"
    );
    let message = m["error"]["message"].as_str().unwrap();
    for word in words {
        assert!(message.contains(word), "{message} lacks {word}");
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn tool_calls(gw: &Gateway) -> Vec<Value> {
    gw.access_log()
        .into_iter()
        .filter(|l| l["event"] == "mcp_tool_call")
        .collect()
}

/// The whole flow in one answer mode: initialize, a filtered tools/list,
/// an allowed call, a denied tool and an owner violation answered by the
/// gateway (never reaching the server) while the session goes on, a batch
/// mixing both, audit lines without argument values, the metric.
fn flow(json_mode: bool) {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", json_mode);
    let gw = config(&[&server.addr]).start();
    let mut bob = Mcp::new(&gw, BOB_KEY);
    let init = bob.initialize();
    let expected_type = if json_mode {
        "application/json"
    } else {
        "text/event-stream"
    };
    assert!(
        init.content_type.starts_with(expected_type),
        "{}",
        init.content_type
    );
    if !json_mode {
        assert_eq!(
            init.framing, "chunked",
            "a relayed stream keeps the connection"
        );
    }
    assert!(
        bob.session.is_some(),
        "the server's Mcp-Session-Id reaches the client"
    );
    assert_eq!(init.one()["result"]["serverInfo"]["name"], "support-tools");

    // The server's own stream (GET) is relayed on the session's peer.
    let stream = gw
        .request(reqwest::Method::GET, "/mcp", BOB_KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", bob.session.as_deref().unwrap())
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);

    assert_eq!(bob.list(1), ["get_ticket", "headers", "list_agent_tickets"]);
    let mut root = Mcp::new(&gw, ROOT_KEY);
    root.initialize();
    assert_eq!(
        root.list(1),
        [
            "get_ticket",
            "headers",
            "list_agent_tickets",
            "refund_ticket"
        ]
    );

    let got = bob.call(2, "get_ticket", json!({"ticket_id": "T-1"}));
    assert_eq!(
        result_json(got.one())["ticket"]["subject"],
        "Broken chair",
        "{}",
        got.text
    );

    let refund = bob.call(
        3,
        "refund_ticket",
        json!({"ticket_id": "T-1", "amount_usd": 5}),
    );
    assert_refused(&refund, 3, "forbidden", &["refund_ticket", "roles"]);
    let unlisted = bob.call(4, "search_kb", json!({"query": "password"}));
    assert_refused(&unlisted, 4, "forbidden", &["search_kb", "not listed"]);
    let theirs = bob.call(5, "list_agent_tickets", json!({"agent": "alice"}));
    assert_refused(
        &theirs,
        5,
        "forbidden",
        &["list_agent_tickets", "owner", "agent"],
    );
    // The session goes on.
    let mine = bob.call(6, "list_agent_tickets", json!({"agent": "bob"}));
    assert_eq!(
        result_json(mine.one())["tickets"][0]["id"],
        "T-1",
        "{}",
        mine.text
    );
    let admin = root.call(2, "list_agent_tickets", json!({"agent": "alice"}));
    assert_eq!(result_json(admin.one())["agent"], "alice", "{}", admin.text);

    // A batch: the allowed call is served, the refused one answered here.
    let batch = bob.post(&json!([
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
         "params": {"name": "get_ticket", "arguments": {"ticket_id": "T-2"}}},
        {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
         "params": {"name": "refund_ticket", "arguments": {"ticket_id": "T-2", "amount_usd": 1}}},
    ]));
    let by_id = |id: u64| {
        batch
            .messages
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        result_json(&by_id(7))["ticket"]["id"],
        "T-2",
        "{}",
        batch.text
    );
    assert_eq!(by_id(8)["error"]["code"], -32003, "{}", batch.text);

    // A batch of one stays a batch, though the server saw one message.
    let one = bob.post(&json!([{"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "get_ticket", "arguments": {"ticket_id": "T-1"}}}]));
    if json_mode {
        assert!(one.text.starts_with('['), "{}", one.text);
    }
    assert_eq!(one.one()["id"], 9, "{}", one.text);

    let calls = tool_calls(&gw);
    let line = |id: &str| {
        calls
            .iter()
            .find(|l| l["user"] == "bob" && l["jsonrpc_id"] == id)
            .cloned()
            .unwrap()
    };
    let allowed = line("2");
    assert_eq!(allowed["tool"], "get_ticket");
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["result"], "ok");
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["session"], bob.session.as_deref().unwrap());
    assert_eq!(
        allowed["arguments_sha256"],
        sha256_hex(r#"{"ticket_id":"T-1"}"#)
    );
    assert!(allowed["duration_ms"].as_f64().unwrap() > 0.0);
    let denied = line("5");
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["reason"], "not_owner");
    assert_eq!(denied["result"], "not_sent");
    assert_eq!(line("3")["reason"], "role_not_allowed");
    assert_eq!(line("4")["reason"], "tool_not_listed");
    // Argument values never reach the logs.
    let logs = gw.all_output();
    assert!(
        !logs.contains("T-2") && !logs.contains("amount_usd"),
        "{logs}"
    );

    let metric = |tool: &str, outcome: &str| {
        gw.metric(&format!(
            "tollgate_mcp_calls_total{{outcome=\"{outcome}\",route=\"tools\",tool=\"{tool}\"}}"
        ))
    };
    assert_eq!(metric("get_ticket", "allowed"), 3.0);
    assert_eq!(metric("refund_ticket", "denied"), 2.0);
    assert_eq!(metric("_unlisted", "denied"), 1.0);
}

#[test]
fn json_answers_are_filtered_judged_and_audited() {
    flow(true);
}

#[test]
fn sse_answers_are_filtered_judged_and_audited() {
    flow(false);
}

#[test]
fn a_tool_rate_limit_refuses_with_a_jsonrpc_error() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", true);
    let gw = config(&[&server.addr]).start();
    let mut root = Mcp::new(&gw, ROOT_KEY);
    root.initialize();
    for id in 1..=2 {
        let ok = root.call(
            id,
            "refund_ticket",
            json!({"ticket_id": "T-1", "amount_usd": 1}),
        );
        assert_eq!(result_json(ok.one())["refunded"], "T-1", "{}", ok.text);
    }
    let third = root.call(
        3,
        "refund_ticket",
        json!({"ticket_id": "T-1", "amount_usd": 1}),
    );
    assert_refused(
        &third,
        3,
        "rate_limited",
        &["refund_ticket", "2 per minute"],
    );
    // Other tools are not counted against it.
    let other = root.call(4, "get_ticket", json!({"ticket_id": "T-1"}));
    assert!(other.one()["result"].is_object(), "{}", other.text);
}

#[test]
fn sessions_stay_on_the_peer_that_made_them() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let (p1, p2) = (
        Server::tools(&python, "p1", true),
        Server::tools(&python, "p2", false),
    );
    let gw = config(&[&p1.addr, &p2.addr]).start();
    let mut served_by = Vec::new();
    for _ in 0..4 {
        let mut bob = Mcp::new(&gw, BOB_KEY);
        bob.initialize();
        let mut peers = Vec::new();
        for id in 1..=3 {
            let got = bob.call(id, "get_ticket", json!({"ticket_id": "T-1"}));
            peers.push(
                result_json(got.one())["served_by"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
        // Ending the session goes to its peer too.
        let ended = gw
            .request(reqwest::Method::DELETE, "/mcp", BOB_KEY)
            .header("mcp-session-id", bob.session.as_deref().unwrap())
            .send()
            .unwrap();
        assert!(ended.status().is_success(), "{}", ended.status());
        served_by.push(peers[0].clone());
    }
    served_by.sort();
    served_by.dedup();
    assert_eq!(served_by, ["p1", "p2"], "both peers made sessions");
}

#[test]
fn credentials_stay_here_and_identity_goes_upstream() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", true);
    let gw = config(&[&server.addr])
        .with_pool("tools", |p| p.set_header("X-Tools-Token", "pool-secret"))
        .start();
    let mut bob = Mcp::new(&gw, BOB_KEY);
    bob.initialize();
    let got = bob.call(1, "headers", json!({}));
    let headers = &result_json(got.one())["headers"];
    assert_eq!(headers["x-gateway-user"], "bob", "{headers}");
    assert_eq!(headers["x-gateway-tenant"], "acme");
    assert_eq!(headers["x-tools-token"], "pool-secret");
    assert_eq!(headers["mcp-protocol-version"], "2025-06-18");
    assert_eq!(headers["mcp-session-id"], bob.session.as_deref().unwrap());
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");
}

#[test]
fn hostile_clients_get_the_contract_errors() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", true);
    let gw = config(&[&server.addr])
        .max_body_bytes(4096)
        .with_route("tools", |r| {
            r.set(
                "mcp",
                json!({"max_batch": 3, "deny_methods": ["resources/*"]}),
            )
        })
        .start();
    let mut bob = Mcp::new(&gw, BOB_KEY);
    bob.initialize();
    let error_code = |answer: &Answer| -> String {
        serde_json::from_str::<Value>(&answer.text).unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for bad in [
        "{not json",
        "[]",
        "42",
        r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
    ] {
        let answer = bob.post_raw(bad.to_string());
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text);
        assert_eq!(error_code(&answer), "invalid_request", "{bad}");
    }
    let ping = json!({"jsonrpc": "2.0", "method": "notifications/progress"});
    let batch = bob.post(&json!([ping, ping, ping, ping]));
    assert_eq!(batch.status, 400);
    assert!(batch.text.contains("limit of 3"), "{}", batch.text);
    let huge = bob.call(1, "get_ticket", json!({"ticket_id": "x".repeat(8000)}));
    assert_eq!(huge.status, 413);
    assert_eq!(error_code(&huge), "body_too_large");
    let denied = bob.post(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read",
        "params": {"uri": "file:///etc/passwd"}}),
    );
    assert_refused(&denied, 2, "forbidden", &["resources/read"]);
    // Unknown methods pass through: the server answers them.
    let unknown = bob.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "no/such"}));
    assert_eq!(unknown.one()["error"]["code"], -32601, "{}", unknown.text);

    // A session id is the session of who made it only.
    let mut alice = Mcp::new(&gw, ALICE_KEY);
    alice.session = bob.session.clone();
    let stolen = alice.call(4, "get_ticket", json!({"ticket_id": "T-1"}));
    assert_eq!(stolen.status, 404, "{}", stolen.text);
    assert_eq!(error_code(&stolen), "session_not_found");
    alice.session = Some("bad id with spaces".into());
    let bad_id = alice.call(5, "get_ticket", json!({}));
    assert_eq!(bad_id.status, 400);
    let anonymous = client().post(gw.url("/mcp")).body("{}").send().unwrap();
    assert_eq!(anonymous.status(), 401);
    // Bob's session still works.
    let after = bob.call(6, "get_ticket", json!({"ticket_id": "T-1"}));
    assert!(after.one()["result"].is_object(), "{}", after.text);
}

#[test]
fn hostile_servers_are_bounded() {
    let Some(python) = python() else {
        return skipped("no python3 in target/venv");
    };
    for (mode, why) in [
        ("forever", "max_stream_seconds"),
        ("huge", "max_message_bytes"),
    ] {
        let server = Server::start(&python, "hostile_server.py", &[mode]);
        let gw = config(&[&server.addr])
            .with_route("tools", |r| {
                r.set(
                    "mcp",
                    json!({"max_stream_seconds": 1, "max_message_bytes": 65536}),
                )
            })
            .start();
        let started = Instant::now();
        let mut bob = Mcp::new(&gw, BOB_KEY);
        let answer = bob.call(1, "get_ticket", json!({"ticket_id": "T-1"}));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode}: bounded"
        );
        let m = answer
            .messages
            .last()
            .unwrap_or_else(|| panic!("{mode}: {}", answer.text));
        assert_eq!(m["id"], 1, "{mode}: {m}");
        assert_eq!(m["error"]["code"], -32603, "{mode}: {m}");
        assert_eq!(m["error"]["data"]["code"], "upstream_error", "{mode}: {m}");
        assert!(
            m["error"]["message"].as_str().unwrap().contains(why),
            "{mode}: {m}"
        );
        let lost = tool_calls(&gw);
        assert_eq!(lost[0]["result"], "no_answer", "{mode}: {lost:?}");
    }
}

#[test]
fn output_guards_and_pii_guard_cover_tool_traffic() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", false);
    let gw = config(&[&server.addr])
        .pii(&["email"], "block")
        .guards("output", json!({"secrets": {"action": "redact"}}))
        .with_route("tools", |r| {
            r.guards(&["pii"])
                .set("output_guards", ["secrets"])
                .tools("allow", json!([]))
        })
        .start();
    let mut bob = Mcp::new(&gw, BOB_KEY);
    bob.initialize();
    let leak = bob.call(1, "leak_secret", json!({}));
    assert!(!leak.text.contains("AKIAIOSFODNN7EXAMPLE"), "{}", leak.text);
    assert!(leak.text.contains("REDACTED"), "{}", leak.text);
    let pii = bob.call(
        2,
        "search_kb",
        json!({"query": "mail jane.doe@example.com"}),
    );
    assert_refused(&pii, 2, "guard_blocked", &["search_kb"]);
    assert!(
        !gw.all_output().contains("jane.doe"),
        "matched text never logged"
    );
}

#[test]
fn the_official_sdk_client_works_through_the_gateway() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    for json_mode in [true, false] {
        let server = Server::tools(&python, "p1", json_mode);
        let gw = config(&[&server.addr]).start();
        let url = gw.url("/mcp");
        run_client_script(
            &python,
            "tests/mcp/sdk_client.py",
            &[("TG_URL", url.as_str()), ("TG_KEY", BOB_KEY)],
            &[
                "initialize",
                "tools/list filtered",
                "allowed call",
                "denied tool raises",
                "owner rule raises",
                "session continues",
            ],
            &format!("json={json_mode}"),
        );
    }
}

#[test]
fn check_reports_bad_mcp_routes_with_their_location() {
    let result = config(&["127.0.0.1:9"])
        .with_route("tools", |r| {
            r.tools(
                "deny",
                json!([{"name": "get_ticket"}, {"name": "get_ticket", "rate_limit": {"requests_per_minute": 0}}]),
            )
            .set("mcp", json!({"max_batch": 0}))
        })
        .route(Route::http("plain", "/plain", &["GET"], "tools").tools("allow", json!([])))
        .check();
    assert_check_reports(
        result,
        &[
            "routes[0].tools.rules[1].name: duplicate tool rule 'get_ticket'",
            "routes[0].tools.rules[1].rate_limit.requests_per_minute: must be at least 1",
            "routes[0].mcp.max_batch: must be at least 1",
            "routes[1].tools: only kind: mcp routes have tools",
        ],
    );
    let (code, _, stderr) = config(&["127.0.0.1:9"]).check();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn each_tool_call_is_a_span_of_the_request() {
    let Some(python) = python() else {
        return skipped("no mcp package in target/venv (make sdk-venv)");
    };
    let server = Server::tools(&python, "p1", true);
    let collector = Collector::start();
    let gw = config(&[&server.addr])
        .otlp(&format!("http://{}", collector.addr), "tollgate-test", 1.0)
        .start();
    let mut bob = Mcp::new(&gw, BOB_KEY);
    bob.initialize();
    bob.call(1, "get_ticket", json!({"ticket_id": "T-1"}));
    bob.call(
        2,
        "refund_ticket",
        json!({"ticket_id": "T-1", "amount_usd": 1}),
    );
    let spans = wait_spans(&collector, |s| {
        s.iter()
            .filter(|(_, s)| s.name.starts_with("tools/call "))
            .count()
            >= 2
    });
    let span = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
            .clone()
    };
    let allowed = span("tools/call get_ticket");
    assert_eq!(
        attr(&allowed, "gen_ai.tool.name").as_deref(),
        Some("get_ticket")
    );
    assert_eq!(
        attr(&allowed, "tollgate.mcp.outcome").as_deref(),
        Some("allowed")
    );
    assert_eq!(attr(&allowed, "mcp.session.id"), bob.session.clone());
    let denied = span("tools/call refund_ticket");
    assert_eq!(
        attr(&denied, "tollgate.mcp.denied_by").as_deref(),
        Some("role_not_allowed")
    );
    // Children of the request's span, never carrying argument values.
    let parent = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.span_id == allowed.parent_span_id)
        .expect("the request span");
    assert_eq!(parent.name, "gateway.request");
    assert!(allowed
        .attributes
        .iter()
        .all(|a| !format!("{a:?}").contains("T-1")));
}

#[test]
fn the_mock_backend_serves_the_support_tools() {
    let mock = Backend::start();
    let gw = config(&[&mock.addr]).start();
    for sse in [false, true] {
        let mut bob = Mcp::new(&gw, BOB_KEY);
        let init = bob.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}));
        assert_eq!(
            init.one()["result"]["serverInfo"]["name"],
            "mock-support-tools"
        );
        let knob = if sse { "1" } else { "0" };
        let answer = gw
            .request(reqwest::Method::POST, "/mcp", BOB_KEY)
            .header("x-mock-mcp-sse", knob)
            .header("mcp-session-id", bob.session.as_deref().unwrap())
            .body(json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "get_ticket", "arguments": {"ticket_id": "T-1"}}},
                {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                 "params": {"name": "refund_ticket", "arguments": {"ticket_id": "T-1", "amount_usd": 9}}}])
                .to_string())
            .send()
            .unwrap();
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(content_type.starts_with("text/event-stream"), sse);
        let messages = messages_of(&content_type, &answer.text().unwrap());
        let by_id = |id: u64| messages.iter().find(|m| m["id"] == id).unwrap();
        let names: Vec<&str> = by_id(1)["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_ticket", "list_agent_tickets"], "sse={sse}");
        assert_eq!(
            by_id(2)["result"]["structuredContent"]["data"]["subject"],
            "Broken chair leg"
        );
        assert_eq!(by_id(3)["error"]["code"], -32003);
    }
    // GET (the server's stream) reaches the server: the mock has none.
    let get = gw
        .request(reqwest::Method::GET, "/mcp", BOB_KEY)
        .header("accept", "text/event-stream")
        .send()
        .unwrap();
    assert_eq!(get.status(), 405);
    assert!(get.text().unwrap().contains("no server stream"));
    // A refused call never reaches the server: the mock counted only the
    // stats request that reads its counter.
    let before = mock.served();
    let refused = Mcp::new(&gw, BOB_KEY).call(9, "refund_ticket", json!({"ticket_id": "T-1"}));
    assert_refused(&refused, 9, "forbidden", &["refund_ticket"]);
    assert_eq!(mock.served(), before + 1);
}
