//! A long-held snapshot.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, spawn_delivering_app, valid_message};

/// Accepts `count` messages from 8 concurrent callers and waits until the upstream has them all;
/// messages per second from the first request to the last delivery.
async fn drain_round(app: &TestApp, smtp: &SmtpServer, count: usize, round: usize) -> f64 {
    let before = smtp.received().len();
    let started = Instant::now();
    let token = app.default_token();
    let per_task = count / 8;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let http = app.client.clone();
            let url = format!("{}/send", app.address);
            let token = token.clone();
            tokio::spawn(async move {
                for index in 0..per_task {
                    let mut body = valid_message();
                    body["subject"] = json!(format!("round {round} {task}-{index}"));
                    let response = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                        .expect("request completes");
                    assert_eq!(response.status(), 202);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    smtp.wait_for(before + per_task * 8, Duration::from_secs(30))
        .await;
    (per_task * 8) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_keeps_working_while_a_snapshot_is_held_and_recovers_after() {
    crate::postgres_only!();
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.workers = 4;
        config.smtp_max_connections = 2;
    })
    .await;
    // Rounds of 64 messages, one a second: a few hundred messages while the snapshot is held.
    const ROUND: usize = 64;
    const PAUSE: Duration = Duration::from_millis(1000);
    // A first round warms the pools up; the second is the baseline.
    drain_round(&app, &smtp, ROUND, 0).await;
    let mut round = 1;
    let before = drain_round(&app, &smtp, ROUND, round).await;

    // Another session holds a snapshot: no row version deleted after it can be vacuumed away.
    let mut holder = app.database.connect().await;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut holder).await.unwrap();
    let mut observer = app.database.connect().await;
    let xmin_held: bool = sqlx::query_scalar(
        "SELECT backend_xmin IS NOT NULL FROM pg_stat_activity
          WHERE datname = current_database() AND state = 'idle in transaction'",
    )
    .fetch_one(&mut observer)
    .await
    .unwrap();
    assert!(xmin_held, "the snapshot holds back the xmin horizon");
    let held = Instant::now();
    let mut during = Vec::new();
    while held.elapsed() < Duration::from_secs(20) {
        round += 1;
        during.push(drain_round(&app, &smtp, ROUND, round).await);
        tokio::time::sleep(PAUSE).await;
    }
    let dead: i64 =
        sqlx::query_scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'")
            .fetch_one(&mut observer)
            .await
            .unwrap_or(-1);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let held_for = held.elapsed();

    round += 1;
    let after = drain_round(&app, &smtp, ROUND, round).await;
    let during_mean = during.iter().sum::<f64>() / during.len() as f64;
    eprintln!(
        "drain rate (msg/s, accept to delivery): before {before:.0}; during a {held_for:.0?} snapshot \
         {during:.0?} (mean {during_mean:.0}); after {after:.0}; dead tuples in jobs while held: {dead}"
    );
    // Outcomes are recorded just after the upstream's reply: give the last ones a moment.
    let recorded = Instant::now() + Duration::from_secs(10);
    let unsent = loop {
        let unsent = app.database.count_messages("status <> 'sent'").await;
        if unsent == 0 || Instant::now() > recorded {
            break unsent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(unsent, 0, "everything was delivered");
    assert_eq!(smtp.received().len(), (round + 1) * ROUND);
    assert!(
        after >= before * 0.3,
        "the rate recovers after the snapshot is released: {after:.0} vs {before:.0} before"
    );
}
