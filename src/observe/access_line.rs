//! The access log's line, as a typed record serialised straight to its
//! text. A `serde_json::Value` tree (the earlier form) allocated every key
//! and value and sorted them in a map before writing: ~10 µs of CPU per
//! request under load on the development VM (benches/RESULTS.md, item 12).
//!
//! Fields are declared in alphabetical order so the line reads as it did
//! when the map sorted them; an LLM call's fields are absent (not null) on
//! other lines.

use crate::config::schema::LlmApi;
use crate::llm::account::LlmSummary;
use crate::llm::pricing::usd_string;
use serde::{Serialize, Serializer};
use std::net::{IpAddr, SocketAddr};

#[derive(Serialize)]
pub struct AccessLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<LlmApi>,
    /// Upstream attempts when there was more than one (retries, fallbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<usize>,
    pub bytes_sent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// `""` for unix-socket listeners.
    #[serde(serialize_with = "ip_or_empty")]
    pub client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// The LLM call's conversation id (absent when it named none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<&'a str>,
    pub duration_ms: f64,
    pub error: Option<&'a str>,
    pub error_code: Option<&'static str>,
    pub gateway_ms: f64,
    pub key_id: Option<&'a str>,
    pub log: &'static str,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// Kinds the output guards found (absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_guard: Option<&'a [&'static str]>,
    pub path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    pub request_id: &'a str,
    pub route: &'a str,
    /// Outer `None`: not an LLM call; inner `None`: no model served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_model: Option<Option<&'a str>>,
    /// The refusal a limit in shadow mode would have answered (absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_refusal: Option<&'static str>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    pub tenant: Option<&'a str>,
    pub time: String,
    pub traceparent: &'a str,
    /// The upstream's API when the call was translated (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api: Option<&'static str>,
    pub upstream_peer: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd: Option<String>,
    pub user: Option<&'a str>,
}

/// The fields of a line that are the same for every request: where it
/// came from and who it was, what it asked for and how it ended.
pub struct RequestFacts<'a> {
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub bytes_sent: usize,
    pub request_id: &'a str,
    pub traceparent: &'a str,
    pub user: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub conversation: Option<&'a str>,
    pub shadow_refusal: Option<&'static str>,
    pub upstream_peer: Option<SocketAddr>,
    pub upstream_attempts: usize,
    pub error: Option<&'a str>,
    pub error_code: Option<&'static str>,
    pub duration_ms: f64,
    pub gateway_ms: f64,
}

impl<'a> AccessLine<'a> {
    pub fn new(facts: RequestFacts<'a>, time: String, llm: Option<&'a LlmSummary>) -> Self {
        AccessLine {
            api: llm.map(|l| l.api),
            attempts: Some(facts.upstream_attempts).filter(|n| *n > 1),
            bytes_sent: facts.bytes_sent,
            cached_tokens: llm.map(|l| l.cached_tokens),
            client_ip: facts.client_ip,
            completion_tokens: llm.map(|l| l.completion_tokens),
            conversation: facts.conversation,
            duration_ms: facts.duration_ms,
            error: facts.error,
            error_code: facts.error_code,
            gateway_ms: facts.gateway_ms,
            key_id: facts.key_id,
            log: "access",
            method: facts.method,
            model: llm.map(|l| l.model.as_str()),
            output_guard: llm
                .map(|l| l.output_guard.as_slice())
                .filter(|k| !k.is_empty()),
            path: facts.path,
            prompt_tokens: llm.map(|l| l.prompt_tokens),
            request_id: facts.request_id,
            route: facts.route,
            served_model: llm.map(|l| l.served_model.as_deref()),
            shadow_refusal: facts.shadow_refusal,
            status: facts.status,
            stream: llm.map(|l| l.stream),
            tenant: facts.tenant,
            time,
            traceparent: facts.traceparent,
            upstream_api: llm.and_then(|l| l.upstream_api),
            upstream_peer: facts.upstream_peer,
            usage_source: llm.map(|l| if l.estimated { "estimated" } else { "upstream" }),
            usd: llm.map(|l| usd_string(l.micro_usd)),
            user: facts.user,
        }
    }
}

fn ip_or_empty<S: Serializer>(ip: &Option<IpAddr>, out: S) -> Result<S::Ok, S::Error> {
    match ip {
        Some(ip) => out.collect_str(ip),
        None => out.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            client_ip: Some("10.0.0.7".parse().unwrap()),
            method: "POST",
            path: "/v1/chat/completions",
            route: "chat",
            status: 200,
            bytes_sent: 512,
            request_id: "req-1",
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            user: Some("alice"),
            tenant: Some("acme"),
            key_id: Some("k1"),
            conversation: None,
            shadow_refusal: None,
            upstream_peer: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_attempts: 1,
            error: None,
            error_code: None,
            duration_ms: 1.25,
            gateway_ms: 0.125,
        }
    }

    /// The line the `json!` tree wrote before this record, for the same
    /// request: the typed record must not change a byte of it.
    fn value_line(llm: Option<&LlmSummary>) -> String {
        let f = facts();
        let mut line = json!({
            "log": "access",
            "time": "2026-12-02T20:00:00Z",
            "request_id": f.request_id,
            "client_ip": "10.0.0.7",
            "method": f.method,
            "path": f.path,
            "route": f.route,
            "status": f.status,
            "error_code": f.error_code,
            "user": f.user,
            "tenant": f.tenant,
            "key_id": f.key_id,
            "upstream_peer": f.upstream_peer.map(|p| p.to_string()),
            "duration_ms": f.duration_ms,
            "gateway_ms": f.gateway_ms,
            "bytes_sent": f.bytes_sent,
            "error": f.error,
            "traceparent": f.traceparent,
        });
        if let (Some(llm), Some(map)) = (llm, line.as_object_mut()) {
            let fields = json!({
                "model": llm.model,
                "served_model": llm.served_model,
                "api": llm.api,
                "prompt_tokens": llm.prompt_tokens,
                "completion_tokens": llm.completion_tokens,
                "cached_tokens": llm.cached_tokens,
                "usd": usd_string(llm.micro_usd),
                "usage_source": if llm.estimated { "estimated" } else { "upstream" },
                "stream": llm.stream,
            });
            if let Value::Object(fields) = fields {
                map.extend(fields);
            }
        }
        line.to_string()
    }

    fn typed_line(llm: Option<&LlmSummary>) -> String {
        let line = AccessLine::new(facts(), "2026-12-02T20:00:00Z".into(), llm);
        serde_json::to_string(&line).unwrap()
    }

    #[test]
    fn a_plain_line_is_byte_for_byte_the_map_form() {
        assert_eq!(typed_line(None), value_line(None));
    }

    #[test]
    fn an_llm_line_is_byte_for_byte_the_map_form() {
        let mut llm = LlmSummary {
            model: "gpt-4o-mini".into(),
            served_model: Some("support-fast".into()),
            api: LlmApi::OpenaiChat,
            prompt_tokens: 142,
            completion_tokens: 58,
            cached_tokens: 0,
            micro_usd: 1234,
            estimated: false,
            stream: true,
            ..LlmSummary::default()
        };
        assert_eq!(typed_line(Some(&llm)), value_line(Some(&llm)));
        llm.served_model = None;
        llm.estimated = true;
        assert_eq!(typed_line(Some(&llm)), value_line(Some(&llm)));
    }

    #[test]
    fn a_conversation_is_written_only_when_the_call_named_one() {
        let line: Value = serde_json::to_value(AccessLine::new(facts(), "t".into(), None)).unwrap();
        assert!(line.get("conversation").is_none());
        let mut f = facts();
        f.conversation = Some("c-\"1\"");
        let text = serde_json::to_string(&AccessLine::new(f, "t".into(), None)).unwrap();
        assert!(text.contains(r#""conversation":"c-\"1\"""#), "{text}");
    }

    #[test]
    fn an_error_line_and_a_socket_without_address() {
        let mut f = facts();
        f.client_ip = None;
        f.upstream_peer = None;
        f.error = Some("ConnectRefused");
        f.error_code = Some("upstream_unavailable");
        let line: Value = serde_json::to_value(AccessLine::new(f, "t".into(), None)).unwrap();
        assert_eq!(line["client_ip"], "");
        assert_eq!(line["upstream_peer"], Value::Null);
        assert_eq!(line["error"], "ConnectRefused");
        assert_eq!(line["error_code"], "upstream_unavailable");
        assert!(line.get("model").is_none(), "{line}");
    }
}
