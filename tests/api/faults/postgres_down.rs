//! PostgreSQL down when posthorn starts.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{copies, token};
use crate::support::private_pg::PrivatePg;
use crate::support::process::{Posthorn, client};
use crate::support::smtp::SmtpServer;
use crate::support::valid_message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_serves_503_then_becomes_ready_and_delivers() {
    crate::postgres_only!();
    let pg = PrivatePg::init();
    let smtp = SmtpServer::start().await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", pg.url()),
        ("POSTHORN_DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        ("POSTHORN_POLL_INTERVAL", "200ms".into()),
    ]);
    server
        .wait_for("/healthz", 200, Duration::from_secs(15))
        .await;
    let response = client()
        .get(format!("{}/readyz", server.address))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    // Stays alive while it waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.assert_running();
    let log = server.stderr();
    let waiting = log.lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            message.contains("database")
                && (message.contains("not reachable") || message.contains("waiting"))
        })
    });
    assert!(
        waiting,
        "a JSON log line says it waits for the database:\n{log}"
    );

    pg.start().await;
    let started = Instant::now();
    server
        .wait_for("/readyz", 200, Duration::from_secs(15))
        .await;
    eprintln!("ready {:?} after PostgreSQL started", started.elapsed());
    let token = token();
    let id = server.accept(&token, &valid_message()).await;
    let message = server
        .wait_for_status(&token, &id, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(copies(&smtp, message["message_id"].as_str().unwrap()), 1);
}
