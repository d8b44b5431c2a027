//! The JSON-RPC 2.0 messages of an MCP POST: one message or a batch,
//! each classified (request, notification, response) before anything is
//! forwarded, and the errors the gateway answers for a refused request.

use crate::error::GatewayError;
use serde_json::{json, Value};

/// JSON-RPC error code of a call refused by the gateway's rules
/// (DESIGN §4 "MCP routes"); -32000..-32099 are for implementations.
pub const REFUSED: i64 = -32003;
/// JSON-RPC "internal error": the server's answer was lost on the way.
pub const INTERNAL_ERROR: i64 = -32603;

/// The messages of one POST body.
#[derive(Debug)]
pub struct Post {
    /// Sent as a JSON array (answers go back as one).
    pub batch: bool,
    pub messages: Vec<Value>,
}

/// What one message is.
#[derive(Debug, PartialEq)]
pub enum Kind<'a> {
    Request { id: &'a Value, method: &'a str },
    Notification { method: &'a str },
    Response { id: &'a Value },
}

/// Parses a POST body; every message must be a JSON-RPC 2.0 object.
/// `max_batch` bounds a batch (hostile clients: one POST, many calls).
pub fn parse_post(body: &[u8], max_batch: usize) -> Result<Post, GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("body is not JSON: {e}")))?;
    let (batch, messages) = match value {
        Value::Array(list) => (true, list),
        single @ Value::Object(_) => (false, vec![single]),
        _ => {
            return Err(GatewayError::InvalidRequest(
                "body is neither a JSON-RPC message nor a batch".into(),
            ))
        }
    };
    if messages.is_empty() {
        return Err(GatewayError::InvalidRequest("empty JSON-RPC batch".into()));
    }
    if messages.len() > max_batch {
        return Err(GatewayError::InvalidRequest(format!(
            "JSON-RPC batch of {} messages exceeds the limit of {max_batch}",
            messages.len()
        )));
    }
    for (i, message) in messages.iter().enumerate() {
        if kind(message).is_none() {
            return Err(GatewayError::InvalidRequest(format!(
                "message {i} is not a JSON-RPC 2.0 request, notification or response"
            )));
        }
    }
    Ok(Post { batch, messages })
}

/// Classifies a message; `None` when it is not JSON-RPC 2.0.
pub fn kind(message: &Value) -> Option<Kind<'_>> {
    let object = message.as_object()?;
    if object.get("jsonrpc")?.as_str()? != "2.0" {
        return None;
    }
    let id = object.get("id").filter(|id| valid_id(id));
    match (object.get("method"), id) {
        (Some(method), Some(id)) => Some(Kind::Request {
            id,
            method: method.as_str()?,
        }),
        (Some(method), None) if !object.contains_key("id") => Some(Kind::Notification {
            method: method.as_str()?,
        }),
        (None, Some(id)) if object.contains_key("result") || object.contains_key("error") => {
            Some(Kind::Response { id })
        }
        _ => None,
    }
}

/// MCP ids are strings or integers (never null, unlike plain JSON-RPC).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// An id as a map key (`1` and `"1"` stay distinct).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The error answer the gateway gives for request `id`.
pub fn error(id: &Value, code: i64, message: &str, data: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": data},
    })
}

/// A refusal by the gateway's rules, with the contract's `error.code`.
pub fn refused(id: &Value, message: &str, code: &str, request_id: &str) -> Value {
    error(
        id,
        REFUSED,
        message,
        json!({"code": code, "request_id": request_id}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Post, GatewayError> {
        parse_post(text.as_bytes(), 4)
    }

    #[test]
    fn single_and_batch() {
        let one = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(!one.batch);
        assert_eq!(
            kind(&one.messages[0]),
            Some(Kind::Request {
                id: &json!(1),
                method: "tools/list"
            })
        );
        let batch = parse(
            r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":"a","result":{}}]"#,
        )
        .unwrap();
        assert!(batch.batch);
        assert_eq!(
            kind(&batch.messages[0]),
            Some(Kind::Notification {
                method: "notifications/initialized"
            })
        );
        assert_eq!(
            kind(&batch.messages[1]),
            Some(Kind::Response { id: &json!("a") })
        );
    }

    #[test]
    fn malformed_bodies_are_invalid_requests() {
        for bad in [
            "",
            "not json",
            "[]",
            "42",
            r#""text""#,
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"x"}, 3]"#,
        ] {
            match parse(bad) {
                Err(GatewayError::InvalidRequest(_)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn batches_over_the_limit_are_refused() {
        let msg = r#"{"jsonrpc":"2.0","method":"notifications/x"}"#;
        let five = format!("[{}]", [msg; 5].join(","));
        match parse(&five) {
            Err(GatewayError::InvalidRequest(m)) => assert!(m.contains("limit of 4"), "{m}"),
            other => panic!("{other:?}"),
        }
        let four = format!("[{}]", [msg; 4].join(","));
        assert!(parse(&four).is_ok());
    }

    #[test]
    fn refusals_carry_the_contract_code() {
        let e = refused(&json!(7), "no", "forbidden", "req-1");
        assert_eq!(e["id"], 7);
        assert_eq!(e["error"]["code"], REFUSED);
        assert_eq!(e["error"]["data"]["code"], "forbidden");
        assert_eq!(e["error"]["data"]["request_id"], "req-1");
    }

    proptest! {
        /// Any bytes: parsed or refused as invalid, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            match parse_post(&body, 8) {
                Ok(post) => prop_assert!(post.messages.iter().all(|m| kind(m).is_some())),
                Err(e) => prop_assert_eq!(e.code(), "invalid_request"),
            }
        }
    }
}
