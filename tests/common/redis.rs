//! redis-server processes for the cluster-mode tests.

use super::{free_port, skipped, wait_for_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A throwaway redis-server on a free loopback port, without persistence
/// (a restart empties it); killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// The address of a server that is not started (for configs that are
    /// only checked).
    pub fn unstarted(port: u16) -> Redis {
        Redis { port, child: None }
    }

    pub fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            skipped("redis-server is not installed (`make test` installs it)");
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.restart();
        Some(redis)
    }

    /// Starts redis-server on its port (again, after `kill`), empty.
    pub fn restart(&mut self) {
        self.spawn(&["--port", &self.port.to_string()]);
    }

    /// TLS only (the fixtures' `localhost` certificate), with a password.
    pub fn start_tls(password: &str) -> Option<Redis> {
        let mut redis = Redis::start()?;
        redis.kill();
        let fixture =
            |name: &str| format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"));
        redis.spawn(&[
            "--port",
            "0",
            "--tls-port",
            &redis.port.to_string(),
            "--tls-cert-file",
            &fixture("server.pem"),
            "--tls-key-file",
            &fixture("server.key.pem"),
            "--tls-ca-cert-file",
            &fixture("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]);
        Some(redis)
    }

    fn spawn(&mut self, args: &[&str]) {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        assert!(
            wait_for_port(&format!("127.0.0.1:{}", self.port), Duration::from_secs(10)),
            "redis-server did not start"
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
