//! `Idempotency-Key` on `POST /send`: a retried request is answered from the first one, exactly one message
//! is stored, and a key never silently stands for two different requests.

use std::sync::Arc;

use posthorn::auth::Scope;
use reqwest::Response;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app, valid_message};

const KEY: &str = "Idempotency-Key";

async fn send_with_key(app: &TestApp, key: &str, body: &Value) -> Response {
    app.send_with(body, |request| request.header(KEY, key))
        .await
}

/// Sends a raw JSON text (to control key order and spacing) with a key.
async fn send_raw_with_key(app: &TestApp, key: &str, body: &str) -> Response {
    app.client
        .post(format!("{}/send", app.address))
        .bearer_auth(app.default_token())
        .header("content-type", "application/json")
        .header(KEY, key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// `POST /send` as the holder of `token`, with a key.
async fn send_as(app: &TestApp, token: &str, key: &str, body: &Value) -> Response {
    app.client
        .post(format!("{}/send", app.address))
        .bearer_auth(token)
        .header(KEY, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Asserts a 202 and returns `(id, replayed)`.
async fn accepted(response: Response) -> (String, bool) {
    assert_eq!(response.status(), 202, "expected 202");
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/messages/{id}"));
    assert_eq!(body["status"], "queued");
    match replayed.as_deref() {
        None => (id, false),
        Some("true") => (id, true),
        Some(other) => panic!("Idempotent-Replayed: {other}"),
    }
}

async fn sql_count(app: &TestApp, table: &str) -> i64 {
    app.database
        .scalar(&format!("SELECT count(*) FROM {table}"))
        .await
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_replays_the_first_answer() {
    let app = spawn_app().await;
    let (first, replayed) = accepted(send_with_key(&app, "order-42", &valid_message()).await).await;
    assert!(!replayed, "a first request is not a replay");
    for _ in 0..2 {
        let (again, replayed) =
            accepted(send_with_key(&app, "order-42", &valid_message()).await).await;
        assert_eq!(again, first);
        assert!(replayed, "the retry carries Idempotent-Replayed: true");
    }
    assert_eq!(app.message_count().await, 1);
    assert_eq!(sql_count(&app, "messages").await, 1);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 1);

    // Only the first request counted as an accepted message.
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "posthorn_messages_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "posthorn_idempotent_replays_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn key_order_and_whitespace_do_not_make_a_different_body() {
    let app = spawn_app().await;
    let compact = r#"{"from":"shop@example.com","to":["a@example.org","b@example.org"],"subject":"Hi","text":"Body","metadata":{"x":"1","y":"2"}}"#;
    let reordered = r#"
        {
            "text" : "Body",
            "metadata" : { "y" : "2", "x" : "1" },
            "subject" : "Hi",
            "to" : [ "a@example.org", "b@example.org" ],
            "from" : "shop@example.com"
        }
    "#;
    let (first, _) = accepted(send_raw_with_key(&app, "k-reorder", compact).await).await;
    let (second, replayed) = accepted(send_raw_with_key(&app, "k-reorder", reordered).await).await;
    assert_eq!(second, first);
    assert!(replayed);
    assert_eq!(app.message_count().await, 1);
    assert_eq!(sql_count(&app, "messages").await, 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_a_422() {
    let app = spawn_app().await;
    let (first, _) = accepted(send_with_key(&app, "k-diff", &valid_message()).await).await;

    let mut changed = valid_message();
    changed["subject"] = json!("Your order (corrected)");
    assert_problem(
        send_with_key(&app, "k-diff", &changed).await,
        422,
        "idempotency-key-reused",
    )
    .await;
    // Array order is significant: a reordered recipient list is a different request.
    let mut body = valid_message();
    body["to"] = json!(["a@example.org", "b@example.org"]);
    accepted(send_with_key(&app, "k-list", &body).await).await;
    body["to"] = json!(["b@example.org", "a@example.org"]);
    assert_problem(
        send_with_key(&app, "k-list", &body).await,
        422,
        "idempotency-key-reused",
    )
    .await;

    // The refusal changed nothing: the original still replays.
    let (again, replayed) = accepted(send_with_key(&app, "k-diff", &valid_message()).await).await;
    assert_eq!(again, first);
    assert!(replayed);
    assert_eq!(sql_count(&app, "messages").await, 2);
    assert_eq!(app.message(&first).await["subject"], "Your order");
}

#[tokio::test]
async fn keys_are_scoped_per_caller() {
    let app = spawn_app().await;
    let token = |sub: &str| app.token(sub, &[Scope::Send, Scope::Read]);
    let (alice_token, bob_token) = (token("alice"), token("bob"));
    let alice = accepted(send_as(&app, &alice_token, "shared", &valid_message()).await).await;
    let bob = accepted(send_as(&app, &bob_token, "shared", &valid_message()).await).await;
    assert!(!alice.1 && !bob.1, "neither is a replay");
    assert_ne!(alice.0, bob.0, "bob's request is his own message");

    // A different body under the same key is fine for another caller too.
    let mut other = valid_message();
    other["subject"] = json!("carol's");
    let carol = accepted(send_as(&app, &token("carol"), "shared", &other).await).await;
    assert!(!carol.1);

    let alice_again = accepted(send_as(&app, &alice_token, "shared", &valid_message()).await).await;
    assert_eq!(alice_again, (alice.0, true));
    assert_eq!(sql_count(&app, "messages").await, 3);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 3);
}

#[tokio::test]
async fn a_key_may_be_255_characters_but_not_256() {
    let app = spawn_app().await;
    let longest = "k".repeat(255);
    let (_, replayed) = accepted(send_with_key(&app, &longest, &valid_message()).await).await;
    assert!(!replayed);
    let (_, replayed) = accepted(send_with_key(&app, &longest, &valid_message()).await).await;
    assert!(replayed, "the 255-character key was stored whole");

    let too_long = "k".repeat(256);
    assert_problem(
        send_with_key(&app, &too_long, &valid_message()).await,
        400,
        "invalid-idempotency-key",
    )
    .await;
    // A 256-character key that shares the first 255 characters must not be truncated into a replay.
    assert_eq!(sql_count(&app, "messages").await, 1);
}

#[tokio::test]
async fn empty_and_non_printable_keys_are_a_400() {
    let app = spawn_app().await;
    let values = [
        HeaderValue::from_static(""),
        HeaderValue::from_str("tab\there").unwrap(),
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        HeaderValue::from_bytes(b"obs\xfftext").unwrap(),
    ];
    for value in values {
        let response = app
            .send_with(&valid_message(), |request| {
                request.header(KEY, value.clone())
            })
            .await;
        let problem = assert_problem(response, 400, "invalid-idempotency-key").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{value:?}: {problem}"
        );
    }
    assert_eq!(sql_count(&app, "messages").await, 0);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_create_one_message() {
    const N: usize = 25;
    let app = spawn_app().await;
    let url = format!("{}/send", app.address);
    let token = app.default_token();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let client = app.client.clone();
        let url = url.clone();
        let token = token.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = client
                .post(url)
                .bearer_auth(token)
                .header(KEY, "race")
                .json(&valid_message())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await.unwrap();
            (status, replayed, body)
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for task in tasks {
        let (status, replayed, body) = task.await.unwrap();
        match status {
            202 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
                if !replayed {
                    fresh += 1;
                }
            }
            409 => assert_eq!(body["type"], "urn:posthorn:problem:conflict", "{body}"),
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 202 names the same message: {ids:?}");
    assert_eq!(fresh, 1, "exactly one answer is not a replay");
    assert_eq!(sql_count(&app, "messages").await, 1);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 1);
    let id = ids.into_iter().next().unwrap();
    app.message(&id).await;
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_key() {
    let app = spawn_app().await;

    // Invalid message, malformed JSON, wrong content type: all refused before the key is recorded.
    let mut no_recipient = valid_message();
    no_recipient.as_object_mut().unwrap().remove("to");
    assert_problem(
        send_with_key(&app, "k-retry", &no_recipient).await,
        422,
        "no-recipients",
    )
    .await;
    assert_problem(
        send_raw_with_key(&app, "k-retry", "{\"from\": ").await,
        400,
        "malformed-json",
    )
    .await;
    let response = app
        .client
        .post(format!("{}/send", app.address))
        .bearer_auth(app.default_token())
        .header(KEY, "k-retry")
        .header("content-type", "text/plain")
        .body(valid_message().to_string())
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported-media-type").await;
    // Without the send scope, the key is not even looked at.
    let read_only = app.token("tester", &[Scope::Read]);
    let response = send_as(&app, &read_only, "k-retry", &valid_message()).await;
    assert_problem(response, 403, "insufficient-scope").await;
    assert_eq!(sql_count(&app, "idempotency_keys").await, 0);

    let (id, replayed) = accepted(send_with_key(&app, "k-retry", &valid_message()).await).await;
    assert!(
        !replayed,
        "the corrected request is the first use of the key"
    );
    assert_eq!(app.message(&id).await["subject"], "Your order");
    assert_eq!(sql_count(&app, "messages").await, 1);
}

#[tokio::test]
async fn requests_without_a_key_are_never_deduplicated() {
    let app = spawn_app().await;
    let (a, _) = accepted(app.send(&valid_message()).await).await;
    let (b, replayed) = accepted(app.send(&valid_message()).await).await;
    assert_ne!(a, b);
    assert!(!replayed);
    assert_eq!(sql_count(&app, "messages").await, 2);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 0);
}

async fn age_keys(app: &TestApp, hours: i32) {
    let mut connection = app.database.connect().await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $1)")
        .bind(hours)
        .execute(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_is_remembered_for_the_retention_period_and_then_free_again() {
    crate::postgres_only!();
    let app = spawn_app().await;
    assert_eq!(app.config.idempotency_retention.as_secs(), 24 * 3600);
    let (first, _) = accepted(send_with_key(&app, "k-old", &valid_message()).await).await;

    // Within the retention period the key still replays.
    age_keys(&app, 23).await;
    let (again, replayed) = accepted(send_with_key(&app, "k-old", &valid_message()).await).await;
    assert_eq!((again.as_str(), replayed), (first.as_str(), true));

    // Past it, the same request is a new message, and the key now stands for that one.
    age_keys(&app, 25).await;
    let (second, replayed) = accepted(send_with_key(&app, "k-old", &valid_message()).await).await;
    assert_ne!(second, first);
    assert!(!replayed);
    let (again, replayed) = accepted(send_with_key(&app, "k-old", &valid_message()).await).await;
    assert_eq!((again.as_str(), replayed), (second.as_str(), true));

    // An expired key may also carry a different body.
    age_keys(&app, 25).await;
    let mut changed = valid_message();
    changed["subject"] = json!("another order");
    let (third, replayed) = accepted(send_with_key(&app, "k-old", &changed).await).await;
    assert!(!replayed);
    assert_eq!(app.message(&third).await["subject"], "another order");

    assert_eq!(sql_count(&app, "messages").await, 3);
    assert_eq!(sql_count(&app, "idempotency_keys").await, 1);
}
