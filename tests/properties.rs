//! Property tests (proptest, fixed case counts so CI time is stable): the
//! parsers that see attacker-controlled bytes never panic and keep their
//! promises for every input, not only the ones we thought of.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use std::sync::OnceLock;
use tollgate::auth::jwt::{ClaimNames, JwtKeySpec, JwtSettings, JwtVerifier, KeyMaterial};
use tollgate::config::schema::LlmApi;
use tollgate::guards::injection::InjectionDetector;
use tollgate::guards::normalize::normalize;
use tollgate::guards::pii::{PiiDetector, PiiKind};
use tollgate::llm::api::LlmRequest;
use tollgate::llm::usage::UsageParser;
use tollgate::router::{normalize as normalize_path, PathTemplate};

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

/// Path segments an attacker would try: dot segments plain and encoded,
/// encoded separators, NUL, empty segments, and ordinary names.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2e".to_string()),
        Just("%2e".to_string()),
        Just("%2f".to_string()),
        Just("..%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%252e%252e".to_string()),
        Just(String::new()),
        Just("users".to_string()),
        "[a-zA-Z0-9%._~-]{1,8}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// A path that matches `/api/v1/tickets/**` after normalisation is
    /// forwarded under that prefix, and the forwarded form normalises to
    /// itself: a backend decoding it again cannot land elsewhere.
    #[test]
    fn normalised_paths_never_escape_the_route_prefix(segments in prop::collection::vec(segment(), 0..10)) {
        let template = PathTemplate::parse("/api/v1/tickets/**").unwrap();
        let raw = format!("/api/v1/tickets/{}", segments.join("/"));
        if let Ok(path) = normalize_path(&raw) {
            prop_assert!(path.segments.iter().all(|s| !s.is_empty() && s != "." && s != ".."));
            if template.matches(&path.segments).is_some() {
                prop_assert!(
                    path.encoded == "/api/v1/tickets" || path.encoded.starts_with("/api/v1/tickets/"),
                    "{raw} -> {}", path.encoded
                );
            }
            let again = normalize_path(&path.encoded).unwrap();
            prop_assert_eq!(&again.segments, &path.segments);
            prop_assert_eq!(&again.encoded, &path.encoded);
        }
    }

    /// The SSE usage parser reports the same totals however the stream is
    /// split into chunks (even inside a UTF-8 character or a CRLF).
    #[test]
    fn sse_usage_is_the_same_for_every_chunking(
        texts in prop::collection::vec("[a-zA-Z é✓]{0,12}", 1..6),
        prompt in 0u64..10_000,
        completion in 0u64..10_000,
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut stream = String::new();
        for text in &texts {
            let chunk = serde_json::json!({"choices": [{"delta": {"content": text}}]});
            stream += &format!("data: {chunk}{eol}{eol}");
        }
        let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}});
        stream += &format!(": keep-alive{eol}data: {usage}{eol}{eol}data: [DONE]{eol}{eol}");
        let bytes = stream.as_bytes();

        let mut whole = UsageParser::sse(LlmApi::OpenaiChat);
        whole.feed(bytes);
        let expected = whole.finish();
        prop_assert_eq!(expected.usage.map(|u| (u.prompt_tokens, u.completion_tokens)), Some((prompt, completion)));

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunked = UsageParser::sse(LlmApi::OpenaiChat);
        let mut from = 0;
        for at in points.into_iter().chain(std::iter::once(bytes.len())) {
            chunked.feed(&bytes[from..at]);
            from = at;
        }
        prop_assert_eq!(chunked.finish(), expected);
    }

    /// Config loading answers every input with a snapshot or problems.
    #[test]
    fn config_loading_never_panics_on_arbitrary_text(source in "\\PC{0,400}") {
        let _ = tollgate::config::load::load_snapshot_from_str(&source, "fuzz.yaml", 1, None);
    }

    /// ... and on YAML that is almost right: a valid config with one line
    /// replaced, dropped or duplicated.
    #[test]
    fn config_loading_never_panics_on_mutated_yaml(
        line in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            Just(String::new()),
            Just("  - ".to_string()),
            Just("  max_body_bytes: -1".to_string()),
            Just("  threads: 0".to_string()),
            Just("routes: 7".to_string()),
            Just("      tokens_per_day: 1e309".to_string()),
            Just("  listen: [\"not an address\"]".to_string()),
            Just("    path: \"/{a}/{a}/**/**\"".to_string()),
            Just("models: [{name: x, upstream: nowhere}]".to_string()),
            "[ a-z:{}\\[\\],\"'&*!|>-]{0,30}",
        ],
        duplicate in any::<bool>(),
    ) {
        let lines: Vec<&str> = valid_config().lines().collect();
        let at = line.index(lines.len());
        let mut mutated: Vec<&str> = lines.clone();
        if duplicate {
            mutated.insert(at, lines[at]);
        } else {
            mutated[at] = &replacement;
        }
        let _ = tollgate::config::load::load_snapshot_from_str(&mutated.join("\n"), "fuzz.yaml", 1, None);
    }

    /// JWT verification rejects garbage without panicking, whether the
    /// bytes are random or shaped like a token (three base64url parts).
    #[test]
    fn jwt_verification_never_panics(
        raw in "\\PC{0,300}",
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 3),
        header_json in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        use base64::Engine;
        let verifier = verifier();
        prop_assert!(verifier.verify(&raw, 1_800_000_000).is_err());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = parts.iter().map(|p| b64.encode(p)).collect::<Vec<_>>().join(".");
        prop_assert!(verifier.verify(&token, 1_800_000_000).is_err());
        let mut header = br#"{"alg":"HS256","kid":"k","#.to_vec();
        header.extend_from_slice(&header_json);
        let shaped = format!("{}.{}.{}", b64.encode(&header), b64.encode(&parts[1]), b64.encode(&parts[2]));
        prop_assert!(verifier.verify(&shaped, 1_800_000_000).is_err());
    }

    /// API key and bearer header parsing answer arbitrary header bytes.
    #[test]
    fn credential_parsing_never_panics(value in prop::collection::vec(any::<u8>(), 0..200), bearer in any::<bool>()) {
        let snapshot = snapshot();
        let mut req = pingora::http::RequestHeader::build("GET", b"/api/v1/tickets/1", None).unwrap();
        let name = if bearer { "authorization" } else { "x-api-key" };
        let mut value = value;
        if bearer {
            value.splice(0..0, b"Bearer ".iter().copied());
        }
        if let Ok(v) = http::HeaderValue::from_bytes(&value) {
            req.insert_header(name, v).unwrap();
            prop_assert!(snapshot.auth.authenticate(&req, 1_800_000_000, None).is_err());
        }
        let _ = tollgate::auth::api_key::parse_digest_hex(&String::from_utf8_lossy(&value));
    }

    /// Guards never panic on arbitrary UTF-8, and PII redaction changes a
    /// text only when it reports a finding.
    #[test]
    fn guards_never_panic_and_change_text_only_with_findings(text in "\\PC{0,200}", noisy in "[0-9 @.+()-]{0,40}") {
        let injection = injection();
        let pii = pii();
        for text in [text.clone(), format!("{text} {noisy}"), noisy.clone()] {
            let _ = injection.matches(&text);
            let _ = normalize(&text);
            let found = pii.find(&text);
            match pii.redact(&text) {
                Some(redacted) => {
                    prop_assert!(!found.is_empty());
                    prop_assert_ne!(redacted, text);
                }
                None => prop_assert!(found.is_empty()),
            }
        }
    }

    /// The same through the guard pipeline on a chat request: the request
    /// is rewritten only when a guard found something.
    #[test]
    fn guard_pipeline_rewrites_only_with_findings(text in "\\PC{0,200}", card in any::<bool>()) {
        let text = if card { format!("{text} card 4111 1111 1111 1111") } else { text };
        let guards = guards();
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        let mut chat = LlmRequest::parse(LlmApi::OpenaiChat, body.to_string().as_bytes()).unwrap();
        let before = chat.body().clone();
        let enabled = tollgate::guards::GuardSet {
            pii: true,
            injection: true,
        };
        let outcome = guards.apply(enabled, &mut chat);
        prop_assert!(outcome.is_ok(), "log and redact never refuse");
        let pii = pii();
        let changed = chat.body() != &before;
        prop_assert_eq!(changed, !pii.find(&text).is_empty());
        if card {
            prop_assert!(changed);
        }
    }
}

/// A valid config with a bit of every section the mutations may break.
fn valid_config() -> &'static str {
    VALID_CONFIG.get_or_init(|| {
        let config = ConfigBuilder::new()
            .keys(&[BOB])
            .pool("support", Pool::new(&["127.0.0.1:9001"]).health_check())
            .pool("llm", Pool::new(&["127.0.0.1:9101"]))
            .route(
                Route::http("tickets", "/api/v1/tickets/**", &["GET", "POST"], "support")
                    .roles(&["agent"]),
            )
            .route(Route::llm("chat", "/v1/chat/completions").guards(&["pii", "injection"]))
            .model(Model::new("m", "llm", 1.0, 1.0, 100))
            .default_rate_limit(100)
            .budget(Budget::user().tokens_per_day(1000))
            .pii(&["email"], "redact")
            .injection("block", &[])
            .store_path("/tmp/never-opened.db")
            .render();
        fill_placeholders(&config)
    })
}

// Built once: compiling them per case would dominate the run time.
static VALID_CONFIG: OnceLock<String> = OnceLock::new();
static SNAPSHOT: OnceLock<tollgate::config::snapshot::Snapshot> = OnceLock::new();
static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
static INJECTION: OnceLock<InjectionDetector> = OnceLock::new();
static PII: OnceLock<PiiDetector> = OnceLock::new();
static GUARDS: OnceLock<tollgate::guards::Guards> = OnceLock::new();

fn snapshot() -> &'static tollgate::config::snapshot::Snapshot {
    SNAPSHOT.get_or_init(|| {
        tollgate::config::load::load_snapshot_from_str(valid_config(), "valid.yaml", 1, None)
            .unwrap_or_else(|e| panic!("{e:?}"))
    })
}

fn injection() -> &'static InjectionDetector {
    INJECTION.get_or_init(|| InjectionDetector::new(&[]).unwrap_or_else(|e| panic!("{e}")))
}

fn pii() -> &'static PiiDetector {
    PII.get_or_init(|| {
        use PiiKind::*;
        PiiDetector::new(&[Email, Phone, CreditCard, Ssn, Iban]).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn guards() -> &'static tollgate::guards::Guards {
    GUARDS.get_or_init(|| {
        let config: tollgate::config::schema::GuardsConfig = serde_yaml::from_str(
            "pii: { detect: [email, phone, credit_card, ssn, iban], action: redact }\ninjection: { action: log }",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        tollgate::guards::Guards::compile(&config).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn verifier() -> &'static JwtVerifier {
    VERIFIER.get_or_init(build_verifier)
}

fn build_verifier() -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        issuer: "https://idp.example".into(),
        audience: "tollgate".into(),
        leeway_seconds: 30,
        max_lifetime_seconds: Some(3600),
        keys: vec![JwtKeySpec {
            kid: "k".into(),
            alg: jsonwebtoken::Algorithm::HS256,
            material: KeyMaterial::Secret(vec![7u8; 32]),
        }],
        claims: ClaimNames::default(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_valid_config_is_valid() {
    let _ = snapshot();
}
