//! The claim path: claiming, recording outcomes, releasing, cancelling, and wake-ups.

use std::sync::Arc;
use std::time::Duration;

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
use crate::store::records::{AttemptRecord, CancelOutcome, ClaimedJob, Disposition, JobLease};

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

/// Records a batch of outcomes in one transaction; each is applied only if its lease still holds.
pub(super) async fn commit_outcomes(
    pool: PgPool,
    outcomes: Vec<Outcome>,
) -> Result<Vec<bool>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut applied = Vec::with_capacity(outcomes.len());
    for (lease, attempt, disposition) in outcomes {
        applied.push(record(&mut *tx, lease, attempt, disposition).await?);
    }
    tx.commit().await?;
    Ok(applied)
}

async fn record<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    lease: JobLease,
    attempt: AttemptRecord,
    disposition: Disposition,
) -> Result<bool, StoreError> {
    let (status, delay, recipients, error) = match &disposition {
        Disposition::Sent => (MessageStatus::Sent, None, None, None),
        Disposition::Retry {
            delay,
            recipients,
            error,
        } => (
            MessageStatus::Queued,
            Some(*delay),
            recipients.clone(),
            Some(error.as_str()),
        ),
        Disposition::Failed { error } => (MessageStatus::Failed, None, None, Some(error.as_str())),
    };
    // The update is fenced by the lease token, and the attempt is inserted only if the update applied:
    // a worker whose lease was taken over cannot overwrite the newer attempt's outcome.
    let applied = sqlx::query(
        "WITH updated AS (
             UPDATE messages
                SET status = $3,
                    lease_token = NULL,
                    updated_at = now(),
                    due_at = CASE WHEN $3 = 'queued' THEN now() + $4::interval ELSE due_at END,
                    pending_recipients = $5,
                    sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,
                    finished_at = CASE WHEN $3 IN ('sent', 'failed') THEN now() ELSE NULL END,
                    last_error = $6
              WHERE id = $1 AND lease_token = $2
             RETURNING id
         )
         INSERT INTO delivery_attempts
             (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code, enhanced_code,
              response, recipients)
         SELECT id, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM updated
         ON CONFLICT (message_id, attempt) DO NOTHING
         RETURNING message_id",
    )
    .bind(lease.id)
    .bind(lease.token)
    .bind(status.as_str())
    .bind(interval(delay.unwrap_or_default()))
    .bind(recipients)
    .bind(error)
    .bind(attempt.attempt)
    .bind(attempt.started_at)
    .bind(attempt.duration_ms)
    .bind(&attempt.provider)
    .bind(&attempt.outcome)
    .bind(attempt.smtp_code)
    .bind(&attempt.enhanced_code)
    .bind(&attempt.response)
    .bind(Json(&attempt.recipients))
    .fetch_optional(executor)
    .await?;
    Ok(applied.is_some())
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
        Some(text) => CancelOutcome::TooLate(text.parse().map_err(
            |error: crate::domain::UnknownStatusError| StoreError::Corrupt(error.to_string()),
        )?),
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
