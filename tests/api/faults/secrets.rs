//! Secrets never appear.

use std::time::{Duration, Instant};

use posthorn::auth::Scope;
use serde_json::{Value, json};

use super::token;
use crate::support::private_pg::PrivatePg;
use crate::support::process::{Posthorn, client, token_with};
use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{TestDatabase, valid_message};

/// Where each needle occurs in the haystacks, with a line of context.
fn find_secrets(needles: &[(&str, String)], haystacks: &[(&str, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (what, needle) in needles {
        for (name, text) in haystacks {
            if let Some(line) = text.lines().find(|line| line.contains(needle.as_str())) {
                let line: String = line.chars().take(400).collect();
                found.push(format!("{what} in {name}: {line}"));
            }
        }
    }
    found
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_error_bodies_or_metrics() {
    crate::postgres_only!();
    const DB_PASSWORD: &str = "db-Pw7-q8Zr3xKd";
    const SMTP_USER: &str = "relay-user";
    const SMTP_PASSWORD: &str = "smtp-Pw4-m2Lk9sVh";
    const JWT: &str = "jwt-Sk5-0123456789-0123456789-abcdefgh";
    let pg = PrivatePg::init_with_password(DB_PASSWORD);
    pg.start().await;
    let smtp = SmtpServer::start_with(Script {
        auth: Some(Action::reply(
            "535 5.7.8 Authentication credentials invalid",
        )),
        ..Script::default()
    })
    .await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", pg.url()),
        ("POSTHORN_JWT_SECRET", JWT.to_owned()),
        (
            "POSTHORN_SMTP_URL",
            format!("smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}", smtp.port),
        ),
        ("POSTHORN_SMTP_TIMEOUT", "2s".into()),
        ("POSTHORN_POLL_INTERVAL", "200ms".into()),
        ("POSTHORN_RETRY_INITIAL_DELAY", "300ms".into()),
        ("POSTHORN_LOG", "debug".into()),
    ]);
    server.wait_ready().await;

    let good = token_with(JWT, "secrets", &[Scope::Send, Scope::Read]);
    let read_only = token_with(JWT, "secrets", &[Scope::Read]);
    let foreign = token_with(
        "another-secret-0123456789-0123456789-xyz",
        "secrets",
        &[Scope::Send],
    );
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    // Callers who paste the wrong thing into the header.
    let bearers = [
        ("a good token", good.clone()),
        ("a read-only token", read_only),
        ("a token signed with another key", foreign),
        ("a tampered token", tampered),
        ("the JWT secret as a token", JWT.to_owned()),
        ("the SMTP password as a token", SMTP_PASSWORD.to_owned()),
    ];
    let http = client();
    let mut seen: Vec<(&str, String)> = Vec::new();
    let mut id = String::new();
    for (_, bearer) in &bearers {
        let response = http
            .post(format!("{}/send", server.address))
            .bearer_auth(bearer)
            .json(&valid_message())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap_or_default();
        seen.push(("a /send answer's headers", headers));
        if status == 202 && id.is_empty() {
            id = serde_json::from_str::<Value>(&body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        seen.push(("a /send answer", body));
        let response = http
            .get(format!("{}/v1/messages?limit=5", server.address))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap_or_default();
        seen.push(("a /v1/messages answer", format!("{headers}\n{body}")));
    }
    assert!(!id.is_empty(), "the good token was accepted");
    // A malformed request and a missing resource: error bodies of other kinds.
    let response = http
        .post(format!("{}/send", server.address))
        .bearer_auth(&good)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap_or_default();
    seen.push(("a 400 answer", body));

    // The upstream refuses AUTH: attempts are recorded as transient, with the reply.
    let message = loop {
        let message = server.message(&good, &id).await;
        if message["attempts"].as_array().is_some_and(|a| a.len() >= 2) {
            break message;
        }
        server.assert_running();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        message["attempts"][0]["outcome"], "transient",
        "{message:#}"
    );
    assert!(
        message["attempts"][0]["response"]
            .as_str()
            .is_some_and(|r| r.contains("5.7.8") || r.contains("Authentication")),
        "{message:#}"
    );
    seen.push(("a message with its attempts", message.to_string()));
    let response = http
        .get(format!("{}/readyz", server.address))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap_or_default();
    seen.push(("/readyz", body));
    seen.push(("/metrics", server.metrics().await));

    // The password was really offered to the upstream: the check below looks for something real.
    let offered = smtp.auth_lines();
    let plain = base64(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}").as_bytes());
    assert!(
        offered.iter().any(|line| line.contains(&plain))
            || offered
                .iter()
                .any(|line| line.contains(&base64(SMTP_PASSWORD.as_bytes()))),
        "the SMTP credentials were offered: {offered:?}"
    );

    // Stop it (SIGTERM) so shutdown messages are in the log too.
    server.terminate(Duration::from_secs(10)).await;
    let log = server.stderr();
    assert!(log.contains("\"level\":\"DEBUG\""), "debug logging is on");
    seen.push(("stderr (the log)", log));
    seen.push(("stdout", server.stdout()));

    let mut needles: Vec<(&str, String)> = vec![
        ("the JWT secret", JWT.to_owned()),
        ("the database password", DB_PASSWORD.to_owned()),
        ("the SMTP password", SMTP_PASSWORD.to_owned()),
        ("the database URL", pg.url()),
    ];
    for (what, bearer) in &bearers {
        needles.push((what, bearer.clone()));
    }
    let found = find_secrets(&needles, &seen);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_password_is_not_logged_encoded_at_debug_level() {
    const SMTP_USER: &str = "relay-user";
    const SMTP_PASSWORD: &str = "smtp-Pw4-m2Lk9sVh";
    let database = TestDatabase::create().await;
    let smtp = SmtpServer::start_with(Script {
        auth: Some(Action::reply(
            "535 5.7.8 Authentication credentials invalid",
        )),
        ..Script::default()
    })
    .await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", database.url()),
        (
            "POSTHORN_SMTP_URL",
            format!("smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}", smtp.port),
        ),
        ("POSTHORN_POLL_INTERVAL", "200ms".into()),
        ("POSTHORN_LOG", "debug".into()),
    ]);
    server.wait_ready().await;
    let token = token();
    server.accept(&token, &valid_message()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while smtp.auth_lines().is_empty() {
        assert!(Instant::now() < deadline, "no AUTH was offered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.stderr();
    // AUTH PLAIN carries base64("\0user\0password"); AUTH LOGIN base64("password").
    let needles = vec![
        (
            "AUTH PLAIN credentials (base64)",
            base64(format!("\0{SMTP_USER}\0{SMTP_PASSWORD}").as_bytes()),
        ),
        (
            "AUTH LOGIN password (base64)",
            base64(SMTP_PASSWORD.as_bytes()),
        ),
    ];
    let found = find_secrets(&needles, &[("stderr (the log)", log)]);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_name_recipient_domains_never_addresses_or_content() {
    let database = TestDatabase::create().await;
    let smtp = SmtpServer::start().await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", database.url()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        ("POSTHORN_POLL_INTERVAL", "200ms".into()),
        ("POSTHORN_LOG", "debug".into()),
    ]);
    server.wait_ready().await;
    let token = token();
    let mut body = valid_message();
    body["to"] = json!("alice.private@example.org");
    body["text"] = json!("Your one-time code is 731-442-OTP.");
    let id = server.accept(&token, &body).await;
    server
        .wait_for_status(&token, &id, "sent", Duration::from_secs(15))
        .await;
    let log = server.stderr();
    assert!(log.contains("example.org"), "the domain may be named");
    let needles = vec![
        (
            "the recipient address",
            "alice.private@example.org".to_owned(),
        ),
        ("the message text", "731-442-OTP".to_owned()),
    ];
    let found = find_secrets(&needles, &[("stderr (the log)", log)]);
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
}
