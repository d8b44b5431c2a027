//! The server's side of an MCP exchange, message by message: answers to
//! `tools/list` filtered to the tools the caller may call, results under
//! the route's output guards, and each answer closing its tool call (for
//! the audit line). The same rules for a JSON answer and for every event
//! of an SSE stream.

use super::jsonrpc::{self, Kind};
use super::record::{Outcome, ToolCall};
use super::rules::ToolPolicy;
use super::sse::{self, Event};
use crate::auth::Identity;
use crate::guards::output::{guard_text, Findings, OutputGuardSet, OutputScanner};
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

/// A forwarded `tools/call` waiting for its answer.
#[derive(Debug, Clone)]
pub struct PendingCall {
    pub tool: String,
    pub arguments_sha256: String,
    pub started: SystemTime,
}

/// Output guards on tool results, when the route names some.
pub struct ResultGuard {
    pub scanner: Arc<OutputScanner>,
    pub set: OutputGuardSet,
}

pub struct Relay<'a> {
    tools: &'a ToolPolicy,
    identity: &'a Identity,
    guard: Option<ResultGuard>,
    request_id: &'a str,
    /// Ids (as `id_key`) of forwarded requests not answered yet.
    awaiting: HashMap<String, Value>,
    calls: HashMap<String, PendingCall>,
    /// The client sent a batch: a JSON answer goes back as an array,
    /// even when the server answered its one forwarded message alone.
    pub client_batch: bool,
    /// Calls answered (or lost), for the audit.
    pub finished: Vec<ToolCall>,
    pub findings: Findings,
}

impl<'a> Relay<'a> {
    pub fn new(
        tools: &'a ToolPolicy,
        identity: &'a Identity,
        guard: Option<ResultGuard>,
        request_id: &'a str,
    ) -> Relay<'a> {
        Relay {
            tools,
            identity,
            guard,
            request_id,
            awaiting: HashMap::new(),
            calls: HashMap::new(),
            client_batch: false,
            finished: Vec::new(),
            findings: Findings::default(),
        }
    }

    /// A request was forwarded: its answer is awaited.
    pub fn expect(&mut self, id: &Value, call: Option<PendingCall>) {
        let key = jsonrpc::id_key(id);
        if let Some(call) = call {
            self.calls.insert(key.clone(), call);
        }
        self.awaiting.insert(key, id.clone());
    }

    /// Whether every forwarded request has been answered.
    pub fn all_answered(&self) -> bool {
        self.awaiting.is_empty()
    }

    /// Rewrites one server message in place; `true` when it changed.
    pub fn message(&mut self, message: &mut Value) -> bool {
        let Some(Kind::Response { id }) = jsonrpc::kind(message) else {
            return false;
        };
        let key = jsonrpc::id_key(id);
        let id = id.clone();
        self.awaiting.remove(&key);
        let mut changed = self.filter_tool_list(message);
        if let Some(blocked) = self.guard_result(message, &mut changed) {
            *message = jsonrpc::refused(
                &id,
                &format!("tool result blocked by the {blocked} output guard"),
                "guard_blocked",
                self.request_id,
            );
            changed = true;
        }
        if let Some(call) = self.calls.remove(&key) {
            let outcome = match message.get("result") {
                Some(result) => Outcome::Answered {
                    is_error: result.get("isError").and_then(Value::as_bool) == Some(true),
                },
                None => Outcome::Failed,
            };
            self.close(key, call, outcome);
        }
        changed
    }

    fn close(&mut self, jsonrpc_id: String, call: PendingCall, outcome: Outcome) {
        self.finished.push(ToolCall {
            tool: call.tool,
            jsonrpc_id,
            arguments_sha256: call.arguments_sha256,
            started: call.started,
            ended: SystemTime::now(),
            outcome,
        });
    }

    /// Any answer listing tools (`result.tools`) keeps only those the
    /// caller may call: a `tools/list` answer, also when a server replays
    /// it on another stream.
    fn filter_tool_list(&self, message: &mut Value) -> bool {
        let Some(tools) = message
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = tools.len();
        tools.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| self.tools.lists(self.identity, name))
        });
        tools.len() != before
    }

    /// Output guards over every string of a result; `Some(guard)` when
    /// one blocks it.
    fn guard_result(&mut self, message: &mut Value, changed: &mut bool) -> Option<&'static str> {
        let guard = self.guard.as_ref()?;
        let result = message.get_mut("result")?;
        let mut blocked = None;
        let findings = &mut self.findings;
        each_string(result, &mut |text| {
            if blocked.is_some() {
                return;
            }
            let (rewritten, block) = guard_text(&guard.scanner, guard.set, text, findings);
            if let Some(kind) = block {
                blocked = Some(kind.guard().name());
            } else if let Some(clean) = rewritten {
                *text = clean;
                *changed = true;
            }
        });
        blocked
    }

    /// A whole JSON answer (one message or a batch) with `local` answers
    /// (the gateway's refusals) added; `None` when it is not JSON and
    /// nothing was added (forwarded untouched).
    pub fn json_body(&mut self, body: &[u8], local: Vec<Value>) -> Option<Vec<u8>> {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let (mut messages, batch) = match parsed {
            Some(Value::Array(list)) => (list, true),
            Some(single @ Value::Object(_)) => (vec![single], false),
            _ if local.is_empty() => return None,
            _ => (Vec::new(), true),
        };
        let batch = batch || self.client_batch;
        let mut changed = !local.is_empty() || (batch && messages.len() == 1);
        for message in messages.iter_mut() {
            changed |= self.message(message);
        }
        if !changed {
            return None;
        }
        messages.extend(local);
        let out = if batch || messages.len() > 1 {
            Value::Array(messages)
        } else {
            messages.pop().unwrap_or(Value::Null)
        };
        serde_json::to_vec(&out).ok()
    }

    /// One SSE event as it leaves: untouched unless its message changed.
    pub fn event(&mut self, event: Event) -> Bytes {
        let Some(data) = event.data.as_deref() else {
            return event.raw;
        };
        let Ok(mut message) = serde_json::from_str::<Value>(data) else {
            return event.raw;
        };
        if !self.message(&mut message) {
            return event.raw;
        }
        sse::message_event(&message.to_string(), event.id.as_deref())
    }

    /// The stream ended before these requests were answered: each gets an
    /// error (the client would otherwise wait forever), each call is
    /// closed as lost.
    pub fn unanswered(&mut self, why: &str) -> Vec<Value> {
        let awaiting: Vec<(String, Value)> = self.awaiting.drain().collect();
        let mut errors = Vec::with_capacity(awaiting.len());
        for (key, id) in awaiting {
            if let Some(call) = self.calls.remove(&key) {
                self.close(key, call, Outcome::Lost);
            }
            errors.push(jsonrpc::error(
                &id,
                jsonrpc::INTERNAL_ERROR,
                why,
                serde_json::json!({"code": "upstream_error", "request_id": self.request_id}),
            ));
        }
        errors
    }
}

/// Calls `f` on every string value inside `value`, depth first.
fn each_string(value: &mut Value, f: &mut impl FnMut(&mut String)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|v| each_string(v, f)),
        Value::Object(map) => map.values_mut().for_each(|v| each_string(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{
        GuardAction, OutputGuardsConfig, SecretsGuardConfig, ToolDefault, ToolRuleConfig,
        ToolsConfig,
    };
    use serde_json::json;

    fn policy() -> ToolPolicy {
        let rule = |name: &str, roles: &[&str]| ToolRuleConfig {
            name: name.into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            owner: None,
            rate_limit: None,
        };
        ToolPolicy::compile(
            "tools",
            Some(&ToolsConfig {
                default: ToolDefault::Deny,
                rules: vec![rule("get_ticket", &[]), rule("refund_ticket", &["admin"])],
            }),
        )
    }

    fn bob() -> Identity {
        Identity {
            user: "bob".into(),
            tenant: "acme".into(),
            roles: vec!["agent".into()],
            key_id: "bob-1".into(),
            ..Identity::default()
        }
    }

    fn list_answer(id: u64) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "get_ticket"}, {"name": "refund_ticket"}, {"name": "search_kb"}]}})
    }

    fn names(message: &Value) -> Vec<&str> {
        message["result"]["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn tool_lists_are_filtered_in_json_and_sse() {
        let (p, who) = (policy(), bob());
        let mut relay = Relay::new(&p, &who, None, "r1");
        relay.expect(&json!(1), None);
        let body = relay
            .json_body(list_answer(1).to_string().as_bytes(), Vec::new())
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(names(&v), ["get_ticket"]);
        assert!(relay.all_answered());

        let mut splitter = sse::Splitter::new(1 << 20);
        let raw = format!("id: 9\nevent: message\ndata: {}\n\n", list_answer(2));
        let event = splitter.push(raw.as_bytes()).unwrap().remove(0);
        let out = relay.event(event);
        let event = sse::Splitter::new(1 << 20).push(&out).unwrap().remove(0);
        assert_eq!(event.id.as_deref(), Some("9"));
        let v: Value = serde_json::from_str(event.data.as_deref().unwrap()).unwrap();
        assert_eq!(names(&v), ["get_ticket"]);
    }

    #[test]
    fn answers_close_calls_and_lost_ones_get_errors() {
        let (p, who) = (policy(), bob());
        let mut relay = Relay::new(&p, &who, None, "r1");
        let call = |tool: &str| PendingCall {
            tool: tool.into(),
            arguments_sha256: "00".into(),
            started: SystemTime::now(),
        };
        relay.expect(&json!(1), Some(call("get_ticket")));
        relay.expect(&json!("b"), Some(call("get_ticket")));
        let answer = json!({"jsonrpc": "2.0", "id": 1,
            "result": {"content": [], "isError": true}});
        assert!(relay
            .json_body(answer.to_string().as_bytes(), Vec::new())
            .is_none());
        assert_eq!(
            relay.finished[0].outcome,
            Outcome::Answered { is_error: true }
        );
        assert!(!relay.all_answered());
        let errors = relay.unanswered("stream ended");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["id"], "b");
        assert_eq!(errors[0]["error"]["data"]["code"], "upstream_error");
        assert_eq!(relay.finished[1].outcome, Outcome::Lost);
        assert!(relay.all_answered());
    }

    #[test]
    fn local_refusals_join_the_answer() {
        let (p, who) = (policy(), bob());
        let mut relay = Relay::new(&p, &who, None, "r1");
        relay.expect(&json!(1), None);
        let refusal = jsonrpc::refused(&json!(2), "no", "forbidden", "r1");
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let body = relay
            .json_body(answer.to_string().as_bytes(), vec![refusal])
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn output_guards_redact_or_block_results() {
        let config = OutputGuardsConfig {
            pii: None,
            secrets: Some(SecretsGuardConfig {
                action: GuardAction::Redact,
            }),
            holdback_bytes: 256,
        };
        let scanner = Arc::new(OutputScanner::compile(&config, &[]).unwrap());
        let (p, who) = (policy(), bob());
        let guard = ResultGuard {
            scanner,
            set: OutputGuardSet {
                pii: false,
                secrets: true,
            },
        };
        let mut relay = Relay::new(&p, &who, Some(guard), "r1");
        let key = "AKIAIOSFODNN7EXAMPLE";
        let mut answer = json!({"jsonrpc": "2.0", "id": 1,
            "result": {"content": [{"type": "text", "text": format!("key {key}")}]}});
        assert!(relay.message(&mut answer));
        assert!(!answer.to_string().contains(key), "{answer}");
        assert!(!relay.findings.is_empty());
    }
}
