//! Operational endpoints (`/healthz`, `/readyz`, `/metrics`, `/openapi.yaml`) and the answers for paths
//! and methods that do not exist.

use std::time::{Duration, Instant};

use posthorn::app::{Application, open_store};
use posthorn::config::Config;
use posthorn::secret::Secret;
use posthorn::store::SharedStore;
use reqwest::Response;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::database::admin_url;
use crate::support::{
    TestApp, TestDatabase, assert_problem, spawn_app, test_config, valid_message, wait_metrics,
};

/// An application built around a store without running its migrations.
struct BareApp {
    address: String,
    client: reqwest::Client,
    store: SharedStore,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _database: Option<TestDatabase>,
}

impl BareApp {
    fn start(config: Config, database: Option<TestDatabase>) -> Self {
        let settings = config.validate().expect("valid configuration");
        let store = open_store(&settings).expect("store opens");
        let app = Application::build_with_store(settings, store.clone()).expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            address,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            store,
            shutdown,
            task: Some(task),
            _database: database,
        }
    }

    async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("app stops cleanly");
        }
    }
}

impl Drop for BareApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A configuration whose database URL points at `database` on the test server (which need not exist).
fn config_for_database(name: &str) -> Config {
    let mut url = url::Url::parse(&admin_url()).unwrap();
    url.set_path(&format!("/{name}"));
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(Secret::new(url.to_string())),
        jwt_secret: Some(Secret::new(crate::support::JWT_SECRET)),
        shutdown_grace: Duration::from_secs(2),
        // The development profile's SMTP listener is on a fixed port; tests run side by side.
        submission_listen: Some("off".into()),
        ..Config::default()
    }
}

async fn assert_not_ready(response: Response) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .expect("a 503 carries Retry-After");
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s > 0),
        "Retry-After is delay-seconds: {retry_after}"
    );
    assert_problem(response, 503, "unavailable").await;
}

#[tokio::test]
async fn healthz_is_200() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn readyz_is_200_on_a_migrated_database() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn readyz_is_503_until_the_schema_is_migrated() {
    let database = TestDatabase::create_empty().await;
    let config = test_config(&database);
    let app = BareApp::start(config, Some(database));

    assert_not_ready(app.get("/readyz").await).await;
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status(), 200);

    // Readiness is checked on every request: once migrated, the same process is ready.
    app.store.migrate().await.unwrap();
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_last_migration_did_not_succeed() {
    let database = TestDatabase::create().await;
    database
        .execute("UPDATE _sqlx_migrations SET success = false")
        .await;
    let app = BareApp::start(test_config(&database), Some(database));
    assert_not_ready(app.get("/readyz").await).await;
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_the_database_does_not_exist() {
    let name = format!("posthorn_test_missing_{}", uuid::Uuid::new_v4().simple());
    let app = BareApp::start(config_for_database(&name), None);
    let started = Instant::now();
    assert_not_ready(app.get("/readyz").await).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_within_the_acquire_timeout_when_the_server_is_unreachable() {
    let mut config = config_for_database("posthorn");
    // Nothing listens on port 1.
    config.database_url = Some(Secret::new("postgres://postgres@127.0.0.1:1/posthorn"));
    config.database_acquire_timeout = Duration::from_secs(1);
    let app = BareApp::start(config, None);
    let started = Instant::now();
    assert_not_ready(app.get("/readyz").await).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        started.elapsed()
    );
    app.stop().await;
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_accepted_messages_and_requests() {
    let app = spawn_app().await;
    let before = wait_metrics(&app, |_| true).await;
    assert!(
        has_line(&before, "posthorn_messages_accepted_total 0"),
        "{before}"
    );
    assert_eq!(app.send(&valid_message()).await.status(), 202);
    assert_eq!(app.send(&valid_message()).await.status(), 202);
    // A refused message is not counted as accepted.
    let mut invalid = valid_message();
    invalid["to"] = json!("broken@");
    assert_eq!(app.send(&invalid).await.status(), 422);

    let send_202 = r#"posthorn_http_requests_total{endpoint="/send",method="POST",status="202"}"#;
    let send_422 = r#"posthorn_http_requests_total{endpoint="/send",method="POST",status="422"}"#;
    let text = wait_metrics(&app, |t| {
        sample(t, send_202) == Some(2.0) && sample(t, send_422) == Some(1.0)
    })
    .await;
    assert!(
        has_line(&text, "posthorn_messages_accepted_total 2"),
        "{text}"
    );
    assert_eq!(sample(&text, send_202), Some(2.0), "{text}");
    assert_eq!(sample(&text, send_422), Some(1.0), "{text}");
    assert!(text.contains("# TYPE posthorn_http_requests_total counter"));
    assert!(text.contains("posthorn_http_requests_duration_seconds_bucket{"));
}

#[tokio::test]
async fn metrics_label_paths_by_pattern_never_by_raw_path() {
    let app = spawn_app().await;
    let scan = "/wp-admin/scan-7f3a9c.php";
    assert_eq!(app.get(scan).await.status(), 404);
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(app.get(&format!("/v1/messages/{id}")).await.status(), 404);
    assert_eq!(app.get("/v1/messages/not-a-uuid-5b2e").await.status(), 404);

    let unmatched =
        r#"posthorn_http_requests_total{endpoint="UNMATCHED",method="GET",status="404"}"#;
    let by_id =
        r#"posthorn_http_requests_total{endpoint="/v1/messages/{id}",method="GET",status="404"}"#;
    let text = wait_metrics(&app, |t| {
        sample(t, unmatched).is_some() && sample(t, by_id) == Some(2.0)
    })
    .await;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    assert_eq!(sample(&text, by_id), Some(2.0), "{text}");
    for raw in ["scan-7f3a9c", "wp-admin", id.as_str(), "not-a-uuid-5b2e"] {
        assert!(!text.contains(raw), "raw path `{raw}` leaked into metrics");
    }
}

#[tokio::test]
async fn openapi_yaml_is_the_repository_document() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/openapi.yaml", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/yaml"),
        "{content_type}"
    );
    let served = response.bytes().await.unwrap();
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    assert_eq!(served.as_ref(), file.as_slice());
}

#[tokio::test]

async fn openapi_yaml_documents_the_api() {
    let app = spawn_app().await;
    let text = app
        .client
        .get(format!("{}/openapi.yaml", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("openapi: 3."), "{text:.80}");
    for path in ["/send:", "/v1/messages:", "/v1/messages/{id}:", "/readyz:"] {
        assert!(text.contains(path), "documents {path}");
    }
}

#[tokio::test]
async fn an_unknown_path_is_a_404_problem() {
    let app = spawn_app().await;
    for path in ["/nope", "/v2/send", "/v1/messages/", "/send/extra"] {
        assert_problem(app.get(path).await, 404, "not-found").await;
    }
    let response = app
        .client
        .post(format!("{}/v1/nope", app.address))
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not-found").await;
}

async fn request(app: &TestApp, method: reqwest::Method, path: &str) -> Response {
    app.client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(app.default_token())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_wrong_method_on_an_api_resource_is_a_405_problem() {
    use reqwest::Method;
    let app = spawn_app().await;
    let id = "/v1/messages/0192f0c6-0000-7000-8000-000000000000";
    let cases = [
        (Method::GET, "/send"),
        (Method::PUT, "/send"),
        (Method::GET, "/v1/send"),
        (Method::DELETE, "/v1/messages"),
        (Method::POST, "/v1/messages"),
        (Method::PUT, id),
    ];
    for (method, path) in cases {
        let response = request(&app, method.clone(), path).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_problem(response, 405, "method-not-allowed").await;
    }
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    use reqwest::Method;
    let app = spawn_app().await;
    for (method, path, allowed) in [
        (Method::GET, "/send", "POST"),
        (Method::DELETE, "/v1/messages", "GET, HEAD"),
        (Method::POST, "/healthz", "GET, HEAD"),
        (
            Method::GET,
            "/v1/messages/0192f0c6-0000-7000-8000-000000000000/cancel",
            "POST",
        ),
    ] {
        let response = request(&app, method.clone(), path).await;
        assert_eq!(response.status(), 405);
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {path}");
    }
}

#[tokio::test]
async fn a_wrong_method_on_an_operational_endpoint_is_a_405_problem() {
    use reqwest::Method;
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
        let response = request(&app, Method::POST, path).await;
        assert_problem(response, 405, "method-not-allowed").await;
    }
}

#[tokio::test]
async fn head_is_answered_like_get() {
    use reqwest::Method;
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.yaml",
        "/v1/messages",
    ] {
        let response = request(&app, Method::HEAD, path).await;
        assert_eq!(response.status(), 200, "HEAD {path}");
    }
}

#[tokio::test]
async fn an_app_starts_on_a_database_migrated_by_a_newer_release() {
    crate::postgres_only!();
    let database = TestDatabase::create().await;
    let mut connection = database.connect().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000001, 'from the future', true, '\\x00', 1)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    let config = test_config(&database);
    let app = Application::build(config.validate().unwrap()).await;
    assert!(app.is_ok(), "{:#}", app.err().unwrap());
}

#[tokio::test]
async fn send_agrees_with_readyz_when_the_database_does_not_exist() {
    let name = format!("posthorn_test_missing_{}", uuid::Uuid::new_v4().simple());
    let config = config_for_database(&name);
    let token = crate::support::mint(
        &config,
        "tester",
        &[posthorn::auth::Scope::Send],
        Duration::from_secs(600),
    );
    let app = BareApp::start(config, None);
    assert_not_ready(app.get("/readyz").await).await;
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(token)
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "POST /send");
    assert_not_ready(response).await;
    app.stop().await;
}
