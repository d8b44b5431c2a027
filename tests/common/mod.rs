//! Test harness: real processes on loopback ports chosen at run time.
//! `Backend` runs `tollgate mock-backend`, `Gateway` runs `tollgate run`
//! with a config written to a temp dir. Both are killed on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod postgres;

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
    pub roles: &'static str,
    /// More fields of the entry, e.g. `expires_at: "..."`, or "".
    pub extra: &'static str,
}

pub const BOB: TestKey = TestKey {
    id: "bob-1",
    key: BOB_KEY,
    user: "bob",
    tenant: "acme",
    roles: "agent",
    extra: "",
};
pub const ALICE: TestKey = TestKey {
    id: "alice-1",
    key: ALICE_KEY,
    user: "alice",
    tenant: "acme",
    roles: "agent",
    extra: "",
};
/// The admin, in bob's and alice's tenant.
pub const ROOT: TestKey = TestKey {
    id: "root-1",
    key: ROOT_KEY,
    user: "root",
    tenant: "acme",
    roles: "admin",
    extra: "",
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
    tenant: "acme",
    roles: "agent",
    extra: r#", expires_at: "2020-01-01T00:00:00Z""#,
};

/// How every test config begins: `server` (`{listen}` and `{admin}` are
/// filled in by `Gateway::start`; the admin token is `ADMIN_TOKEN`; a 1 s
/// grace period; `max_body_bytes` when given) and `auth.api_keys` with
/// `keys`. The caller appends the rest: more `auth` fields (indented two
/// spaces), then `upstreams:` and what follows.
pub fn config_head(threads: u32, max_body_bytes: Option<u64>, keys: &[TestKey]) -> String {
    let body_limit = max_body_bytes
        .map(|n| format!("  max_body_bytes: {n}\n"))
        .unwrap_or_default();
    let entries: String = keys
        .iter()
        .map(|k| {
            format!(
                "    - {{ id: {}, sha256: \"{}\", user: {}, tenant: {}, roles: [{}]{} }}\n",
                k.id,
                sha(k.key),
                k.user,
                k.tenant,
                k.roles,
                k.extra
            )
        })
        .collect();
    format!(
        "server:\n  listen: [\"{{listen}}\"]\n  admin_listen: \"{{admin}}\"\n  admin_token_sha256: \"{}\"\n  threads: {threads}\n{body_limit}  grace_period_seconds: 1\nauth:\n  api_keys:\n{entries}",
        sha(ADMIN_TOKEN)
    )
}

/// The config used by most tests; `{listen}`, `{admin}` and `{dir}` are
/// filled in by `Gateway::start`.
pub fn base_config(support_peers: &[&str]) -> String {
    let peers = support_peers
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"{head}upstreams:
  support:
    peers: [{peers}]
    health_check: {{ kind: http, path: /healthz, interval_ms: 200, timeout_ms: 200, unhealthy_after: 2, healthy_after: 1 }}
    timeouts: {{ connect_ms: 300, read_ms: 2000 }}
routes:
  - name: agent-tickets
    path: "/api/v1/agents/{{agent}}/tickets"
    methods: [GET]
    upstream: support
    roles: [agent, admin]
    owner: {{ param: agent, bypass_roles: [admin] }}
  - name: tickets
    path: "/api/v1/tickets/**"
    methods: [GET, POST, PATCH]
    upstream: support
    roles: [agent, admin]
  - name: users
    path: "/api/v1/users/**"
    methods: ["*"]
    upstream: support
    roles: [admin]
  - name: limited
    path: "/api/v1/limited/**"
    methods: [GET]
    upstream: support
    rate_limit: {{ requests_per_minute: 10 }}
limits:
  default: {{ requests_per_minute: 1000 }}
store:
  path: "{{dir}}/usage.db"
observability:
  access_log: "{{dir}}/access.log"
  log_level: warn
"#,
        head = config_head(2, Some(4096), &[BOB, ALICE, ROOT, CAROL_EXPIRED]),
    )
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

/// Runs `tollgate check` on `config`: (exit code, stdout, stderr).
pub fn run_check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run tollgate check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough once its body is complete.
                if let Ok(text) = std::str::from_utf8(&out) {
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        });
                        if len.is_some_and(|l| body.len() >= l) {
                            break;
                        }
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
