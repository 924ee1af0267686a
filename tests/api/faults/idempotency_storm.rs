//! Many concurrent requests with one Idempotency-Key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::smtp::SmtpServer;
use crate::support::{spawn_delivering_app, valid_message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_requests_with_one_idempotency_key_send_one_email() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let key = format!("storm-{}", uuid::Uuid::new_v4().simple());
    let body = valid_message();
    let token = app.default_token();
    let barrier = Arc::new(tokio::sync::Barrier::new(30));
    let requests: Vec<_> = (0..30)
        .map(|_| {
            let http = app.client.clone();
            let url = format!("{}/send", app.address);
            let key = key.clone();
            let body = body.clone();
            let token = token.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("request completes");
                let status = response.status().as_u16();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, replayed, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every request is answered 202: {statuses:?} {answers:?}"
    );
    let ids: HashSet<&str> = answers
        .iter()
        .filter_map(|(_, _, body)| body["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one id for all: {ids:?}");
    let created = answers.iter().filter(|(_, replayed, _)| !replayed).count();
    assert_eq!(created, 1, "one request created it, the others replayed");

    let id = ids.into_iter().next().unwrap().to_owned();
    app.wait_for_status(&id, "sent", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.received().len(), 1, "exactly one email left");
    assert_eq!(
        app.database.scalar("SELECT count(*) FROM messages").await,
        1
    );
}
