//! A 202 is a promise: the message is committed before the answer, and it survives a restart.

use std::time::{Duration, Instant};

use posthorn::app::{Application, open_store};
use posthorn::auth::Scope;
use posthorn::config::Config;
use posthorn::secret::Secret;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::{JWT_SECRET, assert_problem, spawn_app, valid_message};

async fn accepted_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_accepted_message_survives_a_restart_unchanged() {
    let app = spawn_app().await;
    let body = json!({
        "from": "Shop <shop@example.com>",
        "to": ["a@example.org", "Bee <b@example.org>"],
        "cc": "c@example.org",
        "subject": "Grüße, order 42",
        "text": "plain",
        "html": "<p>html</p>",
        "tags": ["order"],
        "metadata": {"order_id": "42"}
    });
    let id = accepted_id(app.send(&body).await).await;
    let before = app.message(&id).await;

    let app = app.restart().await;
    let after = app.message(&id).await;
    assert_eq!(after, before, "the stored message reads back the same");
    assert_eq!(after["subject"], "Grüße, order 42");
    assert_eq!(after["status"], "queued");
    assert_eq!(app.message_count().await, 1);

    // The restarted app keeps accepting, and listing order still holds across the restart.
    let newer = accepted_id(app.send(&valid_message()).await).await;
    let page: Value = app.get("/v1/messages").await.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], newer);
    assert_eq!(page["items"][1]["id"], id);
}

#[tokio::test]
async fn an_idempotency_key_outlives_a_restart() {
    let app = spawn_app().await;
    let key = |request: reqwest::RequestBuilder| request.header("Idempotency-Key", "durable-1");
    let id = accepted_id(app.send_with(&valid_message(), key).await).await;
    let app = app.restart().await;
    let response = app.send_with(&valid_message(), key).await;
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(accepted_id(response).await, id);
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrently_accepted_messages_all_survive_a_restart() {
    const N: usize = 20;
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let client = app.client.clone();
        let url = format!("{}/send", app.address);
        let token = app.default_token();
        let mut body = valid_message();
        body["subject"] = json!(format!("message {i}"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (i, accepted_id(response).await)
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        accepted.push(task.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = accepted.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), N, "every message got its own id");

    let app = app.restart().await;
    for (i, id) in &accepted {
        let message = app.message(id).await;
        assert_eq!(message["subject"], format!("message {i}"));
    }
    assert_eq!(app.message_count().await, N);
}

#[tokio::test]
async fn a_202_is_only_given_after_the_commit() {
    crate::postgres_only!();
    let app = spawn_app().await;
    // A separate session, opened before the request: it sees only committed rows.
    let mut observer = app.database.connect().await;
    for i in 0..10 {
        let mut body = valid_message();
        body["subject"] = json!(format!("committed {i}"));
        let id = accepted_id(app.send(&body).await).await;
        let row = sqlx::query(
            "SELECT status, caller, envelope->>'subject' AS subject FROM messages WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_optional(&mut observer)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("message {id} answered 202 but is not committed"));
        assert_eq!(row.get::<String, _>("status"), "queued");
        assert_eq!(row.get::<String, _>("caller"), "tester");
        assert_eq!(row.get::<String, _>("subject"), format!("committed {i}"));
    }
}

#[tokio::test]
async fn with_the_database_unreachable_send_is_a_prompt_503() {
    // Built around the store, as `serve` would migrate first and fail.
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Nothing listens on port 1.
        database_url: Some(Secret::new("postgres://postgres@127.0.0.1:1/posthorn")),
        database_acquire_timeout: Duration::from_secs(1),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        shutdown_grace: Duration::from_secs(2),
        // The development profile's SMTP listener is on a fixed port; tests run side by side.
        submission_listen: Some("off".into()),
        ..Config::default()
    };
    let token = crate::support::mint(&config, "tester", &[Scope::Send], Duration::from_secs(600));
    let settings = config.validate().unwrap();
    let store = open_store(&settings).unwrap();
    let app = Application::build_with_store(settings, store).unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());

    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{address}/send"))
        .bearer_auth(token)
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        response.headers().contains_key("retry-after"),
        "a 503 says when to retry"
    );
    assert_problem(response, 503, "unavailable").await;
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_completed() {
    let mut app = spawn_app().await;
    let body = valid_message().to_string().into_bytes();
    let (head, tail) = body.split_at(body.len() / 2);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let request = tokio::spawn(
        app.client
            .post(format!("{}/send", app.address))
            .bearer_auth(app.default_token())
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    sender.send(Ok(head.to_vec())).await.unwrap();
    // The server is now reading the body when the shutdown begins; the rest arrives during the grace period.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let finish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send(Ok(tail.to_vec())).await.unwrap();
        drop(sender);
    };
    tokio::join!(app.stop(), finish);

    let response = request
        .await
        .unwrap()
        .expect("the in-flight request gets an answer");
    let id = accepted_id(response).await;
    let stored = app
        .database
        .scalar(&format!("SELECT count(*) FROM messages WHERE id = '{id}'"))
        .await;
    assert_eq!(stored, 1, "the 202 given during shutdown was committed");
}
