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

use super::interval;
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
    // One statement: pick due rows through the partial index, skip rows other workers hold, lease them.
    let rows = sqlx::query(
        "WITH due AS (
             SELECT id, status AS prior_status
             FROM messages
             WHERE status IN ('queued', 'sending') AND due_at <= now()
             ORDER BY due_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE messages AS m
            SET status = 'sending',
                attempt_count = m.attempt_count + 1,
                lease_token = $2,
                due_at = now() + $3::interval,
                updated_at = now()
           FROM due
          WHERE m.id = due.id
         RETURNING m.id, m.attempt_count, m.message_id, m.envelope, m.body, m.created_at,
                   m.pending_recipients, due.prior_status",
    )
    .bind(i64::from(limit))
    .bind(token)
    .bind(interval(lease))
    // Planned at every execution, as are the other statements that join a batch to `messages`: a
    // prepared statement's cached plan, made while the table was small (a hash join over a sequential
    // scan), stays in use as the table grows until the next ANALYZE, and then every batch reads the
    // whole table. Planning costs far less than one batch.
    .persistent(false)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let Json(envelope): Json<Envelope> = row.try_get("envelope")?;
            let Json(body): Json<Body> = row.try_get("body")?;
            let prior: String = row.try_get("prior_status")?;
            Ok(ClaimedJob {
                lease: JobLease {
                    id: row.try_get("id")?,
                    token,
                },
                attempt: row.try_get("attempt_count")?,
                message_id: row.try_get("message_id")?,
                content: content::join_content(envelope, body),
                created_at: row.try_get("created_at")?,
                pending_recipients: row.try_get("pending_recipients")?,
                reclaimed: prior == MessageStatus::Sending.as_str(),
            })
        })
        .collect()
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
    // The update is fenced by the lease token, and an attempt is inserted only where the update
    // applied: a worker whose lease was taken over cannot overwrite the newer attempt's outcome.
    let applied: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "WITH o AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS o(
                 id uuid, token uuid, status text, delay_ms bigint, pending text[], error text,
                 attempt integer, started_us bigint, duration_ms integer, provider text,
                 outcome text, smtp_code smallint, enhanced_code text, response text,
                 recipients jsonb)
         ),
         updated AS (
             UPDATE messages AS m
                SET status = o.status,
                    lease_token = NULL,
                    updated_at = now(),
                    due_at = CASE WHEN o.status = 'queued'
                                  THEN now() + o.delay_ms * interval '1 millisecond'
                                  ELSE m.due_at END,
                    pending_recipients = o.pending,
                    sent_at = CASE WHEN o.status = 'sent' THEN now() ELSE m.sent_at END,
                    finished_at = CASE WHEN o.status IN ('sent', 'failed') THEN now() ELSE NULL END,
                    last_error = o.error
               FROM o
              WHERE m.id = o.id AND m.lease_token = o.token
             RETURNING m.id, o.token
         ),
         attempts AS (
             INSERT INTO delivery_attempts
                 (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                  enhanced_code, response, recipients)
             SELECT o.id, o.attempt, timestamptz 'epoch' + o.started_us * interval '1 microsecond',
                    o.duration_ms, o.provider, o.outcome, o.smtp_code, o.enhanced_code, o.response,
                    o.recipients
               FROM o JOIN updated ON updated.id = o.id AND updated.token = o.token
             ON CONFLICT (message_id, attempt) DO NOTHING
         )
         SELECT id, token FROM updated",
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
        "UPDATE messages AS m
            SET status = 'queued', lease_token = NULL, due_at = now(), updated_at = now(),
                attempt_count = greatest(m.attempt_count - 1, 0)
           FROM unnest($1::uuid[], $2::uuid[]) AS l(id, token)
          WHERE m.id = l.id AND m.lease_token = l.token AND m.status = 'sending'",
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
    let cancelled = sqlx::query(
        "UPDATE messages SET status = 'cancelled', finished_at = now(), updated_at = now(),
                lease_token = NULL
          WHERE id = $1 AND ($2::text IS NULL OR caller = $2) AND status = 'queued'
         RETURNING id",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    if cancelled.is_some() {
        return Ok(CancelOutcome::Cancelled);
    }
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM messages WHERE id = $1 AND ($2::text IS NULL OR caller = $2)",
    )
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
        "SELECT status, due_at > now() AS later, count(*)
           FROM messages
          WHERE status IN ('queued', 'sending')
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
