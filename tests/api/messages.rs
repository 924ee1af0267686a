//! `GET /v1/messages/{id}` and `GET /v1/messages`: lookups, filters, ordering and cursor pagination.

use std::collections::HashSet;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{TestApp, assert_problem, spawn_app, valid_message};

/// `GET /v1/messages` with query parameters (percent-encoded by the client).
async fn list(app: &TestApp, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/messages", app.address))
        .query(query)
        .bearer_auth(app.default_token())
        .send()
        .await
        .unwrap()
}

/// A page as JSON, asserting 200.
async fn page(app: &TestApp, query: &[(&str, &str)]) -> Value {
    let response = list(app, query).await;
    assert_eq!(response.status(), 200, "listing with {query:?}");
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends a message with `subject` and optional extra fields; returns its id.
async fn send(app: &TestApp, subject: &str, extra: Value) -> String {
    let mut body = valid_message();
    body["subject"] = json!(subject);
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let response = app.send(&body).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339)
        .unwrap_or_else(|_| panic!("not RFC 3339: {value}"))
}

#[tokio::test]
async fn an_unknown_id_is_a_404() {
    let app = spawn_app().await;
    let response = app
        .get("/v1/messages/0192f0c6-0000-7000-8000-000000000000")
        .await;
    assert_problem(response, 404, "not-found").await;
    // An id that exists for nobody looks the same as an id of another caller's message.
    let response = app
        .get(&format!("/v1/messages/{}", uuid::Uuid::new_v4()))
        .await;
    assert_problem(response, 404, "not-found").await;
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_a_404() {
    let app = spawn_app().await;
    send(&app, "exists", json!({})).await;
    for id in [
        "42",
        "not-a-uuid",
        "0192f0c6-0000-7000-8000-00000000000",
        "%27%20OR%201=1",
    ] {
        let response = app.get(&format!("/v1/messages/{id}")).await;
        assert_problem(response, 404, "not-found").await;
    }
}

#[tokio::test]
async fn a_message_reads_back_by_id_in_any_uuid_spelling() {
    let app = spawn_app().await;
    let id = send(&app, "spelled", json!({})).await;
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    for spelling in [
        uuid.hyphenated().to_string(),
        uuid.simple().to_string(),
        uuid.hyphenated().to_string().to_uppercase(),
    ] {
        let message = app.message(&spelling).await;
        assert_eq!(message["id"], id, "{spelling}");
    }
}

#[tokio::test]
async fn the_listing_is_newest_first() {
    let app = spawn_app().await;
    let mut sent = Vec::new();
    for subject in ["first", "second", "third", "fourth"] {
        sent.push(send(&app, subject, json!({})).await);
    }
    let listing = page(&app, &[]).await;
    sent.reverse();
    assert_eq!(ids(&listing), sent);
    let subjects: Vec<&str> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["fourth", "third", "second", "first"]);
    assert_eq!(listing["next_cursor"], Value::Null);
    // Listed items are summaries: they carry no attempts.
    assert!(listing["items"][0].get("attempts").is_none());
    let created: Vec<OffsetDateTime> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| parse_time(&item["created_at"]))
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] >= pair[1]),
        "created_at descends: {created:?}"
    );
}

#[tokio::test]
async fn the_status_filter_selects_by_status() {
    let app = spawn_app().await;
    let a = send(&app, "a", json!({})).await;
    let b = send(&app, "b", json!({})).await;
    let c = send(&app, "c", json!({})).await;
    // Nothing delivers in these tests: mark one as sent directly in the queue.
    app.database
        .execute(&format!(
            "UPDATE messages SET status = 'sent' WHERE id = '{b}'"
        ))
        .await;

    assert_eq!(
        ids(&page(&app, &[("status", "queued")]).await),
        [c.as_str(), a.as_str()]
    );
    assert_eq!(ids(&page(&app, &[("status", "sent")]).await), [b.as_str()]);
    assert_eq!(
        ids(&page(&app, &[("status", "failed")]).await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&page(&app, &[("status", "cancelled")]).await),
        Vec::<String>::new()
    );
    let sent = app.message(&b).await;
    assert_eq!(sent["status"], "sent");
    assert_eq!(
        sent["next_attempt_at"],
        Value::Null,
        "only queued messages have a next attempt"
    );
}

#[tokio::test]
async fn the_tag_filter_selects_messages_carrying_the_tag() {
    let app = spawn_app().await;
    let a = send(&app, "a", json!({"tags": ["order"]})).await;
    let b = send(&app, "b", json!({"tags": ["newsletter", "eu"]})).await;
    let c = send(&app, "c", json!({"tags": ["order", "eu"]})).await;
    let _untagged = send(&app, "d", json!({})).await;

    assert_eq!(
        ids(&page(&app, &[("tag", "order")]).await),
        [c.as_str(), a.as_str()]
    );
    assert_eq!(
        ids(&page(&app, &[("tag", "eu")]).await),
        [c.as_str(), b.as_str()]
    );
    assert_eq!(
        ids(&page(&app, &[("tag", "newsletter")]).await),
        [b.as_str()]
    );
    assert_eq!(
        ids(&page(&app, &[("tag", "ord")]).await),
        Vec::<String>::new(),
        "exact match"
    );
    assert_eq!(
        ids(&page(&app, &[("tag", "order"), ("status", "queued")]).await),
        [c.as_str(), a.as_str()],
        "filters combine"
    );
}

#[tokio::test]
async fn created_after_is_inclusive_and_created_before_exclusive() {
    let app = spawn_app().await;
    let first = send(&app, "first", json!({})).await;
    let second = send(&app, "second", json!({})).await;
    let third = send(&app, "third", json!({})).await;
    let middle = app.message(&second).await["created_at"].clone();
    let middle_text = middle.as_str().unwrap();

    assert_eq!(
        ids(&page(&app, &[("created_after", middle_text)]).await),
        [third.as_str(), second.as_str()]
    );
    assert_eq!(
        ids(&page(&app, &[("created_before", middle_text)]).await),
        [first.as_str()]
    );
    assert_eq!(
        ids(&page(
            &app,
            &[
                ("created_after", middle_text),
                ("created_before", middle_text)
            ]
        )
        .await),
        Vec::<String>::new()
    );

    // The same instant written with another offset selects the same messages.
    let shifted = parse_time(&middle).to_offset(time::macros::offset!(+02:00));
    let shifted = rfc3339(shifted);
    assert!(shifted.ends_with("+02:00"), "{shifted}");
    assert_eq!(
        ids(&page(&app, &[("created_after", &shifted)]).await),
        [third.as_str(), second.as_str()]
    );

    // A window around now holds all three; one in the past holds none.
    let now = OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    assert_eq!(
        ids(&page(
            &app,
            &[
                ("created_after", &rfc3339(now - hour)),
                ("created_before", &rfc3339(now + hour))
            ]
        )
        .await)
        .len(),
        3
    );
    assert_eq!(
        ids(&page(&app, &[("created_before", "2020-01-01T00:00:00Z")]).await),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_cursor_walks_every_message_once() {
    let app = spawn_app().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(&app, &format!("m{i}"), json!({})).await);
    }
    sent.reverse();

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "2".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let listing = page(&app, &query).await;
        let page_ids = ids(&listing);
        sizes.push(page_ids.len());
        seen.extend(page_ids);
        match &listing["next_cursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor: {other}"),
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, sent, "every message once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);

    // A page that ends exactly at the last message has no cursor (no empty page follows).
    let exact = page(&app, &[("limit", "5")]).await;
    assert_eq!(ids(&exact).len(), 5);
    assert_eq!(exact["next_cursor"], Value::Null);
    let partial = page(&app, &[("limit", "4")]).await;
    assert_eq!(ids(&partial).len(), 4);
    assert!(partial["next_cursor"].is_string());
}

#[tokio::test]
async fn the_cursor_respects_the_filters() {
    let app = spawn_app().await;
    let mut tagged = Vec::new();
    for i in 0..4 {
        tagged.push(send(&app, &format!("t{i}"), json!({"tags": ["t"]})).await);
        send(&app, &format!("u{i}"), json!({})).await;
    }
    tagged.reverse();
    let first = page(&app, &[("tag", "t"), ("limit", "3")]).await;
    assert_eq!(ids(&first), tagged[..3]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = page(&app, &[("tag", "t"), ("limit", "3"), ("cursor", cursor)]).await;
    assert_eq!(ids(&second), tagged[3..]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_default_page_is_50_and_the_largest_200() {
    let app = spawn_app().await;
    for i in 0..51 {
        send(&app, &format!("m{i}"), json!({})).await;
    }
    let default = page(&app, &[]).await;
    assert_eq!(ids(&default).len(), 50);
    assert!(default["next_cursor"].is_string());
    let largest = page(&app, &[("limit", "200")]).await;
    assert_eq!(ids(&largest).len(), 51);
    assert_eq!(largest["next_cursor"], Value::Null);
    let one = page(&app, &[("limit", "1")]).await;
    assert_eq!(ids(&one).len(), 1);
}

#[tokio::test]
async fn bad_query_parameters_are_a_400() {
    let app = spawn_app().await;
    let cases: [&[(&str, &str)]; 13] = [
        &[("limit", "0")],
        &[("limit", "201")],
        &[("limit", "abc")],
        &[("limit", "-1")],
        &[("limit", "")],
        &[("status", "bogus")],
        &[("status", "QUEUED")],
        &[("created_after", "yesterday")],
        &[("created_before", "2026-01-01")],
        &[("created_after", "1700000000")],
        &[("cursor", "garbage")],
        &[("unknown", "1")],
        &[("order", "asc")],
    ];
    for query in cases {
        let problem = assert_problem(list(&app, query).await, 400, "invalid-query").await;
        let detail = problem["detail"].as_str().unwrap();
        let name = query[0].0;
        assert!(
            detail.contains(name),
            "{query:?}: detail names `{name}`: {detail}"
        );
    }
}

#[tokio::test]
async fn a_scheduled_message_is_queued_until_its_send_at() {
    let app = spawn_app().await;
    let at = (OffsetDateTime::now_utc() + time::Duration::hours(3))
        .replace_nanosecond(0)
        .unwrap();
    let at_text = rfc3339(at);
    let id = send(&app, "later", json!({"send_at": at_text})).await;
    let message = app.message(&id).await;
    assert_eq!(message["status"], "queued");
    assert_eq!(parse_time(&message["send_at"]), at);
    assert_eq!(parse_time(&message["next_attempt_at"]), at);
    assert_eq!(message["send_at"], at_text);
    assert_eq!(message["sent_at"], Value::Null);
    assert_eq!(message["attempt_count"], 0);

    let listed = page(&app, &[("status", "queued")]).await;
    assert_eq!(listed["items"][0]["id"], id);
    assert_eq!(parse_time(&listed["items"][0]["next_attempt_at"]), at);

    // A message without send_at is due at once.
    let now_id = send(&app, "now", json!({})).await;
    let message = app.message(&now_id).await;
    assert_eq!(message["send_at"], Value::Null);
    let due = parse_time(&message["next_attempt_at"]);
    let created = parse_time(&message["created_at"]);
    assert!(
        (due - created).abs() < time::Duration::seconds(1),
        "due {due} vs created {created}"
    );
}

#[tokio::test]
async fn a_send_at_with_an_offset_is_the_same_instant() {
    let app = spawn_app().await;
    let at = (OffsetDateTime::now_utc() + time::Duration::days(2))
        .replace_nanosecond(0)
        .unwrap()
        .to_offset(time::macros::offset!(-05:30));
    let id = send(&app, "offset", json!({"send_at": rfc3339(at)})).await;
    let message = app.message(&id).await;
    assert_eq!(parse_time(&message["send_at"]), at);
    assert_eq!(parse_time(&message["next_attempt_at"]), at);
}
