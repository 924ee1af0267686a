//! Changing one's mind: rescheduling a message that has not started, retrying one that failed,
//! redriving many, and dry runs that store nothing.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{assert_problem, spawn_app, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(10);

fn at(offset: time::Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn a_scheduled_message_can_be_moved_until_it_starts_sending() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut message = valid_message();
    message["send_at"] = json!(at(time::Duration::hours(2)));
    let id = app.accept(&message).await;
    let token = app.default_token();
    let later = at(time::Duration::hours(5));
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"send_at": later})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let moved: Value = response.json().await.unwrap();
    assert_eq!(moved["status"], "queued");
    let send_at = OffsetDateTime::parse(moved["send_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(
        (send_at - OffsetDateTime::parse(&later, &Rfc3339).unwrap()).abs()
            < time::Duration::seconds(1)
    );

    // Bad times are refused as at send.
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"send_at": "tomorrow"})),
        )
        .await;
    assert_problem(response, 422, "invalid-send-at").await;
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"send_at": at(time::Duration::days(400))})),
        )
        .await;
    assert_problem(response, 422, "send-at-too-far").await;
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"when": "now"})),
        )
        .await;
    assert_problem(response, 422, "invalid-request").await;

    // Another caller's message is not found.
    let other = app.token("other", &[Scope::Send, Scope::Read]);
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &other,
            Some(json!({"send_at": null})),
        )
        .await;
    assert_problem(response, 404, "not-found").await;

    // `null` means now: it goes out.
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"send_at": null})),
        )
        .await;
    assert_eq!(response.status(), 200);
    app.wait_for_status(&id, "sent", WAIT).await;
    let response = app
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{id}"),
            &token,
            Some(json!({"send_at": later})),
        )
        .await;
    let problem = assert_problem(response, 409, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("sent"));
}

#[tokio::test]
async fn a_failed_message_is_retried_in_a_new_series_keeping_its_attempts() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("554 5.7.1 rejected as spam")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.retry_max_attempts = 2).await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    let token = app.default_token();

    // Not this caller's, or not failed: refused.
    let other = app.token("other", &[Scope::Send]);
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/retry"),
            &other,
            None,
        )
        .await;
    assert_problem(response, 404, "not-found").await;

    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/retry"),
            &token,
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"requeued": 1, "skipped": 0})
    );
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the failed attempt is kept: {message:#}");
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(
        app.metric("posthorn_messages_requeued_total", "").await,
        1.0
    );

    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/retry"),
            &token,
            None,
        )
        .await;
    assert_problem(response, 409, "conflict").await;
}

#[tokio::test]
async fn a_new_series_has_its_own_attempts_and_age() {
    // Every attempt is deferred: with two attempts a series fails, and a retry gets two more.
    let smtp = SmtpServer::start_with(Script {
        after_data: std::iter::repeat_n(Action::reply("451 4.3.0 try later"), 10).collect(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.retry_max_attempts = 2).await;
    let id = app.accept(&valid_message()).await;
    let failed = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 2);
    let token = app.default_token();
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/retry"),
            &token,
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let queued = app.message(&id).await;
    assert_ne!(queued["status"], "failed");
    let failed = app.wait_for_status(&id, "failed", WAIT).await;
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{failed:#}");
    assert_eq!(attempts[3]["attempt"], 4);
}

#[tokio::test]
async fn a_redrive_puts_matching_failed_messages_back_and_can_only_count() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "550 5.7.1 rejected by policy",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut failing = valid_message();
    failing["to"] = json!("gone@example.org");
    failing["tags"] = json!(["welcome"]);
    let tagged = app.accept(&failing).await;
    failing["tags"] = json!(["receipt"]);
    let other = app.accept(&failing).await;
    app.wait_for_status(&tagged, "failed", WAIT).await;
    app.wait_for_status(&other, "failed", WAIT).await;
    let sent = app.accept(&valid_message()).await;
    app.wait_for_status(&sent, "sent", WAIT).await;

    let admin = app.token("ops", &[Scope::Admin]);
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/messages/redrive",
            &app.default_token(),
            Some(json!({"status": "failed"})),
        )
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/messages/redrive",
            &admin,
            Some(json!({"status": "sent"})),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid-request").await;
    assert_eq!(problem["field"], "status");

    let dry = app
        .call(
            reqwest::Method::POST,
            "/v1/messages/redrive",
            &admin,
            Some(json!({"status": "failed", "dry_run": true})),
        )
        .await;
    assert_eq!(
        dry.json::<Value>().await.unwrap(),
        json!({"requeued": 2, "skipped": 0, "dry_run": true})
    );
    assert_eq!(
        app.message(&tagged).await["status"],
        "failed",
        "a dry run changes nothing"
    );

    // The recipient is back: the redriven message goes out.
    smtp.script(|script| script.rcpt.clear());
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/messages/redrive",
            &admin,
            Some(json!({
                "status": "failed",
                "tag": "welcome",
                "provider": "default",
                "created_after": at(time::Duration::hours(-1)),
                "created_before": at(time::Duration::hours(1))
            })),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"requeued": 1, "skipped": 0, "dry_run": false})
    );
    app.wait_for_status(&tagged, "sent", WAIT).await;
    assert_eq!(app.message(&other).await["status"], "failed");
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/messages/redrive",
            &admin,
            Some(json!({"status": "failed", "provider": "elsewhere"})),
        )
        .await;
    assert_eq!(response.json::<Value>().await.unwrap()["requeued"], 0);
}

#[tokio::test]
async fn a_retry_after_a_partial_delivery_sends_only_to_those_not_reached() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "450 4.2.1 mailbox busy",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.retry_max_attempts = 2).await;
    let mut message = valid_message();
    message["to"] = json!(["customer@example.org", "gone@example.org"]);
    let id = app.accept(&message).await;
    let done = app.wait_for_status(&id, "failed", WAIT).await;
    // Delivered to the first recipient on the first attempt; the second ran out of attempts.
    assert_eq!(smtp.received().len(), 1, "{done:#}");
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);
    smtp.script(|script| script.rcpt.clear());
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/retry"),
            &app.default_token(),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[1].to,
        ["gone@example.org"],
        "the first recipient is not sent to again"
    );
}

#[tokio::test]
async fn a_dry_run_shows_the_mime_and_provider_and_uses_up_nothing() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut message = valid_message();
    message["bcc"] = json!("audit@example.com");
    let response = app
        .client
        .post(format!("{}/v1/send?dry_run=true", app.address))
        .bearer_auth(app.default_token())
        .header("Idempotency-Key", "dry-1")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let preview: Value = response.json().await.unwrap();
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["provider"], "default");
    let mime = preview["mime"].as_str().unwrap();
    assert!(mime.contains("Subject: Your order"), "{mime}");
    assert!(mime.contains("Thank you for your order."));
    assert!(!mime.contains("audit@example.com"), "Bcc is never a header");
    assert_eq!(
        preview["envelope"],
        json!({"mail_from": "shop@example.com", "rcpt_to": ["customer@example.org", "audit@example.com"]})
    );
    assert_eq!(app.message_count().await, 0);
    // The key was not used up: a real send with it is accepted.
    let real = app
        .send_with(&message, |r| r.header("Idempotency-Key", "dry-1"))
        .await;
    assert_eq!(real.status(), 202);
    assert!(real.headers().get("idempotent-replayed").is_none());

    // Invalid messages are refused as a real send would be.
    let mut bad = valid_message();
    bad["to"] = json!("nope");
    let response = app
        .client
        .post(format!("{}/v1/send?dry_run=true", app.address))
        .bearer_auth(app.default_token())
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-address").await;

    // The raw route too.
    let raw =
        "From: Shop <shop@example.com>\r\nTo: ann@example.org\r\nSubject: Raw\r\n\r\nHello\r\n";
    let response = app.send_raw("?dry_run=true", raw).await;
    assert_eq!(response.status(), 200);
    let preview: Value = response.json().await.unwrap();
    // As it would be relayed: the caller's bytes, with the Message-ID and Date a message lacks.
    let mime = preview["mime"].as_str().unwrap();
    assert!(mime.ends_with(raw), "{mime}");
    assert!(mime.starts_with("Message-ID: <"), "{mime}");
    assert_eq!(preview["envelope"]["rcpt_to"], json!(["ann@example.org"]));
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test]
async fn without_an_upstream_a_dry_run_names_no_provider() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/v1/send?dry_run=true", app.address))
        .bearer_auth(app.default_token())
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["provider"],
        Value::Null
    );
}
