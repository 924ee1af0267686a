//! The Resend dialect, driven by Resend's own SDKs (Node's `resend` from npm, Python's from PyPI)
//! pointed at posthorn with their documented variables and otherwise unchanged; and its error shape.

use std::process::Command;
use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, spawn_app, spawn_delivering_app};

/// Runs a program to completion, asserting it succeeded; its stdout as JSON.
fn run_json(command: &mut Command) -> Value {
    let output = command.output().expect("the SDK program runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn node_path() -> String {
    std::env::var("POSTHORN_TEST_NODE_PATH").unwrap_or_else(|_| {
        panic!("POSTHORN_TEST_NODE_PATH is not set: run ./scripts/test.sh (it installs the SDK)")
    })
}

fn python() -> String {
    std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn key(app: &TestApp) -> String {
    app.token("tester", &[Scope::Send, Scope::Read])
}

const NODE: &str = r#"
const { Resend } = require("resend");
const resend = new Resend(process.env.POSTHORN_KEY);
const email = {
  from: "Acme <shop@example.com>",
  to: ["ann@example.org"],
  cc: "cc@example.org",
  replyTo: "help@example.com",
  subject: "Hello from Node",
  html: "<p>Hi Ann</p>",
  text: "Hi Ann",
  headers: { "X-Entity-Ref-ID": "42" },
  tags: [{ name: "category", value: "welcome" }],
  attachments: [{ filename: "notes.txt", content: Buffer.from("some notes") }],
};
(async () => {
  const out = {};
  out.send = await resend.emails.send(email, { idempotencyKey: "node-1" });
  out.again = await resend.emails.send(email, { idempotencyKey: "node-1" });
  out.scheduled = await resend.emails.send({ ...email, subject: "Later", scheduledAt: "in 1 hour" });
  out.batch = await resend.batch.send([
    { from: "shop@example.com", to: "bob@example.org", subject: "Batch one", text: "one" },
    { from: "shop@example.com", to: "cy@example.org", subject: "Batch two", html: "<b>two</b>" },
  ]);
  out.badBatch = await resend.batch.send([
    { from: "shop@example.com", to: "bob@example.org", subject: "ok", text: "ok" },
    { from: "shop@example.com", to: "not an address", subject: "bad", text: "bad" },
  ]);
  out.permissive = await resend.batch.send([
    { from: "shop@example.com", to: "bob@example.org", subject: "kept", text: "kept" },
    { from: "shop@example.com", to: "not an address", subject: "bad", text: "bad" },
  ], { batchValidation: "permissive" });
  const id = out.scheduled.data.id;
  out.get = await resend.emails.get(id);
  out.update = await resend.emails.update({ id, scheduledAt: new Date(Date.now() + 2 * 3600e3).toISOString() });
  out.cancel = await resend.emails.cancel(id);
  out.afterCancel = await resend.emails.get(id);
  out.cancelAgain = await resend.emails.cancel(id);
  out.invalid = await resend.emails.send({ from: "nobody", to: "x@example.org", subject: "x", text: "x" });
  out.missing = await resend.emails.get("01a24928-5d9e-70c2-a96d-002cb7929b1c");
  for (const value of Object.values(out)) delete value.headers;
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(error); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_sends_batches_gets_reschedules_and_cancels() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let out = run_json(
        Command::new("node")
            .env("NODE_PATH", node_path())
            .env("RESEND_BASE_URL", &app.address)
            .env("POSTHORN_KEY", key(&app))
            .args(["-e", NODE]),
    );
    assert_eq!(out["send"]["error"], Value::Null, "{out:#}");
    let id = out["send"]["data"]["id"].as_str().unwrap();
    assert_eq!(
        out["again"]["data"]["id"], id,
        "the idempotency key replays"
    );

    // Sent as posthorn sends any message.
    let sent = app
        .wait_for_status(id, "sent", Duration::from_secs(10))
        .await;
    assert_eq!(sent["tags"], json!(["category=welcome"]));
    assert_eq!(sent["reply_to"], json!([{"address": "help@example.com"}]));
    let mail = smtp
        .received()
        .into_iter()
        .find(|mail| mail.header("Subject").as_deref() == Some("Hello from Node"))
        .expect("delivered");
    assert_eq!(mail.to, ["ann@example.org", "cc@example.org"]);
    assert_eq!(mail.header("X-Entity-Ref-ID").as_deref(), Some("42"));
    assert!(mail.data().contains("notes.txt"));

    let batch = out["batch"]["data"]["data"].as_array().unwrap();
    assert_eq!(batch.len(), 2, "{out:#}");
    let second = app.message(batch[1]["id"].as_str().unwrap()).await;
    assert_eq!(second["subject"], "Batch two");

    // Strict by default: nothing of a batch with a bad item.
    assert_eq!(out["badBatch"]["data"], Value::Null);
    assert_eq!(out["badBatch"]["error"]["name"], "validation_error");
    assert_eq!(out["badBatch"]["error"]["statusCode"], 422);
    assert!(
        out["badBatch"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("emails[1]")
    );
    let permissive = &out["permissive"]["data"];
    assert_eq!(permissive["data"].as_array().unwrap().len(), 1);
    assert_eq!(permissive["errors"][0]["index"], 1);

    let got = &out["get"]["data"];
    assert_eq!(got["object"], "email");
    assert_eq!(got["subject"], "Later");
    assert_eq!(got["from"], "Acme <shop@example.com>");
    assert_eq!(got["to"], json!(["ann@example.org"]));
    assert_eq!(got["html"], "<p>Hi Ann</p>");
    assert_eq!(got["last_event"], "scheduled");
    assert_eq!(
        got["tags"],
        json!([{"name": "category", "value": "welcome"}])
    );
    assert_eq!(out["update"]["data"]["object"], "email");
    assert_eq!(out["cancel"]["data"]["id"], got["id"]);
    assert_eq!(out["afterCancel"]["data"]["last_event"], "canceled");
    assert_eq!(out["cancelAgain"]["error"]["statusCode"], 422);

    assert_eq!(out["invalid"]["error"]["name"], "invalid_from_address");
    assert_eq!(out["invalid"]["error"]["statusCode"], 422);
    assert_eq!(out["missing"]["error"]["name"], "not_found");
    assert_eq!(out["missing"]["error"]["statusCode"], 404);
    let scheduled = app.message(got["id"].as_str().unwrap()).await;
    assert_eq!(scheduled["status"], "cancelled");
}

const PYTHON: &str = r#"
import json, os, resend
from datetime import datetime, timedelta, timezone
resend.api_key = os.environ["POSTHORN_KEY"]
out = {}
email = {
    "from": "Acme <shop@example.com>",
    "to": ["ann@example.org"],
    "reply_to": "help@example.com",
    "subject": "Hello from Python",
    "html": "<p>Hi</p>",
    "tags": [{"name": "category", "value": "receipt"}],
    "attachments": [{"filename": "a.txt", "content": list(b"hello")}],
}
out["send"] = resend.Emails.send(email, {"idempotency_key": "py-1"})
out["again"] = resend.Emails.send(email, {"idempotency_key": "py-1"})
out["scheduled"] = resend.Emails.send({**email, "subject": "Later", "scheduled_at": "in 2 days"})
out["batch"] = resend.Batch.send([
    {"from": "shop@example.com", "to": ["bob@example.org"], "subject": "one", "text": "one"},
    {"from": "shop@example.com", "to": ["cy@example.org"], "subject": "two", "text": "two"},
])
sid = out["scheduled"]["id"]
out["get"] = resend.Emails.get(sid)
later = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
out["update"] = resend.Emails.update({"id": sid, "scheduled_at": later})
out["cancel"] = resend.Emails.cancel(sid)
try:
    resend.Emails.send({"from": "shop@example.com", "to": ["x@example.org"], "subject": "x"})
    out["error"] = None
except resend.exceptions.ResendError as error:
    out["error"] = {"code": error.code, "type": error.error_type, "message": error.message,
                    "class": type(error).__name__}
resend.api_key = "not-a-token"
try:
    resend.Emails.get(sid)
    out["denied"] = None
except resend.exceptions.ResendError as error:
    out["denied"] = {"code": error.code, "type": error.error_type, "class": type(error).__name__}
for value in out.values():
    if isinstance(value, dict):
        value.pop("http_headers", None)
print(json.dumps(out, default=str))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_batches_gets_reschedules_and_cancels() {
    let app = spawn_app().await;
    let out = run_json(
        Command::new(python())
            .env("RESEND_API_URL", &app.address)
            .env("POSTHORN_KEY", key(&app))
            .args(["-c", PYTHON]),
    );
    let id = out["send"]["id"].as_str().unwrap();
    assert_eq!(out["again"]["id"], id);
    let message = app.message(id).await;
    assert_eq!(message["subject"], "Hello from Python");
    assert_eq!(message["tags"], json!(["category=receipt"]));
    assert_eq!(out["batch"]["data"].as_array().unwrap().len(), 2);
    assert_eq!(out["get"]["subject"], "Later");
    assert_eq!(out["get"]["last_event"], "scheduled");
    assert_eq!(out["update"]["object"], "email");
    assert_eq!(out["cancel"]["object"], "email");
    let scheduled = app.message(out["scheduled"]["id"].as_str().unwrap()).await;
    assert_eq!(scheduled["status"], "cancelled");
    assert_eq!(
        out["error"],
        json!({"code": 422, "type": "validation_error", "class": "ValidationError",
               "message": "at least one of text or html is required"})
    );
    assert_eq!(out["denied"]["code"], 403);
    assert_eq!(out["denied"]["type"], "invalid_api_key");
    assert_eq!(out["denied"]["class"], "InvalidApiKeyError");
}

#[tokio::test]
async fn errors_on_resend_routes_are_resend_s_and_posthorn_s_routes_keep_theirs() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/emails", app.address))
        .json(&json!({"from": "shop@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 401);
    assert_eq!(body["name"], "missing_api_key");
    assert!(body["message"].as_str().is_some());

    let token = key(&app);
    let send = |body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let response = app
                .client
                .post(format!("{}/emails", app.address))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, body) = send(json!({"to": "a@example.org", "subject": "x", "text": "x"})).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (422, Some("missing_required_field"))
    );
    let (status, body) = send(
        json!({"from": "shop@example.com", "to": "a@example.org", "text": "x", "topic_id": "t"}),
    )
    .await;
    assert_eq!(
        (status, body["name"].as_str()),
        (422, Some("validation_error"))
    );
    assert!(body["message"].as_str().unwrap().contains("topic_id"));
    let (status, body) = send(json!({"from": "shop@example.com", "to": "a@example.org", "text": "x", "scheduled_at": "someday"})).await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("scheduled_at"));
    let (status, body) =
        send(json!({"from": "shop@example.com", "to": "a@example.org", "text": "x"})).await;
    assert_eq!(status, 200);
    assert!(body["id"].is_string());
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");

    let response = app
        .client
        .delete(format!(
            "{}/emails/{}",
            app.address,
            body["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["name"], "method_not_allowed");

    // posthorn's own routes still answer 202 and problem+json.
    let response = app
        .client
        .post(format!("{}/v1/send", app.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
