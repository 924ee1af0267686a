//! Retention (bodies dropped, then rows deleted, only once finished) and erasing a recipient's data.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{
    TestApp, assert_problem, spawn_delivering_app, valid_message, wait_for_status,
};

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `check` holds for the message (or it is gone, when `check` accepts `None`).
async fn wait_until(
    app: &TestApp,
    id: &str,
    check: impl Fn(Option<&Value>) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app.get(&format!("/v1/messages/{id}")).await;
        let message = match response.status().as_u16() {
            200 => Some(response.json::<Value>().await.unwrap()),
            404 => None,
            status => panic!("GET message: {status}"),
        };
        if check(message.as_ref()) {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message never reached the expected state: {message:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn finished_messages_lose_their_bodies_then_their_rows_and_the_queue_keeps_its_own() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.retention_bodies = Duration::from_secs(1);
        config.retention_messages = Duration::from_secs(4);
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let id = app.accept(&valid_message()).await;
    // A message still waiting to be sent keeps everything, however old.
    let mut later = valid_message();
    later["send_at"] = json!(
        (time::OffsetDateTime::now_utc() + time::Duration::days(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let waiting = app.accept(&later).await;
    app.wait_for_status(&id, "sent", WAIT).await;

    let dropped = wait_until(&app, &id, |m| {
        m.is_some_and(|m| m["body_dropped_at"].is_string())
    })
    .await
    .unwrap();
    assert_eq!(dropped["status"], "sent");
    assert_eq!(
        dropped["attempts"].as_array().unwrap().len(),
        1,
        "attempts stay with the row"
    );
    wait_until(&app, &id, |m| m.is_none()).await;
    assert!(
        app.metric("posthorn_retention_total", "action=\"bodies_dropped\"")
            .await
            >= 1.0
    );
    assert!(
        app.metric("posthorn_retention_total", "action=\"messages_deleted\"")
            .await
            >= 1.0
    );
    let kept = app.message(&waiting).await;
    assert_eq!(kept["status"], "queued");
    assert!(kept.get("body_dropped_at").is_none());
}

#[tokio::test]
async fn a_failed_message_without_its_body_is_skipped_by_a_retry() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("554 5.7.1 rejected")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.retention_bodies = Duration::from_secs(1);
        config.retention_interval = Duration::from_millis(200);
    })
    .await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    wait_until(&app, &id, |m| {
        m.is_some_and(|m| m["body_dropped_at"].is_string())
    })
    .await;
    let response = app
        .client
        .post(format!("{}/v1/messages/{id}/retry", app.address))
        .bearer_auth(app.default_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"requeued": 0, "skipped": 1})
    );
    assert_eq!(app.message(&id).await["status"], "failed");
}

#[tokio::test]
async fn erasing_a_recipient_removes_their_messages_and_redacts_shared_ones() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut alone = valid_message();
    alone["to"] = json!("Ann Example <Ann@Example.org>");
    let alone = app.accept(&alone).await;
    let mut shared = valid_message();
    shared["to"] = json!(["ann@example.org", "bob@example.org"]);
    shared["cc"] = json!("carol@example.org");
    let shared = app.accept(&shared).await;
    let unrelated = app.accept(&valid_message()).await;
    for id in [&alone, &shared, &unrelated] {
        app.wait_for_status(id, "sent", WAIT).await;
    }

    let url = format!("{}/v1/recipients/ann@example.org", app.address);
    let response = app
        .client
        .delete(&url)
        .bearer_auth(app.default_token())
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "insufficient-scope").await;
    let admin = app.token("ops", &[Scope::Admin]);
    let response = app
        .client
        .delete(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"address": "ann@example.org", "removed": 1, "redacted": 1})
    );

    let response = app.get(&format!("/v1/messages/{alone}")).await;
    assert_eq!(response.status(), 404);
    let redacted = app.message(&shared).await;
    let text = redacted.to_string().to_lowercase();
    assert!(!text.contains("ann@example.org"), "{redacted:#}");
    assert_eq!(redacted["to"], json!([{"address": "bob@example.org"}]));
    assert_eq!(redacted["cc"], json!([{"address": "carol@example.org"}]));
    assert!(
        redacted["body_dropped_at"].is_string(),
        "a finished message loses its body"
    );
    let recipients = redacted["attempts"][0]["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 2);
    assert_eq!(app.message(&unrelated).await["status"], "sent");

    // Again: nothing left to erase.
    let response = app
        .client
        .delete(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"address": "ann@example.org", "removed": 0, "redacted": 0})
    );
    let response = app
        .client
        .delete(format!("{}/v1/recipients/not-an-address", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid-address").await;
}

#[tokio::test]
async fn an_erased_recipient_is_not_sent_a_queued_message_shared_with_others() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut shared = valid_message();
    shared["to"] = json!(["ann@example.org", "bob@example.org"]);
    shared["send_at"] = json!(
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let id = app.accept(&shared).await;
    let admin = app.token("ops", &[Scope::Admin]);
    let response = app
        .client
        .delete(format!("{}/v1/recipients/ann@example.org", app.address))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"address": "ann@example.org", "removed": 0, "redacted": 1})
    );
    let sent = wait_for_status("sent", WAIT, || app.message(&id), String::new).await;
    assert!(
        sent.get("body_dropped_at").is_none(),
        "still needed for bob"
    );
    let received = smtp.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, ["bob@example.org"]);
    assert!(!received[0].data().contains("ann@example.org"));
}
