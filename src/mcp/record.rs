//! What the gateway keeps of one `tools/call`: the facts of its audit
//! line, its metric and its trace span. Argument values never: only their
//! SHA-256, so an auditor can match a call to a known input without the
//! log holding customer data.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused by the gateway (a rule, the rate, a guard); never sent.
    Denied(&'static str),
    /// The server answered with a result (`is_error`: the tool failed).
    Answered { is_error: bool },
    /// The server answered with a JSON-RPC error.
    Failed,
    /// No answer reached the client (stream ended, server failed).
    Lost,
}

impl Outcome {
    /// `tollgate_mcp_calls_total`'s `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Denied(_) => "denied",
            Outcome::Answered { is_error: false } => "allowed",
            Outcome::Answered { is_error: true } | Outcome::Failed | Outcome::Lost => "error",
        }
    }

    /// The audit line's `result`.
    pub fn result(self) -> &'static str {
        match self {
            Outcome::Denied(_) => "not_sent",
            Outcome::Answered { is_error: false } => "ok",
            Outcome::Answered { is_error: true } => "tool_error",
            Outcome::Failed => "jsonrpc_error",
            Outcome::Lost => "no_answer",
        }
    }
}

/// One `tools/call`, from arrival to answer.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub tool: String,
    /// The JSON-RPC id as sent (its JSON text).
    pub jsonrpc_id: String,
    pub arguments_sha256: String,
    pub started: SystemTime,
    pub ended: SystemTime,
    pub outcome: Outcome,
}

/// Hex SHA-256 of the arguments' JSON text as the client sent them
/// (`null` when there were none).
pub fn arguments_digest(arguments: Option<&Value>) -> String {
    let text = arguments.map_or_else(|| "null".to_string(), Value::to_string);
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_hide_values_and_tell_inputs_apart() {
        let a = arguments_digest(Some(&json!({"ticket": "T-1"})));
        let b = arguments_digest(Some(&json!({"ticket": "T-2"})));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(!a.contains("T-1"));
        assert_eq!(arguments_digest(None), arguments_digest(Some(&Value::Null)));
    }

    #[test]
    fn outcomes_map_to_the_metric_labels() {
        assert_eq!(Outcome::Denied("role_not_allowed").label(), "denied");
        assert_eq!(Outcome::Answered { is_error: false }.label(), "allowed");
        assert_eq!(Outcome::Answered { is_error: true }.label(), "error");
        assert_eq!(Outcome::Lost.result(), "no_answer");
    }
}
