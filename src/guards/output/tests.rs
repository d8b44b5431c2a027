use super::*;
use crate::config::schema::{PiiGuardConfig, SecretsGuardConfig};
use proptest::prelude::*;

pub(crate) const GATEWAY_KEY: &str = "sk-gw-UPSTREAM-0123456789abcdef";

pub(crate) fn config(pii: GuardAction, secrets: GuardAction) -> OutputGuardsConfig {
    OutputGuardsConfig {
        pii: Some(PiiGuardConfig {
            detect: ["email", "phone", "credit_card", "ssn", "iban"]
                .map(String::from)
                .to_vec(),
            action: pii,
        }),
        secrets: Some(SecretsGuardConfig { action: secrets }),
        holdback_bytes: 256,
    }
}

pub(crate) fn scanner(pii: GuardAction, secrets: GuardAction) -> OutputScanner {
    OutputScanner::compile(&config(pii, secrets), &[GATEWAY_KEY.to_string()])
        .unwrap_or_else(|e| panic!("{e}"))
}

const BOTH: OutputGuardSet = OutputGuardSet {
    pii: true,
    secrets: true,
};

fn whole(s: &OutputScanner, text: &str) -> (String, Findings, Option<OutputKind>) {
    let mut f = Findings::default();
    let (out, blocked) = guard_text(s, BOTH, text, &mut f);
    (out.unwrap_or_else(|| text.to_string()), f, blocked)
}

fn streamed(s: &OutputScanner, pieces: &[&str]) -> (String, usize) {
    let mut r = Redactor::new();
    let mut out = String::new();
    let mut most_held = 0;
    for p in pieces {
        r.push(s, BOTH, p, &mut out);
        most_held = most_held.max(r.held());
    }
    r.finish(s, BOTH, &mut out);
    (out, most_held)
}

#[test]
fn every_kind_is_redacted_whole() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yW6n\n-----END RSA PRIVATE KEY-----";
    let cases: &[(&str, &str)] = &[
        ("mail bob@example.com now", "mail [REDACTED:email] now"),
        ("call +1 415-555-2671.", "call [REDACTED:phone]."),
        (
            "card 4111 1111 1111 1111 ok",
            "card [REDACTED:credit_card] ok",
        ),
        ("ssn 123-45-6789", "ssn [REDACTED:ssn]"),
        ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN [REDACTED:iban]."),
        (
            "key sk-proj-abcdefghijklmnopqrstuvwxyz123456 done",
            "key [REDACTED:api_key] done",
        ),
        (
            "aws AKIAIOSFODNN7EXAMPLE x",
            "aws [REDACTED:aws_access_key] x",
        ),
        (
            "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789 x",
            "gh [REDACTED:github_token] x",
        ),
        (
            &format!("t {GATEWAY_KEY} x"),
            "t [REDACTED:gateway_secret] x",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(whole(&s, text).0, *want, "{text}");
    }
    let (out, f, _) = whole(&s, &format!("token {jwt} end"));
    assert_eq!(out, "token [REDACTED:jwt] end");
    assert_eq!(f.kinds(), vec!["jwt"]);
    let (out, ..) = whole(&s, &format!("key:\n{pem}\nthanks"));
    assert_eq!(
        out,
        "key:\n[REDACTED:private_key][REDACTED:private_key]\nthanks"
    );
}

#[test]
fn checksums_and_boundaries_keep_ordinary_numbers() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    for text in [
        "order 4111 1111 1111 1112",
        "ref 000-12-3456",
        "DE00 3704 0044 0532 0130 00",
        "task-force meeting",
    ] {
        assert_eq!(whole(&s, text).0, text);
    }
}

/// Ordinary support answers: order numbers, dates, amounts, tracking
/// numbers, ticket ids. Not one may be flagged.
pub(crate) const SUPPORT_CORPUS: &[&str] = &[
    "Your order #48213 shipped on 2024-11-07 and should arrive by Friday.",
    "Order 1002345678 was refunded: $129.99 will reach your card in 5-10 business days.",
    "Tracking number 1Z999AA10123456784 (UPS) shows it left the Memphis hub at 14:32.",
    "FedEx tracking 7489 2340 1123 shows delivery scheduled for 12/03/2024.",
    "USPS tracking 9400 1000 0000 0000 0000 00 is not active yet; check back tomorrow.",
    "Ticket TCK-2024-118734 has been escalated to tier 2; expect a reply within 24 hours.",
    "Your ticket #559102 was closed on Nov 30, 2024 at 09:15 UTC.",
    "The invoice INV-2024-00931 totals EUR 1,249.00 including 19% VAT.",
    "Your subscription renews on 2025-01-01 for 12 months at $8.99/month.",
    "Case 00123456 is waiting on the warehouse; reference RMA-7781-22 on the box.",
    "Please allow 3-5 business days; your return label code is RET 4471 9920.",
    "We credited 2,500 points to your account (balance: 14,730 points).",
    "Version 2.14.3 fixes the sync issue; build 20241107.3 is rolling out now.",
    "Your appointment is on 2024-12-09 between 10:00 and 12:00.",
    "The package weighs 2.3 kg and measures 40 x 30 x 20 cm.",
    "SKU 884-2231-09 is back in stock; you can reorder from your account page.",
    "Your booking reference is QX7P2M; seat 14C on flight LH 2231 departs at 07:45.",
    "Order 2024-11-0045123 contains 3 items; item 2 ships separately.",
    "Refund of 49.50 USD processed on 03.12.2024 (transaction 8812234409).",
    "Your loyalty card ending in 4421 earned 120 points this month.",
    "Store hours: Mon-Fri 09:00-18:00, Sat 10:00-16:00; call the number on your receipt.",
    "The error code E-4012 means the payment was declined by the bank; try again.",
    "Warranty claim WC-88231 approved; replacement unit serial SN20241107A8831.",
    "Your account was created on 2019-06-14; last login 2024-12-02 18:41.",
    "Password reset links expire after 30 minutes; request a new one if needed.",
    "Shipment 00340434161234567891 is at the local depot.",
    "The discount code WINTER24 gives 15% off orders over $50 until 2024-12-31.",
    "Install with pip install acme-sdk==3.2.1 and set ACME_REGION=eu-west-1.",
    "Your order total was 1,234.56 and we charged it on 2024/11/29.",
    "Ticket ids look like 2024-1107-5512; yours is 2024-1130-0042.",
];

#[test]
fn support_corpus_has_zero_hits() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let mut hits = Vec::new();
    for text in SUPPORT_CORPUS {
        let (out, f, _) = whole(&s, text);
        if out != *text || !f.is_empty() {
            hits.push((text, out));
        }
    }
    assert!(hits.is_empty(), "false positives: {hits:#?}");
}

#[test]
fn block_stops_before_the_match_and_log_passes_through() {
    let s = scanner(GuardAction::Block, GuardAction::Log);
    let (out, _, blocked) = whole(&s, "Hi. Write to bob@example.com please");
    assert_eq!(out, "Hi. Write to ");
    assert_eq!(blocked, Some(OutputKind::Email));
    let text = "Your key is AKIAIOSFODNN7EXAMPLE, keep it.";
    let (out, f, blocked) = whole(&s, text);
    assert_eq!((out.as_str(), blocked), (text, None));
    assert_eq!(f.actions(), vec![("secrets", "log")]);
}

#[test]
fn split_email_across_two_pieces_is_redacted() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let (out, _) = streamed(&s, &["Contact bob@exa", "mple.com for help"]);
    assert_eq!(out, "Contact [REDACTED:email] for help");
}

#[test]
fn every_builtin_window_fits_the_smallest_holdback() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    assert!(s.window() <= MIN_HOLDBACK, "{}", s.window());
}

#[test]
fn a_long_clean_answer_holds_back_at_most_the_window() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let text = "Thanks for reaching out! Your order is on its way. ".repeat(20_000);
    let pieces: Vec<&str> = text
        .as_bytes()
        .chunks(7)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    let (out, most_held) = streamed(&s, &pieces);
    assert_eq!(out, text);
    assert!(most_held <= s.window(), "held {most_held}");
}

const PARTS: &[&str] = &[
    "Hello ",
    "bob@example.com",
    " and ",
    "alice.smith+tag@mail.example.co.uk",
    ", card 4111 1111 1111 1111",
    " (not 4111 1111 1111 1112)",
    ", call (415) 555-2671",
    ", ssn 123-45-6789",
    " IBAN GB82 WEST 1234 5698 7654 32",
    " key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789_-xyz",
    " AKIAIOSFODNN7EXAMPLE",
    " eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    " ",
    GATEWAY_KEY,
    " order #48213 on 2024-11-07 ",
    "é✓ ünïcödé ",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----",
    "\n",
];

/// An answer made of 1 to `most` of `parts`, each maybe more than once, in
/// any order.
fn answer_of(parts: &'static [&'static str], most: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0..parts.len(), 1..most)
        .prop_map(move |picks| picks.iter().map(|i| parts[*i]).collect())
}

/// An answer of up to `most` of `parts`, and up to `most_cuts` points below
/// `cut_below` to cut it at with [`split_at`].
pub(crate) fn cut_answer(
    parts: &'static [&'static str],
    most: usize,
    cut_below: usize,
    most_cuts: usize,
) -> impl Strategy<Value = (String, Vec<usize>)> {
    (
        answer_of(parts, most),
        proptest::collection::vec(0..cut_below, 0..most_cuts),
    )
}

/// Splits `text` at the given cut points (taken modulo its length, moved
/// back to a char boundary).
pub(crate) fn split_at<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % (text.len() + 1))
        .map(|mut c| {
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For any chunking, the released text is the guard applied to the
    /// whole answer, and no more than the window is ever held.
    #[test]
    fn any_chunking_gives_the_whole_answer_guarded(
        (text, cuts) in cut_answer(PARTS, 24, 4096, 40),
        action in prop_oneof![Just(GuardAction::Redact), Just(GuardAction::Log), Just(GuardAction::Block)],
    ) {
        let s = scanner(action, action);
        let pieces = split_at(&text, &cuts);
        let (want, _, _) = whole(&s, &text);
        let (got, most_held) = streamed(&s, &pieces);
        prop_assert_eq!(got, want);
        // A blocked channel keeps what it will never release.
        if action != GuardAction::Block {
            prop_assert!(most_held <= s.window() + 4, "held {}", most_held);
        }
    }
}

#[test]
fn every_two_and_three_way_split_of_an_answer() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let text = format!("Mail bob@example.com, key {GATEWAY_KEY}, card 4111-1111-1111-1111.");
    let (want, ..) = whole(&s, &text);
    assert!(!want.contains("bob@") && !want.contains(GATEWAY_KEY));
    for i in 0..=text.len() {
        assert_eq!(streamed(&s, &[&text[..i], &text[i..]]).0, want, "split {i}");
        for j in (i..=text.len()).step_by(3) {
            let got = streamed(&s, &[&text[..i], &text[i..j], &text[j..]]).0;
            assert_eq!(got, want, "split {i} {j}");
        }
    }
}

#[test]
fn error_bodies_lose_only_the_gateway_secrets() {
    let s = scanner(GuardAction::Redact, GuardAction::Redact);
    let body = format!(r#"{{"error":{{"message":"bad key {GATEWAY_KEY} for bob@example.com"}}}}"#);
    let out = s.scrub_exact(BOTH, body.as_bytes()).unwrap_or_default();
    let out = String::from_utf8(out).unwrap_or_default();
    assert_eq!(
        out,
        r#"{"error":{"message":"bad key [REDACTED:gateway_secret] for bob@example.com"}}"#
    );
    assert_eq!(s.scrub_exact(BOTH, b"{\"error\":\"nothing\"}"), None);
    let pii_only = OutputGuardSet {
        pii: true,
        secrets: false,
    };
    assert_eq!(s.scrub_exact(pii_only, body.as_bytes()), None);
}
