//! The command line: `check`, `hash-key`, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;

fn check(config: &str) -> (i32, String, String) {
    run_check(config)
}

fn filled(template: &str) -> String {
    fill_placeholders(template)
}

#[test]
fn check_accepts_a_valid_config() {
    let (code, stdout, stderr) = check(&filled(&base_config(&["127.0.0.1:9001"])));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK"));
}

#[test]
fn check_names_file_line_and_misspelled_field() {
    let config = filled(&base_config(&["127.0.0.1:9001"])).replace(
        "    methods: [GET, POST, PATCH]",
        "    methds: [GET, POST, PATCH]",
    );
    let line = config.lines().position(|l| l.contains("methds")).unwrap() + 1;
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    let first = stderr.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "tollgate.yaml:{line}:5: routes[1].methds: unknown field `methds`"
        )),
        "{stderr}"
    );
}

#[test]
fn check_lists_every_semantic_problem_with_positions() {
    let config = filled(&base_config(&["127.0.0.1:9001"]))
        .replace(
            "    upstream: support\n    roles: [admin]",
            "    upstream: nowhere\n    roles: [admin]",
        )
        .replace("peers: [\"127.0.0.1:9001\"]", "peers: [\"localhost:9001\"]");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    let problems: Vec<&str> = stderr.lines().collect();
    assert!(
        problems
            .iter()
            .any(|l| l.contains("routes[2].upstream: unknown upstream 'nowhere'")),
        "{stderr}"
    );
    assert!(
        problems
            .iter()
            .any(|l| l.contains("upstreams.support.peers[0]:")),
        "{stderr}"
    );
    for p in &problems {
        let mut parts = p.splitn(4, ':');
        let (_file, line, col) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        assert!(
            line.parse::<usize>().unwrap() > 1 && col.parse::<usize>().is_ok(),
            "{p}"
        );
    }
}

#[test]
fn check_rejects_missing_env_in_set_headers() {
    let config = filled(&base_config(&["127.0.0.1:9001"])).replace(
        "    timeouts: { connect_ms: 300, read_ms: 2000 }",
        "    timeouts: { connect_ms: 300, read_ms: 2000 }\n    set_headers:\n      Authorization: \"Bearer ${env:TOLLGATE_TEST_SURELY_UNSET}\"",
    );
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(stderr.contains("upstreams.support.set_headers.Authorization: environment variable TOLLGATE_TEST_SURELY_UNSET is not set"), "{stderr}");
}

#[test]
fn run_with_a_broken_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server: {listen: []}\n").unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hash_key_prints_a_key_and_its_digest() {
    let out = Command::new(BIN)
        .args(["hash-key", "--id", "k9"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("API key (shown once, give it to the client): "))
        .unwrap();
    assert!(
        text.contains(&format!("sha256: \"{}\"", sha(key))),
        "{text}"
    );
    assert!(text.contains("- id: k9"));
}

#[test]
fn shipped_configs_pass_check() {
    for file in ["conf/demo.yaml", "conf/tollgate.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        if !path.exists() {
            continue;
        }
        let out = Command::new(BIN)
            .arg("check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_refuses_unpriced_models_and_unknown_fallbacks() {
    let config = filled(&base_config(&["127.0.0.1:9001"])).replace(
        "limits:",
        "models:\n  - { name: cheap, upstream: support, input_usd_per_mtok: 0.1, max_tokens: 10, fallbacks: [ghost] }\nlimits:",
    );
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("models[0].output_usd_per_mtok: required"),
        "{stderr}"
    );
    assert!(
        stderr.contains("models[0].fallbacks[0]: unknown model 'ghost'"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_the_redis_store_but_no_password_in_its_url() {
    let redis = |url: &str| {
        filled(&base_config(&["127.0.0.1:9001"])).replace(
            "store:\n",
            &format!("store:\n  kind: redis\n  redis_url: \"{url}\"\n"),
        )
    };
    let (code, _, stderr) = check(&redis("redis://127.0.0.1:6379/0"));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check(&redis("redis://tollgate:hunter2@127.0.0.1:6379/0"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("store.redis_url: must not hold a password"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn run_exits_2_when_a_listen_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    let config = base_config(&["127.0.0.1:9001"])
        .replace("{listen}", &addr)
        .replace("{admin}", &free_addr())
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
