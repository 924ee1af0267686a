//! Shared test support: a spawned application on a fresh database, token minting and HTTP helpers.

pub mod database;
pub mod load;
pub mod peers;
pub mod postfix;
pub mod private_pg;
pub mod process;
pub mod smtp;
pub mod smtp_client;
pub mod webhooks;

use std::time::Duration;

use posthorn::app::Application;
use posthorn::auth::{Authenticator, Scope};
use posthorn::config::Config;
use posthorn::secret::Secret;
use posthorn::store::StoreSettings;
use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use database::TestDatabase;

/// The HS256 secret every test app is configured with.
pub const JWT_SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// A running application on its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The configuration it runs with.
    pub config: Config,
    /// Its database (dropped with the app).
    pub database: TestDatabase,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The SMTP submission ports (STARTTLS listener, implicit TLS listener), when configured.
    pub submission: (Option<u16>, Option<u16>),
    /// The bounce listener's port, when configured.
    pub bounce_port: Option<u16>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The configuration tests start from: port 0, the test secret, a test database.
///
/// The production profile: without an upstream, messages wait in the queue (no outbox), and nothing is
/// generated into a data directory.
pub fn test_config(database: &TestDatabase) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        profile: posthorn::config::Profile::Production,
        data_dir: std::env::temp_dir().join(format!(
            "posthorn-test-data-{}",
            uuid::Uuid::new_v4().simple()
        )),
        database_url: Some(Secret::new(database.url())),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Spawns an app with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after letting the test adjust its configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create().await;
    let mut config = test_config(&database);
    adjust(&mut config);
    start(config, database).await
}

/// Starts an application on an existing database.
pub async fn start(config: Config, database: TestDatabase) -> TestApp {
    let settings = config.validate().expect("test configuration is valid");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let submission = app.submission_ports();
    let bounce_port = app.bounce_port();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        config,
        database,
        submission,
        bounce_port,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client builds"),
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    /// Stops the application and starts a new one on the same database (and a new port).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let config = self.config.clone();
        let database = self.database.take();
        start(config, database).await
    }

    /// Stops the application gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("app task joins")
                .expect("app stops cleanly");
        }
    }

    /// A token for `sub` with `scopes`, valid for an hour.
    pub fn token(&self, sub: &str, scopes: &[Scope]) -> String {
        mint(&self.config, sub, scopes, Duration::from_secs(3600))
    }

    /// A token with the send and read scopes for caller `tester`.
    pub fn default_token(&self) -> String {
        self.token("tester", &[Scope::Send, Scope::Read])
    }

    /// `POST /send` with a JSON body and the default token.
    pub async fn send(&self, body: &Value) -> Response {
        self.send_with(body, |request| request).await
    }

    /// `POST /send` with a JSON body, the default token, and the request adjusted by the test.
    pub async fn send_with(
        &self,
        body: &Value,
        adjust: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        let request = self
            .client
            .post(format!("{}/send", self.address))
            .bearer_auth(self.default_token())
            .json(body);
        adjust(request).send().await.expect("request completes")
    }

    /// `GET path` with the default token.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(self.default_token())
            .send()
            .await
            .expect("request completes")
    }

    /// `GET /v1/messages/{id}` as JSON, asserting 200.
    pub async fn message(&self, id: &str) -> Value {
        let response = self.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(response.status(), 200, "GET message {id}");
        response.json().await.expect("JSON body")
    }

    /// How many messages the default caller can list (up to 200).
    pub async fn message_count(&self) -> usize {
        let page: Value = self
            .get("/v1/messages?limit=200")
            .await
            .json()
            .await
            .expect("JSON body");
        page["items"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Spawns an app that delivers to `smtp` with settings that make tests fast: short polls, short
/// retries, short timeouts.
pub async fn spawn_delivering_app(
    smtp: &smtp::SmtpServer,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let url = smtp.url();
    spawn_app_with(move |config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(url));
        adjust(config);
    })
    .await
}

/// Delivery settings for tests: everything happens within a second or two.
pub fn fast_delivery(config: &mut Config) {
    config.poll_interval = Duration::from_millis(100);
    config.retry_initial_delay = Duration::from_millis(200);
    config.retry_max_delay = Duration::from_millis(400);
    config.smtp_timeout = Some(Duration::from_secs(1));
    config.lease_duration = Duration::from_secs(10);
    config.workers = 2;
}

impl TestApp {
    /// Waits until the message has `status`, returning it; panics after `timeout`.
    pub async fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        wait_for_status(status, timeout, || self.message(id), String::new).await
    }

    /// Sends `body`, asserts 202 and returns the id.
    pub async fn accept(&self, body: &Value) -> String {
        let response = self.send(body).await;
        assert_eq!(response.status(), 202, "send was not accepted");
        let body: Value = response.json().await.expect("JSON body");
        body["id"].as_str().expect("id").to_owned()
    }

    /// `POST /v1/send/raw` (with `query`, e.g. `?dry_run=true`) of `message` as the default caller.
    pub async fn send_raw(&self, query: &str, message: &str) -> Response {
        self.client
            .post(format!("{}/v1/send/raw{query}", self.address))
            .bearer_auth(self.default_token())
            .header("content-type", "message/rfc822")
            .body(message.to_owned())
            .send()
            .await
            .expect("request completes")
    }

    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        scrape(&self.client, &self.address).await
    }

    /// The value of an unlabelled metric, or of the series whose labels contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        process::labelled_sample(&self.metrics_text().await, name, labels).unwrap_or(0.0)
    }

    /// `METHOD path` with `token` and, if given, a JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request completes")
    }

    /// The JSON body of `GET path` with `token`.
    pub async fn get_json_as(&self, path: &str, token: &str) -> Value {
        self.call(reqwest::Method::GET, path, token, None)
            .await
            .json()
            .await
            .expect("a JSON body")
    }

    /// `POST /send` with `body` and `token`.
    pub async fn send_as(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/send", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request completes")
    }
}

/// A token for `sub` with `scopes`, valid for `ttl`, signed with the keys `config` names (and carrying
/// its issuer and audience).
pub fn mint(config: &Config, sub: &str, scopes: &[Scope], ttl: Duration) -> String {
    let settings = config.validate().expect("configuration with a token key");
    Authenticator::new(settings.auth)
        .mint(sub, scopes, ttl, None)
        .expect("token mints")
}

/// Store settings for the database at `url`, keeping idempotency keys for `retention`.
pub fn store_settings(url: &str, retention: Duration) -> StoreSettings {
    StoreSettings {
        url: Secret::new(url),
        max_connections: 5,
        acquire_timeout: Duration::from_secs(5),
        idempotency_retention: retention,
    }
}

/// `/metrics` of the server at `address`, as text.
pub async fn scrape(client: &reqwest::Client, address: &str) -> String {
    client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// `/metrics` text once `check` holds (or after 5 s); HTTP samples are recorded when a response body
/// completes, so the last request's sample may trail its response by a moment.
pub async fn wait_metrics(app: &TestApp, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let text = response.text().await.expect("metrics text");
        if check(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `fetch` (a message as JSON) until it has `status`, returning it; panics after `timeout` with
/// the message and `context` (a process's log, say).
pub async fn wait_for_status<F, Fut>(
    status: &str,
    timeout: Duration,
    mut fetch: F,
    context: impl Fn() -> String,
) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = fetch().await;
        if message["status"] == status {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {} did not become {status} within {timeout:?}: {message:#}\n{}",
            message["id"],
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal valid message.
pub fn valid_message() -> Value {
    json!({
        "from": "Shop <shop@example.com>",
        "to": "customer@example.org",
        "subject": "Your order",
        "text": "Thank you for your order."
    })
}

/// A TOML configuration file with `contents`, removed when dropped.
pub fn toml_file(contents: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("a temporary file");
    file.write_all(contents.as_bytes()).expect("written");
    file.flush().expect("flushed");
    file
}

/// Asserts a problem+json response with `status` and the problem `slug`; returns the body.
pub async fn assert_problem(response: Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(
        body["type"],
        format!("urn:posthorn:problem:{slug}"),
        "problem type in {body}"
    );
    assert_eq!(body["status"], status);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}
