//! The JSON field walkers and errors every API's module shares: which
//! strings of a body are language the model reads (guards, estimates,
//! redaction) and which are identifiers, numeric fields, caps, and SSE
//! event writing.

use serde_json::{Map, Value};
use thiserror::Error;

/// A request the gateway refuses with HTTP 400 `invalid_request`.
///
/// Messages name the offending field but never echo content, because
/// error bodies and logs must not leak prompts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// Only the position is reported: serde's message could quote the input.
    #[error("request body is not valid JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("{field} {problem}")]
    Field {
        field: String,
        problem: &'static str,
    },
}

pub(crate) fn field_err(field: impl Into<String>, problem: &'static str) -> RequestError {
    RequestError::Field {
        field: field.into(),
        problem,
    }
}

/// One piece of input as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    /// Input already tokenized by the client (embeddings token arrays).
    Tokens(u64),
    /// Images, audio, files, ...: counted with a flat estimate.
    Other,
}

/// Keys whose string values are identifiers or opaque data, not language
/// the model reads: left out of guards and estimates, and never rewritten
/// (redacting a tool-call id or a signature would break the request).
const NOT_TEXT_KEYS: &[&str] = &[
    "type",
    "id",
    "call_id",
    "tool_call_id",
    "tool_use_id",
    "role",
    "name",
    "status",
    "signature",
    "encrypted_content",
    "cache_control",
    "media_type",
    "url",
    "file_id",
    "detail",
];

/// Part types that are not text (images, audio, files, ...): counted with
/// a flat estimate, their fields (often base64 data) not read as text.
const NON_TEXT_TYPES: &[&str] = &[
    "image_url",
    "input_image",
    "image",
    "input_audio",
    "audio",
    "file",
    "input_file",
    "document",
    // Signed by the provider (an edit breaks the signature) and stripped
    // from earlier turns' context: not input text.
    "thinking",
    "redacted_thinking",
];

/// Keys whose value is free-form JSON the model reads whole, object keys
/// included: tool parameter schemas, structured-output schemas, tool-call
/// arguments given as objects, prompt-template variables.
const FREE_FORM_KEYS: &[&str] = &[
    "parameters",
    "input_schema",
    "schema",
    "input",
    "arguments",
    "variables",
];

fn non_text_part(map: &Map<String, Value>) -> bool {
    map.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| NON_TEXT_TYPES.contains(&t))
}

/// Visits every text of a request subtree the model reads: every string
/// value except identifiers ([`NOT_TEXT_KEYS`]), in every field, so a text
/// in a field the gateway does not model (tool descriptions, tool-call
/// arguments, refusals, schemas, predictions) is guarded like `content`.
fn walk<'a>(value: &'a Value, free_form: bool, f: &mut impl FnMut(Part<'a>)) {
    match value {
        Value::String(s) => f(Part::Text(s)),
        Value::Array(items) => items.iter().for_each(|v| walk(v, free_form, f)),
        Value::Object(map) if free_form => {
            for (key, child) in map {
                f(Part::Text(key));
                walk(child, true, f);
            }
        }
        Value::Object(map) if non_text_part(map) => f(Part::Other),
        Value::Object(map) => {
            for (key, child) in map {
                if !NOT_TEXT_KEYS.contains(&key.as_str()) {
                    walk(child, FREE_FORM_KEYS.contains(&key.as_str()), f);
                }
            }
        }
        _ => {}
    }
}

/// Rewrites the texts [`walk`] visits (object keys of free-form JSON
/// included).
fn walk_mut(value: &mut Value, free_form: bool, apply: &mut impl FnMut(&mut String)) {
    match value {
        Value::String(s) => apply(s),
        Value::Array(items) => items.iter_mut().for_each(|v| walk_mut(v, free_form, apply)),
        Value::Object(map) if free_form => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let mut new_key = key.clone();
                apply(&mut new_key);
                if new_key != key {
                    if let Some(child) = map.remove(&key) {
                        map.insert(new_key, child);
                    }
                }
            }
            map.values_mut().for_each(|v| walk_mut(v, true, apply));
        }
        Value::Object(map) if non_text_part(map) => {}
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if !NOT_TEXT_KEYS.contains(&key.as_str()) {
                    walk_mut(child, FREE_FORM_KEYS.contains(&key.as_str()), apply);
                }
            }
        }
        _ => {}
    }
}

/// [`walk`] over the named top-level fields of a body.
pub(crate) fn for_each_text_of<'a>(
    body: &'a Map<String, Value>,
    keys: &[&str],
    f: &mut impl FnMut(Part<'a>),
) {
    for key in keys {
        // Top-level fields are structure (Responses' `input` is a list of
        // items), not free-form JSON.
        if let Some(v) = body.get(*key) {
            walk(v, false, f);
        }
    }
}

/// [`walk_mut`] over the named top-level fields of a body.
pub(crate) fn map_texts_of(
    body: &mut Map<String, Value>,
    keys: &[&str],
    apply: &mut impl FnMut(&mut String),
) {
    for key in keys {
        if let Some(v) = body.get_mut(*key) {
            walk_mut(v, false, apply);
        }
    }
}

/// A positive integer field, when present.
pub(crate) fn validate_positive(body: &Map<String, Value>, key: &str) -> Result<(), RequestError> {
    match body.get(key) {
        Some(v) if !matches!(v.as_u64(), Some(n) if n > 0) => {
            Err(field_err(key, "must be a positive integer"))
        }
        _ => Ok(()),
    }
}

/// Caps `key` at `cap`, or sets it to `cap` when absent.
pub(crate) fn cap_field(body: &mut Map<String, Value>, key: &str, cap: u64) {
    let value = body
        .get(key)
        .and_then(Value::as_u64)
        .map_or(cap, |n| n.min(cap));
    body.insert(key.to_owned(), Value::from(value));
}

/// The items of the array under `key` of `v`; none when absent or not an
/// array.
pub(crate) fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Reads a counter of a usage object; absent or non-integer reads as 0.
pub(crate) fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// SSE events whose `event:` line names each by its `type` field, as
/// Anthropic and Responses streams do.
pub(crate) fn typed_events(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for data in events {
        let name = data.get("type").and_then(Value::as_str).unwrap_or_default();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out
}
