//! Upgrading a PostgreSQL database in service to the job table: unfinished messages become jobs (a
//! lease in progress included), and what a replica of the previous release writes during the rolling
//! update (accepts, outcomes, retries, cancels) is neither lost nor delivered twice.

use std::sync::Arc;
use std::time::Duration;

use posthorn::domain::MessageStatus;
use posthorn::store::postgres::{PoolSettings, PostgresStore};
use posthorn::store::{MessageFilter, SharedStore};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::TestDatabase;

/// The schema before the job table: the first migration alone.
const FIRST_MIGRATION: &str = "20261122000001_messages.sql";

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

fn store(database: &TestDatabase) -> SharedStore {
    Arc::new(
        PostgresStore::connect(
            &posthorn::config::Secret::new(database.url()),
            &PoolSettings {
                max_connections: 5,
                acquire_timeout: Duration::from_secs(5),
                idempotency_retention: Duration::from_secs(60),
            },
        )
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

async fn claimed(store: &SharedStore) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = store
        .claim_due_jobs(100, Duration::from_secs(300))
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.lease.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn unfinished_messages_become_jobs_and_the_previous_release_cannot_lose_or_double_them() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    migrate_to_first(&database.url()).await;
    let mut db = database.connect().await;
    let old_lease = Uuid::now_v7();
    let due = insert_previous(&mut db, "queued", "now() - interval '1 second'", None).await;
    let later = insert_previous(&mut db, "queued", "now() + interval '1 day'", None).await;
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

    // Every unfinished message is a job; the finished one is not.
    let jobs: Vec<(Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT message_id, lease_token FROM jobs ORDER BY message_id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        jobs,
        [(due, None), (later, None), (in_flight, Some(old_lease))]
    );
    assert_eq!(status(&store, in_flight).await, MessageStatus::Sending);
    assert_eq!(status(&store, sent).await, MessageStatus::Sent);
    let scheduled = store.get_message(None, later).await.unwrap().unwrap();
    assert_eq!(scheduled.summary.status, MessageStatus::Queued);
    assert!(scheduled.summary.next_attempt_at.is_some());
    let sending = store
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
        [in_flight]
    );

    // Only the due job is claimed: the scheduled one waits, the leased one is held.
    assert_eq!(claimed(&store).await, [due]);

    // The previous release, still running, accepts a message: it is queued as a job.
    let accepted_by_old = insert_previous(&mut db, "queued", "now()", None).await;
    // It finishes the message it held before the upgrade...
    sqlx::query(
        "UPDATE messages SET status = 'sent', lease_token = NULL, sent_at = now(), finished_at = now()
          WHERE id = $1 AND lease_token = $2",
    )
    .bind(in_flight)
    .bind(old_lease)
    .execute(&mut db)
    .await
    .unwrap();
    // ...and cancels a queued one, without looking at jobs.
    let cancelled_by_old =
        insert_previous(&mut db, "queued", "now() + interval '1 day'", None).await;
    sqlx::query(
        "UPDATE messages SET status = 'cancelled', finished_at = now(), lease_token = NULL
          WHERE id = $1 AND status = 'queued'",
    )
    .bind(cancelled_by_old)
    .execute(&mut db)
    .await
    .unwrap();
    // The old lease and the cancelled job run out.
    sqlx::query("UPDATE jobs SET due_at = now() - interval '1 second' WHERE message_id = ANY($1)")
        .bind(vec![in_flight, cancelled_by_old])
        .execute(&mut db)
        .await
        .unwrap();

    // The new accept is delivered; the finished and cancelled messages are not, and their jobs go.
    assert_eq!(claimed(&store).await, [accepted_by_old]);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT message_id FROM jobs ORDER BY message_id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(left, [due, later, accepted_by_old]);
    assert_eq!(status(&store, in_flight).await, MessageStatus::Sent);
    assert_eq!(
        status(&store, cancelled_by_old).await,
        MessageStatus::Cancelled
    );
}

#[tokio::test]
async fn a_retry_written_by_the_previous_release_is_queued_as_a_job() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    migrate_to_first(&database.url()).await;
    let mut db = database.connect().await;
    let old_lease = Uuid::now_v7();
    let id = insert_previous(
        &mut db,
        "sending",
        "now() + interval '5 minutes'",
        Some(old_lease),
    )
    .await;
    let store = store(&database);
    store.migrate().await.unwrap();

    // The previous release's worker records a transient failure: retry, due now, one recipient left.
    sqlx::query(
        "UPDATE messages SET status = 'queued', lease_token = NULL, due_at = now() - interval '1 second',
                pending_recipients = '{a@example.org}', last_error = '451 try later'
          WHERE id = $1 AND lease_token = $2",
    )
    .bind(id)
    .bind(old_lease)
    .execute(&mut db)
    .await
    .unwrap();

    assert_eq!(status(&store, id).await, MessageStatus::Queued);
    let jobs = store
        .claim_due_jobs(10, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "the retry is claimed at once, not after the lease"
    );
    assert_eq!(jobs[0].lease.id, id);
    assert_eq!(jobs[0].attempt, 2);
    assert_eq!(
        jobs[0].pending_recipients.as_deref(),
        Some(&["a@example.org".to_owned()][..])
    );
    assert!(!jobs[0].reclaimed, "the retry released its lease");
}

#[tokio::test]
async fn the_rollback_script_puts_the_queue_back_on_the_messages_and_the_upgrade_runs_again() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    let store = store(&database);
    store.migrate().await.unwrap();
    let mut db = database.connect().await;
    // Two queued messages (the trigger makes their jobs); a worker leases the due one.
    let leased = insert_previous(&mut db, "queued", "now()", None).await;
    let scheduled = insert_previous(&mut db, "queued", "now() + interval '1 day'", None).await;
    assert_eq!(claimed(&store).await, [leased]);

    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations/postgres-rollback/20261123000001_jobs.sql"),
    )
    .unwrap();
    sqlx::raw_sql(&script).execute(&mut db).await.unwrap();

    let rows: Vec<(Uuid, String, bool, bool)> = sqlx::query_as(
        "SELECT id, status, lease_token IS NOT NULL, due_at > now() + interval '1 hour'
           FROM messages ORDER BY id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (leased, "sending".to_owned(), true, false),
            (scheduled, "queued".to_owned(), false, true),
        ]
    );
    let restored: (bool, bool, i64) = sqlx::query_as(
        "SELECT to_regclass('jobs') IS NULL, to_regclass('messages_due_idx') IS NOT NULL,
                (SELECT count(*) FROM _sqlx_migrations WHERE version = 20261123000001)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(restored, (true, true, 0));

    // A later release upgrades the database again, the lease included.
    store.migrate().await.unwrap();
    assert_eq!(status(&store, leased).await, MessageStatus::Sending);
    assert!(claimed(&store).await.is_empty());
}
