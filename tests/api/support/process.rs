//! The real binary as a child process: a clean environment, logs captured to files, killed on drop.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use posthorn::auth::Scope;
use posthorn::config::Config;
use posthorn::secret::Secret;
use serde_json::Value;

use super::JWT_SECRET;
use super::peers::free_port;

/// `posthorn` with an empty environment but `PATH`, and no stdin.
pub fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_posthorn"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    command
}

/// A token for caller `sub` with `scopes`, signed with `secret`, valid for ten minutes.
pub fn token_with(secret: &str, sub: &str, scopes: &[Scope]) -> String {
    let config = Config {
        jwt_secret: Some(Secret::new(secret)),
        ..Config::default()
    };
    super::mint(&config, sub, scopes, Duration::from_secs(600))
}

/// A token for caller `sub` with `scopes`, signed with the secret [`Posthorn::spawn`] configures.
pub fn token(sub: &str, scopes: &[Scope]) -> String {
    token_with(JWT_SECRET, sub, scopes)
}

/// The value of the series `name` in Prometheus text whose labels contain `labels` (any series of
/// `name` when `labels` is empty).
pub fn labelled_sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let series = line.split(' ').next().unwrap_or("");
            (series == name || series.starts_with(&format!("{name}{{"))) && series.contains(labels)
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The value of an unlabelled sample in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

/// The environment of a process on `database` delivering to `smtp` within a second or two (a 1 s SMTP
/// timeout, a 6 s lease, 100 ms polls, retries after 200 ms, two workers): the counterpart of
/// [`super::fast_delivery`] for the binary. Later entries override these.
pub fn delivering(
    database: &super::TestDatabase,
    smtp: &super::smtp::SmtpServer,
) -> Vec<(&'static str, String)> {
    vec![
        ("POSTHORN_DATABASE_URL", database.url()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        ("POSTHORN_SMTP_TIMEOUT", "1s".to_owned()),
        ("POSTHORN_LEASE_DURATION", "6s".to_owned()),
        ("POSTHORN_POLL_INTERVAL", "100ms".to_owned()),
        ("POSTHORN_RETRY_INITIAL_DELAY", "200ms".to_owned()),
        ("POSTHORN_WORKERS", "2".to_owned()),
    ]
}

/// The real binary, `posthorn serve`, with JSON logs captured to files, and SIGKILL on drop.
pub struct Posthorn {
    child: Child,
    /// `http://host:port`
    pub address: String,
    logs: tempfile::TempDir,
}

impl Posthorn {
    /// Starts `posthorn serve` in the production profile with the test JWT secret, JSON logs at
    /// `info` and a 2 s shutdown grace, listening on a free port; `env` adds or overrides variables.
    pub fn spawn(env: &[(&str, String)]) -> Self {
        let mut settings = vec![
            ("POSTHORN_PROFILE", "production".to_owned()),
            ("POSTHORN_JWT_SECRET", JWT_SECRET.to_owned()),
            ("POSTHORN_LOG_FORMAT", "json".to_owned()),
            ("POSTHORN_LOG", "info".to_owned()),
            ("POSTHORN_SHUTDOWN_GRACE", "2s".to_owned()),
        ];
        settings.extend(env.iter().cloned());
        Self::start(command(), &settings)
    }

    /// Starts `posthorn serve` in `dir` with nothing set but JSON logs, the listen address and `env`
    /// (the first run of a new user).
    pub fn spawn_in(dir: &Path, env: &[(&str, String)]) -> Self {
        // No SMTP listener on the development profile's fixed port: tests run side by side.
        let mut settings = vec![
            ("POSTHORN_LOG_FORMAT", "json".to_owned()),
            ("POSTHORN_SUBMISSION_LISTEN", "off".to_owned()),
        ];
        settings.extend(env.iter().cloned());
        let mut command = command();
        command.current_dir(dir);
        Self::start(command, &settings)
    }

    /// `POSTHORN_LISTEN` from `env`, or a free port on 127.0.0.1.
    fn start(mut command: Command, env: &[(&str, String)]) -> Self {
        let listen = env
            .iter()
            .rev()
            .find(|(name, _)| *name == "POSTHORN_LISTEN")
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let logs = tempfile::tempdir().expect("temp dir");
        let stdout = File::create(logs.path().join("stdout.log")).expect("stdout log");
        let stderr = File::create(logs.path().join("stderr.log")).expect("stderr log");
        command.arg("serve").env("POSTHORN_LISTEN", &listen);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start posthorn");
        Self {
            child,
            address: format!("http://{listen}"),
            logs,
        }
    }

    /// Everything the process wrote to stderr (its JSON log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout.log")).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("posthorn exited ({status}):\n{}", self.stderr());
        }
    }

    /// Waits until `path` answers `status`, or panics after `timeout`.
    pub async fn wait_for(&mut self, path: &str, status: u16, timeout: Duration) {
        let client = client();
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if let Ok(response) = client.get(format!("{}{path}", self.address)).send().await
                && response.status() == status
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer {status} within {timeout:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&mut self) {
        self.wait_for("/readyz", 200, Duration::from_secs(30)).await;
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit.
    pub async fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        super::scrape(&client(), &self.address).await
    }

    /// An unlabelled metric's value (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        sample(&text, name).unwrap_or(0.0)
    }

    /// `POST /send` with `token`.
    pub async fn post(&self, token: &str, body: &Value) -> reqwest::Response {
        client()
            .post(format!("{}/send", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request completes")
    }

    /// `POST /send`, asserting 202; the id.
    pub async fn accept(&self, token: &str, body: &Value) -> String {
        let response = self.post(token, body).await;
        assert_eq!(response.status(), 202, "{}", self.stderr());
        let body: Value = response.json().await.expect("JSON");
        body["id"].as_str().expect("id").to_owned()
    }

    /// `GET /v1/messages/{id}` as JSON.
    pub async fn message(&self, token: &str, id: &str) -> Value {
        self.get_json(token, &format!("/v1/messages/{id}")).await
    }

    /// `GET path` with `token`, asserting 200; the JSON body.
    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        let response = client()
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request completes");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// Waits until the message has `status`, returning it.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        super::wait_for_status(
            status,
            timeout,
            || self.message(token, id),
            || self.stderr(),
        )
        .await
    }
}

impl Drop for Posthorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
