//! Deadlines per phase of an SMTP session, and the lease heartbeat that lets a send outlast its lease:
//! a final reply that is slow but within its deadline is one delivery, not one per lease.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::json;

use crate::support::process::{Posthorn, token};
use crate::support::smtp::{Script, SmtpServer};
use crate::support::{TestDatabase, spawn_delivering_app, toml_file, valid_message};

const WAIT: Duration = Duration::from_secs(30);

/// An upstream that takes `delay` to answer the final `.` of every message.
async fn slow_upstream(delay: Duration) -> SmtpServer {
    SmtpServer::start_with(Script {
        after_data_delay: delay,
        ..Script::default()
    })
    .await
}

#[tokio::test]
async fn a_final_reply_slower_than_the_lease_but_within_its_deadline_is_one_delivery() {
    // 4 s for the final reply; the lease is 3 s, and every other phase has 1 s.
    let smtp = slow_upstream(Duration::from_secs(4)).await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.lease_duration = Duration::from_secs(3);
        config.smtp_timeouts.done = Some(Duration::from_secs(10));
    })
    .await;
    let id = app.accept(&valid_message()).await;
    let sent = app.wait_for_status(&id, "sent", WAIT).await;
    let attempts = sent["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{sent}");
    assert_eq!(attempts[0]["outcome"], "sent");
    assert!(
        attempts[0]["duration_ms"].as_u64().unwrap_or_default() >= 4000,
        "the attempt waited for the reply: {sent}"
    );
    // Longer than another lease: no second copy follows.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(smtp.received().len(), 1, "one delivery");
    assert_eq!(
        app.metric("posthorn_possible_duplicates_total", "").await,
        0.0
    );
    assert_eq!(app.metric("posthorn_leases_lost_total", "").await, 0.0);
}

#[tokio::test]
async fn a_final_reply_later_than_its_deadline_is_an_unknown_outcome_named_as_a_timeout() {
    let smtp = slow_upstream(Duration::from_secs(3)).await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.smtp_timeout = Some(Duration::from_secs(10));
        config.smtp_timeouts.done = Some(Duration::from_millis(500));
    })
    .await;
    let id = app.accept(&valid_message()).await;
    for _ in 0..100 {
        let message = app.message(&id).await;
        if let Some(first) = message["attempts"].as_array().and_then(|a| a.first()) {
            assert_eq!(first["outcome"], "unknown", "{message}");
            let reply = first["response"].as_str().unwrap_or_default().to_owned();
            assert!(reply.contains("timed out"), "{message}");
            assert!(
                first["duration_ms"].as_u64().unwrap_or(u64::MAX) < 3000,
                "the done deadline (500 ms) ended the wait, not the 10 s of the others: {message}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no attempt was recorded");
}

/// Three replicas share the queue; each message's final reply takes longer than the lease. While a
/// send is in flight its lease is renewed, so no other replica takes the job over.
#[tokio::test]
async fn on_three_replicas_a_slow_final_reply_is_still_one_delivery() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    let smtp = slow_upstream(Duration::from_secs(5)).await;
    let config = toml_file("[providers.slow]\ntimeout = \"1s\"\ntimeouts = { done = \"20s\" }\n");
    let spawn = |name: &str| {
        Posthorn::spawn(&[
            ("POSTHORN_CONFIG", config.path().display().to_string()),
            ("POSTHORN_DATABASE_URL", database.url()),
            (
                "POSTHORN_PROVIDERS__SLOW__URL",
                format!("{}?ehlo={name}", smtp.url()),
            ),
            ("POSTHORN_LEASE_DURATION", "3s".to_owned()),
            ("POSTHORN_POLL_INTERVAL", "200ms".to_owned()),
            ("POSTHORN_WORKERS", "2".to_owned()),
            ("POSTHORN_LOG", "warn".to_owned()),
        ])
    };
    let mut replicas = [spawn("replica-a"), spawn("replica-b"), spawn("replica-c")];
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let send = token("slow", &[Scope::Send, Scope::Read]);
    let mut ids = Vec::new();
    for (n, replica) in replicas.iter().enumerate() {
        let mut message = valid_message();
        message["subject"] = json!(format!("slow {n}"));
        ids.push(replica.accept(&send, &message).await);
    }
    for id in &ids {
        let sent = replicas[0]
            .wait_for_status(&send, id, "sent", Duration::from_secs(40))
            .await;
        assert_eq!(sent["attempts"].as_array().unwrap().len(), 1, "{sent}");
    }
    // Past another lease and a claim on every replica: still one copy each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut subjects: Vec<String> = smtp
        .received()
        .iter()
        .filter_map(|mail| mail.header("Subject"))
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["slow 0", "slow 1", "slow 2"]);
    for replica in &replicas {
        assert_eq!(replica.metric("posthorn_leases_lost_total").await, 0.0);
    }
}

/// A sender whose messages wait for the provider's only connection longer than opening one may take is
/// not failing: the wait has no deadline of its own, costs no attempt and opens no circuit.
#[tokio::test]
async fn waiting_for_a_busy_connection_is_not_a_failure_of_the_provider() {
    // Each final reply takes 1.2 s; opening a session may take 1 s + 1 s.
    let smtp = slow_upstream(Duration::from_millis(1200)).await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.smtp_max_connections = 1;
        config.workers = 2;
        config.smtp_timeouts.connect = Some(Duration::from_secs(1));
        config.smtp_timeouts.greeting = Some(Duration::from_secs(1));
        config.smtp_timeouts.done = Some(Duration::from_secs(10));
    })
    .await;
    let send = |n: usize| {
        let mut body = valid_message();
        body["subject"] = json!(format!("message {n}"));
        body
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.accept(&send(n)).await);
    }
    // The first sender holds the connection for about 3.6 s; these wait for it in the second sender.
    for _ in 0..50 {
        if !smtp.commands().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 3..6 {
        ids.push(app.accept(&send(n)).await);
    }
    for id in &ids {
        let sent = app.wait_for_status(id, "sent", WAIT).await;
        let attempts = sent["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "one attempt each: {sent}");
    }
    assert_eq!(smtp.received().len(), 6);
    assert_eq!(smtp.connections(), 1, "the one connection was waited for");
}
