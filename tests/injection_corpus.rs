//! The injection guard measured on a labelled corpus (`tests/fixtures/`):
//! at least 100 attacks in paraphrased and obfuscated forms and 100 benign
//! support texts that talk about instructions, rules, prompts and systems.
//! Recall must be at least 0.95 and no benign text may be blocked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate::guards::injection::InjectionDetector;

/// One sample per line; `#` comments and blank lines skipped; `\u{XXXX}`
/// and `\n` unescaped.
fn corpus(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(unescape)
        .collect()
}

fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("\\n") {
            out.push('\n');
            rest = after;
        } else if let Some(code) = tail.strip_prefix("\\u{") {
            let end = code
                .find('}')
                .unwrap_or_else(|| panic!("bad escape in {line}"));
            let c = u32::from_str_radix(&code[..end], 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("bad escape in {line}"));
            out.push(c);
            rest = &code[end + 1..];
        } else {
            out.push('\\');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn recall_at_least_095_and_no_false_positive() {
    let detector = InjectionDetector::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    let attacks = corpus("injection_attacks.txt");
    let benign = corpus("injection_benign.txt");
    assert!(attacks.len() >= 100, "{} attacks", attacks.len());
    assert!(benign.len() >= 100, "{} benign texts", benign.len());

    let missed: Vec<&String> = attacks.iter().filter(|t| !detector.matches(t)).collect();
    let flagged: Vec<&String> = benign.iter().filter(|t| detector.matches(t)).collect();
    let recall = (attacks.len() - missed.len()) as f64 / attacks.len() as f64;
    println!(
        "injection corpus: {} attacks, {} caught, recall {recall:.3}; {} benign, {} false positives",
        attacks.len(),
        attacks.len() - missed.len(),
        benign.len(),
        flagged.len()
    );
    for text in &missed {
        println!("missed: {text:?}");
    }
    for text in &flagged {
        println!("false positive: {text:?}");
    }
    assert!(recall >= 0.95, "recall {recall:.3}: missed {missed:#?}");
    assert!(flagged.is_empty(), "false positives: {flagged:#?}");
}

#[test]
fn the_escapes_are_read() {
    assert_eq!(unescape(r"a\u{200b}b\nc\x"), "a\u{200b}b\nc\\x");
}
