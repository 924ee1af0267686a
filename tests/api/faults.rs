//! Fault injection: the database restarted under load or down at start, an upstream that refuses
//! connections, `kill -9` at each point of a send, a storm of one idempotency key, a long-held
//! snapshot, and secrets that must never leak. Every test is bounded in time and uses loopback only.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use posthorn::auth::Scope;
use posthorn::secret::Secret;
use serde_json::{Value, json};
use sqlx::Connection;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use crate::support::peers::free_port;
use crate::support::private_pg::PrivatePg;
use crate::support::process::{self, Posthorn, client, token_with};
use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{
    TestApp, TestDatabase, fast_delivery, spawn_app_with, spawn_delivering_app, valid_message,
};

/// A send+read token for the test secret.
fn token() -> String {
    process::token("faults", &[Scope::Send, Scope::Read])
}

fn rfc3339(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339")
}

/// How many messages the server received with this Message-ID.
fn copies(smtp: &SmtpServer, message_id: &str) -> usize {
    smtp.received()
        .iter()
        .filter(|mail| mail.header("Message-ID").as_deref() == Some(message_id))
        .count()
}

// ---------------------------------------------------------------------------------------------------
// 1. PostgreSQL restarted under load
// ---------------------------------------------------------------------------------------------------

/// One request of the load: when it started (since the load began), how long it took, and its answer.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    took: Duration,
    status: u16,
    retry_after: Option<String>,
    problem: Option<String>,
    id: Option<String>,
}

/// Posts messages continuously from `tasks` tasks until stopped.
struct Load {
    stop: CancellationToken,
    sent: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    began: Instant,
}

impl Load {
    fn start(address: &str, token: &str, tasks: usize, pause: Duration) -> Self {
        let stop = CancellationToken::new();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let began = Instant::now();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let tasks = (0..tasks)
            .map(|task| {
                let stop = stop.clone();
                let sent = sent.clone();
                let http = http.clone();
                let url = format!("{address}/send");
                let token = token.to_owned();
                tokio::spawn(async move {
                    let mut index = 0;
                    while !stop.is_cancelled() {
                        let mut body = valid_message();
                        body["subject"] = json!(format!("load {task}-{index}"));
                        index += 1;
                        let at = began.elapsed();
                        let started = Instant::now();
                        let outcome = http.post(&url).bearer_auth(&token).json(&body).send().await;
                        let took = started.elapsed();
                        let record = match outcome {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let retry_after = response
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                Sent {
                                    at,
                                    took,
                                    status,
                                    retry_after,
                                    problem: body["type"].as_str().map(str::to_owned),
                                    id: body["id"].as_str().map(str::to_owned),
                                }
                            }
                            // A transport error (or the client's own 15 s timeout) is recorded as 0.
                            Err(_) => Sent {
                                at,
                                took,
                                status: 0,
                                retry_after: None,
                                problem: None,
                                id: None,
                            },
                        };
                        sent.lock().unwrap().push(record);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            tasks,
            began,
        }
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("load task");
        }
        let mut sent = self.sent.lock().unwrap().clone();
        sent.sort_by_key(|s| s.at);
        sent
    }
}

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

// ---------------------------------------------------------------------------------------------------
// 2. PostgreSQL down when posthorn starts
// ---------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------
// 3. An upstream that refuses connections, then comes back
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_upstream_refusing_connections_is_retried_with_growing_delays_then_delivered() {
    // Nothing listens here until the end of the test.
    let port = free_port();
    let initial = Duration::from_millis(400);
    let app = spawn_app_with(|config| {
        fast_delivery(config);
        config.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
        config.poll_interval = Duration::from_millis(50);
        config.retry_initial_delay = initial;
        config.retry_max_delay = Duration::from_secs(60);
        config.retry_max_attempts = 20;
    })
    .await;
    let id = app.accept(&valid_message()).await;

    // After attempt n fails, the message is queued with next_attempt_at = end of attempt + delay n.
    const OBSERVED: i64 = 4;
    let mut delays: BTreeMap<i64, f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut message = Value::Null;
    while (delays.len() as i64) < OBSERVED {
        assert!(
            Instant::now() < deadline,
            "retries observed: {delays:?}\n{message:#}"
        );
        message = app.message(&id).await;
        let attempts = message["attempts"].as_array().cloned().unwrap_or_default();
        if message["status"] == "queued"
            && let Some(last) = attempts.last()
            && message["next_attempt_at"].is_string()
            && message["attempt_count"] == last["attempt"]
        {
            let attempt = last["attempt"].as_i64().unwrap();
            let ended = rfc3339(&last["started_at"])
                + time::Duration::milliseconds(last["duration_ms"].as_i64().unwrap());
            let delay = (rfc3339(&message["next_attempt_at"]) - ended).as_seconds_f64();
            delays.entry(attempt).or_insert(delay);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = message["attempts"].as_array().unwrap().clone();
    eprintln!("retry delays after each refused connection (s): {delays:?}");
    for attempt in &attempts {
        assert_eq!(attempt["outcome"], "transient", "{attempt}");
        assert_eq!(attempt["smtp_code"], Value::Null, "{attempt}");
        assert!(
            attempt["response"].as_str().is_some_and(|r| !r.is_empty()),
            "the refusal is described: {attempt}"
        );
    }
    for (attempt, delay) in &delays {
        let expected = initial.as_secs_f64() * 2f64.powi(*attempt as i32 - 1);
        // ±20 % jitter; the recorded end of an attempt precedes the scheduling by a few milliseconds.
        assert!(
            *delay >= expected * 0.8 - 0.02 && *delay <= expected * 1.2 + 0.2,
            "delay after attempt {attempt}: {delay:.3}s, expected {expected:.3}s ±20 %"
        );
    }
    // The gaps between attempt starts grow.
    let starts: Vec<OffsetDateTime> = attempts.iter().map(|a| rfc3339(&a["started_at"])).collect();
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_seconds_f64())
        .collect();
    eprintln!("gaps between attempt starts (s): {gaps:?}");
    assert!(
        gaps.windows(2).all(|pair| pair[1] > pair[0]),
        "gaps grow: {gaps:?}"
    );

    // The upstream comes back on the same port.
    let smtp = SmtpServer::start_on(port, Script::default()).await;
    let message = app
        .wait_for_status(&id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(copies(&smtp, message["message_id"].as_str().unwrap()), 1);
    let attempts = message["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "sent");
    assert!(attempts.len() as i64 > OBSERVED);
}

// ---------------------------------------------------------------------------------------------------
// 4. kill -9 at each point of a send
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    /// Connected, the greeting has not come.
    BeforeGreeting,
    /// DATA sent, its 354 has not come.
    DuringData,
    /// The final dot sent (the upstream has the message), its reply has not come.
    AfterFinalDot,
}

/// What a kill at one point left behind once the restarted process finished.
struct KillResult {
    copies: usize,
    possible_duplicates: f64,
    attempts: Vec<Value>,
}

async fn kill_during_send(point: KillPoint) -> KillResult {
    let database = TestDatabase::create().await;
    let script = match point {
        KillPoint::BeforeGreeting => Script {
            greeting: Action::Stall,
            ..Script::default()
        },
        KillPoint::DuringData => Script {
            data: Action::Stall,
            ..Script::default()
        },
        KillPoint::AfterFinalDot => Script {
            after_data: [Action::Stall].into(),
            ..Script::default()
        },
    };
    let smtp = SmtpServer::start_with(script).await;
    let env = [
        ("POSTHORN_DATABASE_URL", database.url()),
        ("POSTHORN_SMTP_URL", smtp.url()),
        ("POSTHORN_SMTP_TIMEOUT", "1s".to_owned()),
        ("POSTHORN_LEASE_DURATION", "6s".to_owned()),
        ("POSTHORN_POLL_INTERVAL", "100ms".to_owned()),
        ("POSTHORN_RETRY_INITIAL_DELAY", "200ms".to_owned()),
        ("POSTHORN_WORKERS", "1".to_owned()),
    ];
    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    let token = token();
    let id = server.accept(&token, &valid_message()).await;

    // Kill the moment the send reaches the point: well inside the 1 s SMTP timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reached = match point {
            KillPoint::BeforeGreeting => smtp.connections() >= 1,
            KillPoint::DuringData => smtp.commands().iter().any(|c| c == "DATA"),
            KillPoint::AfterFinalDot => !smtp.received().is_empty(),
        };
        if reached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the send never reached {point:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let sending = database.sending(Some(&id)).await;
    assert_eq!(sending, 1, "killed mid-send: the job is still claimed");

    // The upstream recovers; a new process takes the job over when its lease expires.
    smtp.script(|script| {
        script.greeting = Action::reply("220 test.invalid ESMTP ready");
        script.data = Action::reply("354 go ahead");
        script.after_data.clear();
    });
    let mut server = Posthorn::spawn(&env);
    server.wait_ready().await;
    let message = server
        .wait_for_status(&token, &id, "sent", Duration::from_secs(20))
        .await;
    // A stray second copy would arrive right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let message_id = message["message_id"].as_str().unwrap();
    let result = KillResult {
        copies: copies(&smtp, message_id),
        possible_duplicates: server.metric("posthorn_possible_duplicates_total").await,
        attempts: message["attempts"].as_array().unwrap().clone(),
    };
    eprintln!(
        "{point:?}: the upstream has {} cop{}; possible duplicates counted after the restart: {}; attempts: {:?}",
        result.copies,
        if result.copies == 1 { "y" } else { "ies" },
        result.possible_duplicates,
        result
            .attempts
            .iter()
            .map(|a| a["outcome"].as_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_the_greeting_delivers_once_after_the_restart() {
    let result = kill_during_send(KillPoint::BeforeGreeting).await;
    assert_eq!(result.copies, 1, "no duplicate: nothing was transferred");
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_data_delivers_once_after_the_restart() {
    let result = kill_during_send(KillPoint::DuringData).await;
    assert_eq!(
        result.copies, 1,
        "no duplicate: the upstream never had the data"
    );
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_final_dot_delivers_at_most_twice_and_counts_the_duplicate() {
    let result = kill_during_send(KillPoint::AfterFinalDot).await;
    assert!(
        (1..=2).contains(&result.copies),
        "at most twice: {}",
        result.copies
    );
    assert!(
        result.possible_duplicates >= 1.0,
        "the restarted process counts the possible duplicate: {}",
        result.possible_duplicates
    );
    assert_eq!(result.attempts.last().unwrap()["outcome"], "sent");
}

// ---------------------------------------------------------------------------------------------------
// 5. Many concurrent requests with one Idempotency-Key
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_requests_with_one_idempotency_key_send_one_email() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let key = format!("storm-{}", uuid::Uuid::new_v4().simple());
    let body = valid_message();
    let token = app.default_token();
    let barrier = Arc::new(tokio::sync::Barrier::new(30));
    let requests: Vec<_> = (0..30)
        .map(|_| {
            let http = app.client.clone();
            let url = format!("{}/send", app.address);
            let key = key.clone();
            let body = body.clone();
            let token = token.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await
                    .expect("request completes");
                let status = response.status().as_u16();
                let replayed = response.headers().contains_key("idempotent-replayed");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, replayed, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every request is answered 202: {statuses:?} {answers:?}"
    );
    let ids: HashSet<&str> = answers
        .iter()
        .filter_map(|(_, _, body)| body["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one id for all: {ids:?}");
    let created = answers.iter().filter(|(_, replayed, _)| !replayed).count();
    assert_eq!(created, 1, "one request created it, the others replayed");

    let id = ids.into_iter().next().unwrap().to_owned();
    app.wait_for_status(&id, "sent", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.received().len(), 1, "exactly one email left");
    assert_eq!(
        app.database.scalar("SELECT count(*) FROM messages").await,
        1
    );
}

// ---------------------------------------------------------------------------------------------------
// 6. A long-held snapshot
// ---------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------
// 7. Secrets never appear
// ---------------------------------------------------------------------------------------------------

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
