//! The claim path: claiming, recording outcomes, releasing, cancelling, and wake-ups.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::types::Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{interval, rows};
use crate::domain::MessageStatus;
use crate::store::StoreError;
use crate::store::content::{self, Body, Envelope};
use crate::store::records::{
    AttemptRecord, CancelOutcome, ClaimedJob, Disposition, JobLease, RecipientResult,
};

/// The channel enqueues notify and workers listen on.
pub(super) const CHANNEL: &str = "posthorn_jobs";

pub(super) async fn claim(
    pool: &PgPool,
    limit: u32,
    lease: Duration,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let token = Uuid::now_v7();
    // One statement: pick due jobs through their index, skip jobs other workers hold, lease them, and
    // read what to send from their messages.
    let rows = sqlx::query(
        "WITH due AS (
             SELECT message_id, lease_token IS NOT NULL AS reclaimed
             FROM jobs
             WHERE due_at <= now()
             ORDER BY due_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ),
         claimed AS (
             UPDATE jobs AS j
                SET attempt_count = j.attempt_count + 1,
                    lease_token = $2,
                    due_at = now() + $3::interval,
                    updated_at = now()
               FROM due
              WHERE j.message_id = due.message_id
             RETURNING j.message_id, j.attempt_count, j.pending_recipients, due.reclaimed
         )
         SELECT c.message_id AS id, c.attempt_count, c.pending_recipients, c.reclaimed,
                coalesce(m.status IN ('queued', 'sending'), false) AS unfinished,
                m.message_id, m.envelope, m.body, m.created_at
           FROM claimed AS c LEFT JOIN messages AS m ON m.id = c.message_id",
    )
    .bind(i64::from(limit))
    .bind(token)
    .bind(interval(lease))
    // Planned at every execution, as are the other statements that join a batch to a table: a
    // prepared statement's cached plan, made while the table was small (a hash join over a sequential
    // scan), stays in use as the table grows until the next ANALYZE, and then every batch reads the
    // whole table. Planning costs far less than one batch.
    .persistent(false)
    .fetch_all(pool)
    .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    let mut stale = Vec::new();
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        if !row.try_get::<bool, _>("unfinished")? {
            stale.push(id);
            continue;
        }
        let Json(envelope): Json<Envelope> = row.try_get("envelope")?;
        let Json(body): Json<Body> = row.try_get("body")?;
        jobs.push(ClaimedJob {
            lease: JobLease { id, token },
            attempt: row.try_get("attempt_count")?,
            message_id: row.try_get("message_id")?,
            content: content::join_content(envelope, body),
            created_at: row.try_get("created_at")?,
            pending_recipients: row.try_get("pending_recipients")?,
            reclaimed: row.try_get("reclaimed")?,
        });
    }
    if !stale.is_empty() {
        drop_stale_jobs(pool, &stale, token).await?;
    }
    Ok(jobs)
}

/// Drops jobs whose message is gone or already finished. Only the previous release leaves such jobs
/// behind, during a rolling update: it finishes messages it claimed before the job table existed, and
/// cancels without looking at jobs.
async fn drop_stale_jobs(pool: &PgPool, ids: &[Uuid], token: Uuid) -> Result<(), StoreError> {
    let result = sqlx::query("DELETE FROM jobs WHERE message_id = ANY($1) AND lease_token = $2")
        .bind(ids)
        .bind(token)
        .execute(pool)
        .await?;
    tracing::info!(
        dropped = result.rows_affected(),
        "dropped jobs whose message was already finished"
    );
    Ok(())
}

/// An outcome to record: the lease that holds the job, the attempt, and what becomes of the job.
pub(super) type Outcome = (JobLease, AttemptRecord, Disposition);

/// One outcome as the batch statement reads it (`jsonb_to_recordset`).
#[derive(Serialize)]
struct OutcomeRow<'a> {
    id: Uuid,
    token: Uuid,
    status: &'static str,
    delay_ms: i64,
    pending: Option<&'a [String]>,
    error: Option<&'a str>,
    attempt: i32,
    /// Microseconds since the Unix epoch: exact, whatever the session's time zone.
    started_us: i64,
    duration_ms: i32,
    provider: &'a str,
    outcome: &'a str,
    smtp_code: Option<i16>,
    enhanced_code: Option<&'a str>,
    response: Option<&'a str>,
    recipients: &'a [RecipientResult],
}

impl<'a> OutcomeRow<'a> {
    fn new((lease, attempt, disposition): &'a Outcome) -> Self {
        Self {
            id: lease.id,
            token: lease.token,
            status: disposition.status().as_str(),
            delay_ms: disposition.retry_delay().map_or(0, |delay| {
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
            }),
            pending: disposition.pending_recipients(),
            error: disposition.error(),
            attempt: attempt.attempt,
            started_us: i64::try_from(attempt.started_at.unix_timestamp_nanos() / 1_000)
                .unwrap_or_default(),
            duration_ms: attempt.duration_ms,
            provider: &attempt.provider,
            outcome: &attempt.outcome,
            smtp_code: attempt.smtp_code,
            enhanced_code: attempt.enhanced_code.as_deref(),
            response: attempt.response.as_deref(),
            recipients: &attempt.recipients,
        }
    }
}

/// Records a batch of outcomes in one statement (so one round trip and one commit, with no explicit
/// transaction); each is applied only if its lease still holds. Returns, per outcome, whether it was.
pub(super) async fn commit_outcomes(
    pool: PgPool,
    outcomes: Vec<Outcome>,
) -> Result<Vec<bool>, StoreError> {
    let rows: Vec<OutcomeRow<'_>> = outcomes.iter().map(OutcomeRow::new).collect();
    // Every write is fenced by the lease token: the job is deleted or rescheduled, and the message and
    // its attempt written, only where the worker still holds the job. A worker whose lease was taken
    // over cannot overwrite the newer attempt's outcome.
    let applied: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "WITH o AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS o(
                 id uuid, token uuid, status text, delay_ms bigint, pending text[], error text,
                 attempt integer, started_us bigint, duration_ms integer, provider text,
                 outcome text, smtp_code smallint, enhanced_code text, response text,
                 recipients jsonb)
         ),
         -- A message sent or failed leaves the queue; one to retry goes back to it, due later.
         settled AS (
             DELETE FROM jobs AS j
              USING o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status <> 'queued'
             RETURNING o.id, o.token
         ),
         retried AS (
             UPDATE jobs AS j
                SET lease_token = NULL,
                    due_at = now() + o.delay_ms * interval '1 millisecond',
                    pending_recipients = o.pending,
                    updated_at = now()
               FROM o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status = 'queued'
             RETURNING o.id, o.token
         ),
         applied AS (
             SELECT id, token FROM settled UNION ALL SELECT id, token FROM retried
         ),
         updated AS (
             UPDATE messages AS m
                SET status = o.status,
                    updated_at = now(),
                    attempt_count = o.attempt,
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
    .bind(Json(&rows))
    .persistent(false)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    Ok(outcomes
        .iter()
        .map(|(lease, _, _)| applied.contains(&(lease.id, lease.token)))
        .collect())
}

pub(super) async fn release(pool: &PgPool, leases: &[JobLease]) -> Result<u64, StoreError> {
    if leases.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = leases.iter().map(|lease| lease.id).collect();
    let tokens: Vec<Uuid> = leases.iter().map(|lease| lease.token).collect();
    let result = sqlx::query(
        "UPDATE jobs AS j
            SET lease_token = NULL, due_at = now(), updated_at = now(),
                attempt_count = greatest(j.attempt_count - 1, 0)
           FROM unnest($1::uuid[], $2::uuid[]) AS l(id, token)
          WHERE j.message_id = l.id AND j.lease_token = l.token",
    )
    .bind(&ids)
    .bind(&tokens)
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn cancel(
    pool: &PgPool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<CancelOutcome, StoreError> {
    // Only a job no worker holds can be cancelled. A claim in progress holds the job's row lock, so
    // the delete waits for it and then finds the job leased. The message is marked in a second
    // statement, once the job is gone (the migration's cancel guard looks for a leased job).
    let mut tx = pool.begin().await?;
    let dequeued = sqlx::query(
        "DELETE FROM jobs AS j
          USING messages AS m
          WHERE j.message_id = $1 AND j.lease_token IS NULL
            AND m.id = j.message_id AND ($2::text IS NULL OR m.caller = $2)
            AND m.status IN ('queued', 'sending')
         RETURNING j.message_id",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?;
    if dequeued.is_some() {
        sqlx::query(
            "UPDATE messages SET status = 'cancelled', finished_at = now(), updated_at = now()
              WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(CancelOutcome::Cancelled);
    }
    drop(tx);
    let status: Option<String> = sqlx::query_scalar(&format!(
        "SELECT {} FROM {} WHERE m.id = $1 AND ($2::text IS NULL OR m.caller = $2)",
        rows::STATUS,
        rows::MESSAGES_WITH_JOBS
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    Ok(match status {
        None => CancelOutcome::NotFound,
        Some(text) => CancelOutcome::TooLate(text.parse::<MessageStatus>()?),
    })
}

pub(super) async fn depth(pool: &PgPool) -> Result<Vec<(&'static str, i64)>, StoreError> {
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT CASE WHEN lease_token IS NULL THEN 'queued' ELSE 'sending' END,
                due_at > now() AS later, count(*)
           FROM jobs
          GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    Ok(crate::store::content::depth_by_state(rows))
}

pub(super) async fn listen(pool: &PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "LISTEN connection failed; polling until it is back");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %error, "LISTEN failed; polling until it is back");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        backoff = Duration::from_millis(250);
        // Jobs may have arrived while the listener was down.
        wake.notify_waiters();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                message = listener.try_recv() => match message {
                    Ok(Some(_)) => wake.notify_waiters(),
                    Ok(None) => {
                        tracing::warn!("LISTEN connection lost; reconnecting");
                        wake.notify_waiters();
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "LISTEN connection failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
