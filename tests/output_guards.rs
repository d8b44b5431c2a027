//! Output guards over TCP (issue 26): PII and secrets in the model's
//! answer are redacted, blocked or logged for every API, JSON and SSE,
//! whole and split across events at every position; the gateway's own
//! upstream credential echoed by the upstream never reaches the client;
//! streams are released event by event within the hold-back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};
use tollgate::config::schema::{
    GuardAction, OutputGuardsConfig, PiiGuardConfig, SecretsGuardConfig,
};
use tollgate::guards::output::{guard_text, Findings, OutputGuardSet, OutputScanner};

/// The credential the gateway sends upstream (`set_headers`).
const UPSTREAM_KEY: &str = "sk-gw-UPSTREAM-0123456789abcdef";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    Chat,
    Messages,
    Responses,
}

const APIS: [Api; 3] = [Api::Chat, Api::Messages, Api::Responses];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Messages => "/v1/messages",
            Api::Responses => "/v1/responses",
        }
    }

    fn body(self, stream: bool) -> Value {
        match self {
            Api::Chat => json!({"model": "gpt", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}),
            Api::Messages => json!({"model": "claude", "stream": stream, "max_tokens": 500,
                "messages": [{"role": "user", "content": "hi"}]}),
            Api::Responses => json!({"model": "gpt", "stream": stream, "input": "hi"}),
        }
    }
}

fn action_name(a: GuardAction) -> &'static str {
    match a {
        GuardAction::Block => "block",
        GuardAction::Redact => "redact",
        GuardAction::Log => "log",
    }
}

fn config(llm: &str, action: GuardAction) -> String {
    builder(llm, action).render()
}

/// Routes: plain (no output guards), chat, messages, responses.
fn builder(llm: &str, action: GuardAction) -> ConfigBuilder {
    let a = action_name(action);
    let guarded = |route: Route| route.set("output_guards", ["pii", "secrets"]);
    ConfigBuilder::new()
        .keys(&[BOB])
        .pool(
            "llm",
            Pool::new(&[llm])
                .timeouts(300, 5000)
                .set_header("Authorization", &format!("Bearer {UPSTREAM_KEY}")),
        )
        .route(Route::llm("plain", "/openai/plain/chat/completions"))
        .route(guarded(Route::llm("chat", "/v1/chat/completions")))
        .route(guarded(
            Route::llm("messages", "/v1/messages").api("anthropic_messages"),
        ))
        .route(guarded(
            Route::llm("responses", "/v1/responses").api("openai_responses"),
        ))
        .model(Model::new("gpt", "llm", 1.0, 1.0, 1000))
        .model(Model::new("claude", "llm", 1.0, 1.0, 1000))
        .default_rate_limit(1_000_000)
        .section(
            "guards",
            &format!(
                "output:\n  pii: {{ detect: [email, phone, credit_card, ssn, iban], action: {a} }}\n  secrets: {{ action: {a} }}\n"
            ),
        )
}

/// The guard the gateway applies, run here on the whole answer.
fn expected(action: GuardAction, text: &str) -> String {
    let config = OutputGuardsConfig {
        pii: Some(PiiGuardConfig {
            detect: ["email", "phone", "credit_card", "ssn", "iban"]
                .map(String::from)
                .to_vec(),
            action,
        }),
        secrets: Some(SecretsGuardConfig { action }),
        holdback_bytes: 256,
    };
    let secrets = [format!("Bearer {UPSTREAM_KEY}"), UPSTREAM_KEY.to_string()];
    let scanner = OutputScanner::compile(&config, &secrets).unwrap();
    let set = OutputGuardSet {
        pii: true,
        secrets: true,
    };
    let mut f = Findings::default();
    guard_text(&scanner, set, text, &mut f)
        .0
        .unwrap_or_else(|| text.to_string())
}

fn answer_header(pieces: &[&str]) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&pieces).unwrap())
}

/// Calls `api` with the upstream answering `pieces`; returns the client's
/// text, its finish, and the raw body.
fn call(
    gw: &Gateway,
    api: Api,
    stream: bool,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    let resp = post(gw, api.path(), BOB_KEY, &api.body(stream), headers);
    assert_eq!(resp.status(), 200);
    let raw = resp.text().unwrap();
    let (text, finish) = if stream {
        stream_text(api, &raw)
    } else {
        json_text(api, &serde_json::from_str(&raw).unwrap())
    };
    (text, finish, raw)
}

fn json_text(api: Api, v: &Value) -> (String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match api {
        Api::Chat => (
            s("/choices/0/message/content"),
            s("/choices/0/finish_reason"),
        ),
        Api::Messages => (s("/content/0/text"), s("/stop_reason")),
        Api::Responses => (
            s("/output/0/content/0/text"),
            v.pointer("/incomplete_details/reason")
                .and_then(Value::as_str)
                .unwrap_or(v["status"].as_str().unwrap_or(""))
                .to_string(),
        ),
    }
}

/// Where each API's stream carries text and the finish reason; the
/// Responses API names its events instead, so it is read by event name.
fn stream_text(api: Api, raw: &str) -> (String, String) {
    let (text_at, finish_at) = match api {
        Api::Chat => ("/choices/0/delta/content", "/choices/0/finish_reason"),
        Api::Messages => ("/delta/text", "/delta/stop_reason"),
        Api::Responses => ("", ""),
    };
    let mut text = String::new();
    let mut finish = String::new();
    for (name, v) in sse_events(raw) {
        let at = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
        match (api, name.as_str()) {
            (Api::Responses, "response.output_text.delta") => text.push_str(at("/delta")),
            (Api::Responses, "response.output_text.done") => {
                assert_eq!(at("/text"), text, "the done event repeats the text")
            }
            (Api::Responses, "response.completed") => finish = "completed".into(),
            (Api::Responses, "response.incomplete") => {
                finish = at("/response/incomplete_details/reason").into()
            }
            (Api::Responses, _) => {}
            _ => {
                text.push_str(at(text_at));
                if !at(finish_at).is_empty() {
                    finish = at(finish_at).into();
                }
            }
        }
    }
    (text, finish)
}

struct Setup {
    _llm: Backend,
    gw: Gateway,
}

/// A mock upstream and a gateway whose output guards all take `action`;
/// both stop when dropped.
fn start(action: GuardAction) -> Setup {
    let llm = Backend::start();
    let gw = Gateway::start(&config(&llm.addr, action));
    Setup { _llm: llm, gw }
}

#[test]
fn redacted_whole_and_split_across_two_and_three_events_at_every_position() {
    let setup = start(GuardAction::Redact);
    let gw = &setup.gw;
    let text = "Mail bob@example.com or call (415) 555-2671.";
    let want = expected(GuardAction::Redact, text);
    assert_eq!(want, "Mail [REDACTED:email] or call [REDACTED:phone].");
    for api in APIS {
        for stream in [false, true] {
            let h = answer_header(&[text]);
            let (got, ..) = call(gw, api, stream, &[("x-mock-answer-b64", &h)]);
            assert_eq!(got, want, "{api:?} stream={stream}");
        }
        for i in 0..=text.len() {
            let h = answer_header(&[&text[..i], &text[i..]]);
            let (got, ..) = call(gw, api, true, &[("x-mock-answer-b64", &h)]);
            assert_eq!(got, want, "{api:?} split at {i}");
            let j = (i + 9).min(text.len());
            let h = answer_header(&[&text[..i], &text[i..j], &text[j..]]);
            let (got, ..) = call(gw, api, true, &[("x-mock-answer-b64", &h)]);
            assert_eq!(got, want, "{api:?} split at {i}, {j}");
        }
    }
    // Redaction never changes the bill: every call is billed as the
    // upstream reported it (one token per piece in the mock).
    let calls = 3 * (2 + 2 * (text.len() + 1));
    let rows = rows_eventually(gw, calls);
    assert_eq!(rows.len(), calls);
    for row in rows {
        assert!(
            !row.estimated && (1..=3).contains(&row.completion),
            "{row:?}"
        );
    }
}

const PARTS: &[&str] = &[
    "Hello ",
    "bob@example.com",
    " card 4111 1111 1111 1111",
    " key ",
    UPSTREAM_KEY,
    " AKIAIOSFODNN7EXAMPLE",
    " ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    " order #48213 on 2024-11-07",
    " ünïcödé ✓",
    " IBAN DE89 3704 0044 0532 0130 00",
];

/// For any split of the answer into events, the client's text is the
/// guard applied to the whole answer (every API, JSON and SSE).
#[test]
fn any_split_gives_the_guard_of_the_whole_answer() {
    let setup = start(GuardAction::Redact);
    let gw = &setup.gw;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(40));
    let strategy = (
        proptest::collection::vec(0..PARTS.len(), 1..10),
        proptest::collection::vec(0usize..400, 0..8),
        0..3usize,
        any::<bool>(),
    );
    runner
        .run(&strategy, |(picks, cuts, api, stream)| {
            let text: String = picks.iter().map(|i| PARTS[*i]).collect();
            let mut points: Vec<usize> = cuts
                .iter()
                .map(|c| {
                    let mut c = c % (text.len() + 1);
                    while !text.is_char_boundary(c) {
                        c -= 1;
                    }
                    c
                })
                .collect();
            points.extend([0, text.len()]);
            points.sort_unstable();
            points.dedup();
            let pieces: Vec<&str> = points.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let h = answer_header(&pieces);
            let (got, _, raw) = call(gw, APIS[api], stream, &[("x-mock-answer-b64", &h)]);
            prop_assert_eq!(got, expected(GuardAction::Redact, &text));
            prop_assert!(!raw.contains(UPSTREAM_KEY));
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_gateway_upstream_credential_echoed_upstream_never_reaches_the_client() {
    let setup = start(GuardAction::Redact);
    let gw = &setup.gw;
    for api in APIS {
        for stream in [false, true] {
            let (got, _, raw) = call(gw, api, stream, &[("x-mock-echo-header", "authorization")]);
            assert!(
                !raw.contains(UPSTREAM_KEY),
                "{api:?} stream={stream}: {raw}"
            );
            assert!(got.contains("[REDACTED:gateway_secret]"), "{api:?}: {got}");
        }
    }
}

#[test]
fn block_ends_every_api_with_its_content_filter_ending_and_bills() {
    let setup = start(GuardAction::Block);
    let gw = &setup.gw;
    let text = "Sure! Your colleague's address is bob@example.com, write to them.";
    for (api, finish, json_finish) in [
        (Api::Chat, "content_filter", "content_filter"),
        (Api::Messages, "refusal", "refusal"),
        (Api::Responses, "content_filter", "content_filter"),
    ] {
        let h = answer_header(&[&text[..40], &text[40..]]);
        let (got, got_finish, raw) = call(gw, api, true, &[("x-mock-answer-b64", &h)]);
        assert_eq!(got, "Sure! Your colleague's address is ", "{api:?}");
        assert_eq!(got_finish, finish, "{api:?}: {raw}");
        assert!(!raw.contains("bob@"), "{api:?}");
        let (got, got_finish, raw) = call(gw, api, false, &[("x-mock-answer-b64", &h)]);
        assert_eq!(
            (got.as_str(), got_finish.as_str()),
            ("", json_finish),
            "{api:?}: {raw}"
        );
        assert!(!raw.contains("bob@"), "{api:?}");
    }
    // Billed: what was generated, by the upstream's usage when the parser
    // saw it before the block (it reads every upstream byte), else by the
    // counted output; never nothing.
    let rows = rows_eventually(gw, 6);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in &rows {
        assert!(
            row.completion > 0 && row.micro_usd > 0 && !row.over_cap,
            "{row:?}"
        );
    }
    let metrics = gw.metrics();
    assert!(
        metrics.contains(
            r#"tollgate_guard_actions_total{action="block",direction="output",guard="pii"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn log_passes_the_answer_through_unchanged_and_logs_the_kinds() {
    let setup = start(GuardAction::Log);
    let gw = &setup.gw;
    let text = format!("Mail bob@example.com, key {UPSTREAM_KEY}.");
    for api in APIS {
        for stream in [false, true] {
            let h = answer_header(&[&text[..12], &text[12..]]);
            let (got, ..) = call(gw, api, stream, &[("x-mock-answer-b64", &h)]);
            assert_eq!(got, text, "{api:?} stream={stream}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = gw.access_log();
        let logged = lines
            .iter()
            .filter(|l| l["output_guard"] == json!(["email", "gateway_secret"]))
            .count();
        if logged >= 6 {
            let all = lines.iter().map(|l| l.to_string()).collect::<String>();
            assert!(!all.contains("bob@example.com") && !all.contains(UPSTREAM_KEY));
            break;
        }
        assert!(Instant::now() < deadline, "access log: {lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = gw.metrics();
    for guard in ["pii", "secrets"] {
        let needle = format!(
            r#"tollgate_guard_actions_total{{action="log",direction="output",guard="{guard}"}}"#
        );
        assert!(metrics.contains(&needle), "{needle}");
    }
}

/// A clean answer streamed one event per 100 ms reaches the client event
/// by event: only the hold-back (at most 256 bytes) waits. Chat only: the
/// pump is the same for every API, and the mock's Anthropic and Responses
/// streams (named events) stall for seconds after their 4th or 5th
/// paced event even on a route without output guards (as do chat events
/// of ~400 bytes), a behaviour older than the guards, left for its own fix.
#[test]
fn a_slow_stream_is_released_event_by_event() {
    let setup = start(GuardAction::Redact);
    let gw = &setup.gw;
    let piece = "All good, your order is on its way and should arrive soon. ".repeat(2);
    let pieces: Vec<&str> = std::iter::repeat_n(piece.as_str(), 10).collect();
    let h = answer_header(&pieces);
    // The unguarded route first: the same timing without output guards.
    for (api, path) in [
        (Api::Chat, "/openai/plain/chat/completions"),
        (Api::Chat, Api::Chat.path()),
    ] {
        let started = Instant::now();
        let mut resp = post(
            gw,
            path,
            BOB_KEY,
            &api.body(true),
            &[("x-mock-answer-b64", &h), ("x-mock-chunk-delay-ms", "100")],
        );
        let mut raw = Vec::new();
        let mut seen: Vec<(Duration, usize)> = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = resp.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            let whole = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
            seen.push((started.elapsed(), stream_text(api, whole).0.len()));
        }
        let total = piece.len() * 10;
        assert_eq!(seen.last().map(|s| s.1), Some(total), "{api:?}");
        // After event k arrived (~k * 100 ms) the client holds all of it
        // but the hold-back: find the first time each amount was reached.
        for k in 1..10 {
            let need = (k * piece.len()).saturating_sub(256);
            let at = seen
                .iter()
                .find(|(_, n)| *n >= need)
                .map(|(t, _)| *t)
                .unwrap();
            assert!(
                at < Duration::from_millis(100 * k as u64 + 90),
                "{api:?}: {need} bytes only after {at:?}: {seen:?}"
            );
        }
    }
}

/// The official `openai` and `anthropic` SDKs read redacted and blocked
/// answers (streams with their helpers, and JSON) without an error.
#[test]
fn official_sdks_read_redacted_and_blocked_answers() {
    let python = repo_root().join("target/venv/bin/python");
    let importable = std::process::Command::new(&python)
        .args(["-c", "import anthropic, openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        println!("SKIPPED: no SDK virtualenv (make sdk-venv)");
        return;
    }
    let redact = start(GuardAction::Redact);
    let block = start(GuardAction::Block);
    let (redact_base, block_base) = (
        format!("http://{}", redact.gw.addr),
        format!("http://{}", block.gw.addr),
    );
    let scenarios: Vec<String> = ["redact", "block"]
        .iter()
        .flat_map(|mode| {
            [
                "openai chat stream",
                "anthropic stream",
                "openai responses stream",
                "json answers",
            ]
            .map(|scenario| format!("{scenario} {mode}"))
        })
        .collect();
    let scenarios: Vec<&str> = scenarios.iter().map(String::as_str).collect();
    run_client_script(
        &python,
        "tests/sdk/output_guard_check.py",
        &[
            ("TG_REDACT_BASE", redact_base.as_str()),
            ("TG_BLOCK_BASE", block_base.as_str()),
            ("TG_KEY", BOB_KEY),
        ],
        &scenarios,
        "SDKs on guarded answers",
    );
}

#[test]
fn config_check_names_every_output_guard_problem() {
    let good = fill_placeholders(&config("127.0.0.1:1", GuardAction::Redact));
    let (code, out, err) = run_check(&good);
    assert_eq!(code, 0, "{out}{err}");
    let bad = fill_placeholders(
        &builder("127.0.0.1:1", GuardAction::Redact)
            .with_route("messages", |r| r.set("output_guards", ["pii", "tone"]))
            .section(
                "guards",
                "output:\n  pii: { detect: [email], action: redact }\n  holdback_bytes: 64\n",
            )
            .route(Route::http("web", "/web", &["GET"], "llm").set("output_guards", ["pii"]))
            .render(),
    );
    assert_check_reports(
        run_check(&bad),
        &[
            "routes[4].output_guards: only kind: llm and kind: mcp routes have output guards",
            "routes[2].output_guards[1]: unknown output guard 'tone'",
            "routes[1].output_guards[1]: output guard 'secrets' has no section under guards.output:",
            "guards.output.holdback_bytes: must be at least 240",
        ],
    );
}
