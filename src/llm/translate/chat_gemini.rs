//! OpenAI chat completions → Gemini `generateContent`, and Gemini's
//! answers back (streams: `sse`).
//!
//! Gemini names no tool calls (or names them with its own optional `id`):
//! an answer's calls get `call_<n>` ids unless Gemini gave one, and a tool
//! result finds its function's name by its id among the assistant turns
//! before it, so a tool round trip works with ids the client kept.

use super::chat_messages::parse_data_url;
use super::chat_request::{
    call_arguments, chat_messages, function_tools, present, refuse_chat_extras, stop_sequences,
    string_at, tool_choice, FunctionTool, Role, Target, ToolChoice,
};
use super::wire::unix_now;
use crate::llm::api::fields::{field_err, num};
use crate::llm::api::RequestError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// OpenAI chat request fields a Gemini request can carry besides those
/// every target does.
const CHAT_FIELDS_FOR_GEMINI: &[&str] = &[
    "response_format",
    "seed",
    "presence_penalty",
    "frequency_penalty",
];

const NO_EQUIVALENT_IN_GEMINI: &str = "has no equivalent in the Gemini API";

const GEMINI: Target = Target {
    no_equivalent: NO_EQUIVALENT_IN_GEMINI,
    n_above_one: "above 1 has no equivalent in the Gemini API",
    late_system:
        "a system message after the conversation started has no equivalent in the Gemini API",
};

/// The path of a Gemini call: the model and the method are in it.
pub(super) fn path(model: &str, stream: bool) -> String {
    let model: String = model
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    }
}

pub(super) fn chat_request_to_gemini(
    body: Map<String, Value>,
) -> Result<Map<String, Value>, RequestError> {
    refuse_chat_extras(&body, CHAT_FIELDS_FOR_GEMINI, &GEMINI)?;
    if present(&body, "parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(field_err("parallel_tool_calls", NO_EQUIVALENT_IN_GEMINI));
    }
    let mut out = Map::new();
    let (system, contents) = contents_of(&body)?;
    if let Some(system) = system {
        out.insert("systemInstruction".into(), system);
    }
    out.insert("contents".into(), Value::Array(contents));
    let mut config = Map::new();
    if let Some(max) =
        present(&body, "max_completion_tokens").or_else(|| present(&body, "max_tokens"))
    {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = present(&body, from) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = stop_sequences(&body)? {
        config.insert("stopSequences".into(), stop);
    }
    if let Some(format) = present(&body, "response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                let schema = format.pointer("/json_schema/schema").ok_or_else(|| {
                    field_err("response_format.json_schema.schema", "is required")
                })?;
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => return Err(field_err("response_format.type", NO_EQUIVALENT_IN_GEMINI)),
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = present(&body, "tools") {
        out.insert("tools".into(), tools_of(tools)?);
    }
    if let Some(choice) = present(&body, "tool_choice") {
        let config = match tool_choice(choice)? {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(out)
}

fn contents_of(body: &Map<String, Value>) -> Result<(Option<Value>, Vec<Value>), RequestError> {
    let mut system_parts = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    let mut tool_names: HashMap<&str, &str> = HashMap::new();
    let mut responses: Vec<Value> = Vec::new();
    for message in chat_messages(body, &GEMINI)? {
        let message = message?;
        let (i, msg) = (message.index, message.fields);
        let at = |f: &str| message.at(f);
        if message.role != Role::Tool && !responses.is_empty() {
            contents.push(json!({"role": "user", "parts": std::mem::take(&mut responses)}));
        }
        match message.role {
            Role::System => {
                system_parts.extend(parts_of(msg.get("content"), &at("content"))?);
            }
            Role::User => {
                contents.push(
                    json!({"role": "user", "parts": parts_of(msg.get("content"), &at("content"))?}),
                );
            }
            Role::Assistant => {
                let mut parts = match msg.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::String(s)) if s.is_empty() => Vec::new(),
                    content => parts_of(content, &at("content"))?,
                };
                for (j, call) in msg
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let call_at = format!("messages[{i}].tool_calls[{j}]");
                    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
                    let name = string_at(call, &call_at, "function.name")?;
                    let args = call_arguments(call, &call_at)?;
                    tool_names.insert(id, name);
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            Role::Tool => {
                let id = msg
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(name) = tool_names.get(id) else {
                    return Err(field_err(
                        at("tool_call_id"),
                        "names no tool call of an earlier assistant message",
                    ));
                };
                let text = text_of(msg.get("content"), &at("content"))?;
                // Gemini wants an object: a JSON object result is passed
                // as it is, anything else under "content".
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                responses.push(json!({"functionResponse": {"name": name, "response": response}}));
            }
        }
    }
    if !responses.is_empty() {
        contents.push(json!({"role": "user", "parts": responses}));
    }
    let system = (!system_parts.is_empty()).then(|| json!({"parts": system_parts}));
    Ok((system, contents))
}

/// A message's text (string or text parts joined).
fn text_of(content: Option<&Value>, at: &str) -> Result<String, RequestError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) if p.get("type").and_then(Value::as_str) == Some("text") => {
                        text.push_str(t)
                    }
                    _ => {
                        return Err(field_err(
                            format!("{at}[{j}].type"),
                            NO_EQUIVALENT_IN_GEMINI,
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(field_err(at, "must be a string or an array of parts")),
    }
}

fn parts_of(content: Option<&Value>, at: &str) -> Result<Vec<Value>, RequestError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => Ok(json!({"text": string_at(p, &at, "text")?})),
                    Some("image_url") => {
                        let url = string_at(p, &at, "image_url.url")?;
                        Ok(match parse_data_url(url) {
                            Some((mime, data)) => {
                                json!({"inlineData": {"mimeType": mime, "data": data}})
                            }
                            None => {
                                json!({"fileData": {"mimeType": mime_of_url(url), "fileUri": url}})
                            }
                        })
                    }
                    _ => Err(field_err(format!("{at}.type"), NO_EQUIVALENT_IN_GEMINI)),
                }
            })
            .collect(),
        _ => Err(field_err(at, "must be a string or an array of parts")),
    }
}

/// Gemini's `fileData` needs a MIME type; a URL's extension tells it.
fn mime_of_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

fn tools_of(tools: &Value) -> Result<Value, RequestError> {
    let mut declarations = Vec::new();
    for tool in function_tools(tools, &GEMINI)? {
        let FunctionTool {
            function: f, name, ..
        } = tool?;
        let mut d = json!({"name": name});
        if let Some(desc) = f.get("description").filter(|v| !v.is_null()) {
            d["description"] = desc.clone();
        }
        if let Some(params) = f.get("parameters").filter(|v| !v.is_null()) {
            // JSON Schema as OpenAI takes it (Gemini's `parameters` takes
            // only an OpenAPI subset).
            d["parametersJsonSchema"] = params.clone();
        }
        declarations.push(d);
    }
    Ok(json!([{"functionDeclarations": declarations}]))
}

// ---------------------------------------------------------------------------
// Answers

/// Gemini's finish reason as OpenAI's (`tool_calls` when it called one).
pub(super) fn finish_reason_of(reason: &str, called_tool: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called_tool => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` as OpenAI usage: the prompt count includes the
/// cached content; thoughts are output (and reasoning).
pub(super) fn chat_usage_of(meta: &Value) -> Value {
    let prompt = num(meta, "/promptTokenCount") + num(meta, "/toolUsePromptTokenCount");
    let thoughts = num(meta, "/thoughtsTokenCount");
    let completion = num(meta, "/candidatesTokenCount") + thoughts;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": num(meta, "/cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// The parts of a Gemini candidate, as (text, reasoning, tool calls); call
/// ids are Gemini's or `call_<next_call>` onwards.
pub(super) struct CandidateParts {
    pub text: Option<String>,
    pub reasoning: Option<String>,
    /// (id, name, arguments as a JSON string)
    pub calls: Vec<(String, Value, String)>,
}

pub(super) fn candidate_parts(candidate: &Value, next_call: &mut u64) -> CandidateParts {
    let mut out = CandidateParts {
        text: None,
        reasoning: None,
        calls: Vec::new(),
    };
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(call) = part.get("functionCall") {
            let id = match call.get("id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => format!("call_{next_call}"),
            };
            *next_call += 1;
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            out.calls.push((
                id,
                call.get("name").cloned().unwrap_or(Value::Null),
                args.to_string(),
            ));
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            let slot = if part.get("thought") == Some(&Value::Bool(true)) {
                &mut out.reasoning
            } else {
                &mut out.text
            };
            slot.get_or_insert_with(String::new).push_str(t);
        }
    }
    out
}

/// A Gemini answer (its first candidate) as an OpenAI chat completion.
pub(super) fn gemini_answer_to_chat(answer: &Value) -> Value {
    let candidate = answer.pointer("/candidates/0").unwrap_or(&Value::Null);
    let mut next_call = 0;
    let parts = candidate_parts(candidate, &mut next_call);
    let mut message = json!({"role": "assistant", "content": parts.text, "refusal": null});
    if let Some(r) = parts.reasoning {
        message["reasoning_content"] = Value::String(r);
    }
    if !parts.calls.is_empty() {
        message["tool_calls"] = Value::Array(
            parts
                .calls
                .iter()
                .map(|(id, name, args)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                })
                .collect(),
        );
    }
    let reason = candidate
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let mut out = json!({
        "id": answer.get("responseId").cloned().unwrap_or_else(|| json!("gemini")),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message,
            "finish_reason": finish_reason_of(reason, !parts.calls.is_empty()), "logprobs": null}],
    });
    if let Some(meta) = answer.get("usageMetadata").filter(|m| m.is_object()) {
        out["usage"] = chat_usage_of(meta);
    }
    out
}
