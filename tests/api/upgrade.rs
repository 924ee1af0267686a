//! Upgrading a PostgreSQL database in service to the job table: unfinished messages become jobs (a
//! lease in progress included), and what a replica of the previous release writes during the rolling
//! update (accepts, outcomes, retries, cancels) is neither lost nor delivered twice.

use std::sync::Arc;
use std::time::Duration;

use posthorn::domain::MessageStatus;
use posthorn::store::postgres::PostgresStore;
use posthorn::store::{AttemptRecord, Disposition, MessageFilter, SharedStore};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::TestDatabase;

/// The schema before the job table: the first migration alone.
const FIRST_MIGRATION: &str = "20261122000001_messages.sql";

/// A job: its message, lease, attempts and recipients left.
type JobState = (Uuid, Option<Uuid>, i32, Option<Vec<String>>);
/// A job and whether it is due more than 23 hours from now.
type MigratedJob = (Uuid, Option<Uuid>, i32, Option<Vec<String>>, bool);
/// A message after the rollback: status, lease, attempts, recipients left, due more than an hour ahead.
type RestoredMessage = (Uuid, String, Option<Uuid>, i32, Option<Vec<String>>, bool);

const ENVELOPE: &str = r#"{"from": {"address": "shop@example.com"}, "to": [{"address": "a@example.org"}],
    "cc": [], "bcc": [], "reply_to": [], "subject": "from the previous release"}"#;
const BODY: &str = r#"{"text": "hello", "html": null, "headers": [], "attachments": []}"#;

async fn migrate_to_first(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/postgres")
        .join(FIRST_MIGRATION);
    std::fs::copy(&source, dir.path().join(FIRST_MIGRATION)).unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let mut connection = PgConnection::connect(url).await.unwrap();
    migrator.run(&mut connection).await.unwrap();
}

/// A message row as the previous release writes it: the queue's state on the message itself.
async fn insert_previous(
    db: &mut PgConnection,
    status: &str,
    due: &str,
    lease: Option<Uuid>,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(&format!(
        "INSERT INTO messages (id, caller, status, message_id, envelope, body, due_at, lease_token,
                               attempt_count)
         VALUES ($1, 'shop', $2, '<' || $1::text || '@example.com>', $3::jsonb, $4::jsonb, {due}, $5,
                 CASE WHEN $5::uuid IS NULL THEN 0 ELSE 1 END)"
    ))
    .bind(id)
    .bind(status)
    .bind(ENVELOPE)
    .bind(BODY)
    .bind(lease)
    .execute(&mut *db)
    .await
    .unwrap();
    id
}

/// The previous release's claim statement, as it was.
async fn previous_claim(db: &mut PgConnection) -> u64 {
    sqlx::query(
        "WITH due AS (
             SELECT id, status AS prior_status
             FROM messages
             WHERE status IN ('queued', 'sending') AND due_at <= now()
             ORDER BY due_at
             LIMIT 200
             FOR UPDATE SKIP LOCKED
         )
         UPDATE messages AS m
            SET status = 'sending',
                attempt_count = m.attempt_count + 1,
                lease_token = gen_random_uuid(),
                due_at = now() + interval '5 minutes',
                updated_at = now()
           FROM due
          WHERE m.id = due.id
         RETURNING m.id",
    )
    .execute(db)
    .await
    .unwrap()
    .rows_affected()
}

/// The previous release's outcome write for one message (its batch statement's SET and WHERE):
/// `queued` is a retry due now, anything else final. Returns whether it applied.
async fn previous_outcome(db: &mut PgConnection, id: Uuid, lease: Uuid, status: &str) -> bool {
    sqlx::query(
        "UPDATE messages AS m
            SET status = $3,
                lease_token = NULL,
                updated_at = now(),
                due_at = CASE WHEN $3 = 'queued' THEN now() - interval '1 second' ELSE m.due_at END,
                pending_recipients = CASE WHEN $3 = 'queued' THEN '{a@example.org}'::text[] END,
                sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE m.sent_at END,
                finished_at = CASE WHEN $3 IN ('sent', 'failed') THEN now() ELSE NULL END,
                last_error = CASE WHEN $3 = 'queued' THEN '451 try later' END
          WHERE m.id = $1 AND m.lease_token = $2",
    )
    .bind(id)
    .bind(lease)
    .bind(status)
    .execute(db)
    .await
    .unwrap()
    .rows_affected()
        == 1
}

/// The previous release's cancel. Returns whether it applied.
async fn previous_cancel(db: &mut PgConnection, id: Uuid) -> bool {
    sqlx::query(
        "UPDATE messages SET status = 'cancelled', finished_at = now(), updated_at = now(),
                lease_token = NULL
          WHERE id = $1 AND status = 'queued'",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap()
    .rows_affected()
        == 1
}

async fn job(db: &mut PgConnection, id: Uuid) -> Option<(Option<Uuid>, i32, Option<Vec<String>>)> {
    sqlx::query_as(
        "SELECT lease_token, attempt_count, pending_recipients FROM jobs WHERE message_id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
    .unwrap()
}

/// A store on the upgraded database, as the new release opens it.
pub(crate) fn store(database: &TestDatabase) -> SharedStore {
    Arc::new(
        PostgresStore::connect(&crate::support::store_settings(
            &database.url(),
            Duration::from_secs(60),
        ))
        .unwrap(),
    )
}

async fn status(store: &SharedStore, id: Uuid) -> MessageStatus {
    store
        .get_message(None, id)
        .await
        .unwrap()
        .unwrap()
        .summary
        .status
}

async fn claim(store: &SharedStore) -> Vec<posthorn::store::ClaimedJob> {
    store
        .claim_due_jobs(100, Duration::from_secs(300))
        .await
        .unwrap()
}

async fn claimed(store: &SharedStore) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = claim(store).await.iter().map(|job| job.lease.id).collect();
    ids.sort();
    ids
}

/// Makes a job due now, as if its lease or its wait had run out.
async fn make_due(db: &mut PgConnection, id: Uuid) {
    sqlx::query("UPDATE jobs SET due_at = now() - interval '1 second' WHERE message_id = $1")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
}

/// A database at the first migration with a message of each kind, then upgraded through `store`.
struct Upgraded {
    database: TestDatabase,
    db: PgConnection,
    store: SharedStore,
    /// Queued and due.
    due: Uuid,
    /// Queued for tomorrow, after a failed attempt, for one recipient left.
    later: Uuid,
    /// Being sent by the previous release, under `old_lease`.
    in_flight: Uuid,
    old_lease: Uuid,
    sent: Uuid,
}

async fn upgraded() -> Upgraded {
    let database = TestDatabase::create_empty().await;
    migrate_to_first(&database.url()).await;
    let mut db = database.connect().await;
    let old_lease = Uuid::now_v7();
    let due = insert_previous(&mut db, "queued", "now() - interval '1 second'", None).await;
    let later = insert_previous(&mut db, "queued", "now() + interval '1 day'", None).await;
    sqlx::query(
        "UPDATE messages SET attempt_count = 1, pending_recipients = '{a@example.org}' WHERE id = $1",
    )
    .bind(later)
    .execute(&mut db)
    .await
    .unwrap();
    let in_flight = insert_previous(
        &mut db,
        "sending",
        "now() + interval '5 minutes'",
        Some(old_lease),
    )
    .await;
    let sent = insert_previous(&mut db, "sent", "now() - interval '1 hour'", None).await;
    let store = store(&database);
    store.migrate().await.unwrap();
    Upgraded {
        database,
        db,
        store,
        due,
        later,
        in_flight,
        old_lease,
        sent,
    }
}

#[tokio::test]
async fn unfinished_messages_become_jobs_with_their_state_and_leases() {
    crate::postgres_only!();
    let mut up = upgraded().await;

    // Every unfinished message is a job with its attempts, recipients left and lease; the finished
    // one is not.
    let jobs: Vec<MigratedJob> = sqlx::query_as(
        "SELECT j.message_id, j.lease_token, j.attempt_count, j.pending_recipients,
                j.due_at > now() + interval '23 hours'
           FROM jobs AS j ORDER BY j.message_id",
    )
    .fetch_all(&mut up.db)
    .await
    .unwrap();
    assert_eq!(
        jobs,
        [
            (up.due, None, 0, None, false),
            (
                up.later,
                None,
                1,
                Some(vec!["a@example.org".to_owned()]),
                true
            ),
            (up.in_flight, Some(up.old_lease), 1, None, false),
        ]
    );
    let infinite: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE due_at = 'infinity'")
            .fetch_one(&mut up.db)
            .await
            .unwrap();
    assert_eq!(infinite, 3, "the previous release's claim sees nothing due");
    assert_eq!(previous_claim(&mut up.db).await, 0);

    // Reads: status from the lease, the next attempt from the job.
    assert_eq!(
        status(&up.store, up.in_flight).await,
        MessageStatus::Sending
    );
    assert_eq!(status(&up.store, up.sent).await, MessageStatus::Sent);
    let scheduled = up.store.get_message(None, up.later).await.unwrap().unwrap();
    assert_eq!(scheduled.summary.status, MessageStatus::Queued);
    assert_eq!(scheduled.summary.attempt_count, 1);
    let next = scheduled.summary.next_attempt_at.expect("a next attempt");
    assert!(next > time::OffsetDateTime::now_utc() + Duration::from_secs(23 * 3600));
    let sending = up
        .store
        .list_messages(
            None,
            &MessageFilter {
                status: Some(MessageStatus::Sending),
                limit: 10,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        sending.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        [up.in_flight]
    );

    // Only the due job is claimed: the scheduled one waits, the leased one is held.
    assert_eq!(claimed(&up.store).await, [up.due]);
}

#[tokio::test]
async fn the_previous_release_s_accepts_are_queued_and_wake_the_workers() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    let mut listener = sqlx::postgres::PgListener::connect(&up.database.url())
        .await
        .unwrap();
    listener.listen("posthorn_jobs").await.unwrap();

    let accepted = insert_previous(&mut up.db, "queued", "now()", None).await;
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    let scheduled = insert_previous(&mut up.db, "queued", "now() + interval '1 day'", None).await;
    assert_eq!(job(&mut up.db, scheduled).await, Some((None, 0, None)));
    assert_eq!(previous_claim(&mut up.db).await, 0);
    assert_eq!(claimed(&up.store).await, [up.due, accepted]);
}

#[tokio::test]
async fn the_previous_release_s_outcome_applies_while_its_lease_holds_the_job() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    assert!(previous_outcome(&mut up.db, up.in_flight, up.old_lease, "sent").await);
    assert_eq!(status(&up.store, up.in_flight).await, MessageStatus::Sent);
    assert_eq!(job(&mut up.db, up.in_flight).await, None, "the job is done");
    assert_eq!(claimed(&up.store).await, [up.due]);
}

#[tokio::test]
async fn a_retry_written_by_the_previous_release_is_queued_as_a_job() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    assert!(previous_outcome(&mut up.db, up.in_flight, up.old_lease, "queued").await);
    assert_eq!(status(&up.store, up.in_flight).await, MessageStatus::Queued);
    let jobs = claim(&up.store).await;
    let retried = jobs
        .iter()
        .find(|job| job.lease.id == up.in_flight)
        .expect("the retry is claimed at once, not after the lease");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0].lease.id, up.due);
    assert_eq!(retried.attempt, 2);
    assert_eq!(
        retried.pending_recipients.as_deref(),
        Some(&["a@example.org".to_owned()][..])
    );
    assert!(!retried.reclaimed, "the retry released its lease");
}

#[tokio::test]
async fn once_a_job_is_taken_over_the_previous_release_s_writes_are_skipped() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    // The old lease runs out and this release takes the job over.
    make_due(&mut up.db, up.in_flight).await;
    let jobs = claim(&up.store).await;
    let taken = jobs
        .iter()
        .find(|job| job.lease.id == up.in_flight)
        .expect("taken over");
    assert!(taken.reclaimed, "counted as a possible duplicate");
    let new_lease = taken.lease;

    // The previous release's worker wakes up: its retry, its success and its cancel are all skipped.
    assert!(!previous_outcome(&mut up.db, up.in_flight, up.old_lease, "queued").await);
    assert!(!previous_outcome(&mut up.db, up.in_flight, up.old_lease, "sent").await);
    assert!(!previous_cancel(&mut up.db, up.in_flight).await);
    assert_eq!(
        job(&mut up.db, up.in_flight).await.map(|(lease, ..)| lease),
        Some(Some(new_lease.token)),
        "the new holder keeps the job"
    );
    assert_eq!(
        status(&up.store, up.in_flight).await,
        MessageStatus::Sending
    );
    // A message this release is sending cannot be cancelled by the previous one either.
    assert!(!previous_cancel(&mut up.db, up.due).await);

    // The new holder's outcome is recorded.
    let attempt = AttemptRecord {
        attempt: taken.attempt,
        started_at: time::OffsetDateTime::now_utc(),
        duration_ms: 5,
        provider: "test".into(),
        outcome: posthorn::domain::OutcomeClass::Sent,
        smtp_code: Some(250),
        enhanced_code: None,
        response: Some("ok".into()),
        recipients: vec![],
        hard_bounces: vec![],
    };
    assert!(
        up.store
            .record_outcome(new_lease, attempt, Disposition::Sent)
            .await
            .unwrap()
    );
    assert_eq!(status(&up.store, up.in_flight).await, MessageStatus::Sent);
    assert_eq!(job(&mut up.db, up.in_flight).await, None);
}

#[tokio::test]
async fn jobs_of_messages_the_previous_release_cancelled_are_dropped_unsent() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    assert!(
        previous_cancel(&mut up.db, up.later).await,
        "no worker holds it"
    );
    make_due(&mut up.db, up.later).await;
    assert_eq!(claimed(&up.store).await, [up.due]);
    assert_eq!(
        job(&mut up.db, up.later).await,
        None,
        "the stale job is dropped"
    );
    assert_eq!(status(&up.store, up.later).await, MessageStatus::Cancelled);
}

#[tokio::test]
async fn the_rollback_script_puts_the_queue_back_on_the_messages_and_the_upgrade_runs_again() {
    crate::postgres_only!();
    let mut up = upgraded().await;
    // This release leases the due job.
    assert_eq!(claimed(&up.store).await, [up.due]);
    let before: Vec<JobState> = sqlx::query_as(
        "SELECT message_id, lease_token, attempt_count, pending_recipients FROM jobs ORDER BY 1",
    )
    .fetch_all(&mut up.db)
    .await
    .unwrap();

    // The rollback scripts of later migrations first, newest first, as the chart's README says.
    for script in [
        "20261207000001_body_compression.sql",
        "20261206000008_send_schedules.sql",
        "20261206000007_streams.sql",
        "20261206000006_reports.sql",
        "20261206000005_webhooks.sql",
        "20261206000004_suppressions.sql",
        "20261206000003_events.sql",
        "20261206000002_api.sql",
        "20261206000001_sources.sql",
        "20261201000001_attempt_outcomes.sql",
        "20261123000001_jobs.sql",
    ] {
        let script = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations/postgres-rollback")
                .join(script),
        )
        .unwrap();
        sqlx::raw_sql(&script).execute(&mut up.db).await.unwrap();
    }

    // Due times are back on the messages: the leases' expiries, and tomorrow for the scheduled one.
    let rows: Vec<RestoredMessage> = sqlx::query_as(
        "SELECT id, status, lease_token, attempt_count, pending_recipients,
                due_at > now() + interval '1 hour'
           FROM messages WHERE status <> 'sent' ORDER BY id",
    )
    .fetch_all(&mut up.db)
    .await
    .unwrap();
    let due_lease = before[0].1;
    assert!(due_lease.is_some());
    assert_eq!(
        rows,
        [
            (up.due, "sending".to_owned(), due_lease, 1, None, false),
            (
                up.later,
                "queued".to_owned(),
                None,
                1,
                Some(vec!["a@example.org".to_owned()]),
                true
            ),
            (
                up.in_flight,
                "sending".to_owned(),
                Some(up.old_lease),
                1,
                None,
                false
            ),
        ]
    );
    let restored: (bool, bool, i64) = sqlx::query_as(
        "SELECT to_regclass('jobs') IS NULL, to_regclass('messages_due_idx') IS NOT NULL,
                (SELECT count(*) FROM _sqlx_migrations WHERE version = 20261123000001)",
    )
    .fetch_one(&mut up.db)
    .await
    .unwrap();
    assert_eq!(restored, (true, true, 0));

    // A later release upgrades the database again: the same jobs, leases included.
    up.store.migrate().await.unwrap();
    let after: Vec<JobState> = sqlx::query_as(
        "SELECT message_id, lease_token, attempt_count, pending_recipients FROM jobs ORDER BY 1",
    )
    .fetch_all(&mut up.db)
    .await
    .unwrap();
    assert_eq!(after, before);
}
