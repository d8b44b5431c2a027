//! Test harness: real processes on loopback ports chosen at run time.
//! `Backend` runs `tollgate mock-backend`, `Gateway` runs `tollgate run`
//! with a config written to a temp dir. Both are killed on drop.
//!
//! Every test file reaches the harness by `mod common;` alone: `config`
//! is the one config builder, `llm` the LLM calls and readers of what
//! they cost (ledger rows, usage, SSE events); this file the processes,
//! the clients and the assertions every file shares.

#![allow(dead_code, unused_imports, unused_macros)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod config;
pub mod llm;

pub use config::{Budget, ConfigBuilder, Fields, Model, Pool, Route};
pub use llm::*;

pub mod otlp;
pub mod postgres;
pub mod redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

pub const BOB_KEY: &str = "test-key-bob-agent";
pub const ALICE_KEY: &str = "test-key-alice-agent";
pub const ROOT_KEY: &str = "test-key-root-admin";
pub const CAROL_KEY: &str = "test-key-carol-expired";
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn sha(key: &str) -> String {
    hex::encode(tollgate::auth::api_key::digest(key))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let sock: SocketAddr = addr.parse().expect("addr");
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&sock, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

pub struct Backend {
    pub addr: String,
    child: Child,
}

impl Backend {
    pub fn start() -> Backend {
        let addr = free_addr();
        Self::start_on(&addr)
    }

    pub fn start_on(addr: &str) -> Backend {
        let child = Command::new(BIN)
            .args(["mock-backend", "--listen", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mock backend");
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "mock backend on {addr} did not start"
        );
        Backend {
            addr: addr.to_string(),
            child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_health(&self, ok: bool) {
        let path = if ok {
            "/__mock/health/ok"
        } else {
            "/__mock/health/fail"
        };
        client().post(self.url(path)).send().expect("mock control");
    }

    /// Every request but control and health ones gets `status` (0: off).
    pub fn force_status(&self, status: u16) {
        client()
            .post(self.url(&format!("/__mock/force-status/{status}")))
            .send()
            .expect("mock control");
    }

    pub fn served(&self) -> u64 {
        let v: serde_json::Value = client()
            .get(self.url("/__mock/stats"))
            .send()
            .and_then(|r| r.json())
            .expect("mock stats");
        v["served"].as_u64().unwrap_or(0)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Gateway {
    pub addr: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    child: Option<Child>,
}

/// A test API key as its config entry describes it (the key itself is one
/// of the `*_KEY` constants; the config holds its digest).
pub struct TestKey {
    pub id: &'static str,
    pub key: &'static str,
    pub user: &'static str,
    pub tenant: &'static str,
    pub roles: &'static [&'static str],
    pub expires_at: Option<&'static str>,
}

pub const BOB: TestKey = TestKey {
    id: "bob-1",
    key: BOB_KEY,
    user: "bob",
    tenant: "acme",
    roles: &["agent"],
    expires_at: None,
};
pub const ALICE: TestKey = TestKey {
    id: "alice-1",
    key: ALICE_KEY,
    user: "alice",
    ..BOB
};
/// The admin, in bob's and alice's tenant.
pub const ROOT: TestKey = TestKey {
    id: "root-1",
    key: ROOT_KEY,
    user: "root",
    roles: &["admin"],
    ..BOB
};
/// The admin, in a tenant of its own (tenant budgets and reports apart).
pub const ROOT_OPS: TestKey = TestKey {
    tenant: "ops",
    ..ROOT
};
pub const CAROL_EXPIRED: TestKey = TestKey {
    id: "carol-1",
    key: CAROL_KEY,
    user: "carol",
    expires_at: Some("2020-01-01T00:00:00Z"),
    ..BOB
};

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Calls `get` every 50 ms until `done` holds of its value or `within`
/// passes; returns the last value.
pub fn poll_until<T>(within: Duration, mut get: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = get();
        if done(&value) || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it holds or `within` passes.
pub fn eventually(within: Duration, check: impl FnMut() -> bool) -> bool {
    poll_until(within, check, |ok| *ok)
}

/// The resident set size of a process (`"self"` or a pid), in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

impl Gateway {
    pub fn start(config_template: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_addr();
        let admin = free_addr();
        let config = config_template
            .replace("{listen}", &addr)
            .replace("{admin}", &admin)
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let mut gw = Gateway {
            addr,
            admin,
            dir,
            config_path,
            child: None,
        };
        gw.spawn(false);
        gw
    }

    pub fn spawn(&mut self, upgrade: bool) {
        let stdout = std::fs::File::create(self.dir.path().join("stdout.log")).expect("log");
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-c").arg(&self.config_path);
        if upgrade {
            cmd.arg("-u");
        }
        let child = cmd
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn gateway");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(self.admin_url("/readyz")).send() {
                if r.status() == 200 && wait_for_port(&self.addr, Duration::from_millis(100)) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "gateway did not become ready; stderr:\n{}",
            std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// A request to `path` as the holder of the API key `key`, to finish
    /// (more headers, a body) and send.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::blocking::RequestBuilder {
        client()
            .request(method, self.url(path))
            .header("X-API-Key", key)
    }

    /// GET `path` as the holder of the API key `key`.
    pub fn get(&self, path: &str, key: &str) -> reqwest::blocking::Response {
        self.get_with(path, key, &[])
    }

    /// GET `path` as the holder of `key`, with more headers.
    pub fn get_with(
        &self,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::blocking::Response {
        let mut req = self.request(reqwest::Method::GET, path, key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().unwrap()
    }

    /// GET `path` of the admin API with the admin token.
    pub fn admin_get(&self, path: &str) -> reqwest::blocking::Response {
        client()
            .get(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
    }

    /// `POST /admin/reload` with the admin token.
    pub fn reload(&self) -> reqwest::blocking::Response {
        client()
            .post(self.admin_url("/admin/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// The value of one series of `/metrics` (name and labels as
    /// exported), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `tollgate_shadow_refusals_total{code}`: calls a limit in shadow
    /// mode would have refused (0 when not yet counted).
    pub fn shadow_refusals(&self, code: &str) -> f64 {
        self.metric(&format!(
            "tollgate_shadow_refusals_total{{code=\"{code}\"}}"
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    pub fn rewrite_config(&self, config_template: &str) {
        let config = config_template
            .replace("{listen}", &self.addr)
            .replace("{admin}", &self.admin)
            .replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&self.config_path, config).expect("write config");
    }

    /// Everything the process wrote: stdout, stderr, access log.
    pub fn all_output(&self) -> String {
        ["stdout.log", "stderr.log", "access.log", "audit.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first access or audit log line whose `field` is `value`.
    pub fn logged(&self, field: &str, value: &str) -> Option<serde_json::Value> {
        self.access_log().into_iter().find(|l| l[field] == value)
    }

    /// The access/audit log lines. The gateway writes them in batches
    /// (every 20 ms), so wait a few batches before reading.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(150));
        read_json_lines(&self.dir.path().join("access.log"))
    }
}

/// A config template with placeholder addresses, for `tollgate check`
/// (nothing listens on them).
pub fn fill_placeholders(template: &str) -> String {
    template
        .replace("{listen}", "127.0.0.1:18080")
        .replace("{admin}", "127.0.0.1:19090")
        .replace("{dir}", "/tmp")
}

/// Runs `tollgate <command> -c <config> <more>` to its end.
pub fn tollgate(command: &str, config: &Path, more: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args([command, "-c"])
        .arg(config)
        .args(more)
        .output()
        .expect("run tollgate")
}

/// The repository's root (scripts and the test virtualenv are below it).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the Python client `script` (a path below the root) with `env` and
/// no proxy for loopback; asserts that it succeeded and printed
/// `ok SCENARIO` for each of `scenarios`, `what` naming the run in a
/// failure. Returns its stdout.
pub fn run_client_script(
    python: &Path,
    script: &str,
    env: &[(&str, &str)],
    scenarios: &[&str],
    what: &str,
) -> String {
    let out = Command::new(python)
        .arg(repo_root().join(script))
        .envs(env.iter().copied())
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}\n{stdout}\n{stderr}");
    for scenario in scenarios {
        assert!(
            stdout.contains(&format!("ok {scenario}\n")),
            "{what}: {scenario}: {stdout}"
        );
    }
    stdout
}

/// Runs `tollgate check` on `config`: (exit code, stdout, stderr).
pub fn run_check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = tollgate("check", &path, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that a `tollgate check` run (`run_check` or `ConfigBuilder::check`)
/// failed and printed every one of `problems`.
pub fn assert_check_reports(result: (i32, String, String), problems: &[&str]) {
    let (code, out, err) = result;
    let all = format!("{out}{err}");
    assert_eq!(code, 1, "{all}");
    for problem in problems {
        assert!(all.contains(problem), "{problem} not in:\n{all}");
    }
}

pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()
        .expect("client")
}

/// Sends raw bytes and returns the whole answer (until close or timeout).
pub fn raw_request(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(request).expect("write");
    read_answer(&mut stream, Duration::from_secs(3))
}

/// Reads one answer: until its body is complete by its Content-Length or
/// its last chunk, the connection closes, or nothing arrives for `timeout`.
pub fn read_answer(stream: &mut TcpStream, timeout: Duration) -> String {
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let chunked = head
                .to_ascii_lowercase()
                .contains("\r\ntransfer-encoding: chunked");
            if content_length(head).is_some_and(|l| body.len() >= l)
                || (chunked && (body.starts_with("0\r\n\r\n") || body.ends_with("\r\n0\r\n\r\n")))
            {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A test that needs a tool this machine lacks says so and passes.
pub fn skipped(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

/// The Retry-After of an answer, in seconds.
pub fn retry_after(resp: &reqwest::blocking::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts a gateway refusal: its status and JSON error code (then an
/// optional message as for `assert_eq!`); evaluates to the error body.
macro_rules! assert_error {
    ($resp:expr, $status:expr, $code:expr $(, $($message:tt)+)?) => {{
        let (status, code, body) = $crate::common::error_code($resp);
        assert_eq!((status, code.as_str()), ($status, $code) $(, $($message)+)?);
        body
    }};
}
pub(crate) use assert_error;

/// Reads one HTTP/1.1 request with a Content-Length body: (head, body);
/// `None` once the connection ends.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        if reader.read_line(&mut head).ok()? == 0 {
            return None;
        }
    }
    let mut body = vec![0u8; content_length(&head).unwrap_or(0)];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// Asserts that the message of a gateway error body contains `part`.
pub fn assert_message_has(body: &serde_json::Value, part: &str) {
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(part), "{part:?} not in {body}");
}

/// Parses the JSON error body of a gateway answer.
pub fn error_code(resp: reqwest::blocking::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().unwrap_or(serde_json::Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, body)
}

/// The Content-Length of a raw HTTP/1.1 head (the text before `\r\n\r\n`).
pub fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })
}
