//! `tollgate demo`: the mock backends and the gateway in one process, with
//! conf/demo.yaml, and curl commands to paste.

use crate::cli::CliError;
use crate::dev::mock::MockBackend;
use pingora::services::listening::Service;
use std::path::Path;

pub const DEMO_CONFIG: &str = "conf/demo.yaml";
/// The demo keys are public on purpose: conf/demo.yaml holds their digests.
pub const AGENT_KEY: &str = "tg_demo_agent_bob";
pub const ADMIN_KEY: &str = "tg_demo_admin_root";
pub const ALICE_KEY: &str = "tg_demo_agent_alice";
pub const ADMIN_TOKEN: &str = "demo-admin-token";
pub const MOCK_BACKENDS: &[&str] = &["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9101"];

pub fn run() -> Result<(), CliError> {
    let (mut server, state) = crate::server::build(Path::new(DEMO_CONFIG), false)?;
    for addr in MOCK_BACKENDS {
        let mut mock = Service::new(format!("mock {addr}"), MockBackend::new(*addr));
        mock.add_tcp(addr);
        server.add_service(mock);
    }
    let snapshot = state.snapshot.load_full();
    let gw = format!(
        "http://{}",
        snapshot
            .server()
            .listen
            .first()
            .map_or("127.0.0.1:8080", |s| s.as_str())
    );
    let admin = format!("http://{}", snapshot.server().admin_listen);
    println!(
        r#"
tollgate demo is running: gateway {gw}, admin {admin}, mock backends {backends}.

The usage page (spend, and the Keys view: create, rotate, revoke API keys):
  open {admin}/admin/ui/ and give it the admin token: {ADMIN_TOKEN}

# an agent reads their own tickets (200; the echo shows the X-Gateway-* identity headers)
curl -s -H 'X-API-Key: {AGENT_KEY}' {gw}/api/v1/agents/bob/tickets

# ... but not another agent's (403 forbidden)
curl -s -H 'X-API-Key: {AGENT_KEY}' {gw}/api/v1/agents/alice/tickets

# an agent may not touch user records (403); an admin may (200)
curl -s -H 'X-API-Key: {AGENT_KEY}' {gw}/api/v1/users/42
curl -s -H 'Authorization: Bearer {ADMIN_KEY}' {gw}/api/v1/users/42

# no key (401) and an unknown key (401)
curl -s {gw}/api/v1/tickets/1
curl -s -H 'X-API-Key: wrong' {gw}/api/v1/tickets/1

# spoofed identity headers are stripped before the backend sees them
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'X-Gateway-User: admin' {gw}/api/v1/tickets/1

# an LLM call: the model name is rewritten, max_tokens capped, usage billed
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' {gw}/v1/chat/completions \
  -d '{{"model":"support-fast","messages":[{{"role":"user","content":"Where is my order?"}}]}}'

# the same, streamed (usage is requested from the upstream and billed)
curl -sN -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' {gw}/v1/chat/completions \
  -d '{{"model":"support-fast","stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}'

# an OpenAI-shaped call served by an Anthropic-shaped upstream (models[].upstream_api):
# the client sees chat.completion JSON and chunks; the ledger names both APIs
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'x-mock-cached-tokens: 8' {gw}/v1/chat/completions \
  -d '{{"model":"support-claude-openai","messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"Where is my order?"}}]}}'
curl -sN -H 'X-API-Key: {AGENT_KEY}' {gw}/v1/chat/completions \
  -d '{{"model":"support-claude-openai","stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}'

# Anthropic Messages (as the anthropic SDK sends it), JSON then streamed in Anthropic's events
curl -s -H 'x-api-key: {AGENT_KEY}' -H 'anthropic-version: 2023-06-01' {gw}/v1/messages \
  -d '{{"model":"support-claude","max_tokens":200,"system":"Be brief.","messages":[{{"role":"user","content":"Where is my order?"}}]}}'
curl -sN -H 'x-api-key: {AGENT_KEY}' {gw}/v1/messages \
  -d '{{"model":"support-claude","max_tokens":200,"stream":true,"messages":[{{"role":"user","content":"Hi"}}]}}'

# OpenAI Responses, with cache reads priced apart (the mock reports 8 cached tokens)
curl -s -H 'Authorization: Bearer {AGENT_KEY}' -H 'x-mock-cached-tokens: 8' {gw}/v1/responses \
  -d '{{"model":"support-fast","instructions":"Be brief.","input":"Where is my order? I ordered it last Tuesday."}}'

# OpenAI embeddings: input tokens only
curl -s -H 'Authorization: Bearer {AGENT_KEY}' {gw}/v1/embeddings \
  -d '{{"model":"support-embed","input":["How do I reset my password?","Shipping times"]}}'

# an Azure deployment: the echo's upstream_path shows where the call went
curl -s -H 'X-API-Key: {AGENT_KEY}' {gw}/v1/chat/completions \
  -d '{{"model":"support-azure","messages":[{{"role":"user","content":"Hi"}}]}}'

# Anthropic-shaped refusals on the messages route (401 authentication_error)
curl -s -H 'x-api-key: wrong' {gw}/v1/messages -d '{{}}'

# MCP tools (route support-tools): the tools bob's agent may call (refund_ticket is admin-only: not listed)
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  {gw}/mcp -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'

# an allowed tool call: get_ticket reaches the MCP server
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  {gw}/mcp -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"get_ticket","arguments":{{"ticket_id":"T-1"}}}}}}'

# refused: refund_ticket (admins only) and another agent's queue (owner rule) get JSON-RPC error -32003, never sent
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  {gw}/mcp -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"refund_ticket","arguments":{{"ticket_id":"T-1","amount_usd":20}}}}}}'
curl -s -H 'X-API-Key: {AGENT_KEY}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  {gw}/mcp -d '{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"list_agent_tickets","arguments":{{"agent":"alice"}}}}}}'

# every tool call is an audit line (arguments as SHA-256 only) and a metric
curl -s {admin}/metrics | grep tollgate_mcp_calls_total

# what bob has spent, his limits and what remains (admin API)
curl -s -H 'Authorization: Bearer {ADMIN_TOKEN}' '{admin}/admin/usage?user=bob'

# alice has a 2,000-token daily budget: the call after it is spent gets 429 token_budget_exceeded
for i in $(seq 1 20); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'X-API-Key: {ALICE_KEY}' \
  -H 'x-mock-completion-tokens: 400' {gw}/v1/chat/completions \
  -d '{{"model":"support-fast","messages":[{{"role":"user","content":"Hi"}}]}}'; done; echo

# health, readiness and metrics
curl -s {admin}/readyz
curl -s {admin}/metrics | grep tollgate_requests_total

Stop with Ctrl-C.
"#,
        backends = MOCK_BACKENDS.join(", "),
    );
    server.run(pingora::server::RunArgs::default());
    state.shutdown();
    Ok(())
}
