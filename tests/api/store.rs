//! One conformance suite for the store trait, run against every implementation: PostgreSQL and the
//! embedded SQLite store must claim, lease, retry, deduplicate and schedule alike.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use posthorn::domain::{IdempotencyKey, Limits, MessageStatus, NewMessage, RequestFingerprint};
use posthorn::store::postgres::PostgresStore;
use posthorn::store::sqlite::SqliteStore;
use posthorn::store::{
    AttemptRecord, CancelOutcome, Disposition, EnqueueOutcome, EnqueueRequest, MessageFilter,
    MessageStore, RequeueFilter, SharedStore,
};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::{TestDatabase, store_settings};

/// A store under test and whatever keeps its database alive.
struct Subject {
    store: SharedStore,
    _database: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

const RETENTION: Duration = Duration::from_secs(1);

async fn postgres() -> Subject {
    let database = TestDatabase::create_postgres().await;
    let store = PostgresStore::connect(&store_settings(&database.url(), RETENTION)).unwrap();
    Subject {
        store: Arc::new(store),
        _database: Some(database),
        _dir: None,
    }
}

async fn sqlite() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let store = SqliteStore::connect(&store_settings(&url, RETENTION)).unwrap();
    store.migrate().await.unwrap();
    Subject {
        store: Arc::new(store),
        _database: None,
        _dir: Some(dir),
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::postgres().await.store).await })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::sqlite().await.store).await })*
        }
    };
}

conformance!(
    enqueued_messages_can_be_read_and_listed_by_their_owner,
    idempotency_replays_refuses_reuse_and_expires,
    concurrent_claims_take_each_due_job_once,
    an_expired_lease_is_taken_over_and_fences_the_old_holder,
    a_renewed_lease_keeps_its_job_and_a_lost_one_is_not_renewed,
    retries_keep_the_pending_recipients_until_sent,
    released_jobs_return_without_using_an_attempt,
    only_queued_messages_can_be_cancelled,
    queue_depth_counts_unfinished_messages_by_state,
    enqueueing_a_due_message_wakes_listeners,
    retention_takes_finished_messages_in_batches_and_keeps_the_queue,
    a_requeued_message_starts_a_new_series,
    transactional_jobs_are_claimed_first_and_broadcast_keeps_a_share,
);

pub(crate) fn message(subject: &str, send_at: Option<OffsetDateTime>) -> NewMessage {
    let mut draft = json!({
        "from": "Shop <shop@example.com>",
        "to": ["a@example.org", "b@example.org"],
        "subject": subject,
        "text": "hello",
        "tags": ["conformance"],
    });
    if let Some(at) = send_at {
        draft["send_at"] = json!(
            at.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
    }
    let draft: posthorn::api::MessageDraft = serde_json::from_value(draft).unwrap();
    draft
        .into_message(&Limits::default(), OffsetDateTime::now_utc())
        .unwrap()
}

pub(crate) async fn enqueue(store: &SharedStore, caller: &str, message: NewMessage) -> uuid::Uuid {
    match store
        .enqueue(EnqueueRequest {
            caller: caller.into(),
            message,
            idempotency: None,
        })
        .await
        .unwrap()
    {
        EnqueueOutcome::Created(accepted) => accepted.id,
        other => panic!("{other:?}"),
    }
}

pub(crate) fn attempt(number: i32, outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: number,
        started_at: OffsetDateTime::now_utc(),
        duration_ms: 5,
        provider: "test".into(),
        outcome: outcome.parse().expect("an outcome class"),
        smtp_code: Some(250),
        enhanced_code: None,
        response: Some("ok".into()),
        recipients: vec![],
        hard_bounces: vec![],
    }
}

fn filter() -> MessageFilter {
    MessageFilter {
        limit: 50,
        ..MessageFilter::default()
    }
}

async fn enqueued_messages_can_be_read_and_listed_by_their_owner(store: SharedStore) {
    let first = enqueue(&store, "alice", message("one", None)).await;
    let second = enqueue(&store, "alice", message("two", None)).await;
    let other = enqueue(&store, "bob", message("three", None)).await;
    let record = store
        .get_message(Some("alice"), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.summary.envelope.subject, "one");
    assert_eq!(record.summary.status, MessageStatus::Queued);
    assert_eq!(record.summary.tags, vec!["conformance"]);
    assert!(record.attempts.is_empty());
    assert!(
        store
            .get_message(Some("alice"), other)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_message(None, other).await.unwrap().is_some());
    let page = store.list_messages(Some("alice"), &filter()).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![second, first], "newest first, only the owner's");
    let tagged = store
        .list_messages(
            None,
            &MessageFilter {
                tag: Some("conformance".into()),
                limit: 2,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tagged.items.len(), 2);
    let rest = store
        .list_messages(
            None,
            &MessageFilter {
                after: tagged.next_cursor,
                limit: 2,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    let to = |address: &str| MessageFilter {
        recipient: Some(address.into()),
        limit: 50,
        ..MessageFilter::default()
    };
    let found = store
        .list_messages(None, &to("B@Example.org"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 3, "any case, the second recipient too");
    let mine = store
        .list_messages(Some("bob"), &to("a@example.org"))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1, "and still only the owner's");
    let none = store.list_messages(None, &to("a@example")).await.unwrap();
    assert!(none.items.is_empty(), "the whole address, not a part of it");
}

async fn idempotency_replays_refuses_reuse_and_expires(store: SharedStore) {
    let key = IdempotencyKey::parse("order-1").unwrap();
    let body = RequestFingerprint::of(&json!({"a": 1}));
    let other_body = RequestFingerprint::of(&json!({"a": 2}));
    let send = |caller: &'static str, fingerprint: RequestFingerprint| {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .enqueue(EnqueueRequest {
                    caller: caller.into(),
                    message: message("idempotent", None),
                    idempotency: Some((key, fingerprint)),
                })
                .await
                .unwrap()
        }
    };
    let EnqueueOutcome::Created(first) = send("alice", body.clone()).await else {
        panic!("first request creates");
    };
    assert_eq!(
        send("alice", body.clone()).await,
        EnqueueOutcome::Replayed(first.clone())
    );
    assert_eq!(
        send("alice", other_body.clone()).await,
        EnqueueOutcome::KeyReused
    );
    assert!(
        matches!(send("bob", body.clone()).await, EnqueueOutcome::Created(_)),
        "keys are per caller"
    );
    tokio::time::sleep(RETENTION + Duration::from_millis(300)).await;
    assert!(
        matches!(send("alice", other_body).await, EnqueueOutcome::Created(_)),
        "an expired key is free again"
    );
    let page = store.list_messages(Some("alice"), &filter()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(store.purge_idempotency_keys(Duration::ZERO).await.unwrap() >= 1);
}

async fn concurrent_claims_take_each_due_job_once(store: SharedStore) {
    for i in 0..30 {
        enqueue(&store, "alice", message(&format!("job {i}"), None)).await;
    }
    let later = enqueue(
        &store,
        "alice",
        message(
            "later",
            Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ),
    )
    .await;
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim_due_jobs(4, Duration::from_secs(60))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|job| {
                    assert_eq!(job.attempt, 1);
                    assert!(!job.reclaimed);
                    job.lease.id
                }));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 30, "every due job claimed");
    assert_eq!(unique.len(), 30, "and none twice");
    assert!(!unique.contains(&later), "a scheduled job is not due");
}

async fn a_renewed_lease_keeps_its_job_and_a_lost_one_is_not_renewed(store: SharedStore) {
    let id = enqueue(&store, "alice", message("heartbeat", None)).await;
    let short = Duration::from_millis(400);
    let first = store.claim_due_jobs(10, short).await.unwrap();
    assert_eq!(first.len(), 1);
    // Renewed twice within its lease: held long past the first lease's end.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let renewed = store.renew_leases(&[first[0].lease], short).await.unwrap();
        assert_eq!(renewed, [first[0].lease]);
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        store
            .claim_due_jobs(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "still held 750 ms after a 400 ms lease was taken"
    );
    // Left to run out, it is taken over; the old holder can renew it no more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = store
        .claim_due_jobs(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].lease.id, id);
    assert!(
        store
            .renew_leases(&[first[0].lease, second[0].lease], short)
            .await
            .unwrap()
            == [second[0].lease],
        "only the current holder's lease is renewed"
    );
    assert!(
        store
            .record_outcome(second[0].lease, attempt(2, "sent"), Disposition::Sent)
            .await
            .unwrap()
    );
    assert!(
        store
            .renew_leases(&[second[0].lease], short)
            .await
            .unwrap()
            .is_empty(),
        "a finished job's lease is gone"
    );
}

async fn an_expired_lease_is_taken_over_and_fences_the_old_holder(store: SharedStore) {
    let id = enqueue(&store, "alice", message("lease", None)).await;
    let first = store
        .claim_due_jobs(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_due_jobs(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "held"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = store
        .claim_due_jobs(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].lease.id, id);
    assert!(second[0].reclaimed, "taken over from an expired lease");
    assert_eq!(second[0].attempt, 2);
    let stale = store
        .record_outcome(first[0].lease, attempt(1, "sent"), Disposition::Sent)
        .await
        .unwrap();
    assert!(!stale, "the old holder cannot record");
    let current = store
        .record_outcome(second[0].lease, attempt(2, "sent"), Disposition::Sent)
        .await
        .unwrap();
    assert!(current);
    let record = store.get_message(None, id).await.unwrap().unwrap();
    assert_eq!(record.summary.status, MessageStatus::Sent);
    assert!(record.summary.sent_at.is_some());
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].attempt, 2);
}

async fn retries_keep_the_pending_recipients_until_sent(store: SharedStore) {
    let id = enqueue(&store, "alice", message("retry", None)).await;
    let job = store
        .claim_due_jobs(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.pending_recipients, None);
    let applied = store
        .record_outcome(
            job.lease,
            attempt(1, "sent"),
            Disposition::Retry {
                delay: Duration::from_millis(200),
                recipients: Some(vec!["b@example.org".into()]),
                error: "452 mailbox full".into(),
            },
        )
        .await
        .unwrap();
    assert!(applied);
    let record = store.get_message(None, id).await.unwrap().unwrap();
    assert_eq!(record.summary.status, MessageStatus::Queued);
    assert_eq!(
        record.summary.last_error.as_deref(),
        Some("452 mailbox full")
    );
    assert!(record.summary.next_attempt_at.is_some());
    assert!(
        store
            .claim_due_jobs(1, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let job = store
        .claim_due_jobs(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.pending_recipients,
        Some(vec!["b@example.org".to_owned()])
    );
    assert!(
        store
            .record_outcome(
                job.lease,
                attempt(2, "permanent"),
                Disposition::Failed {
                    error: "550".into()
                }
            )
            .await
            .unwrap()
    );
    let record = store.get_message(None, id).await.unwrap().unwrap();
    assert_eq!(record.summary.status, MessageStatus::Failed);
    assert_eq!(record.attempts.len(), 2);
    assert_eq!(record.summary.attempt_count, 2);
}

async fn released_jobs_return_without_using_an_attempt(store: SharedStore) {
    let id = enqueue(&store, "alice", message("release", None)).await;
    let jobs = store
        .claim_due_jobs(5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.release_jobs(&[jobs[0].lease]).await.unwrap(), 1);
    let record = store.get_message(None, id).await.unwrap().unwrap();
    assert_eq!(record.summary.status, MessageStatus::Queued);
    assert_eq!(record.summary.attempt_count, 0);
    let again = store
        .claim_due_jobs(5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 1);
    assert!(!again[0].reclaimed);
    assert_eq!(
        store.release_jobs(&[jobs[0].lease]).await.unwrap(),
        0,
        "a stale lease releases nothing"
    );
}

async fn only_queued_messages_can_be_cancelled(store: SharedStore) {
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let id = enqueue(&store, "alice", message("cancel", Some(later))).await;
    assert_eq!(
        store.cancel_message(Some("bob"), id).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.cancel_message(Some("alice"), id).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        store.cancel_message(Some("alice"), id).await.unwrap(),
        CancelOutcome::TooLate(MessageStatus::Cancelled)
    );
    let due = enqueue(&store, "alice", message("due", None)).await;
    let jobs = store
        .claim_due_jobs(5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "a cancelled message is never claimed");
    assert_eq!(
        store.cancel_message(None, due).await.unwrap(),
        CancelOutcome::TooLate(MessageStatus::Sending)
    );
}

async fn queue_depth_counts_unfinished_messages_by_state(store: SharedStore) {
    for _ in 0..3 {
        enqueue(&store, "alice", message("due", None)).await;
    }
    enqueue(
        &store,
        "alice",
        message(
            "later",
            Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ),
    )
    .await;
    store
        .claim_due_jobs(1, Duration::from_secs(60))
        .await
        .unwrap();
    let depth: std::collections::HashMap<_, _> =
        store.queue_depth().await.unwrap().into_iter().collect();
    assert_eq!(depth["queued"], 2);
    assert_eq!(depth["scheduled"], 1);
    assert_eq!(depth["sending"], 1);
}

async fn enqueueing_a_due_message_wakes_listeners(store: SharedStore) {
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let listener = tokio::spawn({
        let store = store.clone();
        let wake = wake.clone();
        let stop = stop.clone();
        async move { store.listen_for_jobs(wake, stop).await }
    });
    // Give the listener time to subscribe; enqueue until a wake-up arrives.
    let woke = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            enqueue(&store, "alice", message("wake", None)).await;
            if tokio::time::timeout(Duration::from_millis(500), notified)
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await;
    stop.cancel();
    listener.await.unwrap();
    assert!(woke.is_ok(), "no wake-up after enqueueing");
}

/// Attempts have no foreign key on PostgreSQL: the outcome statement writes one only for a message it
/// updated. A message removed by hand while its job was leased leaves neither an attempt nor a job.
#[tokio::test]
async fn an_outcome_for_a_message_deleted_by_hand_writes_no_attempt() {
    crate::postgres_only!();
    let subject = postgres().await;
    let store = subject.store;
    let kept = enqueue(&store, "alice", message("kept", None)).await;
    let gone = enqueue(&store, "alice", message("gone", None)).await;
    let jobs = store
        .claim_due_jobs(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let database = subject._database.as_ref().unwrap();
    database
        .execute(&format!("DELETE FROM messages WHERE id = '{gone}'"))
        .await;
    for job in &jobs {
        let applied = store
            .record_outcome(job.lease, attempt(1, "sent"), Disposition::Sent)
            .await
            .unwrap();
        assert!(applied, "the lease held, so the job is settled");
    }
    let attempts_of = |id: uuid::Uuid| {
        format!("SELECT count(*) FROM delivery_attempts WHERE message_id = '{id}'")
    };
    assert_eq!(database.scalar(&attempts_of(kept)).await, 1);
    assert_eq!(database.scalar(&attempts_of(gone)).await, 0);
    assert_eq!(database.scalar("SELECT count(*) FROM jobs").await, 0);
    let record = store.get_message(None, kept).await.unwrap().unwrap();
    assert_eq!(record.summary.status, MessageStatus::Sent);
}

/// Claims every due job and records it as `outcome`.
async fn finish_all(store: &SharedStore, outcome: Disposition) {
    let jobs = store
        .claim_due_jobs(100, Duration::from_secs(60))
        .await
        .unwrap();
    for job in jobs {
        let class = if outcome == Disposition::Sent {
            "sent"
        } else {
            "permanent"
        };
        assert!(
            store
                .record_outcome(job.lease, attempt(job.attempt, class), outcome.clone())
                .await
                .unwrap()
        );
    }
}

async fn retention_takes_finished_messages_in_batches_and_keeps_the_queue(store: SharedStore) {
    let mut finished = Vec::new();
    for n in 0..5 {
        finished.push(enqueue(&store, "alice", message(&format!("done {n}"), None)).await);
    }
    finish_all(&store, Disposition::Sent).await;
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let waiting = enqueue(&store, "alice", message("waiting", Some(later))).await;
    let cutoff = OffsetDateTime::now_utc() + time::Duration::seconds(1);

    // Batches of two: a pass goes on until the store says it is over.
    let mut from = uuid::Uuid::nil();
    let mut dropped = 0;
    let mut batches = 0;
    loop {
        let pass = store.drop_bodies(cutoff, from, 2).await.unwrap();
        dropped += pass.affected;
        batches += 1;
        assert!(batches < 10, "the pass never ends");
        match pass.resume {
            Some(resume) => from = resume,
            None => break,
        }
    }
    assert_eq!(dropped, 5);
    for id in &finished {
        let record = store.get_message(None, *id).await.unwrap().unwrap();
        assert!(record.summary.body_dropped_at.is_some());
        assert_eq!(record.attempts.len(), 1);
        let body = store.message_body(None, *id).await.unwrap().unwrap();
        assert!(body.text.is_none() && body.html.is_none());
    }
    let kept = store.message_body(None, waiting).await.unwrap().unwrap();
    assert_eq!(kept.text.as_deref(), Some("hello"));
    // Nothing is due before the cutoff of messages that finished just now.
    let early = store
        .delete_finished(
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            uuid::Uuid::nil(),
            100,
        )
        .await
        .unwrap();
    assert_eq!(early.affected, 0);
    let deleted = store
        .delete_finished(cutoff, uuid::Uuid::nil(), 100)
        .await
        .unwrap();
    assert_eq!(deleted.affected, 5);
    for id in &finished {
        assert!(store.get_message(None, *id).await.unwrap().is_none());
    }
    assert!(store.find_message(None, waiting).await.unwrap().is_some());
}

async fn a_requeued_message_starts_a_new_series(store: SharedStore) {
    let id = enqueue(&store, "alice", message("again", None)).await;
    finish_all(
        &store,
        Disposition::Failed {
            error: "554 no".into(),
        },
    )
    .await;
    let one = RequeueFilter {
        id: Some(id),
        owner: Some("bob".into()),
        ..RequeueFilter::default()
    };
    assert_eq!(
        store.requeue_failed(&one, false).await.unwrap().requeued,
        0,
        "not bob's"
    );
    let one = RequeueFilter {
        owner: Some("alice".into()),
        ..one
    };
    assert_eq!(store.requeue_failed(&one, true).await.unwrap().requeued, 1);
    let record = store.find_message(None, id).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        MessageStatus::Failed,
        "a dry run changes nothing"
    );
    assert_eq!(store.requeue_failed(&one, false).await.unwrap().requeued, 1);
    let record = store.find_message(None, id).await.unwrap().unwrap();
    assert_eq!(record.status, MessageStatus::Queued);
    let job = store
        .claim_due_jobs(1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.attempt, 2, "attempts keep their numbers");
    assert_eq!(job.series_base, 1);
    assert!(job.series_started_at > job.created_at);
    // Twice at once puts it back once.
    assert_eq!(store.requeue_failed(&one, false).await.unwrap().requeued, 0);
}

async fn transactional_jobs_are_claimed_first_and_broadcast_keeps_a_share(store: SharedStore) {
    use posthorn::domain::Stream;
    let lease = Duration::from_secs(60);
    // The broadcast backlog was queued first.
    let mut broadcast = HashSet::new();
    for i in 0..30 {
        let mut bulk = message(&format!("newsletter {i}"), None);
        bulk.stream = Stream::Broadcast;
        broadcast.insert(enqueue(&store, "alice", bulk).await);
    }
    let mut transactional = HashSet::new();
    for i in 0..30 {
        transactional
            .insert(enqueue(&store, "alice", message(&format!("receipt {i}"), None)).await);
    }
    // A claim of 10: nine transactional jobs first, then the broadcast share of one.
    let jobs = store.claim_due_jobs(10, lease).await.unwrap();
    let streams: Vec<Stream> = jobs.iter().map(|job| job.stream).collect();
    assert_eq!(streams[..9], [Stream::Transactional; 9], "{streams:?}");
    assert_eq!(streams[9], Stream::Broadcast, "{streams:?}");
    assert!(
        jobs[..9]
            .iter()
            .all(|job| transactional.contains(&job.lease.id))
    );
    assert!(broadcast.contains(&jobs[9].lease.id));
    // Claims until the transactional jobs run out: then broadcast ones fill the claims.
    let mut claimed: Vec<ClaimedJobSummary> = jobs.iter().map(summary).collect();
    loop {
        let jobs = store.claim_due_jobs(10, lease).await.unwrap();
        if jobs.is_empty() {
            break;
        }
        claimed.extend(jobs.iter().map(summary));
    }
    assert_eq!(claimed.len(), 60, "every job once");
    let last_transactional = claimed
        .iter()
        .rposition(|(_, stream)| *stream == Stream::Transactional)
        .unwrap();
    let broadcast_before = claimed[..last_transactional]
        .iter()
        .filter(|(_, stream)| *stream == Stream::Broadcast)
        .count();
    assert_eq!(
        broadcast_before, 3,
        "one broadcast job in each of the claims that also took transactional ones"
    );
    // A claim of one takes the transactional job, never starving it behind the share.
    let mut bulk = message("late newsletter", None);
    bulk.stream = Stream::Broadcast;
    enqueue(&store, "alice", bulk).await;
    let receipt = enqueue(&store, "alice", message("late receipt", None)).await;
    let jobs = store.claim_due_jobs(1, lease).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].lease.id, receipt);
    // The stream is kept with the message.
    let everything = MessageFilter {
        limit: 100,
        ..MessageFilter::default()
    };
    let listed = store.list_messages(None, &everything).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .filter(|message| message.stream == Stream::Broadcast)
            .count(),
        31
    );
}

type ClaimedJobSummary = (uuid::Uuid, posthorn::domain::Stream);

fn summary(job: &posthorn::store::ClaimedJob) -> ClaimedJobSummary {
    (job.lease.id, job.stream)
}
