//! End-of-data smuggling (CVE-2023-51764/5/6): every variant of a line end other than CRLF `.` CRLF
//! leaves the message whole, and the message is refused for its bare line ending. A second message hidden
//! behind a false end never reaches the upstream.

use std::time::Duration;

use super::{password, port, spawn};
use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::SmtpClient;

const VARIANTS: [&str; 8] = [
    "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r.\r\n", "\r\n.\r", "\n.\r", "\r.\n",
];

#[tokio::test]
async fn no_false_end_of_data_lets_a_second_message_through() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    for variant in VARIANTS {
        let (mut client, _) = SmtpClient::local(port(&app)).await;
        client.login("tester", &password(&app)).await;
        assert_eq!(
            client.command("MAIL FROM:<shop@example.com>").await.code,
            250
        );
        assert_eq!(client.command("RCPT TO:<ann@example.org>").await.code, 250);
        assert_eq!(client.command("DATA").await.code, 354);
        let payload = format!(
            "From: shop@example.com\r\nTo: ann@example.org\r\nSubject: first\r\n\r\nfirst{variant}\
             MAIL FROM:<shop@example.com>\r\nRCPT TO:<mallory@example.org>\r\nDATA\r\n\
             From: shop@example.com\r\nTo: mallory@example.org\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        );
        client.send(payload.as_bytes()).await;
        let reply = client.reply().await;
        assert_eq!(reply.code, 550, "{variant:?}: {reply:?}");
        assert!(
            reply.text().contains("bare CR or LF"),
            "{variant:?}: {reply:?}"
        );
        assert_eq!(client.command("QUIT").await.code, 221, "{variant:?}");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        upstream.received().is_empty(),
        "{:?}",
        upstream.received().len()
    );
    assert_eq!(app.message_count().await, 0);
    let counted = app
        .metric("posthorn_submission_refusals_total", "bare_line_ending")
        .await;
    assert_eq!(counted, VARIANTS.len() as f64);
}

#[tokio::test]
async fn a_bare_line_ending_in_a_command_is_refused() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.send(b"EHLO client.example\n").await;
    assert_eq!(client.reply().await.code, 500);
    assert_eq!(client.command("EHLO client.example").await.code, 250);
}

#[tokio::test]
async fn data_after_a_refused_data_is_not_a_message() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.login("tester", &password(&app)).await;
    // Pipelined: MAIL, a refused RCPT, DATA (refused: no recipient) and the message anyway.
    client
        .send(
            b"MAIL FROM:<shop@example.com>\r\nRCPT TO:<bad address>\r\nDATA\r\n\
              From: shop@example.com\r\nTo: ann@example.org\r\n\r\nhello\r\n.\r\n",
        )
        .await;
    assert_eq!(client.reply().await.code, 250);
    assert_eq!(client.reply().await.code, 501);
    assert_eq!(client.reply().await.code, 554);
    // The message's lines are read as commands, and refused one by one.
    for _ in 0..4 {
        assert_eq!(client.reply().await.code / 100, 5);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.message_count().await, 0);
}
