//! OpenAI embeddings (`POST /v1/embeddings`): `input` is a string, a list
//! of strings, a token array or a list of token arrays. There is no output:
//! the estimate is the input alone and usage is `usage.prompt_tokens`.

use super::fields::{field_err, num, Part, RequestError};
use crate::llm::tally::Usage;
use serde_json::{Map, Value};

pub(super) fn validate(body: &Map<String, Value>) -> Result<(), RequestError> {
    let problem = "must be a string, an array of strings, or token arrays";
    match body.get("input") {
        None => Err(field_err("input", "is required")),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(items)) if !items.is_empty() => {
            let all_strings = items.iter().all(Value::is_string);
            let tokens = items.iter().all(|v| v.is_u64());
            let token_lists = items
                .iter()
                .all(|v| v.as_array().is_some_and(|a| a.iter().all(Value::is_u64)));
            if all_strings || tokens || token_lists {
                Ok(())
            } else {
                Err(field_err("input", problem))
            }
        }
        Some(_) => Err(field_err("input", problem)),
    }
}

pub(super) fn for_each_part<'a>(body: &'a Map<String, Value>, f: &mut impl FnMut(Part<'a>)) {
    match body.get("input") {
        Some(Value::String(s)) => f(Part::Text(s)),
        Some(Value::Array(items)) => {
            let mut token_count = 0u64;
            for item in items {
                match item {
                    Value::String(s) => f(Part::Text(s)),
                    Value::Array(tokens) => token_count += tokens.len() as u64,
                    _ => token_count += 1,
                }
            }
            if token_count > 0 {
                f(Part::Tokens(token_count));
            }
        }
        _ => {}
    }
}

pub(super) fn map_texts(body: &mut Map<String, Value>, apply: &mut impl FnMut(&mut String)) {
    match body.get_mut("input") {
        Some(Value::String(s)) => apply(s),
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                if let Value::String(s) = item {
                    apply(s);
                }
            }
        }
        _ => {}
    }
}

pub(super) fn response_usage(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: num(usage, "/prompt_tokens"),
        ..Usage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::{LlmApi, LlmRequest, Part};
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<LlmRequest, super::RequestError> {
        LlmRequest::parse(LlmApi::OpenaiEmbeddings, v.to_string().as_bytes())
    }

    #[test]
    fn accepts_every_input_shape_and_counts_tokens() {
        for input in [
            json!("text"),
            json!(["a", "b"]),
            json!([1, 2, 3]),
            json!([[1, 2], [3]]),
        ] {
            let r = parse(json!({"model": "m", "input": input}))
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            let mut tokens = 0;
            r.for_each_part(|p| {
                if let Part::Tokens(n) = p {
                    tokens += n
                }
            });
            if input[0].is_array() || input[0].is_u64() {
                assert_eq!(tokens, 3, "{input}");
            }
            assert_eq!(r.message_count(), None);
        }
        for bad in [json!(5), json!([]), json!(["a", 1]), json!([[1], "a"])] {
            assert!(parse(json!({"model": "m", "input": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_reaches_every_string() {
        let mut r = parse(json!({"model": "m", "input": ["a@b.example", "plain"]})).unwrap();
        assert_eq!(
            r.map_texts(|t| t.contains('@').then(|| "[EMAIL]".into())),
            1
        );
        assert_eq!(r.body()["input"], json!(["[EMAIL]", "plain"]));
        assert_eq!(r.rewrite("text-embedding-3-small", 100), 0);
        assert!(r.body().get("max_tokens").is_none());
    }
}
