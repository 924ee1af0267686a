//! Crash safety: the real binary is killed with SIGKILL mid-drain and restarted; nothing is lost and
//! duplicates stay within the jobs that were in flight, each counted.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::json;

use crate::support::process::{self, Posthorn, token};
use crate::support::smtp::{Script, SmtpServer};
use crate::support::{TestDatabase, valid_message};

async fn start(database: &TestDatabase, smtp: &SmtpServer) -> Posthorn {
    let mut env = process::delivering(database, smtp);
    env.push(("POSTHORN_LOG", "warn".to_owned()));
    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    server
}

#[tokio::test]
async fn sigkill_mid_drain_loses_nothing_and_counts_duplicates() {
    let database = TestDatabase::create().await;
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(30),
        ..Script::default()
    })
    .await;
    let client = reqwest::Client::new();
    let token = token("crash", &[Scope::Send, Scope::Read]);
    let mut server = start(&database, &smtp).await;
    const TOTAL: usize = 40;
    for i in 0..TOTAL {
        let mut body = valid_message();
        body["subject"] = json!(format!("crash {i}"));
        let response = client
            .post(format!("{}/send", server.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    smtp.wait_for(8, Duration::from_secs(20)).await;
    server.kill9();
    let delivered_before = smtp.received().len();
    assert!(
        delivered_before < TOTAL,
        "killed mid-drain ({delivered_before} delivered)"
    );

    let server = start(&database, &smtp).await;
    let mut unsent = TOTAL as i64;
    for _ in 0..400 {
        unsent = database.count_messages("status <> 'sent'").await;
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        unsent, 0,
        "every accepted message is delivered after the restart"
    );

    // Every message's Message-ID as the API shows it.
    let mut message_ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/messages?limit=200".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = server.get_json(&token, &path).await;
        for item in page["items"].as_array().unwrap() {
            message_ids.push(item["message_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(message_ids.len(), TOTAL);
    let received = smtp.received();
    for message_id in &message_ids {
        let copies = received
            .iter()
            .filter(|mail| mail.header("Message-ID").as_deref() == Some(message_id.as_str()))
            .count();
        assert!(copies >= 1, "{message_id} was lost");
    }
    let duplicates = received.len() - TOTAL;
    // Only a job in flight at the kill can arrive twice: at most one per worker.
    assert!(duplicates <= 2, "{duplicates} duplicates");
    let counted = server.metric("posthorn_possible_duplicates_total").await;
    assert!(
        counted >= duplicates as f64,
        "every duplicate is counted as possible: {counted} < {duplicates}"
    );
}
