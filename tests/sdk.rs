//! The official SDKs as clients: `anthropic` (messages, streaming, a 429
//! raising RateLimitError, an unknown key raising AuthenticationError) and
//! `openai` (responses, streamed responses, embeddings) drive a real
//! gateway and the mock backend through tests/sdk/sdk_check.py.
//!
//! The SDKs live in a virtualenv under `target/venv`, created by
//! `make sdk-venv` (which `make test` runs first). This test runs that
//! target itself when the virtualenv is missing, and is skipped, with the
//! reason printed, only when no Python is present.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn venv_python() -> PathBuf {
    repo_root().join("target/venv/bin/python")
}

fn sdks_importable(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import anthropic, openai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The virtualenv's Python with both SDKs; `None` when there is no Python.
fn python_with_sdks() -> Option<PathBuf> {
    let python = venv_python();
    if sdks_importable(&python) {
        return Some(python);
    }
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        return None;
    }
    let out = Command::new("make")
        .args(["-s", "sdk-venv"])
        .current_dir(repo_root())
        .output()
        .expect("run make sdk-venv");
    assert!(
        out.status.success() && sdks_importable(&python),
        "make sdk-venv failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(python)
}

#[test]
fn official_anthropic_and_openai_sdks_work_through_the_gateway() {
    let Some(python) = python_with_sdks() else {
        return skipped("no python3 on this machine, the SDK test cannot run");
    };
    let llm = Backend::start();
    // Alice's budget refuses every call (each reserves more than 10 tokens).
    let gw = ConfigBuilder::llm_apis(&llm.addr, &llm.addr, 1_000_000)
        .limit_overrides(serde_json::json!({"alice": {"tokens_per_day": 10}}))
        .start();
    let base = format!("http://{}", gw.addr);
    let env = [
        ("TG_BASE", base.as_str()),
        ("TG_KEY", BOB_KEY),
        ("TG_POOR_KEY", ALICE_KEY),
    ];
    let scenarios = [
        "anthropic messages",
        "anthropic streaming",
        "anthropic runaway stream ends at max_tokens",
        "anthropic 429 RateLimitError",
        "anthropic unknown key AuthenticationError",
        "openai responses",
        "openai responses streaming",
        "openai responses runaway stream ends incomplete",
        "openai embeddings",
        "openai 429 RateLimitError",
    ];
    run_client_script(&python, "tests/sdk/sdk_check.py", &env, &scenarios, "SDKs");
    // Every served call is billed exactly; refusals never reached the ledger.
    let rows = rows_eventually(&gw, 7);
    let apis: Vec<(&str, bool)> = rows.iter().map(|r| (r.api.as_str(), r.over_cap)).collect();
    assert_eq!(
        apis,
        [
            ("anthropic_messages", false),
            ("anthropic_messages", false),
            ("anthropic_messages", true),
            ("openai_responses", false),
            ("openai_responses", false),
            ("openai_responses", true),
            ("openai_embeddings", false)
        ]
    );
    // Cut-off streams are billed as counted (estimated); the others exactly.
    assert!(rows.iter().all(|r| r.estimated == r.over_cap), "{rows:?}");
}

/// The SDK's own usage lines ("usage MODEL PROMPT COMPLETION CACHED
/// CACHE_WRITE") printed by translate_check.py.
fn sdk_usage(stdout: &str) -> Vec<(String, u64, u64, u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("usage "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (f[0].to_string(), n(1), n(2), n(3), n(4))
        })
        .collect()
}

#[test]
fn official_sdks_work_against_models_of_another_provider_and_are_billed_as_they_report() {
    let Some(python) = python_with_sdks() else {
        return skipped("no python3 on this machine, the SDK test cannot run");
    };
    let llm = Backend::start();
    let gw = ConfigBuilder::translating(&llm.addr, &llm.addr).start();
    let base = format!("http://{}", gw.addr);
    let env = [("TG_BASE", base.as_str()), ("TG_KEY", BOB_KEY)];
    let scenarios = [
        "openai claude-via-chat json",
        "openai claude-via-chat stream",
        "openai claude-via-chat tool round trip",
        "openai gemini-via-chat json",
        "openai gemini-via-chat stream",
        "openai gemini-via-chat tool round trip",
        "anthropic gpt-via-messages json",
        "anthropic gpt-via-messages stream",
        "anthropic gpt-via-messages tool round trip",
    ];
    let stdout = run_client_script(
        &python,
        "tests/sdk/translate_check.py",
        &env,
        &scenarios,
        "SDKs across providers",
    );
    // What each SDK reported is what the ledger billed, call for call.
    let mut reported = sdk_usage(&stdout);
    assert_eq!(reported.len(), 15, "{stdout}");
    let mut billed: Vec<_> = rows_eventually(&gw, reported.len())
        .into_iter()
        .map(|r| (r.model, r.prompt, r.completion, r.cached, r.cache_write))
        .collect();
    reported.sort();
    billed.sort();
    assert_eq!(billed, reported);
}
