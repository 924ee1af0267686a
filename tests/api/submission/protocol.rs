//! The SMTP conversation, driven by hand: what is offered, what is refused and with which reply.

use std::time::Duration;

use posthorn::auth::Scope;
use posthorn::config::CallerConfig;

use super::{MESSAGE, password, port, spawn};
use crate::support::peers::TestCertificates;
use crate::support::smtp::SmtpServer;
use crate::support::smtp_client::{SmtpClient, plain};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_message_is_answered_after_the_commit_with_its_id_and_delivered_like_a_json_send() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let (mut client, greeting) = SmtpClient::local(port(&app)).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let ehlo = client.command("EHLO client.example").await;
    let offered = ehlo.text();
    for keyword in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(offered.contains(keyword), "{keyword} in {offered}");
    }
    assert!(
        !offered.contains("STARTTLS"),
        "no certificate, no STARTTLS: {offered}"
    );
    let auth = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &password(&app))))
        .await;
    assert_eq!(
        (auth.code, auth.text()),
        (235, "2.7.0 Authentication successful".into())
    );
    let message = format!("{MESSAGE}.leading dot\r\nBcc: not-a-header-in-the-body\r\n");
    let reply = client
        .send_message(
            "shop@example.com",
            &["ann@example.org", "hidden@example.org"],
            &message.replace("Subject:", "Bcc: hidden@example.org\r\nSubject:"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let id = reply
        .text()
        .strip_prefix("2.0.0 queued as ")
        .expect("the id")
        .to_owned();
    assert_eq!(client.command("QUIT").await.code, 221);

    let shown = app.wait_for_status(&id, "sent", WAIT).await;
    assert_eq!(shown["source"], "smtp");
    assert_eq!(shown["from"]["address"], "shop@example.com");
    assert_eq!(shown["to"][0]["address"], "ann@example.org");
    assert_eq!(shown["bcc"][0]["address"], "hidden@example.org");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.to, vec!["ann@example.org", "hidden@example.org"]);
    assert_eq!(mail.from, "shop@example.com");
    assert!(mail.header("Bcc").is_none(), "Bcc never reaches the wire");
    assert!(mail.header("Message-ID").is_some(), "a Message-ID is added");
    assert!(mail.header("Date").is_some(), "a Date is added");
    assert_eq!(
        mail.header("Message-ID"),
        shown["message_id"].as_str().map(str::to_owned)
    );
    let data = mail.data();
    assert!(
        data.contains("\r\n.leading dot\r\n"),
        "relayed as written: {data}"
    );
    assert!(
        data.contains("Bcc: not-a-header-in-the-body"),
        "the body is not touched"
    );
}

#[tokio::test]
async fn commands_out_of_order_and_bad_credentials_get_their_reply_codes() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| {
        config.callers = vec![CallerConfig {
            sub: "tester".into(),
            sender_domains: vec!["example.com".into()],
            ..CallerConfig::default()
        }];
    })
    .await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    assert_eq!(
        client.command("MAIL FROM:<shop@example.com>").await.code,
        503
    );
    assert_eq!(client.command("EHLO client.example").await.code, 250);
    let mail = client.command("MAIL FROM:<shop@example.com>").await;
    assert_eq!((mail.code, mail.lines[0].get(..5)), (530, Some("5.7.0")));
    let token = password(&app);
    let wrong_user = client
        .command(&format!("AUTH PLAIN {}", plain("someone-else", &token)))
        .await;
    assert_eq!(
        (wrong_user.code, wrong_user.lines[0].get(..5)),
        (535, Some("5.7.8"))
    );
    let reader = app.token("tester", &[Scope::Read]);
    let no_scope = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &reader)))
        .await;
    assert_eq!(no_scope.code, 535, "{no_scope:?}");
    assert_eq!(
        client.command("AUTH PLAIN bm90IGJhc2U2NA===").await.code,
        501
    );
    // AUTH LOGIN, in answer to two challenges.
    assert_eq!(client.command("AUTH LOGIN").await.code, 334);
    let b64 = |text: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text);
    assert_eq!(client.command(&b64("tester")).await.code, 334);
    assert_eq!(client.command(&b64(&token)).await.code, 235);
    let other_domain = client.command("MAIL FROM:<shop@elsewhere.example>").await;
    assert_eq!(
        (other_domain.code, other_domain.lines[0].get(..5)),
        (550, Some("5.7.1"))
    );
    assert_eq!(client.command("RCPT TO:<ann@example.org>").await.code, 503);
    assert_eq!(client.command("DATA").await.code, 503);
    assert_eq!(
        client
            .command("MAIL FROM:<shop@example.com> SIZE=999999999999")
            .await
            .code,
        552
    );
    assert_eq!(
        client
            .command("MAIL FROM:<shop@example.com> FOO=bar")
            .await
            .code,
        555
    );
    assert_eq!(client.command("MAIL FROM:<>").await.code, 501);
    assert_eq!(
        client.command("MAIL FROM:<shop@example.com>").await.code,
        250
    );
    assert_eq!(
        client.command("MAIL FROM:<shop@example.com>").await.code,
        503
    );
    assert_eq!(client.command("DATA").await.code, 554, "no recipient yet");
    assert_eq!(client.command("RCPT TO:<not an address>").await.code, 501);
    // The From header's domain is checked too.
    assert_eq!(client.command("RCPT TO:<ann@example.org>").await.code, 250);
    assert_eq!(client.command("DATA").await.code, 354);
    client
        .send(b"From: x@elsewhere.example\r\nTo: ann@example.org\r\n\r\nhi\r\n.\r\n")
        .await;
    let refused = client.reply().await;
    assert_eq!(
        (refused.code, refused.lines[0].get(..5)),
        (550, Some("5.7.1")),
        "{refused:?}"
    );
    assert_eq!(client.command("NOOP").await.code, 250);
    assert_eq!(client.command("QUIT").await.code, 221);
    assert_eq!(app.message_count().await, 0);
    let refusals = app
        .metric("posthorn_submission_refusals_total", "auth_failed")
        .await;
    assert!(refusals >= 2.0, "refusals are counted: {refusals}");
}

#[tokio::test]
async fn a_revoked_token_is_refused_over_smtp_and_http_alike() {
    let upstream = SmtpServer::start().await;
    let token_app = spawn(&upstream, |_| {}).await;
    let token = password(&token_app);
    let jti = {
        let payload = token.split('.').nth(1).expect("a JWT");
        let claims =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .expect("base64url");
        let claims: serde_json::Value = serde_json::from_slice(&claims).expect("JSON claims");
        claims["jti"].as_str().expect("a jti").to_owned()
    };
    drop(token_app);
    let app = spawn(&upstream, |config| {
        config.callers = vec![CallerConfig {
            sub: "tester".into(),
            revoked_tokens: vec![jti],
            ..CallerConfig::default()
        }];
    })
    .await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    assert_eq!(client.command("EHLO client.example").await.code, 250);
    let auth = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &token)))
        .await;
    assert_eq!(auth.code, 535, "{auth:?}");
    assert!(auth.text().contains("revoked"), "{auth:?}");
    let http = app.send_as(&token, &crate::support::valid_message()).await;
    assert_eq!(http.status(), 401);
    // Another token of the same caller still works.
    let fresh = password(&app);
    let auth = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &fresh)))
        .await;
    assert_eq!(auth.code, 235, "{auth:?}");
}

#[tokio::test]
async fn recipients_beyond_the_limit_are_deferred_and_the_others_still_go() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| config.max_recipients = 2).await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.login("tester", &password(&app)).await;
    assert_eq!(
        client.command("MAIL FROM:<shop@example.com>").await.code,
        250
    );
    assert_eq!(client.command("RCPT TO:<a@example.org>").await.code, 250);
    assert_eq!(client.command("RCPT TO:<b@example.org>").await.code, 250);
    let third = client.command("RCPT TO:<c@example.org>").await;
    assert_eq!((third.code, third.lines[0].get(..5)), (452, Some("4.5.3")));
    assert_eq!(client.command("DATA").await.code, 354);
    client.send(format!("{MESSAGE}.\r\n").as_bytes()).await;
    assert_eq!(client.reply().await.code, 250);
    let mail = upstream.wait_for(1, WAIT).await;
    assert_eq!(mail[0].to, vec!["a@example.org", "b@example.org"]);
}

#[tokio::test]
async fn a_resent_message_id_is_answered_with_the_first_id_and_sent_once() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let message = format!("Message-ID: <order-42@example.com>\r\n{MESSAGE}");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (mut client, _) = SmtpClient::local(port(&app)).await;
        client.login("tester", &password(&app)).await;
        let reply = client
            .send_message("shop@example.com", &["ann@example.org"], &message)
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        ids.push(reply.text());
    }
    assert_eq!(ids[0], ids[1], "the retry gets the first id");
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.login("tester", &password(&app)).await;
    let changed = client
        .send_message(
            "shop@example.com",
            &["ann@example.org"],
            &message.replace("Thank", "Thanks"),
        )
        .await;
    assert_eq!(
        (changed.code, changed.lines[0].get(..5)),
        (550, Some("5.7.0")),
        "{changed:?}"
    );
    upstream.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.received().len(), 1, "sent once");
    assert_eq!(
        app.metric("posthorn_submission_messages_total", "replayed")
            .await,
        1.0
    );
}

#[tokio::test]
async fn sizes_lines_and_nul_bytes_are_refused_and_nothing_is_queued() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| config.max_body_size = 4096).await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.login("tester", &password(&app)).await;
    let cases: [(String, u16); 3] = [
        (format!("{MESSAGE}{}\r\n", "x".repeat(5000)), 552),
        (format!("{MESSAGE}{}\r\n", "y".repeat(999)), 550),
        (format!("{MESSAGE}nul\0byte\r\n"), 550),
    ];
    for (message, code) in cases {
        let reply = client
            .send_message("shop@example.com", &["ann@example.org"], &message)
            .await;
        assert_eq!(reply.code, code, "{reply:?}");
    }
    assert_eq!(
        client.command("NOOP").await.code,
        250,
        "the session goes on"
    );
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn ten_bad_commands_in_a_row_end_the_session() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |_| {}).await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    for _ in 0..10 {
        assert_eq!(client.command("BOGUS").await.code, 500);
    }
    let last = client.reply().await;
    assert_eq!(
        (last.code, last.lines[0].get(..5)),
        (421, Some("4.7.0")),
        "{last:?}"
    );
    assert_eq!(client.reply().await.code, 0, "closed");
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_told_421() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| config.submission_max_connections = 2).await;
    let (_first, greeting) = SmtpClient::local(port(&app)).await;
    assert_eq!(greeting.code, 220);
    let (_second, greeting) = SmtpClient::local(port(&app)).await;
    assert_eq!(greeting.code, 220);
    let (_third, greeting) = SmtpClient::local(port(&app)).await;
    assert_eq!(
        (greeting.code, greeting.lines[0].get(..5)),
        (421, Some("4.7.0"))
    );
}

#[tokio::test]
async fn an_idle_session_times_out_and_shutdown_says_421() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| {
        config.submission_timeout = Duration::from_millis(500);
    })
    .await;
    let (mut idle, _) = SmtpClient::local(port(&app)).await;
    let timeout = idle.reply().await;
    assert_eq!(
        (timeout.code, timeout.lines[0].get(..5)),
        (421, Some("4.4.2"))
    );

    let app = spawn(&upstream, |_| {}).await;
    let (mut waiting, _) = SmtpClient::local(port(&app)).await;
    assert_eq!(waiting.command("EHLO client.example").await.code, 250);
    let mut app = app;
    let stopping = tokio::spawn(async move {
        app.stop().await;
        app
    });
    let goodbye = waiting.reply().await;
    assert_eq!(
        (goodbye.code, goodbye.lines[0].get(..5)),
        (421, Some("4.3.2"))
    );
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn over_the_rate_limit_mail_is_deferred_451() {
    let upstream = SmtpServer::start().await;
    let app = spawn(&upstream, |config| {
        config.rate_limit = 1.0;
        config.rate_limit_burst = 1;
    })
    .await;
    let (mut client, _) = SmtpClient::local(port(&app)).await;
    client.login("tester", &password(&app)).await;
    assert_eq!(
        client.command("MAIL FROM:<shop@example.com>").await.code,
        250
    );
    assert_eq!(client.command("RSET").await.code, 250);
    let limited = client.command("MAIL FROM:<shop@example.com>").await;
    assert_eq!(
        (limited.code, limited.lines[0].get(..5)),
        (451, Some("4.7.1"))
    );
}

/// The first non-loopback IPv4 address of this host, if it has one.
fn outside_address() -> Option<String> {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .find(|address| !address.starts_with("127."))
        .map(str::to_owned)
}

#[tokio::test]
async fn auth_needs_tls_unless_the_client_is_on_this_host_and_starttls_drops_pipelined_bytes() {
    let Some(outside) = outside_address() else {
        eprintln!("skipped: this host has no non-loopback IPv4 address");
        return;
    };
    let certificates = TestCertificates::generate();
    let upstream = SmtpServer::start().await;
    let dir = certificates.dir.path().to_owned();
    let app = spawn(&upstream, move |config| {
        config.submission_listen = Some("0.0.0.0:0".into());
        config.submission_tls_cert = Some(dir.join("server.pem"));
        config.submission_tls_key = Some(dir.join("server.key"));
    })
    .await;
    let (mut client, _) = SmtpClient::connect(&format!("{outside}:{}", port(&app))).await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.text().contains("AUTH"),
        "no AUTH before TLS from outside: {ehlo:?}"
    );
    let auth = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &password(&app))))
        .await;
    assert_eq!((auth.code, auth.lines[0].get(..6)), (538, Some("5.7.11")));
    // Commands pipelined behind STARTTLS, before the handshake, are dropped (CVE-2011-0411).
    client.send(b"STARTTLS\r\nRSET\r\n").await;
    assert_eq!(client.reply().await.code, 220);
    let mut client = client.start_tls(&certificates.ca()).await;
    let ehlo = client.command("EHLO client.example").await;
    assert_eq!(
        ehlo.code, 250,
        "the first reply is EHLO's, not the injected RSET's"
    );
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    let auth = client
        .command(&format!("AUTH PLAIN {}", plain("tester", &password(&app))))
        .await;
    assert_eq!(auth.code, 235);
    let reply = client
        .send_message("shop@example.com", &["ann@example.org"], MESSAGE)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
}

#[tokio::test]
async fn implicit_tls_serves_the_same_session_and_a_renewed_certificate_is_used_at_once() {
    let first = TestCertificates::generate();
    let upstream = SmtpServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let cert = files.path().join("tls.crt");
    let key = files.path().join("tls.key");
    std::fs::copy(first.dir.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(first.dir.path().join("server.key"), &key).unwrap();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let app = spawn(&upstream, move |config| {
        config.submission_tls_listen = Some("127.0.0.1:0".into());
        config.submission_tls_cert = Some(cert_path);
        config.submission_tls_key = Some(key_path);
    })
    .await;
    let tls_port = app.submission.1.expect("an implicit TLS listener");
    let (mut client, greeting) = SmtpClient::implicit_tls(tls_port, &first.ca()).await;
    assert_eq!(greeting.code, 220);
    client.login("tester", &password(&app)).await;
    let reply = client
        .send_message("shop@example.com", &["ann@example.org"], MESSAGE)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    // cert-manager writes a certificate from another CA: the next handshake uses it.
    let second = TestCertificates::generate();
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::copy(second.dir.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(second.dir.path().join("server.key"), &key).unwrap();
    let (mut renewed, greeting) = SmtpClient::implicit_tls(tls_port, &second.ca()).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(renewed.command("QUIT").await.code, 221);
}
