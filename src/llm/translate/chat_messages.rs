//! OpenAI chat completions ↔ Anthropic Messages: requests both ways, JSON
//! answers both ways. (Streams: `sse`.)
//!
//! Ids are carried, not invented: an OpenAI `tool_calls[].id` is the
//! Anthropic `tool_use.id` and `tool_result.tool_use_id`, and back, so a
//! tool round trip keeps matching across turns and across the two APIs.

use super::chat_request::{
    call_arguments, chat_messages, function_tools, present, refuse_chat_extras, refuse_unknown,
    stop_sequences, string_at, tool_choice, ChatMessage, FunctionTool, Role, Target, ToolChoice,
};
use super::wire::unix_now;
use crate::llm::api::fields::{field_err, num};
use crate::llm::api::RequestError;
use serde_json::{json, Map, Value};

/// OpenAI chat request fields the Anthropic request can carry besides those
/// every target does.
const CHAT_FIELDS_FOR_MESSAGES: &[&str] = &["user", "response_format"];

/// Anthropic request fields the OpenAI chat request can carry.
const MESSAGES_FIELDS_FOR_CHAT: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
];

const NO_EQUIVALENT_IN_MESSAGES: &str = "has no equivalent in the Anthropic Messages API";
const NO_EQUIVALENT_IN_CHAT: &str = "has no equivalent in the OpenAI chat API";

const MESSAGES: Target = Target {
    no_equivalent: NO_EQUIVALENT_IN_MESSAGES,
    n_above_one: "above 1 has no equivalent in the Anthropic Messages API",
    late_system: "a system message after the conversation started has no equivalent in the Anthropic Messages API",
};

// ---------------------------------------------------------------------------
// OpenAI chat request → Anthropic request

pub(super) fn chat_request_to_messages(
    body: Map<String, Value>,
) -> Result<Map<String, Value>, RequestError> {
    refuse_chat_extras(&body, CHAT_FIELDS_FOR_MESSAGES, &MESSAGES)?;
    match present(&body, "response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        None | Some("text") => {}
        Some(_) => {
            return Err(field_err(
                "response_format",
                "(JSON mode) has no equivalent in the Anthropic Messages API",
            ))
        }
    }
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    let (system, messages) = chat_messages_to_messages(&body)?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    // `rewrite` set the capped limit; Anthropic requires one.
    let max = present(&body, "max_completion_tokens")
        .or_else(|| present(&body, "max_tokens"))
        .cloned()
        .unwrap_or(json!(1));
    out.insert("max_tokens".into(), max);
    for key in ["temperature", "top_p", "stream"] {
        if let Some(v) = present(&body, key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = stop_sequences(&body)? {
        out.insert("stop_sequences".into(), stop);
    }
    if let Some(tools) = present(&body, "tools") {
        out.insert("tools".into(), chat_tools_to_messages(tools)?);
    }
    let mut choice = match present(&body, "tool_choice") {
        None => None,
        Some(c) => Some(match tool_choice(c)? {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        }),
    };
    if present(&body, "parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    match present(&body, "user") {
        None => {}
        Some(Value::String(user)) => {
            out.insert("metadata".into(), json!({"user_id": user}));
        }
        Some(_) => return Err(field_err("user", "must be a string")),
    }
    Ok(out)
}

/// OpenAI's `system`/`developer` messages become the `system` blocks; tool
/// messages in a row become one user message of `tool_result` blocks.
fn chat_messages_to_messages(
    body: &Map<String, Value>,
) -> Result<(Option<Value>, Vec<Value>), RequestError> {
    let mut system: Vec<Value> = Vec::new();
    let mut system_is_plain = true;
    let mut out: Vec<Value> = Vec::new();
    let mut tool_results: Vec<Value> = Vec::new();
    for msg in chat_messages(body, &MESSAGES)? {
        let msg = msg?;
        if msg.role != Role::Tool && !tool_results.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(&mut tool_results)}));
        }
        match msg.role {
            Role::System => match chat_content_to_messages(&msg)? {
                Value::Array(blocks) => {
                    system_is_plain = false;
                    system.extend(blocks);
                }
                text => system.push(json!({"type": "text", "text": text})),
            },
            Role::User => {
                out.push(json!({"role": "user", "content": chat_content_to_messages(&msg)?}))
            }
            Role::Assistant => out.push(chat_assistant_to_messages(msg.fields, msg.index)?),
            Role::Tool => {
                let id = msg
                    .fields
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| field_err(msg.at("tool_call_id"), "must be a string"))?;
                let content = chat_content_to_messages(&msg)?;
                tool_results
                    .push(json!({"type": "tool_result", "tool_use_id": id, "content": content}));
            }
        }
    }
    if !tool_results.is_empty() {
        out.push(json!({"role": "user", "content": tool_results}));
    }
    let system = match system.len() {
        0 => None,
        1 if system_is_plain => system[0].get("text").cloned(),
        _ => Some(Value::Array(system)),
    };
    Ok((system, out))
}

/// A message's content as Anthropic content: a string as it is, parts as
/// blocks.
fn chat_content_to_messages(msg: &ChatMessage) -> Result<Value, RequestError> {
    match msg.fields.get("content") {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| chat_part_to_block(p, &msg.at(&format!("content[{j}]"))))
            .collect(),
        _ => Err(field_err(
            msg.at("content"),
            "must be a string or an array of parts",
        )),
    }
}

/// One OpenAI content part as an Anthropic block; `cache_control` on a
/// part (the convention of LiteLLM and OpenRouter) is kept.
fn chat_part_to_block(part: &Value, at: &str) -> Result<Value, RequestError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    let mut block = match kind {
        "text" => {
            let text = string_at(part, at, "text")?;
            json!({"type": "text", "text": text})
        }
        "image_url" => {
            let image = part.get("image_url");
            if image
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str)
                .is_some_and(|d| d != "auto")
            {
                return Err(field_err(
                    format!("{at}.image_url.detail"),
                    NO_EQUIVALENT_IN_MESSAGES,
                ));
            }
            let url = string_at(part, at, "image_url.url")?;
            json!({"type": "image", "source": image_source(url)})
        }
        _ => return Err(field_err(format!("{at}.type"), NO_EQUIVALENT_IN_MESSAGES)),
    };
    if let Some(cache) = part.get("cache_control").filter(|c| !c.is_null()) {
        block["cache_control"] = cache.clone();
    }
    Ok(block)
}

/// An image URL as an Anthropic image source: `data:` URLs inline.
fn image_source(url: &str) -> Value {
    if let Some((media_type, data)) = parse_data_url(url) {
        return json!({"type": "base64", "media_type": media_type, "data": data});
    }
    json!({"type": "url", "url": url})
}

/// `data:<media type>;base64,<data>` → (media type, data).
pub(super) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn chat_assistant_to_messages(obj: &Map<String, Value>, i: usize) -> Result<Value, RequestError> {
    let mut blocks: Vec<Value> = Vec::new();
    match obj.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                blocks.push(json!({"type": "text", "text": s}));
            }
        }
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part.get("text"),
                    Some("refusal") => part.get("refusal"),
                    _ => return Err(field_err(format!("{at}.type"), NO_EQUIVALENT_IN_MESSAGES)),
                };
                let text = text
                    .and_then(Value::as_str)
                    .ok_or_else(|| field_err(at, "must hold a text"))?;
                blocks.push(json!({"type": "text", "text": text}));
            }
        }
        Some(_) => {
            return Err(field_err(
                format!("messages[{i}].content"),
                "must be a string, null or an array of parts",
            ))
        }
    }
    if let Some(calls) = obj.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| field_err(format!("messages[{i}].tool_calls"), "must be an array"))?;
        for (j, call) in calls.iter().enumerate() {
            let at = format!("messages[{i}].tool_calls[{j}]");
            let id = call.get("id").and_then(Value::as_str);
            let name = call.pointer("/function/name").and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(field_err(at, "must have an id and a function name"));
            };
            let input = call_arguments(call, &at)?;
            blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    for key in ["refusal", "audio", "function_call"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            return Err(field_err(
                format!("messages[{i}].{key}"),
                NO_EQUIVALENT_IN_MESSAGES,
            ));
        }
    }
    Ok(json!({"role": "assistant", "content": blocks}))
}

fn chat_tools_to_messages(tools: &Value) -> Result<Value, RequestError> {
    let mut out = Vec::new();
    for tool in function_tools(tools, &MESSAGES)? {
        let FunctionTool {
            index: i,
            tool,
            function: f,
            name,
        } = tool?;
        if f.get("strict") == Some(&Value::Bool(true)) {
            return Err(field_err(
                format!("tools[{i}].function.strict"),
                NO_EQUIVALENT_IN_MESSAGES,
            ));
        }
        let mut t = json!({"name": name,
            "input_schema": f.get("parameters").filter(|p| !p.is_null()).cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
        if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
            t["description"] = d.clone();
        }
        if let Some(cache) = tool.get("cache_control").filter(|c| !c.is_null()) {
            t["cache_control"] = cache.clone();
        }
        out.push(t);
    }
    Ok(Value::Array(out))
}

// ---------------------------------------------------------------------------
// Anthropic request → OpenAI chat request

pub(super) fn messages_request_to_chat(
    body: Map<String, Value>,
) -> Result<Map<String, Value>, RequestError> {
    refuse_unknown(&body, MESSAGES_FIELDS_FOR_CHAT, NO_EQUIVALENT_IN_CHAT)?;
    if present(&body, "thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "disabled")
    {
        return Err(field_err("thinking", NO_EQUIVALENT_IN_CHAT));
    }
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    match present(&body, "system") {
        None => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let parts = blocks
                .iter()
                .enumerate()
                .map(|(j, b)| block_to_chat_part(b, &format!("system[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(_) => {
            return Err(field_err(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| field_err("messages", "must be an array"))?;
    for (i, msg) in list.iter().enumerate() {
        match msg.get("role").and_then(Value::as_str) {
            Some("user") => user_to_chat(msg, i, &mut messages)?,
            Some("assistant") => messages.push(assistant_to_chat(msg, i)?),
            _ => {
                return Err(field_err(
                    format!("messages[{i}].role"),
                    NO_EQUIVALENT_IN_CHAT,
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    for key in ["max_tokens", "temperature", "top_p"] {
        if let Some(v) = present(&body, key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = present(&body, "stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    if present(&body, "stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), Value::Bool(true));
        // The usage arrives in the last chunk only when asked for.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = present(&body, "tools") {
        out.insert("tools".into(), messages_tools_to_chat(tools)?);
    }
    if let Some(choice) = present(&body, "tool_choice") {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => match choice.get("name").and_then(Value::as_str) {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => return Err(field_err("tool_choice.name", "must be a string")),
            },
            _ => return Err(field_err("tool_choice.type", NO_EQUIVALENT_IN_CHAT)),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(metadata) = present(&body, "metadata") {
        let Some(meta) = metadata.as_object() else {
            return Err(field_err("metadata", "must be an object"));
        };
        for (key, value) in meta {
            match (key.as_str(), value) {
                ("user_id", Value::String(user)) => {
                    out.insert("user".into(), Value::String(user.clone()));
                }
                (_, Value::Null) => {}
                _ => return Err(field_err(format!("metadata.{key}"), NO_EQUIVALENT_IN_CHAT)),
            }
        }
    }
    Ok(out)
}

/// An Anthropic text or image block as an OpenAI content part.
/// `cache_control` is kept: OpenAI ignores it (it caches on its own), and
/// OpenAI-compatible servers that honour it (LiteLLM, OpenRouter) read it.
fn block_to_chat_part(block: &Value, at: &str) -> Result<Value, RequestError> {
    let mut part = match block.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = string_at(block, at, "text")?;
            json!({"type": "text", "text": text})
        }
        Some("image") => {
            let source = block.get("source");
            let url = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
                Some("base64") => {
                    let media = source
                        .and_then(|s| s.get("media_type"))
                        .and_then(Value::as_str);
                    let data = source.and_then(|s| s.get("data")).and_then(Value::as_str);
                    match (media, data) {
                        (Some(m), Some(d)) => format!("data:{m};base64,{d}"),
                        _ => {
                            return Err(field_err(
                                format!("{at}.source"),
                                "must have media_type and data",
                            ))
                        }
                    }
                }
                Some("url") => string_at(block, at, "source.url")?.to_string(),
                _ => {
                    return Err(field_err(
                        format!("{at}.source.type"),
                        NO_EQUIVALENT_IN_CHAT,
                    ))
                }
            };
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        _ => return Err(field_err(format!("{at}.type"), NO_EQUIVALENT_IN_CHAT)),
    };
    if let Some(cache) = block.get("cache_control").filter(|c| !c.is_null()) {
        part["cache_control"] = cache.clone();
    }
    Ok(part)
}

/// A user turn: its `tool_result` blocks become `tool` messages (first, as
/// OpenAI wants them right after the assistant's calls), the rest one user
/// message.
fn user_to_chat(msg: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), RequestError> {
    let blocks = match msg.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(field_err(
                format!("messages[{i}].content"),
                "must be a string or an array of blocks",
            ))
        }
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        if block.get("type").and_then(Value::as_str) != Some("tool_result") {
            parts.push(block_to_chat_part(block, &at)?);
            continue;
        }
        let id = string_at(block, &at, "tool_use_id")?;
        if block.get("is_error") == Some(&Value::Bool(true)) {
            return Err(field_err(format!("{at}.is_error"), NO_EQUIVALENT_IN_CHAT));
        }
        let content = match block.get("content") {
            None | Some(Value::Null) => Value::String(String::new()),
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(inner)) => Value::Array(
                inner
                    .iter()
                    .enumerate()
                    .map(|(k, b)| block_to_chat_part(b, &format!("{at}.content[{k}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => {
                return Err(field_err(
                    format!("{at}.content"),
                    "must be a string or an array of blocks",
                ))
            }
        };
        out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn assistant_to_chat(msg: &Value, i: usize) -> Result<Value, RequestError> {
    let blocks = match msg.get("content") {
        Some(Value::String(s)) => return Ok(json!({"role": "assistant", "content": s})),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(field_err(
                format!("messages[{i}].content"),
                "must be a string or an array of blocks",
            ))
        }
    };
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = block.get("text").and_then(Value::as_str).unwrap_or("");
                text.get_or_insert_with(String::new).push_str(t);
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str);
                let name = block.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(field_err(at, "must have an id and a name"));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            _ => return Err(field_err(format!("{at}.type"), NO_EQUIVALENT_IN_CHAT)),
        }
    }
    let mut out = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        out["tool_calls"] = Value::Array(calls);
    }
    Ok(out)
}

fn messages_tools_to_chat(tools: &Value) -> Result<Value, RequestError> {
    let list = tools
        .as_array()
        .ok_or_else(|| field_err("tools", "must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        // Server tools (web search, bash, ...) have a `type`; custom tools
        // have none or "custom".
        if let Some(kind) = tool.get("type").and_then(Value::as_str) {
            if kind != "custom" {
                return Err(field_err(format!("tools[{i}].type"), NO_EQUIVALENT_IN_CHAT));
            }
        }
        let name = string_at(tool, &format!("tools[{i}]"), "name")?;
        let mut function = json!({"name": name,
            "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(d) = tool.get("description").filter(|d| !d.is_null()) {
            function["description"] = d.clone();
        }
        let mut t = json!({"type": "function", "function": function});
        if let Some(cache) = tool.get("cache_control").filter(|c| !c.is_null()) {
            t["cache_control"] = cache.clone();
        }
        out.push(t);
    }
    Ok(Value::Array(out))
}

// ---------------------------------------------------------------------------
// Answers

/// Anthropic's stop reason as OpenAI's finish reason.
pub(super) fn finish_reason_of(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's finish reason as Anthropic's stop reason.
pub(super) fn stop_reason_of(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage as OpenAI's: every input class in `prompt_tokens`, the
/// cache reads in `prompt_tokens_details.cached_tokens`, the cache writes
/// in `cache_creation_input_tokens` (LiteLLM's field; the gateway bills it
/// at the cache-write price).
pub(super) fn chat_usage_of(usage: &Value) -> Value {
    let input = num(usage, "/input_tokens");
    let read = num(usage, "/cache_read_input_tokens");
    let write = num(usage, "/cache_creation_input_tokens");
    let output = num(usage, "/output_tokens");
    let prompt = input + read + write;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_creation_input_tokens": write,
    })
}

/// OpenAI usage as Anthropic's: cached tokens out of `input_tokens`.
pub(super) fn messages_usage_of(usage: &Value) -> Value {
    let prompt = num(usage, "/prompt_tokens");
    let cached = num(usage, "/prompt_tokens_details/cached_tokens");
    let write = num(usage, "/cache_creation_input_tokens");
    json!({
        "input_tokens": prompt.saturating_sub(cached).saturating_sub(write),
        "output_tokens": num(usage, "/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": write,
    })
}

/// An Anthropic message as an OpenAI chat completion.
pub(super) fn messages_answer_to_chat(answer: &Value) -> Value {
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for block in answer
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text
                .get_or_insert_with(String::new)
                .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => reasoning
                .get_or_insert_with(String::new)
                .push_str(block.get("thinking").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if let Some(r) = reasoning {
        message["reasoning_content"] = Value::String(r);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = finish_reason_of(
        answer
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let mut out = json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
    });
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        out["usage"] = chat_usage_of(usage);
    }
    out
}

/// An OpenAI chat completion (its first choice) as an Anthropic message.
pub(super) fn chat_answer_to_messages(answer: &Value) -> Value {
    let choice = answer.pointer("/choices/0");
    let message = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(t) = message
        .and_then(|m| m.get("reasoning_content"))
        .and_then(Value::as_str)
    {
        // Unsigned: a client sending it back gets it refused by Anthropic,
        // but it is never sent to one (this answer came from OpenAI chat).
        content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
    }
    if let Some(t) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
    {
        if !t.is_empty() {
            content.push(json!({"type": "text", "text": t}));
        }
    }
    for call in message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input = serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        content.push(json!({"type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": input}));
    }
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let usage = answer
        .get("usage")
        .filter(|u| u.is_object())
        .map(messages_usage_of)
        .unwrap_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}));
    let mut out = json!({
        "id": answer.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop_reason_of(finish),
        "stop_sequence": null,
        "usage": usage,
    });
    if answer.get("usage").is_none_or(Value::is_null) {
        // No usage reported: the client's parser must not bill a zero.
        if let Some(o) = out.as_object_mut() {
            o.remove("usage");
        }
    }
    out
}
