//! A throwaway PostgreSQL cluster per test: `initdb` + `pg_ctl` on a free
//! loopback port, `fsync=off`, data under a temp dir removed afterwards.
//! PostgreSQL refuses to run as root, so as root (CI) every server command
//! runs as the `postgres` system user (`runuser`). `start` returns None,
//! after printing why, only when the binaries are not installed (`make
//! test-deps` installs them).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_root: bool,
    running: bool,
    /// `-c` settings the server starts with (TLS).
    settings: Vec<String>,
}

/// How clients authenticate over TCP.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HostAuth {
    Trust,
    /// Password required (`scram-sha-256`); the superuser's is `PASSWORD`.
    Password,
}

pub const PASSWORD: &str = "pg-test-secret";

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl Postgres {
    pub fn start() -> Option<Postgres> {
        Self::start_with(HostAuth::Trust, false)
    }

    /// `tls`: the server offers TLS with the fixtures' `localhost`
    /// certificate (signed by `tests/fixtures/tls/ca.pem`).
    pub fn start_with(auth: HostAuth, tls: bool) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            eprintln!("SKIPPED: PostgreSQL is not installed (`make test-deps` installs it)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_root = unsafe { libc::geteuid() } == 0;
        let mut pg = Postgres {
            port: super::free_port(),
            bin,
            dir,
            as_root,
            running: false,
            settings: Vec::new(),
        };
        std::fs::set_permissions(
            pg.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let pwfile = pg.dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        if tls {
            let fixture =
                |name: &str| format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::copy(fixture("server.pem"), pg.dir.path().join("server.pem")).expect("cert");
            std::fs::copy(fixture("server.key.pem"), pg.dir.path().join("server.key"))
                .expect("key");
            std::fs::set_permissions(
                pg.dir.path().join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod key");
            let d = pg.dir.path().display().to_string();
            pg.settings = vec![
                "ssl=on".into(),
                format!("ssl_cert_file={d}/server.pem"),
                format!("ssl_key_file={d}/server.key"),
            ];
        }
        pg.chown();
        let auth_host = match auth {
            HostAuth::Trust => "trust",
            HostAuth::Password => "scram-sha-256",
        };
        let data = pg.data().display().to_string();
        let out = pg.server_cmd(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth-local=trust",
                &format!("--auth-host={auth_host}"),
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.restart();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn chown(&self) {
        if self.as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(self.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
    }

    /// A server binary, as the `postgres` user when we are root.
    fn server_cmd(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = match self.as_root {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            }
            false => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Starts the server (again, after `stop`), waiting until it accepts.
    pub fn restart(&mut self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        for s in &self.settings {
            options.push_str(&format!(" -c {s}"));
        }
        let data = self.data().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.server_cmd(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30", "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`: like a crash, as fast).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let data = self.data().display().to_string();
        let _ = self.server_cmd("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        self.running = false;
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The answer of `sql` (unaligned, tuples only), over the Unix socket
    /// (trusted whatever the TCP authentication).
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// [`Self::psql`], or the error (a table not there yet, the server down).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", &self.dir.path().display().to_string()])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
