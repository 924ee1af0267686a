//! Delivery against the scriptable in-test SMTP server: every reply class ends in the right status with
//! its attempts visible, and the pool never exceeds its cap.

use std::time::Duration;

use posthorn::secret::Secret;
use serde_json::{Value, json};

use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{TestApp, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn an_accepted_message_is_delivered_with_its_headers() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    body["cc"] = json!("Carbon <cc@example.org>");
    body["bcc"] = json!("hidden@example.net");
    body["reply_to"] = json!("support@example.com");
    body["headers"] = json!({"X-Order": "42"});
    let id = app.accept(&body).await;

    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(1, WAIT).await;
    let mail = &received[0];
    assert_eq!(mail.from, "shop@example.com");
    let mut to = mail.to.clone();
    to.sort();
    assert_eq!(
        to,
        vec![
            "cc@example.org",
            "customer@example.org",
            "hidden@example.net"
        ]
    );
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        message["message_id"].as_str()
    );
    assert!(mail.header("Date").is_some());
    assert_eq!(mail.header("Subject").as_deref(), Some("Your order"));
    assert_eq!(mail.header("X-Order").as_deref(), Some("42"));
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("support@example.com")
    );
    assert!(mail.header("Bcc").is_none(), "Bcc must never be a header");
    assert!(
        !mail.data().contains("hidden@example.net"),
        "a Bcc address leaked into the data"
    );

    assert!(message["sent_at"].is_string());
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "sent");
    assert_eq!(attempts[0]["smtp_code"], 250);
    assert_eq!(attempts[0]["enhanced_code"], "2.0.0");
    assert_eq!(attempts[0]["provider"], "default");
    assert_eq!(attempts[0]["recipients"].as_array().unwrap().len(), 3);
    assert_eq!(app.metric("posthorn_messages_sent_total", "").await, 1.0);
    assert_eq!(
        app.metric("posthorn_delivery_attempts_total", "outcome=\"sent\"")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("posthorn_delivery_duration_seconds_count", "")
            .await,
        1.0
    );
    // At least the claim that took the message (idle polls add more).
    assert!(
        app.metric("posthorn_claim_duration_seconds_count", "")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_4xx_after_data_is_retried_then_sent() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("451 4.3.0 try again later")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{message:#}");
    assert_eq!(attempts[0]["outcome"], "transient");
    assert_eq!(attempts[0]["smtp_code"], 451);
    assert_eq!(attempts[0]["enhanced_code"], "4.3.0");
    assert!(
        attempts[0]["response"]
            .as_str()
            .unwrap()
            .contains("try again later")
    );
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(smtp.received().len(), 1);
}

#[tokio::test]
async fn a_5xx_after_data_fails_at_once() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("554 5.7.1 rejected as spam")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[0]["smtp_code"], 554);
    assert!(
        message["last_error"]
            .as_str()
            .unwrap()
            .contains("rejected as spam")
    );
    assert_eq!(app.metric("posthorn_messages_failed_total", "").await, 1.0);
}

#[tokio::test]
async fn a_recipient_refused_at_rcpt_does_not_block_the_others() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "550 5.1.1 no such user",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    body["to"] = json!(["gone@example.org", "here@example.org"]);
    let id = app.accept(&body).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(1, WAIT).await;
    assert_eq!(received[0].to, vec!["here@example.org"]);
    let recipients = message["attempts"][0]["recipients"]
        .as_array()
        .unwrap()
        .clone();
    let outcome = |address: &str| {
        recipients
            .iter()
            .find(|r| r["address"] == address)
            .map(|r| (r["outcome"].clone(), r["smtp_code"].clone()))
            .unwrap()
    };
    assert_eq!(
        outcome("gone@example.org"),
        (json!("permanent"), json!(550))
    );
    assert_eq!(outcome("here@example.org"), (json!("sent"), json!(250)));
}

#[tokio::test]
async fn every_recipient_refused_permanently_fails_the_message() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "550 5.1.1 no such user",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    body["to"] = json!("gone@example.org");
    let id = app.accept(&body).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(message["attempts"][0]["smtp_code"], 550);
    // The aborted transaction left the connection usable: the next message goes through it.
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    assert!(
        smtp.commands().contains(&"RSET".to_owned()),
        "an aborted transaction is reset"
    );
}

#[tokio::test]
async fn a_recipient_deferred_at_rcpt_is_retried_alone() {
    let smtp = SmtpServer::start_with(Script::refusing(
        "busy@example.org",
        "452 4.2.2 mailbox full",
    ))
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    body["to"] = json!(["busy@example.org", "here@example.org"]);
    let id = app.accept(&body).await;
    smtp.wait_for(1, WAIT).await;
    smtp.script(|script| {
        script.rcpt.clear();
    });
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(2, WAIT).await;
    assert_eq!(received[0].to, vec!["here@example.org"]);
    assert_eq!(
        received[1].to,
        vec!["busy@example.org"],
        "only the deferred recipient is retried"
    );
    assert_eq!(
        received.len(),
        2,
        "the accepted recipient does not get a second copy"
    );
    assert!(message["attempts"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn replies_at_mail_from_are_classified() {
    let smtp = SmtpServer::start_with(Script {
        mail: Action::reply("421 4.3.2 service shutting down"),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    // 421 is transient: retried until the server recovers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    smtp.script(|script| script.mail = Action::reply("250 2.1.0 OK"));
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(message["attempts"][0]["smtp_code"], 421);

    smtp.script(|script| script.mail = Action::reply("553 5.7.1 sender not allowed"));
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(message["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(message["attempts"][0]["smtp_code"], 553);
}

#[tokio::test]
async fn transient_failures_end_in_failed_after_max_attempts() {
    let smtp = SmtpServer::start_with(Script {
        data: Action::reply("451 4.3.0 queue full"),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.retry_max_attempts = 3).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["outcome"] == "transient" && a["smtp_code"] == 451)
    );
    assert!(
        message["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts")
    );
    assert!(smtp.received().is_empty());
}

#[tokio::test]
async fn a_stall_after_data_is_an_unknown_outcome_retried_and_counted() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::Stall].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "unknown");
    assert_eq!(attempts[0]["smtp_code"], Value::Null);
    assert!(
        attempts[0]["response"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    assert_eq!(attempts[1]["outcome"], "sent");
    let received = smtp.received();
    assert_eq!(
        received.len(),
        2,
        "the server got it twice: the duplicate window"
    );
    assert_eq!(
        received[0].header("Message-ID"),
        received[1].header("Message-ID"),
        "duplicates are recognisable"
    );
    assert_eq!(
        app.metric("posthorn_possible_duplicates_total", "").await,
        1.0
    );
}

#[tokio::test]
async fn a_connection_dropped_after_data_is_an_unknown_outcome() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::Drop].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(message["attempts"][0]["outcome"], "unknown");
    assert_eq!(
        app.metric("posthorn_possible_duplicates_total", "").await,
        1.0
    );
}

#[tokio::test]
async fn a_server_that_never_greets_times_out_and_frees_the_worker() {
    let smtp = SmtpServer::start_with(Script {
        greeting: Action::Stall,
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let message = app.message(&id).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert!(
        !attempts.is_empty(),
        "the timeout is recorded as an attempt: {message:#}"
    );
    assert_eq!(attempts[0]["outcome"], "transient");
    assert!(
        attempts[0]["response"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    smtp.script(|script| script.greeting = Action::reply("220 ready"));
    app.wait_for_status(&id, "sent", WAIT).await;
}

#[tokio::test]
async fn connections_never_exceed_the_cap_and_are_reused() {
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(20),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.smtp_max_connections = 2;
        config.workers = 6;
        config.claim_batch_size = 2;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let mut body = valid_message();
        body["subject"] = json!(format!("message {i}"));
        ids.push(app.accept(&body).await);
    }
    smtp.wait_for(30, Duration::from_secs(30)).await;
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    assert!(
        smtp.max_open_connections() <= 2,
        "cap exceeded: {}",
        smtp.max_open_connections()
    );
    assert!(
        smtp.connections() <= 4,
        "connections are reused, not opened per message: {}",
        smtp.connections()
    );
    let commands = smtp.commands();
    assert_eq!(
        commands.iter().filter(|c| *c == "RSET").count(),
        0,
        "no RSET after clean transactions"
    );
    assert_eq!(
        commands.iter().filter(|c| *c == "NOOP").count(),
        0,
        "no NOOP before a quick reuse"
    );
    assert_eq!(
        app.metric("posthorn_smtp_connections", "state=\"max\"")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_server_is_replaced_without_a_failed_attempt() {
    let smtp = SmtpServer::start_with(Script {
        idle_close: Some(Duration::from_millis(300)),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.workers = 1).await;
    let first = app.accept(&valid_message()).await;
    app.wait_for_status(&first, "sent", WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&second, "sent", WAIT).await;
    assert_eq!(
        message["attempts"].as_array().unwrap().len(),
        1,
        "{message:#}"
    );
    assert_eq!(smtp.connections(), 2);
}

#[tokio::test]
async fn bodies_arrive_intact_with_only_crlf_and_short_lines() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let long_line = "x".repeat(5000);
    let cases = [
        "line one\n.\nline after a lone dot".to_owned(),
        "crlf\r\n.\r\nafter".to_owned(),
        "bare\rcarriage\rreturns".to_owned(),
        "lf then dot-crlf\n.\r\nend".to_owned(),
        "cr dot cr\r.\rend".to_owned(),
        format!("long\n{long_line}\nend"),
        "non-ASCII: Grüße, 日本語, emoji 🎉".to_owned(),
        ".leading dot\n..two dots".to_owned(),
    ];
    for (index, text) in cases.iter().enumerate() {
        let mut body = valid_message();
        body["subject"] = json!(format!("case {index}"));
        body["text"] = json!(text);
        body["html"] = json!(format!("<pre>{text}</pre>"));
        let id = app.accept(&body).await;
        app.wait_for_status(&id, "sent", WAIT).await;
    }
    let received = smtp.wait_for(cases.len(), WAIT).await;
    assert_eq!(
        received.len(),
        cases.len(),
        "each body arrived as exactly one message"
    );
    for (mail, text) in received.iter().zip(&cases) {
        let raw = &mail.raw;
        for (index, byte) in raw.iter().enumerate() {
            if *byte == b'\n' {
                assert!(index > 0 && raw[index - 1] == b'\r', "bare LF on the wire");
            }
            if *byte == b'\r' {
                assert_eq!(raw.get(index + 1), Some(&b'\n'), "bare CR on the wire");
            }
        }
        for line in raw.split(|b| *b == b'\n') {
            assert!(line.len() <= 999, "a line of {} octets", line.len());
        }
        let decoded = decode_text_part(&mail.data());
        let expected = text
            .replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\n', "\r\n");
        assert_eq!(decoded, expected, "text part differs");
    }
}

/// The text/plain part of a multipart/alternative message, transfer decoding undone.
fn decode_text_part(data: &str) -> String {
    let start = data.find("Content-Type: text/plain").expect("a text part");
    let part = &data[start..];
    let (head, rest) = part.split_once("\r\n\r\n").expect("part body");
    let body = rest.split("\r\n--").next().expect("part end");
    if head.contains("quoted-printable") {
        decode_quoted_printable(body)
    } else if head.contains("base64") {
        use base64::Engine;
        let compact: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_owned()
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'=' if bytes.get(index + 1) == Some(&b'\r')
                && bytes.get(index + 2) == Some(&b'\n') =>
            {
                index += 3
            }
            b'=' => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                index += 3;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_scheduled_message_waits_until_due() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    body["send_at"] = json!(
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let id = app.accept(&body).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(smtp.received().is_empty(), "sent before its time");
    assert_eq!(
        app.metric("posthorn_queue_depth", "status=\"scheduled\"")
            .await,
        1.0
    );
    app.wait_for_status(&id, "sent", WAIT).await;
    let sent_at = time::OffsetDateTime::now_utc();
    assert!(sent_at >= at, "sent at {sent_at}, due at {at}");
}

#[tokio::test]
async fn a_queued_message_can_be_cancelled_and_a_sent_one_cannot() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut body = valid_message();
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    body["send_at"] = json!(
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let scheduled = app.accept(&body).await;
    let cancel = |id: String| {
        let client = app.client.clone();
        let url = format!("{}/v1/messages/{id}/cancel", app.address);
        let token = app.default_token();
        async move { client.post(url).bearer_auth(token).send().await.unwrap() }
    };
    let response = cancel(scheduled.clone()).await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    let now = app.accept(&valid_message()).await;
    app.wait_for_status(&now, "sent", WAIT).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        smtp.received().len(),
        1,
        "the cancelled message was not sent"
    );
    assert_eq!(app.message(&scheduled).await["status"], "cancelled");
    crate::support::assert_problem(cancel(now).await, 409, "conflict").await;
    crate::support::assert_problem(
        cancel(uuid::Uuid::now_v7().to_string()).await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn a_notification_wakes_idle_workers_long_before_the_next_poll() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.poll_interval = Duration::from_secs(30)
    })
    .await;
    // Let the workers go idle and the listener connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn shutdown_finishes_or_releases_every_claimed_job() {
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(300),
        ..Script::default()
    })
    .await;
    let mut app = spawn_delivering_app(&smtp, |config| {
        config.workers = 2;
        config.claim_batch_size = 5;
    })
    .await;
    for _ in 0..20 {
        app.accept(&valid_message()).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.stop().await;
    let sending = app.database.sending(None).await;
    assert_eq!(sending, 0, "no job stays claimed after shutdown");
    let sent = app.database.count_messages("status = 'sent'").await;
    assert!(
        (1..20).contains(&sent),
        "some finished in the grace period, the rest were released: {sent}"
    );
    assert_eq!(sent as usize, smtp.received().len());

    let app = app.restart().await;
    let mut remaining = 20;
    for _ in 0..100 {
        remaining = app.database.count_messages("status <> 'sent'").await;
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(remaining, 0, "everything is sent after the restart");
    assert_eq!(smtp.received().len(), 20, "and nothing twice");
    drop(app);
}

#[tokio::test]
async fn a_lost_listen_connection_does_not_stall_delivery() {
    crate::postgres_only!();
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.poll_interval = Duration::from_millis(500)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut db = app.database.connect().await;
    // Kill the listener's backend, as a database failover or a proxy timeout would.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "a LISTEN connection was open");
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    // And the listener comes back.
    let mut listening = 0;
    for _ in 0..100 {
        listening = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listening, 1, "LISTEN is re-established");
}

#[tokio::test]
async fn a_burst_is_sent_over_every_connection_at_once() {
    // One claim takes the whole burst (the batch is larger than it); the senders share it, so every
    // pooled connection is busy, not one connection per claim.
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(200),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.smtp_max_connections = 4;
        config.workers = 4;
        config.claim_batch_size = 50;
    })
    .await;
    let ids = futures_util::future::join_all((0..12).map(|i| {
        let mut body = valid_message();
        body["subject"] = json!(format!("burst {i}"));
        let app = &app;
        async move { app.accept(&body).await }
    }))
    .await;
    smtp.wait_for(12, Duration::from_secs(30)).await;
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    assert_eq!(smtp.max_open_connections(), 4);
}

#[tokio::test]
async fn a_reply_with_a_nul_character_is_recorded_without_it() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("451 4.3.0 busy\0 try again later")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{message:#}");
    assert_ne!(attempts[0]["outcome"], "sent");
    let response = attempts[0]["response"].as_str().unwrap();
    assert!(!response.contains('\0'), "{response:?}");
    assert_eq!(attempts[1]["outcome"], "sent");
    assert_eq!(smtp.received().len(), 1);
}

#[tokio::test]
async fn the_envelope_goes_in_one_write_only_when_the_server_offers_pipelining() {
    let cases = [
        (Script::default(), "", true),
        (
            Script {
                pipelining: false,
                ..Script::default()
            },
            "",
            false,
        ),
        (Script::default(), "?pipelining=off", false),
    ];
    for (script, query, pipelined) in cases {
        let smtp = SmtpServer::start_with(script).await;
        let url = format!("{}{query}", smtp.url());
        let app = spawn_delivering_app(&smtp, |config| {
            config.smtp_url = Some(Secret::new(url));
        })
        .await;
        let mut body = valid_message();
        body["to"] = json!(["one@example.org", "two@example.org"]);
        let id = app.accept(&body).await;
        app.wait_for_status(&id, "sent", WAIT).await;
        let received = smtp.wait_for(1, WAIT).await;
        assert_eq!(received[0].to, vec!["one@example.org", "two@example.org"]);
        assert_eq!(smtp.mail_pipelined(), vec![pipelined], "query {query:?}");
    }
}

#[tokio::test]
async fn a_server_that_accepts_data_with_no_recipient_gets_an_empty_message_and_stays_in_step() {
    let smtp = SmtpServer::start_with(Script {
        rcpt: [(
            "gone@example.org".to_owned(),
            Action::reply("550 5.1.1 no such user"),
        )]
        .into(),
        lenient_data: true,
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |config| config.workers = 1).await;
    let mut body = valid_message();
    body["to"] = json!("gone@example.org");
    body["subject"] = json!("never sent");
    let id = app.accept(&body).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(message["attempts"][0]["smtp_code"], 550);
    // The same connection carries the next message intact.
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(1, WAIT).await;
    assert!(
        received.iter().all(|r| !r.data().contains("never sent")),
        "the refused message's content was not sent"
    );
    let delivered: Vec<_> = received.iter().filter(|r| !r.to.is_empty()).collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].header("Subject"),
        valid_message()["subject"].as_str().map(str::to_owned)
    );
    assert_eq!(smtp.connections(), 1);
    assert!(smtp.commands().contains(&"RSET".to_owned()));
}

#[tokio::test]
async fn a_refused_data_marks_no_recipient_as_sent() {
    let smtp = SmtpServer::start_with(Script {
        data: Action::reply("554 5.7.1 rejected by policy"),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app.accept(&valid_message()).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    let attempt = &message["attempts"][0];
    assert_eq!(attempt["smtp_code"], 554);
    assert_eq!(
        attempt["recipients"][0]["outcome"], "permanent",
        "{attempt:#}"
    );
    assert!(smtp.received().is_empty());
}

#[tokio::test]
async fn a_message_for_many_recipients_is_not_pipelined_in_one_write() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let addresses = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}@example.org")).collect()
    };
    let mut body = valid_message();
    body["to"] = json!(addresses("to", 50));
    body["cc"] = json!(addresses("cc", 50));
    body["bcc"] = json!(addresses("bcc", 1));
    let id = app.accept(&body).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(1, WAIT).await;
    assert_eq!(received[0].to.len(), 101);
    assert_eq!(smtp.mail_pipelined(), vec![false]);
}

/// An app with one sender on one SMTP connection: the messages due together go out together.
async fn spawn_one_sender_app(smtp: &SmtpServer) -> TestApp {
    spawn_delivering_app(smtp, |config| {
        config.smtp_max_connections = 1;
        config.workers = 1;
    })
    .await
}

/// Accepts `count` messages due at one instant a moment from now, so that one claim takes them all and
/// one sender gets them together.
async fn accept_due_together(app: &TestApp, count: usize) -> Vec<String> {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let mut body = valid_message();
        body["subject"] = json!(format!("together {i}"));
        body["to"] = json!(format!("customer{i}@example.org"));
        body["send_at"] = json!(at);
        ids.push(app.accept(&body).await);
    }
    ids
}

#[tokio::test]
async fn messages_sent_together_put_each_one_s_data_and_the_next_envelope_in_one_write() {
    let smtp = SmtpServer::start().await;
    let app = spawn_one_sender_app(&smtp).await;
    let ids = accept_due_together(&app, 5).await;
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    // Every data but the last carried the next envelope; every envelope was one write.
    assert_eq!(smtp.chained(), [true, true, true, true, false]);
    assert_eq!(smtp.mail_pipelined(), [true; 5]);
    assert_eq!(smtp.connections(), 1);
    let received = smtp.received();
    for i in 0..5 {
        let mail = received
            .iter()
            .find(|mail| mail.header("Subject").as_deref() == Some(&format!("together {i}")))
            .unwrap_or_else(|| panic!("message {i} was not received"));
        assert_eq!(mail.to, [format!("customer{i}@example.org")]);
        assert!(mail.data().contains("Thank you for your order."));
    }
}

#[tokio::test]
async fn a_refused_message_does_not_hold_up_the_one_whose_envelope_went_with_it() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::reply("554 5.7.1 rejected for policy reasons")].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_one_sender_app(&smtp).await;
    let ids = accept_due_together(&app, 2).await;
    let refused = app.wait_for_status(&ids[0], "failed", WAIT).await;
    assert_eq!(refused["attempts"][0]["smtp_code"], 554);
    let sent = app.wait_for_status(&ids[1], "sent", WAIT).await;
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(smtp.chained(), [true, false]);
    assert_eq!(
        smtp.connections(),
        1,
        "the session went on after the refusal"
    );
}

#[tokio::test]
async fn at_shutdown_the_messages_of_a_batch_not_yet_started_are_given_back_unsent() {
    let smtp = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(800),
        ..Script::default()
    })
    .await;
    let mut app = spawn_one_sender_app(&smtp).await;
    let ids = accept_due_together(&app, 4).await;
    // Stop while the first message waits for its reply (its next one's envelope went with its data).
    for _ in 0..200 {
        if !smtp.chained().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(smtp.chained(), [true], "the first message's data is out");
    app.stop().await;
    assert_eq!(app.database.sending(None).await, 0, "nothing stays claimed");
    assert_eq!(
        app.database.count_messages("status = 'sent'").await,
        1,
        "the one in flight finished; the rest were not started"
    );
    assert_eq!(smtp.received().len(), 1);
    let app = app.restart().await;
    for id in &ids {
        let sent = app.wait_for_status(id, "sent", WAIT).await;
        assert_eq!(
            sent["attempts"].as_array().unwrap().len(),
            1,
            "given back without an attempt"
        );
    }
    assert_eq!(smtp.received().len(), 4, "each message once");
}

#[tokio::test]
async fn a_connection_lost_after_the_data_leaves_the_next_message_to_a_fresh_connection() {
    let smtp = SmtpServer::start_with(Script {
        after_data: [Action::Drop].into(),
        ..Script::default()
    })
    .await;
    let app = spawn_one_sender_app(&smtp).await;
    let ids = accept_due_together(&app, 2).await;
    // The first one may have arrived (no reply came): retried, and counted as a possible duplicate.
    // Its data carried the second one's envelope.
    let first = app.wait_for_status(&ids[0], "sent", WAIT).await;
    assert_eq!(first["attempts"][0]["outcome"], "unknown");
    // The second's envelope went out with the first's data, but its own data never did: it is sent on
    // the next connection at once, in one attempt.
    let second = app.wait_for_status(&ids[1], "sent", WAIT).await;
    assert_eq!(second["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(second["attempts"][0]["outcome"], "sent");
    let copies = |subject: &str| {
        smtp.received()
            .iter()
            .filter(|mail| mail.header("Subject").as_deref() == Some(subject))
            .count()
    };
    assert_eq!(copies("together 1"), 1);
    assert_eq!(copies("together 0"), 2, "the unanswered one and its retry");
    assert_eq!(smtp.chained().first(), Some(&true));
    assert_eq!(
        app.metric("posthorn_possible_duplicates_total", "").await,
        1.0
    );
}

#[tokio::test]
async fn a_large_attachment_arrives_byte_for_byte() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use mail_parser::MimeHeaders;

    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    // 3 MB that do not compress, base64 in the request without line breaks (taken as given), and a
    // second, small attachment wrapped at 76 columns (compacted).
    let bytes: Vec<u8> = (0..3_000_000u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let wrapped = STANDARD
        .encode(b"a small note")
        .as_bytes()
        .chunks(4)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    let mut body = valid_message();
    body["attachments"] = json!([
        {"filename": "data.bin", "content": STANDARD.encode(&bytes), "content_type": "application/octet-stream"},
        {"filename": "note.txt", "content": wrapped, "content_type": "text/plain"},
    ]);
    let id = app.accept(&body).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let received = smtp.wait_for(1, WAIT).await;
    let data = received[0].data();
    let parsed = mail_parser::MessageParser::default()
        .parse(data.as_bytes())
        .expect("a MIME message");
    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0].attachment_name(), Some("data.bin"));
    assert!(
        attachments[0].contents() == bytes.as_slice(),
        "the 3 MB attachment changed on its way"
    );
    assert_eq!(attachments[1].contents(), b"a small note");

    if crate::support::database::is_postgres() {
        // Bodies are compressed with lz4 where the server has it (migration 20261207000001).
        let lz4 = app
            .database
            .scalar(
                "SELECT count(*) FROM pg_settings
                  WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)",
            )
            .await;
        let body_lz4 = app
            .database
            .scalar(
                "SELECT count(*) FROM pg_attribute
                  WHERE attrelid = 'messages'::regclass AND attname IN ('body', 'raw')
                    AND attcompression = 'l'",
            )
            .await;
        assert_eq!(body_lz4, if lz4 == 1 { 2 } else { 0 });
    }
}
