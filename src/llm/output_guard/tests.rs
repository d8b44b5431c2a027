use super::*;
use crate::config::schema::GuardAction;
use crate::guards::output::tests::{cut_answer, scanner, split_at, GATEWAY_KEY as KEY};
use proptest::prelude::*;

const APIS: [LlmApi; 3] = [
    LlmApi::OpenaiChat,
    LlmApi::AnthropicMessages,
    LlmApi::OpenaiResponses,
];

fn guarding(action: GuardAction) -> Guarding {
    Guarding::new(
        Arc::new(scanner(action, action)),
        OutputGuardSet {
            pii: true,
            secrets: true,
        },
    )
}

fn whole(action: GuardAction, text: &str) -> (String, bool) {
    let mut g = guarding(action);
    let (out, blocked) = guard_text(&g.scanner, g.set, text, &mut g.findings);
    (out.unwrap_or_else(|| text.to_string()), blocked.is_some())
}

fn named(out: &mut String, name: &str, data: Value) {
    out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
}

/// An upstream stream of `api` whose text deltas are `pieces`.
fn stream(api: LlmApi, pieces: &[&str]) -> String {
    let mut s = String::new();
    let text: String = pieces.concat();
    match api {
        LlmApi::AnthropicMessages => {
            named(
                &mut s,
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            );
            named(
                &mut s,
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            for p in pieces {
                named(
                    &mut s,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
                );
            }
            named(
                &mut s,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            );
            named(
                &mut s,
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            );
            named(&mut s, "message_stop", json!({"type": "message_stop"}));
        }
        LlmApi::OpenaiResponses => {
            let mut seq = 0;
            let mut send = |s: &mut String, name: &str, mut v: Value| {
                v["type"] = json!(name);
                v["sequence_number"] = json!(seq);
                seq += 1;
                named(s, name, v);
            };
            send(
                &mut s,
                "response.created",
                json!({"response": {"id": "resp_1", "object": "response", "status": "in_progress", "model": "m", "output": []}}),
            );
            send(
                &mut s,
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
            );
            for p in pieces {
                send(
                    &mut s,
                    "response.output_text.delta",
                    json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": p}),
                );
            }
            send(
                &mut s,
                "response.output_text.done",
                json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": text}),
            );
            send(
                &mut s,
                "response.completed",
                json!({"response": {"id": "resp_1", "object": "response", "status": "completed", "model": "m",
                "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": 3, "output_tokens": 9}}}),
            );
        }
        _ => {
            for p in pieces {
                s.push_str(&format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})));
            }
            s.push_str(&format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            s.push_str(&format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})));
            s.push_str("data: [DONE]\n\n");
        }
    }
    s
}

/// What a client reads from a stream: the text, the finish, and checks on
/// the framing (every event's data parses; Responses' sequence grows and
/// its `done` text is the deltas joined).
fn client_view(api: LlmApi, body: &[u8]) -> (String, String) {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated: {text:?}"
    );
    let mut out = String::new();
    let mut finish = String::new();
    let mut last_seq: Option<u64> = None;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data: String = event
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
        if let Some(seq) = v.get("sequence_number").and_then(Value::as_u64) {
            assert!(
                last_seq.is_none_or(|l| seq == l + 1),
                "sequence {last_seq:?} then {seq}"
            );
            last_seq = Some(seq);
        }
        match api {
            LlmApi::AnthropicMessages => match v["type"].as_str() {
                Some("content_block_delta") => {
                    out.push_str(v["delta"]["text"].as_str().unwrap_or(""))
                }
                Some("message_delta") => {
                    finish = v["delta"]["stop_reason"].as_str().unwrap_or("").into()
                }
                _ => {}
            },
            LlmApi::OpenaiResponses => match v["type"].as_str() {
                Some("response.output_text.delta") => {
                    out.push_str(v["delta"].as_str().unwrap_or(""))
                }
                Some("response.output_text.done") => {
                    assert_eq!(v["text"].as_str(), Some(out.as_str()))
                }
                Some("response.completed") => {
                    assert_eq!(
                        v.pointer("/response/output/0/content/0/text")
                            .and_then(Value::as_str),
                        Some(out.as_str())
                    );
                    finish = "completed".into();
                }
                Some("response.incomplete") => {
                    finish = v
                        .pointer("/response/incomplete_details/reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into()
                }
                _ => {}
            },
            _ => {
                if let Some(c) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    out.push_str(c);
                }
                if let Some(f) = v
                    .pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
                {
                    finish = f.into();
                }
            }
        }
    }
    (out, finish)
}

fn run(api: LlmApi, action: GuardAction, upstream: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
    let mut guard = SseGuard::new(api, guarding(action));
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (upstream.len() + 1)).collect();
    points.extend([0, upstream.len()]);
    points.sort_unstable();
    points.dedup();
    for w in points.windows(2) {
        if guard.feed(&upstream[w[0]..w[1]], &mut out) == SseVerdict::Blocked {
            let ending = guard.ending(7);
            out.extend_from_slice(&ending);
            return (out, true);
        }
    }
    if guard.finish(&mut out) == SseVerdict::Blocked {
        let ending = guard.ending(7);
        out.extend_from_slice(&ending);
        return (out, true);
    }
    (out, false)
}

const PARTS: &[&str] = &[
    "Hello ",
    "bob@example.com",
    " card 4111 1111 1111 1111",
    ", call (415) 555-2671",
    " key ",
    KEY,
    " AKIAIOSFODNN7EXAMPLE",
    " order #48213 ",
    "ünïcödé ✓ ",
    "\"quoted\\\" ",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// For any split of the answer into events and of the bytes into
    /// reads, the client's text is the guard applied to the whole answer.
    #[test]
    fn any_events_and_reads_give_the_whole_answer_guarded(
        (text, event_cuts) in cut_answer(PARTS, 12, 512, 12),
        read_cuts in proptest::collection::vec(0usize..8192, 0..30),
        api_i in 0..3usize,
        redact in any::<bool>(),
    ) {
        let api = APIS[api_i];
        let action = if redact { GuardAction::Redact } else { GuardAction::Log };
        let pieces = split_at(&text, &event_cuts);
        let upstream = stream(api, &pieces);
        let (out, blocked) = run(api, action, upstream.as_bytes(), &read_cuts);
        prop_assert!(!blocked);
        let (got, _) = client_view(api, &out);
        prop_assert_eq!(got, whole(action, &text).0);
        if action == GuardAction::Log {
            prop_assert_eq!(client_view(api, &out).0, text);
        }
    }
}

#[test]
fn an_email_split_across_two_and_three_events_at_every_position() {
    let text = format!("Write to bob@example.com or use {KEY} today");
    let (want, _) = whole(GuardAction::Redact, &text);
    assert_eq!(
        want,
        "Write to [REDACTED:email] or use [REDACTED:gateway_secret] today"
    );
    for api in APIS {
        for i in 0..=text.len() {
            let upstream = stream(api, &[&text[..i], &text[i..]]);
            let (out, _) = run(api, GuardAction::Redact, upstream.as_bytes(), &[]);
            assert_eq!(client_view(api, &out).0, want, "{api:?} split {i}");
            let j = (i + 7).min(text.len());
            let upstream = stream(api, &[&text[..i], &text[i..j], &text[j..]]);
            let (out, _) = run(api, GuardAction::Redact, upstream.as_bytes(), &[i * 3]);
            assert_eq!(client_view(api, &out).0, want, "{api:?} split {i} {j}");
        }
    }
}

#[test]
fn block_ends_each_api_with_its_content_filter_ending() {
    let text = "Sure. Your colleague is bob@example.com and more";
    for (api, finish) in [
        (LlmApi::OpenaiChat, "content_filter"),
        (LlmApi::AnthropicMessages, "refusal"),
        (LlmApi::OpenaiResponses, "content_filter"),
    ] {
        let upstream = stream(
            api,
            &["Sure. Your colleague is bob@exa", "mple.com and more"],
        );
        let (out, blocked) = run(api, GuardAction::Block, upstream.as_bytes(), &[]);
        assert!(blocked, "{api:?}");
        let (got, got_finish) = client_view(api, &out);
        assert_eq!(got, "Sure. Your colleague is ", "{api:?}");
        assert_eq!(got_finish, finish, "{api:?}");
        let body = String::from_utf8_lossy(&out);
        assert!(!body.contains("bob@"), "{api:?}: {body}");
        assert!(!body.contains(text), "{api:?}");
        if api == LlmApi::OpenaiChat {
            assert!(body.ends_with("data: [DONE]\n\n"));
        }
        if api == LlmApi::AnthropicMessages {
            assert!(
                body.contains("content_block_stop")
                    && body.ends_with("{\"type\":\"message_stop\"}\n\n")
            );
        }
    }
}

#[test]
fn tool_call_arguments_are_guarded_in_streams_and_json() {
    let chunk = |args: &str, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "finish_reason": finish}]})
        )
    };
    let upstream = chunk("{\"to\": \"bob@ex", None)
        + &chunk("ample.com\"}", None)
        + &chunk("", Some("tool_calls"))
        + "data: [DONE]\n\n";
    let (out, _) = run(
        LlmApi::OpenaiChat,
        GuardAction::Redact,
        upstream.as_bytes(),
        &[],
    );
    let body = String::from_utf8_lossy(&out);
    let mut args = String::new();
    for event in body.split("\n\n") {
        if let Some(data) = event.strip_prefix("data: ") {
            if let Ok(v) = serde_json::from_str::<Value>(data) {
                if let Some(a) = v
                    .pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
                {
                    args.push_str(a);
                }
            }
        }
    }
    assert_eq!(args, "{\"to\": \"[REDACTED:email]\"}");

    let mut g = guarding(GuardAction::Redact);
    let answer = json!({"content": [{"type": "tool_use", "id": "t", "name": "mail", "input": {"to": "bob@example.com"}}]});
    let out = guard_json(
        LlmApi::AnthropicMessages,
        &mut g,
        answer.to_string().as_bytes(),
    )
    .unwrap_or_default();
    let v: Value = serde_json::from_slice(&out).unwrap_or_default();
    assert_eq!(
        v.pointer("/content/0/input/to"),
        Some(&json!("[REDACTED:email]"))
    );
}

#[test]
fn json_answers_of_each_api_redacted_blocked_and_logged() {
    let text = format!("Mail bob@example.com, key {KEY}.");
    let answers = [
        (
            LlmApi::OpenaiChat,
            json!({"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
            "/choices/0/message/content",
        ),
        (
            LlmApi::AnthropicMessages,
            json!({"id": "m", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}}),
            "/content/0/text",
        ),
        (
            LlmApi::OpenaiResponses,
            json!({"id": "r", "status": "completed", "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}], "usage": {"input_tokens": 1, "output_tokens": 2}}),
            "/output/0/content/0/text",
        ),
    ];
    for (api, answer, pointer) in answers {
        let raw = answer.to_string();
        let mut g = guarding(GuardAction::Redact);
        let out = guard_json(api, &mut g, raw.as_bytes()).unwrap_or_default();
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(
            v.pointer(pointer).and_then(Value::as_str),
            Some(whole(GuardAction::Redact, &text).0.as_str()),
            "{api:?}"
        );
        assert_eq!(v.get("usage"), answer.get("usage"), "billing unchanged");

        let mut g = guarding(GuardAction::Log);
        assert_eq!(
            guard_json(api, &mut g, raw.as_bytes()),
            None,
            "{api:?}: log leaves it"
        );
        assert!(!g.findings.is_empty());

        let mut g = guarding(GuardAction::Block);
        let out = guard_json(api, &mut g, raw.as_bytes()).unwrap_or_default();
        let body = String::from_utf8_lossy(&out);
        assert!(
            !body.contains("bob@") && !body.contains(KEY),
            "{api:?}: {body}"
        );
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        match api {
            LlmApi::OpenaiChat => assert_eq!(
                v.pointer("/choices/0/finish_reason"),
                Some(&json!("content_filter"))
            ),
            LlmApi::AnthropicMessages => assert_eq!(v.get("stop_reason"), Some(&json!("refusal"))),
            _ => assert_eq!(
                v.pointer("/incomplete_details/reason"),
                Some(&json!("content_filter"))
            ),
        }
        assert_eq!(v.get("usage"), answer.get("usage"), "billing unchanged");
    }
}

#[test]
fn a_clean_stream_is_released_event_by_event() {
    let pieces: Vec<String> = (0..2000).map(|i| format!("word{i} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let upstream = stream(LlmApi::OpenaiChat, &refs);
    let mut guard = SseGuard::new(LlmApi::OpenaiChat, guarding(GuardAction::Redact));
    let mut out = Vec::new();
    let window = guard.g.scanner.window();
    for event in upstream.split_inclusive("\n\n") {
        guard.feed(event.as_bytes(), &mut out);
        assert!(guard.held() <= window + 4, "held {}", guard.held());
    }
    guard.finish(&mut out);
    assert_eq!(client_view(LlmApi::OpenaiChat, &out).0, pieces.concat());
}

/// A text-only delta is rewritten in place: every byte of the event but
/// its text stays as the upstream sent it (field order, unknown fields,
/// escapes), and the text is what the redactor released.
#[test]
fn a_text_delta_keeps_the_rest_of_its_event_byte_for_byte() {
    let cases: [(LlmApi, &str, &str, &str); 3] = [
        (
            LlmApi::OpenaiChat,
            "",
            r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":TEXT},"logprobs":null,"finish_reason":null}],"obfuscation":"a\u00e9b"}"#,
        ),
        (
            LlmApi::AnthropicMessages,
            "event: content_block_delta\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":TEXT},"extra":[1, 2]}"#,
        ),
        (
            LlmApi::OpenaiResponses,
            "event: response.output_text.delta\n",
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}",
            r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":TEXT,"sequence_number":1,"logprobs":[]}"#,
        ),
    ];
    for (api, name, first, template) in cases {
        let mut guard = SseGuard::new(api, guarding(GuardAction::Redact));
        let mut out = Vec::new();
        guard.feed(format!("{first}\n\n").as_bytes(), &mut out);
        out.clear();
        let text = format!("mail ana@example.com now {}", "and more words ".repeat(40));
        let event = template.replace("TEXT", &json!(text).to_string());
        guard.feed(format!("{name}data: {event}\n\n").as_bytes(), &mut out);
        let got = String::from_utf8(out).unwrap_or_default();
        let (before, after) = template.split_once("TEXT").unwrap_or_default();
        let released = got
            .strip_prefix(&format!("{name}data: {before}"))
            .and_then(|rest| rest.strip_suffix(&format!("{after}\n\n")))
            .unwrap_or_else(|| panic!("{api:?}: event not kept around its text: {got}"));
        let released: String = serde_json::from_str(released).unwrap_or_default();
        assert!(
            released.starts_with("mail [REDACTED:email] now"),
            "{released}"
        );
        assert!(!released.contains("ana@"), "{released}");
        let redacted = text.replace("ana@example.com", "[REDACTED:email]");
        assert_eq!(
            released.len() + guard.held(),
            redacted.len(),
            "the rest is held"
        );
    }
}
