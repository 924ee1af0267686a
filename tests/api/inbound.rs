//! Providers' notifications: SES (through SNS, its signature checked against a certificate fetched
//! from an allowed place) and Postmark (its webhook secret), each naming a message by its Message-ID.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::peers::free_port;
use crate::support::{TestApp, assert_problem, spawn_app_with, valid_message};

/// A certificate and its key, and a plain HTTP server handing out the certificate (SNS's role).
struct FakeSns {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
}

impl FakeSns {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=sns.test",
            ])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(dir.path().join("confirm"), "confirmed").unwrap();
        let port = free_port();
        let python = std::env::var("POSTHORN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let server = Command::new(python)
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { dir, server, port }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Signs `text` with the key (SHA256withRSA, SNS's signature version 2), by openssl.
    fn sign(&self, text: &str) -> String {
        let file = self.dir.path().join("to-sign");
        std::fs::write(&file, text).unwrap();
        let output = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.dir.path().join("key.pem"))
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success());
        base64::engine::general_purpose::STANDARD.encode(output.stdout)
    }

    /// An SNS notification carrying `message`, signed.
    fn notification(&self, message: &Value) -> Value {
        let message = message.to_string();
        let timestamp = "2026-12-06T10:00:00.000Z";
        let topic = "arn:aws:sns:eu-west-1:123456789012:ses-bounces";
        let text = format!(
            "Message\n{message}\nMessageId\nm-1\nTimestamp\n{timestamp}\nTopicArn\n{topic}\nType\nNotification\n"
        );
        json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": topic,
            "Message": message,
            "Timestamp": timestamp,
            "SignatureVersion": "2",
            "Signature": self.sign(&text),
            "SigningCertURL": format!("{}cert.pem", self.base()),
            "UnsubscribeURL": "https://sns.example/unsubscribe"
        })
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the certificate server did not start");
    }
}

impl Drop for FakeSns {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

async fn post(app: &TestApp, path: &str, body: &Value, auth: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "Notification")
        .body(body.to_string());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

fn kinds(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn ses_bounces_and_complaints_arrive_through_signed_sns_notifications() {
    let sns = FakeSns::start();
    let base = sns.base();
    let app = spawn_app_with(|config| config.sns_cert_urls = Some(base.clone())).await;
    sns.wait_ready().await;
    let id = app.accept(&valid_message()).await;
    let message_id = app.message(&id).await["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bounce = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "customer@example.org", "status": "5.1.1",
                                          "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"messageId": "0100018c-ses", "commonHeaders": {"messageId": message_id}}
    });
    let response = post(&app, "/v1/inbound/ses", &sns.notification(&bounce), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "recorded"
    );
    let complaint = json!({
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "customer@example.org"}],
                      "complaintFeedbackType": "abuse"},
        "mail": {"commonHeaders": {"messageId": message_id}}
    });
    let response = post(&app, "/v1/inbound/ses", &sns.notification(&complaint), None).await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "recorded"
    );
    let message = app.message(&id).await;
    assert_eq!(
        kinds(&message),
        ["email.accepted", "email.bounced", "email.complained"]
    );
    assert_eq!(message["events"][1]["data"]["source"], "ses");
    let list: Value = app
        .get_json_as("/v1/suppressions", &app.default_token())
        .await;
    assert_eq!(
        list["items"][0]["reason"], "hard_bounce",
        "the first report decides: {list}"
    );

    // A forged or altered notification is refused; so is a certificate from elsewhere.
    let mut altered = sns.notification(&bounce);
    altered["Message"] = json!(
        altered["Message"]
            .as_str()
            .unwrap()
            .replace("Permanent", "Transient")
    );
    assert_problem(
        post(&app, "/v1/inbound/ses", &altered, None).await,
        403,
        "invalid-signature",
    )
    .await;
    let mut elsewhere = sns.notification(&bounce);
    elsewhere["SigningCertURL"] = json!("https://evil.example/cert.pem");
    assert_problem(
        post(&app, "/v1/inbound/ses", &elsewhere, None).await,
        403,
        "invalid-signature",
    )
    .await;
    assert_problem(
        post(
            &app,
            "/v1/inbound/ses",
            &json!({"Type": "Notification"}),
            None,
        )
        .await,
        422,
        "invalid-request",
    )
    .await;

    // A subscription is confirmed by fetching its SubscribeURL.
    let token = "token-1";
    let subscribe = format!("{base}confirm");
    let text = format!(
        "Message\nYou have chosen to subscribe\nMessageId\nm-2\nSubscribeURL\n{subscribe}\nTimestamp\n2026-12-06T10:00:00.000Z\nToken\n{token}\nTopicArn\narn:aws:sns:eu-west-1:1:t\nType\nSubscriptionConfirmation\n"
    );
    let confirmation = json!({
        "Type": "SubscriptionConfirmation", "MessageId": "m-2", "Token": token,
        "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": "You have chosen to subscribe",
        "SubscribeURL": subscribe, "Timestamp": "2026-12-06T10:00:00.000Z",
        "SignatureVersion": "2", "Signature": sns.sign(&text),
        "SigningCertURL": format!("{base}cert.pem")
    });
    let response = post(&app, "/v1/inbound/ses", &confirmation, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "confirmed"
    );

    // A notification about no message posthorn knows is answered, not retried.
    let mut unknown = bounce.clone();
    unknown["mail"]["commonHeaders"]["messageId"] = json!("<nobody@example.com>");
    let response = post(&app, "/v1/inbound/ses", &sns.notification(&unknown), None).await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "unmatched"
    );
}

#[tokio::test]
async fn postmark_webhooks_carry_their_secret() {
    let secret = "postmark-secret-0123456789";
    let app = spawn_app_with(|config| {
        config.postmark_webhook_secret = Some(posthorn::secret::Secret::new(secret));
    })
    .await;
    let id = app.accept(&valid_message()).await;
    let message_id = app.message(&id).await["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bounce = json!({
        "RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "MessageID": message_id,
        "Email": "customer@example.org", "Details": "smtp;550 5.1.1 The email account does not exist",
        "BouncedAt": "2026-12-06T10:00:00Z"
    });
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("postmark:{secret}"))
    );
    let response = post(&app, "/v1/inbound/postmark", &bounce, Some(&basic)).await;
    assert_eq!(response.status(), 415, "JSON only");
    let response = app
        .client
        .post(format!("{}/v1/inbound/postmark", app.address))
        .header("authorization", &basic)
        .json(&bounce)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "recorded"
    );
    let message = app.message(&id).await;
    assert_eq!(kinds(&message), ["email.accepted", "email.bounced"]);
    assert_eq!(message["events"][1]["data"]["source"], "postmark");

    let wrong = app
        .client
        .post(format!("{}/v1/inbound/postmark", app.address))
        .basic_auth("postmark", Some("not-the-secret-at-all"))
        .json(&bounce)
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 403, "invalid-signature").await;

    let off = spawn_app_with(|_| {}).await;
    let response = off
        .client
        .post(format!("{}/v1/inbound/postmark", off.address))
        .json(&bounce)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not-found").await;
}
