//! Interoperability with SMTP servers posthorn did not write, and the TLS modes.

use std::time::Duration;

use posthorn::secret::Secret;
use serde_json::{Value, json};

use crate::support::peers::{AiosmtpdMode, TestCertificates, aiosmtpd, smtp_sink};
use crate::support::{fast_delivery, spawn_app_with, valid_message};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn postfix_smtp_sink_receives_every_message_once() {
    let sink = smtp_sink().await;
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let app = spawn_app_with(|config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(url));
        config.workers = 4;
        config.smtp_max_connections = 4;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut body = valid_message();
        body["subject"] = json!(format!("sink {i}"));
        body["text"] = json!("line\n.\nafter the dot");
        ids.push(app.accept(&body).await);
    }
    let mut message_ids = Vec::new();
    for id in &ids {
        let message = app.wait_for_status(id, "sent", WAIT).await;
        message_ids.push(message["message_id"].as_str().unwrap().to_owned());
    }
    // smtp-sink writes one file per message, headers and all.
    let dumps = wait_for_dumps(sink.dir.path(), 20).await;
    assert_eq!(dumps.len(), 20, "one dump per message");
    for message_id in message_ids {
        let copies = dumps
            .iter()
            .filter(|dump| dump.contains(&message_id))
            .count();
        assert_eq!(copies, 1, "{message_id} arrived {copies} times");
    }
}

async fn wait_for_dumps(dir: &std::path::Path, count: usize) -> Vec<String> {
    for _ in 0..400 {
        let dumps: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .filter(|dump| dump.contains("\r\n\r\n") || dump.contains("\n\n"))
            .collect();
        if dumps.len() >= count {
            return dumps;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("smtp-sink did not write {count} dumps");
}

#[tokio::test]
async fn aiosmtpd_receives_a_message_intact() {
    let peer = aiosmtpd(AiosmtpdMode::Plain, None).await;
    let url = format!("smtp://127.0.0.1:{}", peer.port);
    let app = spawn_app_with(|config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(url));
    })
    .await;
    let mut body = valid_message();
    body["text"] = json!("Grüße\n.\nline two\r\n.\r\nline three");
    body["bcc"] = json!("hidden@example.net");
    let id = app.accept(&body).await;
    let message = app.wait_for_status(&id, "sent", WAIT).await;
    let files = peer.wait_for_files("eml", 1, WAIT).await;
    assert_eq!(files.len(), 1);
    let data = std::fs::read_to_string(&files[0]).unwrap();
    assert!(data.contains(message["message_id"].as_str().unwrap()));
    assert!(!data.contains("hidden@example.net"));
    let envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(files[0].with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(envelope["mail_from"], "shop@example.com");
    assert_eq!(
        envelope["rcpt_tos"],
        json!(["customer@example.org", "hidden@example.net"])
    );
}

async fn tls_app(url: String, certs: &TestCertificates) -> crate::support::TestApp {
    let ca = certs.ca();
    spawn_app_with(move |config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(url));
        config.smtp_tls_ca_file = Some(ca);
    })
    .await
}

#[tokio::test]
async fn starttls_required_with_auth_delivers_over_tls() {
    let certs = TestCertificates::generate();
    let peer = aiosmtpd(AiosmtpdMode::StartTls(&certs), Some("mailer:s3cret-pass")).await;
    let app = tls_app(
        format!(
            "smtp://mailer:s3cret-pass@127.0.0.1:{}?tls=required",
            peer.port
        ),
        &certs,
    )
    .await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let files = peer.wait_for_files("json", 1, WAIT).await;
    let envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(envelope["tls"], true);
    assert_eq!(envelope["authenticated"], true);
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let certs = TestCertificates::generate();
    let peer = aiosmtpd(AiosmtpdMode::Implicit(&certs), None).await;
    let app = tls_app(format!("smtps://127.0.0.1:{}", peer.port), &certs).await;
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let files = peer.wait_for_files("json", 1, WAIT).await;
    let envelope: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(envelope["tls"], true);
}

/// Waits for the first attempt and returns it.
async fn first_attempt(app: &crate::support::TestApp, id: &str) -> Value {
    for _ in 0..200 {
        let message = app.message(id).await;
        if let Some(attempt) = message["attempts"].as_array().and_then(|a| a.first()) {
            assert_ne!(message["status"], "sent");
            return attempt.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no attempt was recorded");
}

#[tokio::test]
async fn tls_required_refuses_a_server_without_starttls() {
    let certs = TestCertificates::generate();
    let peer = aiosmtpd(AiosmtpdMode::Plain, None).await;
    let app = tls_app(
        format!("smtp://127.0.0.1:{}?tls=required", peer.port),
        &certs,
    )
    .await;
    let id = app.accept(&valid_message()).await;
    let attempt = first_attempt(&app, &id).await;
    assert_eq!(attempt["outcome"], "transient");
    assert!(
        attempt["response"].as_str().unwrap().contains("STARTTLS"),
        "{attempt}"
    );
    assert!(
        peer.files("eml").is_empty(),
        "nothing was sent in clear text"
    );
}

#[tokio::test]
async fn tls_required_refuses_an_untrusted_certificate() {
    let certs = TestCertificates::generate();
    let peer = aiosmtpd(AiosmtpdMode::StartTls(&certs), None).await;
    let url = format!("smtp://127.0.0.1:{}?tls=required", peer.port);
    // No CA configured: the private CA is not trusted.
    let app = spawn_app_with(|config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(url));
    })
    .await;
    let id = app.accept(&valid_message()).await;
    let attempt = first_attempt(&app, &id).await;
    assert_eq!(attempt["outcome"], "transient");
    assert!(peer.files("eml").is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_an_attempt_that_never_shows_the_password() {
    let certs = TestCertificates::generate();
    let peer = aiosmtpd(
        AiosmtpdMode::StartTls(&certs),
        Some("mailer:right-password"),
    )
    .await;
    let app = tls_app(
        format!(
            "smtp://mailer:wrong-pa55word@127.0.0.1:{}?tls=required",
            peer.port
        ),
        &certs,
    )
    .await;
    let id = app.accept(&valid_message()).await;
    let attempt = first_attempt(&app, &id).await;
    assert_eq!(attempt["outcome"], "transient");
    let message = app.message(&id).await.to_string();
    assert!(!message.contains("wrong-pa55word"), "{message}");
    let metrics = app.metrics_text().await;
    assert!(!metrics.contains("wrong-pa55word"));
    assert!(peer.files("eml").is_empty());
}

#[tokio::test]
async fn a_non_ascii_address_needs_smtputf8_and_fails_clearly_without_it() {
    use crate::support::smtp::{Script, SmtpServer};
    let plain = SmtpServer::start_with(Script {
        smtputf8: false,
        ..Script::default()
    })
    .await;
    let app = crate::support::spawn_delivering_app(&plain, |_| {}).await;
    let mut body = valid_message();
    body["to"] = json!("jürgen@example.org");
    let id = app.accept(&body).await;
    let message = app.wait_for_status(&id, "failed", WAIT).await;
    assert!(
        message["last_error"].as_str().unwrap().contains("SMTPUTF8"),
        "{message:#}"
    );
    assert!(plain.received().is_empty());

    let utf8 = SmtpServer::start().await;
    let app = crate::support::spawn_delivering_app(&utf8, |_| {}).await;
    let id = app.accept(&body).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let received = utf8.received();
    assert_eq!(received[0].to, vec!["jürgen@example.org"]);
    assert!(received[0].mail_parameters.contains("SMTPUTF8"));
}
