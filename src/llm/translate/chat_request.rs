//! Reading an OpenAI chat request the way both of its translators (to
//! Anthropic Messages, to Gemini) need it: the fields the target lacks,
//! `stop`, the messages in order, a tool call's arguments, the function
//! tools and `tool_choice` (and, for either API, a string field). Each
//! reader returns what it read; the translator writes its own API's shape
//! from it.
//!
//! The readers of lists are lazy, so that a request with several problems
//! is refused for the first one in the order a translator meets them.

use crate::llm::api::fields::field_err;
use crate::llm::api::RequestError;
use serde_json::{json, Map, Value};

/// The words of a translator's refusals for its target API.
pub(super) struct Target {
    /// A field or value the target has no equivalent for.
    pub no_equivalent: &'static str,
    /// `n` above 1.
    pub n_above_one: &'static str,
    /// A system message after the conversation started.
    pub late_system: &'static str,
}

/// A present, non-null field (clients send `null` for "not set").
pub(super) fn present<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// The string at `path` (dotted) below `value`, which stands at `at`; a
/// refusal naming it otherwise.
pub(super) fn string_at<'a>(
    value: &'a Value,
    at: &str,
    path: &str,
) -> Result<&'a str, RequestError> {
    let pointer: String = path.split('.').flat_map(|key| ["/", key]).collect();
    value
        .pointer(&pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| field_err(format!("{at}.{path}"), "must be a string"))
}

/// Refuses fields outside `known` that carry a value.
pub(super) fn refuse_unknown(
    body: &Map<String, Value>,
    known: &[&str],
    problem: &'static str,
) -> Result<(), RequestError> {
    match body
        .iter()
        .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
    {
        Some((key, _)) => Err(field_err(key.as_str(), problem)),
        None => Ok(()),
    }
}

/// OpenAI chat request fields every target can carry (`n` and `logprobs`
/// in their default values only).
const CHAT_FIELDS_EVERY_TARGET_CARRIES: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "n",
    "logprobs",
];

/// Refuses chat fields that neither `CHAT_FIELDS_EVERY_TARGET_CARRIES` nor
/// the target's `also_known` name, more than one choice (`n`) and log
/// probabilities.
pub(super) fn refuse_chat_extras(
    body: &Map<String, Value>,
    also_known: &[&str],
    target: &Target,
) -> Result<(), RequestError> {
    let known = |k: &str| CHAT_FIELDS_EVERY_TARGET_CARRIES.contains(&k) || also_known.contains(&k);
    if let Some((key, _)) = body.iter().find(|(k, v)| !v.is_null() && !known(k)) {
        return Err(field_err(key.as_str(), target.no_equivalent));
    }
    if present(body, "n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(field_err("n", target.n_above_one));
    }
    if present(body, "logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(field_err("logprobs", target.no_equivalent));
    }
    Ok(())
}

/// `stop` as a list of stop sequences.
pub(super) fn stop_sequences(body: &Map<String, Value>) -> Result<Option<Value>, RequestError> {
    match present(body, "stop") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            Ok(Some(Value::Array(list.clone())))
        }
        Some(_) => Err(field_err("stop", "must be a string or an array of strings")),
    }
}

/// The role of a chat message (`developer` is a system message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a chat request.
pub(super) struct ChatMessage<'a> {
    pub index: usize,
    pub role: Role,
    pub fields: &'a Map<String, Value>,
}

impl ChatMessage<'_> {
    /// The path of one of its fields, for a refusal.
    pub fn at(&self, field: &str) -> String {
        format!("messages[{}].{field}", self.index)
    }
}

/// The messages of a chat request in order, each an object of a known
/// role, without a `name` and with the system messages first (neither
/// target has names or system messages later in the conversation).
pub(super) fn chat_messages<'a>(
    body: &'a Map<String, Value>,
    target: &'a Target,
) -> Result<impl Iterator<Item = Result<ChatMessage<'a>, RequestError>> + 'a, RequestError> {
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| field_err("messages", "must be an array"))?;
    let mut started = false;
    Ok(list.iter().enumerate().map(move |(index, msg)| {
        let at = |f: &str| format!("messages[{index}].{f}");
        let fields = msg
            .as_object()
            .ok_or_else(|| field_err(format!("messages[{index}]"), "must be an object"))?;
        if fields.get("name").is_some_and(|v| !v.is_null()) {
            return Err(field_err(at("name"), target.no_equivalent));
        }
        let role = match fields.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" if started => {
                return Err(field_err(at("role"), target.late_system))
            }
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return Err(field_err(at("role"), target.no_equivalent)),
        };
        started |= role != Role::System;
        Ok(ChatMessage {
            index,
            role,
            fields,
        })
    }))
}

/// A tool call's `function.arguments` as the JSON object it encodes (empty
/// arguments are `{}`); `at` names the call.
pub(super) fn call_arguments(call: &Value, at: &str) -> Result<Value, RequestError> {
    let arguments = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("{}");
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| field_err(format!("{at}.function.arguments"), "must be a JSON object"))
}

/// One function tool of a chat request.
pub(super) struct FunctionTool<'a> {
    pub index: usize,
    pub tool: &'a Value,
    pub function: &'a Value,
    pub name: &'a str,
}

/// The tools of a chat request, each a function with a name (other tool
/// types have no equivalent in either target).
pub(super) fn function_tools<'a>(
    tools: &'a Value,
    target: &'a Target,
) -> Result<impl Iterator<Item = Result<FunctionTool<'a>, RequestError>> + 'a, RequestError> {
    let list = tools
        .as_array()
        .ok_or_else(|| field_err("tools", "must be an array"))?;
    Ok(list.iter().enumerate().map(move |(index, tool)| {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(field_err(
                format!("tools[{index}].type"),
                target.no_equivalent,
            ));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| field_err(format!("tools[{index}].function"), "is required"))?;
        let name = string_at(function, &format!("tools[{index}].function"), "name")?;
        Ok(FunctionTool {
            index,
            tool,
            function,
            name,
        })
    }))
}

/// A chat request's `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToolChoice<'a> {
    Auto,
    Required,
    None,
    Function(&'a str),
}

pub(super) fn tool_choice(choice: &Value) -> Result<ToolChoice<'_>, RequestError> {
    let refuse = || field_err("tool_choice", "must be auto, required, none or a function");
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            "none" => Ok(ToolChoice::None),
            _ => Err(refuse()),
        },
        other => match other.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if other.get("type").and_then(Value::as_str) == Some("function") => {
                Ok(ToolChoice::Function(name))
            }
            _ => Err(refuse()),
        },
    }
}
