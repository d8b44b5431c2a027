//! The mock's support-tools MCP server (Streamable HTTP at `/mcp`), for
//! `tollgate demo`, tests and benches: `get_ticket`, `list_agent_tickets`,
//! `refund_ticket`, `search_kb` over a few fixed tickets. POSTs are
//! answered as JSON, or as an SSE stream with `x-mock-mcp-sse: 1`; an
//! `initialize` gets a new `Mcp-Session-Id` naming this backend; GET (no
//! server stream) is 405, DELETE 200. Batches are answered as batches.

use super::reply::{header_str, write_reply, Reply};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// (id, agent, subject)
const TICKETS: &[(&str, &str, &str)] = &[
    ("T-1", "bob", "Broken chair leg"),
    ("T-2", "alice", "Late delivery"),
    ("T-3", "bob", "Refund for a damaged table"),
];

fn tools() -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    let schema = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    json!([
        {"name": "get_ticket", "description": "One support ticket by id",
         "inputSchema": schema(json!({"ticket_id": string("T-1")}), &["ticket_id"])},
        {"name": "list_agent_tickets", "description": "The tickets assigned to an agent",
         "inputSchema": schema(json!({"agent": string("the agent's user id")}), &["agent"])},
        {"name": "refund_ticket", "description": "Refunds a ticket's order",
         "inputSchema": schema(json!({"ticket_id": string("T-1"),
             "amount_usd": {"type": "number"}}), &["ticket_id", "amount_usd"])},
        {"name": "search_kb", "description": "Searches the knowledge base",
         "inputSchema": schema(json!({"query": string("words")}), &["query"])},
    ])
}

fn ticket(id: &str, agent: &str, subject: &str) -> Value {
    json!({"id": id, "agent": agent, "subject": subject})
}

/// A tool's result: its JSON as text and as structured content.
fn call(backend: &str, params: Option<&Value>) -> Result<Value, (i64, String)> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let args = params
        .and_then(|p| p.get("arguments"))
        .cloned()
        .unwrap_or(json!({}));
    let arg = |key: &str| {
        args.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let data = match name {
        "get_ticket" => {
            let id = arg("ticket_id");
            match TICKETS.iter().find(|t| t.0 == id) {
                Some((id, agent, subject)) => ticket(id, agent, subject),
                None => return Ok(tool_error(&format!("no ticket {id}"))),
            }
        }
        "list_agent_tickets" => {
            let agent = arg("agent");
            let list: Vec<Value> = TICKETS
                .iter()
                .filter(|t| t.1 == agent)
                .map(|(id, agent, subject)| ticket(id, agent, subject))
                .collect();
            json!({"agent": agent, "tickets": list})
        }
        "refund_ticket" => json!({"refunded": arg("ticket_id"),
            "amount_usd": args.get("amount_usd").cloned().unwrap_or(Value::Null)}),
        "search_kb" => json!({"query": arg("query"),
            "articles": ["How to reset a password", "Shipping times"]}),
        other => return Err((-32602, format!("unknown tool {other}"))),
    };
    let data = json!({"backend": backend, "data": data});
    Ok(
        json!({"content": [{"type": "text", "text": data.to_string()}],
              "structuredContent": data, "isError": false}),
    )
}

fn tool_error(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// The answer to one message; `None` for notifications and responses.
fn answer(backend: &str, message: &Value) -> Option<Value> {
    let id = message.get("id")?.clone();
    let method = message.get("method")?.as_str().unwrap_or("");
    let params = message.get("params");
    let result = match method {
        "initialize" => Ok(json!({
            "protocolVersion": params.and_then(|p| p.get("protocolVersion")).cloned()
                .unwrap_or(json!("2025-06-18")),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "mock-support-tools", "version": env!("CARGO_PKG_VERSION")},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools()})),
        "tools/call" => call(backend, params),
        other => Err((-32601, format!("method {other} not found"))),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    })
}

/// Serves one request to `/mcp`.
pub(crate) async fn serve(
    session: &mut ServerSession,
    backend: &str,
    method: &str,
    body: &[u8],
) -> pingora::Result<()> {
    match method {
        "DELETE" => return write_reply(session, Reply::json(200, &json!({}))).await,
        "POST" => {}
        _ => {
            return write_reply(
                session,
                Reply::json(405, &json!({"error": "no server stream"})),
            )
            .await
        }
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        let error = json!({"jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": "parse error"}});
        return write_reply(session, Reply::json(400, &error)).await;
    };
    let (batch, messages) = match parsed {
        Value::Array(list) => (true, list),
        single => (false, vec![single]),
    };
    let initialize = messages.iter().any(|m| m["method"] == "initialize");
    let answers: Vec<Value> = messages.iter().filter_map(|m| answer(backend, m)).collect();
    let mut header = if answers.is_empty() {
        ResponseHeader::build(202, Some(3))?
    } else {
        ResponseHeader::build(200, Some(3))?
    };
    if initialize {
        header.insert_header("mcp-session-id", format!("{backend}-{}", ulid::Ulid::new()))?;
    }
    let sse = header_str(session, "x-mock-mcp-sse") == Some("1");
    let body = if answers.is_empty() {
        Vec::new()
    } else if sse {
        header.insert_header("content-type", "text/event-stream")?;
        answers
            .iter()
            .flat_map(|a| format!("event: message\ndata: {a}\n\n").into_bytes())
            .collect()
    } else {
        header.insert_header("content-type", "application/json")?;
        let value = if batch {
            Value::Array(answers)
        } else {
            answers.into_iter().next().unwrap_or(Value::Null)
        };
        value.to_string().into_bytes()
    };
    header.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(Bytes::from(body), true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_answer_with_their_data() {
        let got = call(
            "m",
            Some(&json!({"name": "get_ticket", "arguments": {"ticket_id": "T-2"}})),
        );
        assert_eq!(got.unwrap()["structuredContent"]["data"]["agent"], "alice");
        let list = call(
            "m",
            Some(&json!({"name": "list_agent_tickets", "arguments": {"agent": "bob"}})),
        );
        assert_eq!(
            list.unwrap()["structuredContent"]["data"]["tickets"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(call("m", Some(&json!({"name": "nope"}))).is_err());
        assert_eq!(
            answer(
                "m",
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            ),
            None
        );
        let listed = answer(
            "m",
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .unwrap();
        assert_eq!(listed["result"]["tools"].as_array().map(Vec::len), Some(4));
    }
}
