//! `POST /v1/send/raw`: a complete message over HTTP, through the same accept path.

use std::time::Duration;

use serde_json::Value;

use super::MESSAGE;
use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, assert_problem, spawn_delivering_app};

async fn post_raw(app: &TestApp, query: &str, content_type: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/send/raw{query}", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("request completes")
}

#[tokio::test]
async fn a_complete_message_is_accepted_and_relayed_with_its_headers() {
    let upstream = SmtpServer::start().await;
    let app = spawn_delivering_app(&upstream, |_| {}).await;
    let message = MESSAGE.replace(
        "Subject:",
        "Cc: Bo <bo@example.org>\r\nBcc: hidden@example.org\r\nSubject:",
    );
    let response = post_raw(&app, "", "message/rfc822", &message).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = app
        .wait_for_status(&id, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(shown["source"], "raw");
    assert_eq!(shown["subject"], "Your order");
    let mail = &upstream.received()[0];
    assert_eq!(
        mail.to,
        vec!["ann@example.org", "bo@example.org", "hidden@example.org"]
    );
    assert!(mail.header("Bcc").is_none());
    assert_eq!(mail.header("Cc").as_deref(), Some("Bo <bo@example.org>"));
}

#[tokio::test]
async fn to_parameters_name_the_recipients_and_unix_line_endings_are_taken() {
    let upstream = SmtpServer::start().await;
    let app = spawn_delivering_app(&upstream, |_| {}).await;
    let unix = MESSAGE.replace("\r\n", "\n");
    let response = post_raw(&app, "?to=ops@example.org", "message/rfc822", &unix).await;
    assert_eq!(response.status(), 202);
    let mail = upstream.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(mail[0].to, vec!["ops@example.org"]);
    assert!(String::from_utf8_lossy(&mail[0].raw).contains("Subject: Your order\r\n"));
}

#[tokio::test]
async fn what_is_not_a_message_is_refused() {
    let app = crate::support::spawn_app().await;
    assert_problem(
        post_raw(&app, "", "application/json", MESSAGE).await,
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        post_raw(&app, "?cc=x@example.org", "message/rfc822", MESSAGE).await,
        400,
        "invalid-query",
    )
    .await;
    let mixed = MESSAGE.replacen("\r\n", "\n", 1);
    assert_problem(
        post_raw(&app, "", "message/rfc822", &mixed).await,
        422,
        "invalid-field",
    )
    .await;
    let no_from = "To: ann@example.org\r\n\r\nhi\r\n";
    assert_problem(
        post_raw(&app, "", "message/rfc822", no_from).await,
        422,
        "invalid-address",
    )
    .await;
    assert_eq!(app.message_count().await, 0);
}
