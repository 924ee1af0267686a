//! PostgreSQL restarted under load.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{copies, token};
use crate::support::load::{Load, Sent};
use crate::support::private_pg::PrivatePg;
use crate::support::process::Posthorn;
use crate::support::smtp::SmtpServer;
use crate::support::{spawn_delivering_app, valid_message};

/// Waits until every id in `ids` is `sent` in the database at `url`, returning id → Message-ID.
async fn wait_all_sent(
    url: &str,
    ids: &HashSet<String>,
    timeout: Duration,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows: Vec<(String, String, String)> = match sqlx::PgConnection::connect(url).await {
            Ok(mut db) => sqlx::query_as("SELECT id::text, message_id, status FROM message_states")
                .fetch_all(&mut db)
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let known: BTreeMap<&str, (&str, &str)> = rows
            .iter()
            .map(|(id, message_id, status)| (id.as_str(), (message_id.as_str(), status.as_str())))
            .collect();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !known.contains_key(id.as_str()))
            .collect();
        assert!(
            missing.is_empty() || rows.is_empty(),
            "answered 202 but not in the database: {missing:?}"
        );
        let unsent: Vec<(&String, &str)> = ids
            .iter()
            .filter_map(|id| {
                let (_, status) = known.get(id.as_str())?;
                (*status != "sent").then_some((id, *status))
            })
            .collect();
        if !rows.is_empty() && unsent.is_empty() {
            return ids
                .iter()
                .map(|id| (id.clone(), known[id.as_str()].0.to_owned()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "not sent within {timeout:?}: {} of {} ({:?}...)",
            unsent.len(),
            ids.len(),
            unsent.iter().take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Backends holding `LISTEN` on the server at `url`.
async fn listening_backends(url: &str) -> i64 {
    let Ok(mut db) = sqlx::PgConnection::connect(url).await else {
        return 0;
    };
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = 'posthorn' AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap_or(0)
}

/// Callers keep sending while PostgreSQL goes away (`pg_ctl stop -m <mode>`) for three seconds and
/// comes back: every answer is a prompt 202 or 503, and every 202 is delivered.
async fn outage_under_load(mode: &'static str) {
    let pg = PrivatePg::start_new().await;
    let smtp = SmtpServer::start().await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", pg.url()),
        ("POSTHORN_DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        ("POSTHORN_SMTP_TIMEOUT", "2s".into()),
        ("POSTHORN_LEASE_DURATION", "12s".into()),
        ("POSTHORN_RETRY_INITIAL_DELAY", "200ms".into()),
        ("POSTHORN_RETRY_MAX_DELAY", "1s".into()),
        ("POSTHORN_WORKERS", "4".into()),
        // The load is one caller at ~100 requests a second for ten seconds and more: past the default
        // quota, which would answer 429.
        ("POSTHORN_RATE_LIMIT", "0".into()),
    ]);
    server.wait_ready().await;
    let token = token();

    let load = Load::start(&server.address, &token, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_at = load.began.elapsed();
    pg.stop(mode).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start().await;
    let up_at = load.began.elapsed();
    // Long enough for the pool to reconnect after crash recovery on a busy machine.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = load.finish().await;
    server.assert_running();

    let count = |status: u16| sent.iter().filter(|s| s.status == status).count();
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!(
        "stop -m {mode}: requests: {} (202: {}, 503: {}, other: {}); slowest {slowest:?}; PostgreSQL down {down_at:?}..{up_at:?}",
        sent.len(),
        count(202),
        count(503),
        sent.len() - count(202) - count(503)
    );
    let odd: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.status != 202 && s.status != 503)
        .collect();
    assert!(
        odd.is_empty(),
        "every answer is 202 or 503: {odd:#?}\n{}",
        server.stderr()
    );
    for unavailable in sent.iter().filter(|s| s.status == 503) {
        assert!(
            unavailable
                .retry_after
                .as_deref()
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)),
            "a 503 carries Retry-After: {unavailable:?}"
        );
        assert_eq!(
            unavailable.problem.as_deref(),
            Some("urn:posthorn:problem:unavailable")
        );
    }
    assert!(
        slowest < Duration::from_secs(10),
        "a request took {slowest:?}"
    );
    assert!(count(503) > 0, "the outage was visible to callers");
    assert!(
        sent.iter()
            .any(|s| s.status == 202 && s.at > up_at + Duration::from_secs(1)),
        "requests succeed again once PostgreSQL is back"
    );

    // Every 202 is in the database and reaches the upstream.
    let accepted: HashSet<String> = sent.iter().filter_map(|s| s.id.clone()).collect();
    let message_ids = wait_all_sent(&pg.url(), &accepted, Duration::from_secs(30)).await;
    for (id, message_id) in &message_ids {
        assert!(
            copies(&smtp, message_id) >= 1,
            "{id} ({message_id}) was answered 202 but never delivered"
        );
    }
    eprintln!(
        "delivered {} accepted messages; the upstream received {} (duplicates {})",
        message_ids.len(),
        smtp.received().len(),
        smtp.received().len() - message_ids.len()
    );

    // LISTEN is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening_backends(&pg.url()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "LISTEN was not re-established:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_202_or_503_and_loses_nothing() {
    crate::postgres_only!();
    outage_under_load("fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashing_under_load_answers_202_or_503_and_loses_nothing() {
    crate::postgres_only!();
    // SIGQUIT to the postmaster: no clean shutdown, crash recovery at the next start.
    outage_under_load("immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_postgres_restart_a_new_message_is_delivered_without_waiting_for_the_poll() {
    crate::postgres_only!();
    let pg = PrivatePg::start_new().await;
    let smtp = SmtpServer::start().await;
    let mut server = Posthorn::spawn(&[
        ("POSTHORN_DATABASE_URL", pg.url()),
        ("POSTHORN_DATABASE_ACQUIRE_TIMEOUT", "2s".into()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        // Only a notification can wake an idle worker within the test.
        ("POSTHORN_POLL_INTERVAL", "30s".into()),
        ("POSTHORN_WORKERS", "2".into()),
    ]);
    server.wait_ready().await;
    let token = token();
    // Wake-ups work before the restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = server.accept(&token, &valid_message()).await;
    server
        .wait_for_status(&token, &id, "sent", Duration::from_secs(5))
        .await;

    // `pg_ctl restart -m fast` while the workers are idle (a claim cut off by the restart is the
    // subject of `a_failed_claim_leaves_workers_deaf_to_wake_ups`).
    pg.restart().await;
    server.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening_backends(&pg.url()).await == 0 {
        assert!(
            Instant::now() < deadline,
            "LISTEN was not re-established:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    let id = server.accept(&token, &valid_message()).await;
    let message = server.message(&token, &id).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while copies(&smtp, message["message_id"].as_str().unwrap()) == 0 {
        assert!(
            Instant::now() < deadline,
            "a message accepted after the restart waited for the 30 s poll (not delivered within 5 s)\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("delivered {:?} after acceptance", started.elapsed());
}

/// Claims waiting on a lock that another session holds.
const BLOCKED_CLAIMS: &str = "FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock'
       AND query ILIKE '%FOR UPDATE SKIP LOCKED%'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_leaves_workers_deaf_to_wake_ups() {
    crate::postgres_only!();
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| {
        config.poll_interval = Duration::from_secs(30);
        config.workers = 2;
    })
    .await;
    // Workers idle, the listener connected.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The claimer claims (woken by a notification) and waits on a lock; its connection is then
    // terminated, as a database restart terminates it.
    let mut locker = app.database.connect().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let mut admin = app.database.connect().await;
    sqlx::query("NOTIFY posthorn_jobs")
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: i64 = sqlx::query_scalar(&format!("SELECT count(*) {BLOCKED_CLAIMS}"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if blocked >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) {BLOCKED_CLAIMS}"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The database is fine again and notifications flow: a new message should go out at once.
    let id = app.accept(&valid_message()).await;
    app.wait_for_status(&id, "sent", Duration::from_secs(5))
        .await;
}
