//! The command line: `check`, `hash-key`, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;

/// The support config, peer on a port nothing needs to listen on.
fn support() -> ConfigBuilder {
    ConfigBuilder::support(&["127.0.0.1:9001"])
}

#[test]
fn check_accepts_a_valid_config() {
    let (code, stdout, stderr) = support().check();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("configuration OK"));
}

#[test]
fn check_names_file_line_and_misspelled_field() {
    let config = fill_placeholders(
        &support()
            .with_route("tickets", |r| {
                r.unset("methods").set("methds", ["GET", "POST", "PATCH"])
            })
            .render(),
    );
    let (line, col) = config
        .lines()
        .enumerate()
        .find_map(|(i, l)| Some((i + 1, l.find("methds")? + 1)))
        .unwrap();
    let (code, _, stderr) = run_check(&config);
    assert_eq!(code, 1);
    let first = stderr.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "tollgate.yaml:{line}:{col}: routes[1].methds: unknown field `methds`"
        )),
        "{stderr}"
    );
}

#[test]
fn check_lists_every_semantic_problem_with_positions() {
    let (code, _, stderr) = ConfigBuilder::support(&["localhost:9001"])
        .with_route("users", |r| r.upstream("nowhere"))
        .check();
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
    let (code, _, stderr) = support()
        .with_pool("support", |p| {
            p.set_header("Authorization", "Bearer ${env:TOLLGATE_TEST_SURELY_UNSET}")
        })
        .check();
    assert_eq!(code, 1);
    assert!(stderr.contains("upstreams.support.set_headers.Authorization: environment variable TOLLGATE_TEST_SURELY_UNSET is not set"), "{stderr}");
}

#[test]
fn run_with_a_broken_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server: {listen: []}\n").unwrap();
    let out = tollgate("run", &path, &[]);
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
        let out = tollgate("check", &path, &[]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_refuses_unpriced_models_and_unknown_fallbacks() {
    let (code, _, stderr) = support()
        .model(
            Model::new("cheap", "support", 0.1, 0.0, 10)
                .unset("output_usd_per_mtok")
                .fallbacks(&["ghost"]),
        )
        .check();
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
    let (code, _, stderr) = support().redis("redis://127.0.0.1:6379/0").check();
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = support()
        .redis("redis://tollgate:hunter2@127.0.0.1:6379/0")
        .check();
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
    let config = support()
        .listen(&addr)
        .admin_listen(&free_addr())
        .render()
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&path, config).unwrap();
    let out = tollgate("run", &path, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
