//! A webhook receiver for the tests: `webhook_receiver.py`, which verifies every delivery with the
//! standardwebhooks package and answers as the test plans.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running receiver.
pub struct Receiver {
    dir: tempfile::TempDir,
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Receiver {
    /// Starts a receiver that answers as `plan` says, then 200.
    pub fn start(plan: Value) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("plan"), plan.to_string()).expect("plan written");
        let python = std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/api/support/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts (run ./scripts/test.sh: it installs standardwebhooks)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port = line.trim().parse().expect("a port");
        Self { dir, child, port }
    }

    /// The URL of its hook.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The secrets deliveries are verified with.
    pub fn set_secrets(&self, secrets: &[&str]) {
        std::fs::write(self.dir.path().join("secrets"), secrets.join("\n")).expect("secrets");
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON line"))
            .collect()
    }

    /// Waits until `check` holds for the requests received; panics after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if check(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver did not get what was expected within {timeout:?}: {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
