//! The conversation an LLM call belongs to (DESIGN §3 `attribution`): the
//! id a client sends in `attribution.conversation_header` or, absent, in
//! the body's `metadata.conversation_id`. It is client-chosen text, so it
//! is bounded and checked here, and everything downstream treats it as
//! untrusted (CSV cells defused, the usage page shows it as text).

use crate::config::schema::AttributionConfig;
use crate::error::GatewayError;
use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

/// Longest conversation id accepted, in bytes.
pub const MAX_CONVERSATION_ID_BYTES: usize = 128;

/// The body field, inside `metadata`, that names the conversation.
const METADATA_FIELD: &str = "conversation_id";

/// `attribution` compiled: the header looked up on every LLM call.
#[derive(Debug, Clone)]
pub struct Attribution {
    header: HeaderName,
}

impl Default for Attribution {
    fn default() -> Self {
        Attribution {
            header: HeaderName::from_static("x-conversation-id"),
        }
    }
}

impl Attribution {
    pub fn compile(config: &AttributionConfig) -> Result<Attribution, String> {
        let header = HeaderName::from_bytes(config.conversation_header.as_bytes())
            .map_err(|_| "conversation_header: not a valid HTTP header name".to_string())?;
        Ok(Attribution { header })
    }

    /// The call's conversation id, if it names one: the header first, else
    /// `metadata.conversation_id` of the body, which is removed from the
    /// body either way (it is the gateway's field: Anthropic refuses
    /// unknown `metadata` fields). An id that is present but not valid is
    /// a 400 naming where it came from.
    pub fn conversation(
        &self,
        headers: &HeaderMap,
        body: &mut Map<String, Value>,
    ) -> Result<Option<String>, GatewayError> {
        let from_body = take_metadata_field(body);
        let mut values = headers.get_all(&self.header).iter();
        if let Some(value) = values.next() {
            let source = format!("{} header", self.header);
            if values.next().is_some() {
                return Err(invalid(&source, "must be sent once"));
            }
            let text = value
                .to_str()
                .map_err(|_| invalid(&source, "must be printable text"))?;
            return checked(&source, text).map(Some);
        }
        match from_body {
            None => Ok(None),
            Some(Value::String(text)) => checked("metadata.conversation_id", &text).map(Some),
            Some(_) => Err(invalid("metadata.conversation_id", "must be a string")),
        }
    }
}

/// Removes `metadata.conversation_id`, and `metadata` once it is empty.
fn take_metadata_field(body: &mut Map<String, Value>) -> Option<Value> {
    let Some(Value::Object(metadata)) = body.get_mut("metadata") else {
        return None;
    };
    let taken = metadata.remove(METADATA_FIELD);
    if taken.is_some() && metadata.is_empty() {
        body.remove("metadata");
    }
    taken
}

/// The id as given when it is 1 to 128 bytes of printable characters.
fn checked(source: &str, text: &str) -> Result<String, GatewayError> {
    if text.is_empty() {
        return Err(invalid(source, "must not be empty"));
    }
    if text.len() > MAX_CONVERSATION_ID_BYTES {
        return Err(invalid(
            source,
            &format!("must be at most {MAX_CONVERSATION_ID_BYTES} bytes"),
        ));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(invalid(source, "must be printable (no control characters)"));
    }
    Ok(text.to_string())
}

fn invalid(source: &str, message: &str) -> GatewayError {
    GatewayError::InvalidRequest(format!("conversation id ({source}) {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.append(name, http::HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn message(e: GatewayError) -> String {
        match e {
            GatewayError::InvalidRequest(m) => m,
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn header_wins_and_the_body_field_is_removed_either_way() {
        let a = Attribution::default();
        let mut b = body(json!({"model": "m", "metadata": {"conversation_id": "c-body"}}));
        let id = a.conversation(&headers(&[("X-Conversation-Id", b"c-head")]), &mut b);
        assert_eq!(id.unwrap(), Some("c-head".to_string()));
        assert!(b.get("metadata").is_none());
        let mut b = body(json!({"metadata": {"conversation_id": "c-body", "user_id": "u"}}));
        assert_eq!(
            a.conversation(&HeaderMap::new(), &mut b).unwrap(),
            Some("c-body".to_string())
        );
        assert_eq!(b.get("metadata"), Some(&json!({"user_id": "u"})));
        let mut b = body(json!({"model": "m"}));
        assert_eq!(a.conversation(&HeaderMap::new(), &mut b).unwrap(), None);
    }

    #[test]
    fn a_configured_header_is_used() {
        let a = Attribution::compile(&AttributionConfig {
            conversation_header: "X-Ticket".into(),
        })
        .unwrap();
        let mut b = Map::new();
        assert_eq!(
            a.conversation(&headers(&[("x-ticket", b"T-9")]), &mut b)
                .unwrap(),
            Some("T-9".to_string())
        );
        assert_eq!(
            a.conversation(&headers(&[("x-conversation-id", b"c")]), &mut b)
                .unwrap(),
            None
        );
        assert!(Attribution::compile(&AttributionConfig {
            conversation_header: "bad header".into()
        })
        .is_err());
    }

    #[test]
    fn invalid_ids_are_refused_naming_their_source() {
        let a = Attribution::default();
        let long = "x".repeat(129);
        type Headers<'a> = &'a [(&'a str, &'a [u8])];
        let cases: [(Headers, &str); 5] = [
            (&[("x-conversation-id", long.as_bytes())], "at most 128"),
            (&[("x-conversation-id", b"")], "empty"),
            (&[("x-conversation-id", b"a\tb")], "printable"),
            (&[("x-conversation-id", b"\xff\xfe")], "printable"),
            (
                &[("x-conversation-id", b"a"), ("x-conversation-id", b"b")],
                "once",
            ),
        ];
        for (h, why) in cases {
            let m = message(a.conversation(&headers(h), &mut Map::new()).unwrap_err());
            assert!(
                m.contains("x-conversation-id header") && m.contains(why),
                "{m}"
            );
        }
        assert!(a
            .conversation(
                &headers(&[("x-conversation-id", "x".repeat(128).as_bytes())]),
                &mut Map::new()
            )
            .is_ok());
        for (v, why) in [
            (json!(7), "string"),
            (json!("a\u{0}b"), "printable"),
            (json!("é".repeat(65)), "at most 128"),
        ] {
            let mut b = body(json!({"metadata": {"conversation_id": v}}));
            let m = message(a.conversation(&HeaderMap::new(), &mut b).unwrap_err());
            assert!(
                m.contains("metadata.conversation_id") && m.contains(why),
                "{m}"
            );
        }
    }

    proptest! {
        /// Whatever the body holds, an accepted id is 1..=128 bytes with
        /// no control character, and the field never goes upstream.
        #[test]
        fn accepted_ids_are_bounded_and_printable(id in ".{0,80}", extra in any::<bool>()) {
            let a = Attribution::default();
            let mut b = body(json!({"metadata": {"conversation_id": id}}));
            if extra {
                b.insert("metadata".into(), json!({"conversation_id": id, "k": 1}));
            }
            if let Ok(Some(got)) = a.conversation(&HeaderMap::new(), &mut b) {
                prop_assert!(!got.is_empty() && got.len() <= MAX_CONVERSATION_ID_BYTES);
                prop_assert!(!got.chars().any(char::is_control));
            }
            let left = b.get("metadata").and_then(|m| m.get("conversation_id"));
            prop_assert!(left.is_none());
        }
    }
}
