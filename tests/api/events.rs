//! Events: written with each change, shown with the message, and a feed that yields every event
//! exactly once, even one whose transaction commits after a later-numbered one.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::database::is_postgres;
use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{TestApp, assert_problem, spawn_app, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(10);

async fn feed(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/events{query}"),
            token,
            None,
        )
        .await;
    assert_eq!(response.status(), 200, "GET /v1/events{query}");
    response.json().await.unwrap()
}

fn types(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows the feed from `cursor` until `count` events came (or the wait ends); the events and where
/// the feed stands.
async fn follow(app: &TestApp, token: &str, cursor: &str, count: usize) -> (Vec<Value>, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut cursor = cursor.to_owned();
    let mut events = Vec::new();
    while events.len() < count && tokio::time::Instant::now() < deadline {
        let query = if cursor.is_empty() {
            String::new()
        } else {
            format!("?cursor={cursor}")
        };
        let page = feed(app, token, &query).await;
        events.extend(page["items"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if events.len() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (events, cursor)
}

#[tokio::test]
async fn every_change_is_an_event_on_the_message_and_in_the_feed() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "550 5.1.1 no such user",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let token = app.default_token();
    let mut message = valid_message();
    message["to"] = json!(["customer@example.org", "gone@example.org"]);
    let id = app.accept(&message).await;
    let sent = app.wait_for_status(&id, "sent", WAIT).await;
    let events = sent["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["email.accepted", "email.sent", "email.failed"],
        "{sent:#}"
    );
    assert_eq!(events[0]["data"]["message_id"], id);
    assert_eq!(events[0]["data"]["caller"], "tester");
    assert_eq!(events[1]["data"]["recipient"], "customer@example.org");
    assert_eq!(events[1]["data"]["smtp"]["code"], 250);
    assert_eq!(events[1]["data"]["provider"], "default");
    assert_eq!(events[2]["data"]["recipient"], "gone@example.org");
    assert_eq!(events[2]["data"]["smtp"]["code"], 550);
    assert!(
        events[2]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("no such user")
    );
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));

    // The same three in the feed, once each.
    let (all, cursor) = follow(&app, &token, "", 3).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["id"], events[2]["id"]);
    let again = feed(&app, &token, &format!("?cursor={cursor}")).await;
    assert_eq!(again["items"], json!([]));
    assert_eq!(
        again["next_cursor"], cursor,
        "an empty page keeps the cursor"
    );

    // Filters.
    let sent_only = feed(&app, &token, "?type=email.sent&type=email.failed").await;
    assert_eq!(types(&sent_only), ["email.sent", "email.failed"]);
    let by_message = feed(&app, &token, &format!("?message_id={id}&limit=1")).await;
    assert_eq!(types(&by_message), ["email.accepted"]);
    let rest = feed(
        &app,
        &token,
        &format!(
            "?message_id={id}&cursor={}",
            by_message["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(types(&rest), ["email.sent", "email.failed"]);

    // Another caller sees none of them; an admin sees them all.
    let other = app.token("other", &[Scope::Read]);
    assert_eq!(feed(&app, &other, "").await["items"], json!([]));
    let admin = app.token("ops", &[Scope::Admin]);
    assert_eq!(
        feed(&app, &admin, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    for bad in [
        "?type=email.opened",
        "?cursor=nope",
        "?limit=0",
        "?limit=5&limit=6",
        "?colour=red",
    ] {
        let response = app
            .call(
                reqwest::Method::GET,
                &format!("/v1/events{bad}"),
                &token,
                None,
            )
            .await;
        assert_problem(response, 400, "invalid-query").await;
    }
    let writer = app.token("writer", &[Scope::Send]);
    let response = app
        .call(reqwest::Method::GET, "/v1/events", &writer, None)
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
}

#[tokio::test]
async fn delays_schedules_and_cancels_are_events() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("451 4.3.0 try later")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let sent = app.wait_for_status(&id, "sent", WAIT).await;
    let events = sent["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["email.accepted", "email.delivery_delayed", "email.sent"]
    );
    assert_eq!(events[1]["data"]["smtp"]["code"], 451);
    assert!(events[1]["data"]["next_attempt_at"].is_string());

    let app = spawn_app().await;
    let mut far = valid_message();
    far["send_at"] = json!(
        (time::OffsetDateTime::now_utc() + time::Duration::days(2))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let id = app.accept(&far).await;
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/messages/{id}/cancel"),
            &app.default_token(),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let message = app.message(&id).await;
    let kinds: Vec<&str> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["email.accepted", "email.scheduled", "email.cancelled"]
    );
    assert_eq!(message["events"][1]["data"]["send_at"], far["send_at"]);
}

#[tokio::test]
async fn an_event_that_commits_late_is_not_passed_over() {
    if !is_postgres() {
        // One writer at a time: SQLite commits events in id order.
        return;
    }
    let app = spawn_app().await;
    let token = app.default_token();
    let first = app.accept(&valid_message()).await;
    let (seen, cursor) = follow(&app, &token, "", 1).await;
    assert_eq!(seen[0]["data"]["message_id"], first);

    // A transaction writes an event and stays open while another message commits.
    let mut slow = app.database.connect().await;
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query(
        "INSERT INTO events (message_id, caller, type) VALUES ('01a24928-5d9e-70c2-a96d-002cb7929b1c', 'tester', 'email.accepted')",
    )
    .execute(&mut slow)
    .await
    .unwrap();
    let second = app.accept(&valid_message()).await;
    let waiting = feed(&app, &token, &format!("?cursor={cursor}")).await;
    assert_eq!(
        waiting["items"],
        json!([]),
        "the later commit waits for the open transaction"
    );
    assert_eq!(waiting["next_cursor"], cursor);
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    let (late, _) = follow(&app, &token, &cursor, 2).await;
    let ids: Vec<&str> = late
        .iter()
        .map(|event| event["data"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["01a24928-5d9e-70c2-a96d-002cb7929b1c", second.as_str()]
    );
}
