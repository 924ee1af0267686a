//! Upgrading to outcomes recorded on attempts (migration `20261201000001`): the previous release's
//! outcomes, written on the message, still read right; and the rollback script writes this release's
//! outcomes back onto the messages, where the previous release reads them.

use std::time::Duration;

use posthorn::domain::MessageStatus;
use posthorn::store::{CancelOutcome, ClaimedJob, Disposition, MessageFilter, SharedStore};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{attempt, enqueue, message};
use crate::support::TestDatabase;
use crate::upgrade;

/// The rollback scripts back to before the outcome migration, newest first.
const ROLLBACK: [&str; 10] = [
    "migrations/postgres-rollback/20261207000001_body_compression.sql",
    "migrations/postgres-rollback/20261206000008_send_schedules.sql",
    "migrations/postgres-rollback/20261206000007_streams.sql",
    "migrations/postgres-rollback/20261206000006_reports.sql",
    "migrations/postgres-rollback/20261206000005_webhooks.sql",
    "migrations/postgres-rollback/20261206000004_suppressions.sql",
    "migrations/postgres-rollback/20261206000003_events.sql",
    "migrations/postgres-rollback/20261206000002_api.sql",
    "migrations/postgres-rollback/20261206000001_sources.sql",
    "migrations/postgres-rollback/20261201000001_attempt_outcomes.sql",
];

/// A message as the previous release reads it: status, attempts, sent, last error.
type PreviousView = (String, i32, bool, Option<String>);

struct Fixture {
    database: TestDatabase,
    db: PgConnection,
    store: SharedStore,
}

async fn fixture() -> Fixture {
    let database = TestDatabase::create_postgres().await;
    let db = database.connect().await;
    let store = upgrade::store(&database);
    Fixture {
        database,
        db,
        store,
    }
}

/// Accepts a message (the accept path is the same in both releases).
async fn accept(store: &SharedStore, subject: &str) -> Uuid {
    enqueue(store, "shop", message(subject, None)).await
}

async fn claim_all(store: &SharedStore) -> Vec<ClaimedJob> {
    store
        .claim_due_jobs(10, Duration::from_secs(60))
        .await
        .unwrap()
}

/// The previous release's claim, as it was: leases every due job under `token`.
async fn previous_claim(db: &mut PgConnection, token: Uuid) -> u64 {
    sqlx::query(
        "WITH due AS (
             SELECT message_id, lease_token IS NOT NULL AS reclaimed
             FROM jobs WHERE due_at <= now() ORDER BY due_at LIMIT 200 FOR UPDATE SKIP LOCKED
         ),
         claimed AS (
             UPDATE jobs AS j
                SET attempt_count = j.attempt_count + 1, lease_token = $1,
                    due_at = now() + interval '5 minutes', updated_at = now()
               FROM due WHERE j.message_id = due.message_id
             RETURNING j.message_id
         )
         SELECT c.message_id FROM claimed AS c LEFT JOIN messages AS m ON m.id = c.message_id",
    )
    .bind(token)
    .execute(db)
    .await
    .unwrap()
    .rows_affected()
}

/// The previous release's outcome statement, as it was (one outcome of its batch): the job deleted,
/// the outcome written on the message, an attempt without a status. Returns whether it applied.
async fn previous_outcome(
    db: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    status: &str,
    error: Option<&str>,
) -> bool {
    let batch = json!([{
        "id": id, "token": token, "status": status, "delay_ms": 0, "pending": null, "error": error,
        "attempt": 1, "started_us": 1_764_000_000_000_000_i64, "duration_ms": 5, "provider": "old",
        "outcome": if status == "sent" { "sent" } else { "permanent" }, "smtp_code": 250,
        "enhanced_code": null, "response": "ok", "recipients": [],
    }]);
    let applied: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH o AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS o(
                 id uuid, token uuid, status text, delay_ms bigint, pending text[], error text,
                 attempt integer, started_us bigint, duration_ms integer, provider text,
                 outcome text, smtp_code smallint, enhanced_code text, response text,
                 recipients jsonb)
         ),
         settled AS (
             DELETE FROM jobs AS j USING o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status <> 'queued'
             RETURNING o.id, o.token
         ),
         retried AS (
             UPDATE jobs AS j
                SET lease_token = NULL, due_at = now() + o.delay_ms * interval '1 millisecond',
                    pending_recipients = o.pending, updated_at = now()
               FROM o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status = 'queued'
             RETURNING o.id, o.token
         ),
         applied AS (SELECT id, token FROM settled UNION ALL SELECT id, token FROM retried),
         updated AS (
             UPDATE messages AS m
                SET status = o.status, updated_at = now(), attempt_count = o.attempt,
                    sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE m.sent_at END,
                    finished_at = CASE WHEN o.status <> 'queued' THEN now() ELSE NULL END,
                    last_error = o.error
               FROM applied JOIN o ON o.id = applied.id AND o.token = applied.token
              WHERE m.id = applied.id
         ),
         attempts AS (
             INSERT INTO delivery_attempts
                 (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                  enhanced_code, response, recipients)
             SELECT o.id, o.attempt, timestamptz 'epoch' + o.started_us * interval '1 microsecond',
                    o.duration_ms, o.provider, o.outcome, o.smtp_code, o.enhanced_code, o.response,
                    o.recipients
               FROM o JOIN applied ON applied.id = o.id AND applied.token = o.token
             ON CONFLICT (message_id, attempt) DO NOTHING
         )
         SELECT id, token FROM applied",
    )
    .bind(batch)
    .fetch_all(db)
    .await
    .unwrap();
    applied == [(id, token)]
}

/// What the previous release's reads show for a message (its status expression and columns).
async fn previous_view(db: &mut PgConnection, id: Uuid) -> PreviousView {
    sqlx::query_as(
        "SELECT CASE WHEN m.status NOT IN ('queued', 'sending') THEN m.status
                     WHEN j.lease_token IS NULL THEN 'queued' ELSE 'sending' END,
                coalesce(j.attempt_count, m.attempt_count), m.sent_at IS NOT NULL, m.last_error
           FROM messages AS m LEFT JOIN jobs AS j ON j.message_id = m.id
          WHERE m.id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

/// What this release shows for a message, in the same shape.
async fn current_view(store: &SharedStore, id: Uuid) -> PreviousView {
    let summary = store.get_message(None, id).await.unwrap().unwrap().summary;
    (
        summary.status.as_str().to_owned(),
        summary.attempt_count,
        summary.sent_at.is_some(),
        summary.last_error,
    )
}

#[tokio::test]
async fn outcomes_the_previous_release_writes_on_the_message_read_right() {
    crate::postgres_only!();
    let mut up = fixture().await;
    let sent = accept(&up.store, "sent by the previous release").await;
    let failed = accept(&up.store, "failed by the previous release").await;
    let token = Uuid::now_v7();
    assert_eq!(previous_claim(&mut up.db, token).await, 2);
    assert_eq!(
        current_view(&up.store, sent).await.0,
        "sending",
        "its lease is read off the job"
    );
    assert!(previous_outcome(&mut up.db, sent, token, "sent", None).await);
    assert!(
        previous_outcome(
            &mut up.db,
            failed,
            token,
            "failed",
            Some("550 no such user")
        )
        .await
    );

    assert_eq!(
        current_view(&up.store, sent).await,
        ("sent".to_owned(), 1, true, None)
    );
    assert_eq!(
        current_view(&up.store, failed).await,
        (
            "failed".to_owned(),
            1,
            false,
            Some("550 no such user".to_owned())
        )
    );
    let record = up.store.get_message(None, sent).await.unwrap().unwrap();
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].provider, "old");
    let listed = up
        .store
        .list_messages(
            None,
            &MessageFilter {
                status: Some(MessageStatus::Failed),
                limit: 10,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<Uuid> = listed.items.iter().map(|item| item.id).collect();
    assert_eq!(ids, [failed]);
}

#[tokio::test]
async fn the_rollback_script_writes_this_release_s_outcomes_onto_the_messages_and_the_upgrade_runs_again()
 {
    crate::postgres_only!();
    let mut up = fixture().await;
    let sent = accept(&up.store, "sent").await;
    let retried = accept(&up.store, "retried").await;
    let failed = accept(&up.store, "failed").await;
    let cancelled = accept(&up.store, "retried, then cancelled").await;
    for job in claim_all(&up.store).await {
        let (number, outcome, disposition) = match job.lease.id {
            id if id == sent => (1, "sent", Disposition::Sent),
            id if id == failed => (
                1,
                "permanent",
                Disposition::Failed {
                    error: "550 no such user".into(),
                },
            ),
            _ => (
                1,
                "transient",
                Disposition::Retry {
                    delay: Duration::from_secs(3600),
                    recipients: None,
                    error: "451 try later".into(),
                },
            ),
        };
        assert!(
            up.store
                .record_outcome(job.lease, attempt(number, outcome), disposition)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        up.store.cancel_message(None, cancelled).await.unwrap(),
        CancelOutcome::Cancelled
    );
    // This release wrote no outcome on the messages.
    assert_eq!(
        up.database
            .scalar("SELECT count(*) FROM messages WHERE status <> 'queued'")
            .await,
        1,
        "only the cancel"
    );
    let expected: [(Uuid, PreviousView); 4] = [
        (sent, ("sent".to_owned(), 1, true, None)),
        (
            retried,
            (
                "queued".to_owned(),
                1,
                false,
                Some("451 try later".to_owned()),
            ),
        ),
        (
            failed,
            (
                "failed".to_owned(),
                1,
                false,
                Some("550 no such user".to_owned()),
            ),
        ),
        (
            cancelled,
            (
                "cancelled".to_owned(),
                1,
                false,
                Some("451 try later".to_owned()),
            ),
        ),
    ];
    for (id, view) in &expected {
        assert_eq!(&current_view(&up.store, *id).await, view, "{id}");
    }

    for path in ROLLBACK {
        let script =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap();
        sqlx::raw_sql(&script).execute(&mut up.db).await.unwrap();
    }
    for (id, view) in &expected {
        assert_eq!(
            &previous_view(&mut up.db, *id).await,
            view,
            "{id} as the previous release reads it"
        );
    }
    let restored: (bool, i64, i64, i64) = sqlx::query_as(
        "SELECT to_regclass('message_states') IS NULL,
                (SELECT count(*) FROM information_schema.columns
                  WHERE table_name = 'delivery_attempts' AND column_name = 'recorded_at'),
                (SELECT count(*) FROM pg_constraint WHERE conname = 'delivery_attempts_message_id_fkey'),
                (SELECT count(*) FROM _sqlx_migrations WHERE version = 20261201000001)",
    )
    .fetch_one(&mut up.db)
    .await
    .unwrap();
    assert_eq!(restored, (true, 0, 1, 0));

    // A later release upgrades again and reads the same, now from the messages.
    up.store.migrate().await.unwrap();
    for (id, view) in &expected {
        assert_eq!(
            &current_view(&up.store, *id).await,
            view,
            "{id} after the upgrade"
        );
    }
}
