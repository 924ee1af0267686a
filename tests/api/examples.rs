//! The client examples in `examples/clients/` (curl, Python's requests, Node's fetch, Go's net/http,
//! Java's java.net.http, and Nodemailer over SMTP submission), each run as a user would run it against
//! a spawned gateway: each message arrives. The caller's quota is one request every two seconds and
//! is spent just before each HTTP example starts, so each one's first attempt is answered `429` and it
//! must wait out `Retry-After` and send again (with the same `Idempotency-Key`). Once, on PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::json;

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, valid_message};

const WAIT: Duration = Duration::from_secs(20);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clients")
}

/// Runs `command` off the test's runtime, with the gateway's address, the token and the recipient.
async fn run(mut command: Command, app: &TestApp, token: &str, to: &str) -> Output {
    command
        .env("POSTHORN_URL", &app.address)
        .env("POSTHORN_TOKEN", token)
        .env("TO", to)
        .current_dir(examples());
    tokio::task::spawn_blocking(move || command.output().expect("the example runs"))
        .await
        .unwrap()
}

/// Uses up the caller's quota, so the next request is answered 429.
async fn spend_quota(app: &TestApp, token: &str) {
    let mut message = valid_message();
    message["subject"] = json!("quota");
    let response = app.send_as(token, &message).await;
    assert!(
        response.status() == 202 || response.status() == 429,
        "{}",
        response.status()
    );
}

async fn assert_arrived(
    app: &TestApp,
    smtp: &SmtpServer,
    output: &Output,
    to: &str,
    subject: &str,
) {
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{subject}: {stdout}\n{stderr}");
    let id = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "{subject} printed its id: {stdout}"
    );
    let admin = app.token("ops", &[Scope::Admin]);
    let path = format!("/v1/messages/{id}");
    let message = crate::support::wait_for_status(
        "sent",
        WAIT,
        || app.get_json_as(&path, &admin),
        String::new,
    )
    .await;
    assert_eq!(message["subject"], subject);
    let arrived = smtp
        .received()
        .into_iter()
        .filter(|mail| mail.to == [to])
        .count();
    assert_eq!(
        arrived, 1,
        "{subject}: once, though it was sent twice over HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_example_sends_a_message_that_arrives() {
    crate::postgres_only!();
    let smtp = SmtpServer::start().await;
    // The examples' caller may make one request every two seconds; the test reads as another caller.
    let app = crate::submission::spawn(&smtp, |config| {
        config.callers = vec![posthorn::config::CallerConfig {
            sub: "examples".into(),
            disabled: false,
            sender_domains: Vec::new(),
            rate_limit: Some(0.5),
            rate_limit_burst: Some(1),
            revoked_tokens: Vec::new(),
        }];
    })
    .await;
    let token = app.token("examples", &[Scope::Send]);
    let python = std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // Go and Java compile first, so that each one's first request goes out at once.
    let build = tempfile::tempdir().unwrap();
    let go_binary = build.path().join("send-go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&go_binary)
        .arg("send.go")
        .current_dir(examples())
        .env("GOCACHE", build.path().join("gocache"))
        .env("GOPATH", build.path().join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .output()
        .expect("go runs (./scripts/test.sh installs golang-go)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let compiled = Command::new("javac")
        .args(["-d"])
        .arg(build.path())
        .arg("Send.java")
        .current_dir(examples())
        .output()
        .expect("javac runs (./scripts/test.sh installs default-jdk-headless)");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );

    let limited_before = app.metric("posthorn_rate_limited_total", "").await;
    let http: Vec<(&str, &str, Command)> = vec![
        (
            "curl@example.org",
            "Hello from curl",
            Command::new("./send.sh"),
        ),
        ("python@example.org", "Hello from Python", {
            let mut command = Command::new(&python);
            command.arg("send.py");
            command
        }),
        ("node@example.org", "Hello from Node", {
            let mut command = Command::new("node");
            command.arg("send.mjs");
            command
        }),
        ("go@example.org", "Hello from Go", Command::new(&go_binary)),
        ("java@example.org", "Hello from Java", {
            let mut command = Command::new("java");
            command.arg("-cp").arg(build.path()).arg("Send");
            command
        }),
    ];
    let count = http.len();
    for (to, subject, command) in http {
        spend_quota(&app, &token).await;
        let output = run(command, &app, &token, to).await;
        assert_arrived(&app, &smtp, &output, to, subject).await;
    }
    let limited = app.metric("posthorn_rate_limited_total", "").await - limited_before;
    assert!(
        limited >= count as f64,
        "each example met a 429 and waited it out: {limited} refusals for {count} examples"
    );

    // Nodemailer over SMTP submission.
    let node_path = std::env::var("POSTHORN_TEST_NODE_PATH")
        .expect("POSTHORN_TEST_NODE_PATH: ./scripts/test.sh installs Nodemailer");
    let mut command = Command::new("node");
    command
        .arg("smtp.cjs")
        .env("NODE_PATH", &node_path)
        .env("POSTHORN_SMTP_HOST", "127.0.0.1")
        .env(
            "POSTHORN_SMTP_PORT",
            crate::submission::port(&app).to_string(),
        )
        .env("POSTHORN_SMTP_USER", "examples");
    let output = run(command, &app, &token, "nodemailer@example.org").await;
    assert_arrived(
        &app,
        &smtp,
        &output,
        "nodemailer@example.org",
        "Hello from Nodemailer",
    )
    .await;
}
