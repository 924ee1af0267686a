//! Several replicas on one PostgreSQL database: they start together on an empty database, share the
//! queue, and deliver every message exactly once between them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::json;

use crate::support::process::{Posthorn, token};
use crate::support::smtp::{Script, SmtpServer};
use crate::support::{TestDatabase, valid_message};

fn start(database: &TestDatabase, smtp: &SmtpServer, name: &str) -> Posthorn {
    Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", database.url()),
        // The EHLO name tells the SMTP server which replica delivered a message.
        ("POSTHORN_SMTP_URL", format!("{}?ehlo={name}", smtp.url())),
        ("POSTHORN_SMTP_TIMEOUT", "2s".to_owned()),
        ("POSTHORN_POLL_INTERVAL", "200ms".to_owned()),
        ("POSTHORN_WORKERS", "2".to_owned()),
        ("POSTHORN_CLAIM_BATCH_SIZE", "2".to_owned()),
        ("POSTHORN_LOG", "warn".to_owned()),
    ])
}

#[tokio::test]
async fn three_replicas_share_one_queue_and_deliver_every_message_once() {
    crate::postgres_only!();
    // An empty database: the three replicas race to migrate it.
    let database = TestDatabase::create_empty().await;
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(20),
        ..Script::default()
    })
    .await;
    let mut replicas: Vec<Posthorn> = ["replica-a", "replica-b", "replica-c"]
        .iter()
        .map(|name| start(&database, &smtp, name))
        .collect();
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let send = token("replicas", &[Scope::Send]);
    let client = reqwest::Client::new();
    const TOTAL: usize = 90;
    let mut posts = Vec::new();
    for i in 0..TOTAL {
        let url = format!("{}/send", replicas[i % 3].address);
        let client = client.clone();
        let send = send.clone();
        posts.push(tokio::spawn(async move {
            let mut body = valid_message();
            body["subject"] = json!(format!("replicated {i}"));
            let response = client
                .post(url)
                .bearer_auth(send)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }));
    }
    for post in posts {
        post.await.unwrap();
    }
    let received = smtp.wait_for(TOTAL, Duration::from_secs(60)).await;
    // Let any stray duplicate arrive before counting.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let received = if smtp.received().len() > received.len() {
        smtp.received()
    } else {
        received
    };
    let ids: HashSet<_> = received
        .iter()
        .map(|mail| mail.header("Message-ID"))
        .collect();
    assert_eq!(received.len(), TOTAL, "every message exactly once");
    assert_eq!(ids.len(), TOTAL);

    let mut by_replica: HashMap<String, usize> = HashMap::new();
    for mail in &received {
        *by_replica.entry(mail.helo.clone()).or_default() += 1;
    }
    assert_eq!(
        by_replica.len(),
        3,
        "every replica delivered some: {by_replica:?}"
    );

    let admin = token("replicas", &[Scope::Admin]);
    let page = replicas[0]
        .get_json(&admin, "/v1/messages?status=sent&limit=200")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), TOTAL);
}

#[tokio::test]
async fn two_replicas_deliver_every_webhook_event_once() {
    crate::postgres_only!();
    let database = TestDatabase::create_postgres().await;
    let receiver = crate::support::webhooks::Receiver::start(json!([]));
    let mut replicas: Vec<Posthorn> = ["replica-a", "replica-b"]
        .iter()
        .map(|_| {
            Posthorn::spawn(&[
                ("POSTHORN_DATABASE_URL", database.url()),
                ("POSTHORN_WEBHOOK_ALLOW_HTTP", "true".to_owned()),
                ("POSTHORN_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
                ("POSTHORN_LOG", "warn".to_owned()),
            ])
        })
        .collect();
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let client = reqwest::Client::new();
    let admin = token("replicas", &[Scope::Admin]);
    let created: serde_json::Value = client
        .post(format!("{}/v1/webhooks", replicas[0].address))
        .bearer_auth(&admin)
        .json(&json!({"url": receiver.url(), "events": ["email.accepted"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    receiver.set_secrets(&[created["secret"].as_str().unwrap()]);
    const TOTAL: usize = 40;
    for i in 0..TOTAL {
        let response = client
            .post(format!("{}/v1/send", replicas[i % 2].address))
            .bearer_auth(&admin)
            .json(&valid_message())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    receiver
        .wait_until(Duration::from_secs(30), |r| r.len() >= TOTAL)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received();
    let ids: HashSet<String> = received
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received.len(), TOTAL, "each event once");
    assert_eq!(ids.len(), TOTAL);
    assert!(received.iter().all(|r| r["verified"] == true));
}
