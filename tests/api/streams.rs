//! Streams: a message is `transactional` (the default) or `broadcast`, by its JSON field or its
//! `X-Posthorn-Stream` header (which never reaches the recipient); routes may match on it. That
//! transactional work is claimed first is shown by the store's conformance suite.

use std::time::Duration;

use posthorn::config::{ProviderConfig, RouteConfig, RouteMatchConfig};
use posthorn::secret::Secret;
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::{assert_problem, fast_delivery, spawn_app_with, valid_message};

const WAIT: Duration = Duration::from_secs(10);

fn provider(url: String) -> ProviderConfig {
    ProviderConfig::new(Secret::new(url))
}

#[tokio::test]
async fn a_message_s_stream_is_kept_routes_match_on_it_and_its_header_is_never_sent() {
    let transactional = SmtpServer::start().await;
    let bulk = SmtpServer::start().await;
    let (transactional_url, bulk_url) = (transactional.url(), bulk.url());
    let app = spawn_app_with(move |config| {
        fast_delivery(config);
        config.provider_order = vec!["ses".into(), "bulk".into()];
        config.providers = [
            ("ses".to_owned(), provider(transactional_url)),
            ("bulk".to_owned(), provider(bulk_url)),
        ]
        .into();
        config.routes = vec![
            RouteConfig {
                conditions: RouteMatchConfig {
                    stream: vec!["broadcast".into()],
                    ..RouteMatchConfig::default()
                },
                providers: vec!["bulk".into()],
            },
            RouteConfig {
                conditions: RouteMatchConfig::default(),
                providers: vec!["ses".into()],
            },
        ];
    })
    .await;

    // JSON: the field.
    let mut newsletter = valid_message();
    newsletter["to"] = json!("reader@example.org");
    newsletter["stream"] = json!("broadcast");
    let newsletter = app.accept(&newsletter).await;
    let receipt = app.accept(&valid_message()).await;

    // Raw MIME (as SMTP submission reads it): the header, removed before sending.
    let raw = "From: Shop <shop@example.com>\r\nTo: member@example.org\r\n\
               X-Posthorn-Stream: broadcast\r\nSubject: News\r\n\r\nHello\r\n";
    let response = app.send_raw("", raw).await;
    assert_eq!(response.status(), 202);
    let raw_id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for (id, stream, provider) in [
        (&newsletter, "broadcast", "bulk"),
        (&raw_id, "broadcast", "bulk"),
        (&receipt, "transactional", "ses"),
    ] {
        let message = app.wait_for_status(id, "sent", WAIT).await;
        assert_eq!(message["stream"], stream, "{message}");
        assert_eq!(message["attempts"][0]["provider"], provider, "{message}");
    }
    let mut to_bulk: Vec<String> = bulk.received().into_iter().flat_map(|m| m.to).collect();
    to_bulk.sort();
    assert_eq!(to_bulk, ["member@example.org", "reader@example.org"]);
    assert_eq!(transactional.received().len(), 1);
    for mail in bulk.received() {
        assert!(
            !mail
                .data()
                .to_ascii_lowercase()
                .contains("x-posthorn-stream"),
            "the stream header reached the recipient: {}",
            mail.data()
        );
    }

    // The list shows it too.
    let page: Value = app.get("/v1/messages").await.json().await.unwrap();
    let streams: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams.iter().filter(|s| **s == "broadcast").count(), 2);
}

#[tokio::test]
async fn a_stream_that_does_not_exist_is_refused_by_field() {
    let app = spawn_app_with(|_| {}).await;
    let mut message = valid_message();
    message["stream"] = json!("bulk");
    let problem = assert_problem(app.send(&message).await, 422, "invalid-field").await;
    assert_eq!(problem["field"], "stream");

    for header in [
        "X-Posthorn-Stream: marketing\r\n",
        "X-Posthorn-Stream: broadcast\r\nX-Posthorn-Stream: transactional\r\n",
    ] {
        let raw = format!(
            "From: Shop <shop@example.com>\r\nTo: member@example.org\r\n{header}Subject: News\r\n\r\nHi\r\n"
        );
        let response = app.send_raw("", &raw).await;
        let problem = assert_problem(response, 422, "invalid-field").await;
        assert_eq!(problem["field"], "stream", "{header}");
    }
    assert_eq!(app.message_count().await, 0);
}
