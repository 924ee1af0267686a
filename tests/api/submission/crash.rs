//! A process killed between the commit of a message and its `250`: the client's retry (same
//! `Message-ID`, same bytes) is answered with the first id, and one message leaves.

use std::time::{Duration, Instant};

use posthorn::auth::Scope;

use super::MESSAGE;
use crate::support::TestDatabase;
use crate::support::peers::free_port;
use crate::support::process::{self, Posthorn};
use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::SmtpClient;

#[tokio::test]
async fn a_kill_between_the_commit_and_the_250_leaves_one_message_the_retry_does_not_duplicate() {
    let database = TestDatabase::create().await;
    let upstream = SmtpServer::start().await;
    let held = tempfile::tempdir().unwrap();
    let marker = held.path().join("committed");
    let submission_port = free_port();
    let mut env = process::delivering(&database, &upstream);
    env.push((
        "POSTHORN_SUBMISSION_LISTEN",
        format!("127.0.0.1:{submission_port}"),
    ));
    let mut held_env = env.clone();
    held_env.push((
        "POSTHORN_TEST_HOLD_SMTP_REPLY",
        marker.display().to_string(),
    ));
    let mut server = Posthorn::spawn(&held_env);
    server.wait_ready().await;
    let token = process::token("tester", &[Scope::Send]);
    let message = format!("Message-ID: <retry-1@example.com>\r\n{MESSAGE}");

    let (mut client, _) = SmtpClient::local(submission_port).await;
    client.login("tester", &token).await;
    client.command("MAIL FROM:<shop@example.com>").await;
    client.command("RCPT TO:<ann@example.org>").await;
    client.command("DATA").await;
    client.send(format!("{message}.\r\n").as_bytes()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the commit did not happen: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_id = std::fs::read_to_string(&marker).unwrap();
    server.kill9();
    assert_eq!(client.reply().await.code, 0, "no 250 reached the client");

    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    let (mut client, _) = SmtpClient::local(submission_port).await;
    client.login("tester", &token).await;
    let retry = client
        .send_message("shop@example.com", &["ann@example.org"], &message)
        .await;
    assert_eq!(retry.code, 250, "{retry:?}");
    assert!(retry.text().ends_with(&first_id), "{retry:?} vs {first_id}");
    server
        .wait_for_status(&token_reader(), &first_id, "sent", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.received().len(), 1, "one message left");
}

fn token_reader() -> String {
    process::token("tester", &[Scope::Read])
}
