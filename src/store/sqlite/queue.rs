//! The claim path on SQLite: every statement here runs on the single writer connection.

use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use uuid::Uuid;

use super::rows::{self, now, parse_uuid};
use crate::domain::{Body, Envelope, MessageContent, MessageStatus};
use crate::store::StoreError;
use crate::store::columns::Columns;
use crate::store::events;
use crate::store::records::{
    AttemptRecord, ClaimedJob, Disposition, JobLease, RequeueFilter, Requeued,
};
use time::OffsetDateTime;

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

pub(super) async fn claim(
    pool: &SqlitePool,
    limit: u32,
    lease: Duration,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let token = Uuid::now_v7();
    let now = now();
    let mut tx = pool.begin().await?;
    // Transactional messages first, then broadcast ones with their share, then transactional ones
    // in the share broadcast did not use; each through its slice of the (stream, due_at) index.
    let pick = |stream: &'static str, limit: u32, skip: usize| {
        sqlx::query_as::<_, (String, String)>(
            "SELECT id, status FROM messages
              WHERE status IN ('queued', 'sending') AND stream = ? AND due_at <= ?
              ORDER BY due_at
              LIMIT ? OFFSET ?",
        )
        .bind(stream)
        .bind(now)
        .bind(i64::from(limit))
        .bind(i64::try_from(skip).unwrap_or(i64::MAX))
    };
    let share = crate::store::broadcast_share(limit);
    let mut due = pick("transactional", limit - share, 0)
        .fetch_all(&mut *tx)
        .await?;
    let first = due.len();
    let left = limit.saturating_sub(u32::try_from(first).unwrap_or(u32::MAX));
    let bulk = pick("broadcast", left, 0).fetch_all(&mut *tx).await?;
    let left = left.saturating_sub(u32::try_from(bulk.len()).unwrap_or(u32::MAX));
    if left > 0 && first == (limit - share) as usize {
        due.extend(
            pick("transactional", left, first)
                .fetch_all(&mut *tx)
                .await?,
        );
    }
    due.extend(bulk);
    if due.is_empty() {
        return Ok(Vec::new());
    }
    // One statement leases every row picked (the transaction is the only writer, so the rows are
    // still due); the prior status of each tells a takeover from a first claim.
    let ids = serde_json::to_string(&due.iter().map(|(id, _)| id).collect::<Vec<_>>())?;
    let rows = sqlx::query(
        "UPDATE messages
            SET status = 'sending', attempt_count = attempt_count + 1, lease_token = ?,
                due_at = ?, updated_at = ?
          WHERE id IN (SELECT value FROM json_each(?))
         RETURNING id, attempt_count, message_id, caller, tags, stream, envelope, body, raw,
                   created_at,
                   pending_recipients,
                   series_base, coalesce(series_started_at, created_at) AS series_started_at",
    )
    .bind(token.to_string())
    .bind(now + micros(lease))
    .bind(now)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    // Per id: its place in the claim (RETURNING follows no order; oldest due goes first) and whether
    // it was already being sent (a takeover).
    let picked: std::collections::HashMap<&str, (usize, bool)> = due
        .iter()
        .enumerate()
        .map(|(index, (id, status))| {
            let reclaimed = status == MessageStatus::Sending.as_str();
            (id.as_str(), (index, reclaimed))
        })
        .collect();
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let (position, reclaimed) = picked
            .get(id.as_str())
            .copied()
            .unwrap_or((usize::MAX, false));
        let envelope: Envelope = rows::json(&row, "envelope")?;
        let body: Body = rows::json(&row, "body")?;
        let pending: Option<String> = row.try_get("pending_recipients")?;
        let job = ClaimedJob {
            lease: JobLease {
                id: parse_uuid(&id)?,
                token,
            },
            attempt: row.try_get("attempt_count")?,
            message_id: row.try_get("message_id")?,
            caller: row.try_get("caller")?,
            tags: rows::json(&row, "tags")?,
            stream: crate::store::columns::stream(&row.try_get::<String, _>("stream")?)?,
            content: MessageContent {
                envelope,
                body,
                raw: row.try_get("raw")?,
            },
            created_at: row.time("created_at")?,
            series_base: row.try_get("series_base")?,
            series_started_at: row.time("series_started_at")?,
            suppressed: Vec::new(),
            pending_recipients: pending
                .map(|text| serde_json::from_str(&text))
                .transpose()?,
            reclaimed,
        };
        jobs.push((position, job));
    }
    jobs.sort_by_key(|(position, _)| *position);
    let mut jobs: Vec<ClaimedJob> = jobs.into_iter().map(|(_, job)| job).collect();
    // The suppressed addresses among every recipient of the claim, in one statement.
    let recipients: std::collections::BTreeSet<String> = jobs
        .iter()
        .flat_map(|job| job.content.envelope.recipients())
        .map(str::to_lowercase)
        .collect();
    let suppressed: std::collections::HashSet<String> = sqlx::query_as::<_, (String,)>(
        "SELECT address FROM suppressions WHERE address IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(&recipients)?)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(address,)| address)
    .collect();
    if !suppressed.is_empty() {
        for job in &mut jobs {
            job.suppressed = job
                .content
                .envelope
                .recipients()
                .into_iter()
                .map(str::to_lowercase)
                .filter(|address| suppressed.contains(address))
                .collect();
        }
    }
    tx.commit().await?;
    Ok(jobs)
}

/// One outcome to record: the lease it is recorded under, the attempt, and what becomes of the job.
pub(super) type Outcome = (JobLease, AttemptRecord, Disposition);

/// Records concurrent outcomes in one transaction on the writer (one WAL sync for all of them). If
/// the batch fails, the transaction is undone and each outcome is recorded in a transaction of its
/// own, so one that cannot be recorded does not hold up the others.
pub(super) async fn commit_outcomes(
    writer: SqlitePool,
    outcomes: Vec<Outcome>,
) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
    let mut tx = writer.begin().await?;
    match record_in(&mut tx, &outcomes).await {
        Ok(applied) => {
            tx.commit().await?;
            Ok(applied.into_iter().map(Ok).collect())
        }
        Err(_) => {
            tx.rollback().await?;
            let mut answers = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                answers.push(record(&writer, outcome).await);
            }
            Ok(answers)
        }
    }
}

/// Records one outcome in a transaction of its own.
async fn record(pool: &SqlitePool, outcome: Outcome) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let applied = record_in(&mut tx, std::slice::from_ref(&outcome)).await?;
    tx.commit().await?;
    Ok(applied.first().copied().unwrap_or(false))
}

/// Records each attempt and its job's next state on `tx`, each only if its lease still holds the job;
/// returns which were (nothing is written for the others). One statement for every job's next state,
/// one for every attempt and one for every event, whatever the batch's size.
async fn record_in(
    tx: &mut sqlx::SqliteConnection,
    outcomes: &[Outcome],
) -> Result<Vec<bool>, StoreError> {
    let now = now();
    let at = rows::time(now)?;
    // Every job's next state in one statement, fenced by its lease token: a worker whose lease was
    // taken over records nothing. It returns the jobs it changed, with their callers (for the events).
    let mut changes = Vec::with_capacity(outcomes.len());
    for (lease, attempt, disposition) in outcomes {
        let status = disposition.status();
        let finished = matches!(status, MessageStatus::Sent | MessageStatus::Failed);
        changes.push(serde_json::json!({
            "id": lease.id.to_string(),
            "token": lease.token.to_string(),
            "status": status.as_str(),
            "due_at": disposition.retry_delay().map(|delay| now + micros(delay)),
            "pending": disposition
                .pending_recipients()
                .map(serde_json::to_string)
                .transpose()?,
            "sent_at": (status == MessageStatus::Sent).then_some(now),
            "finished_at": finished.then_some(now),
            "error": disposition.error(),
            "provider": attempt.provider,
        }));
    }
    let changed: Vec<(String, String)> = sqlx::query_as(
        "UPDATE messages
            SET status = o.value ->> '$.status', lease_token = NULL, updated_at = ?1,
                due_at = coalesce(o.value ->> '$.due_at', messages.due_at),
                pending_recipients = o.value ->> '$.pending',
                sent_at = coalesce(o.value ->> '$.sent_at', messages.sent_at),
                finished_at = o.value ->> '$.finished_at',
                last_error = o.value ->> '$.error',
                last_provider = o.value ->> '$.provider'
           FROM json_each(?2) AS o
          WHERE messages.id = o.value ->> '$.id' AND messages.lease_token = o.value ->> '$.token'
         RETURNING messages.id, messages.caller",
    )
    .bind(now)
    .bind(serde_json::Value::Array(changes).to_string())
    .fetch_all(&mut *tx)
    .await?;
    let callers: std::collections::HashMap<String, String> = changed.into_iter().collect();
    let mut applied = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut events = Vec::with_capacity(outcomes.len());
    let mut suppressions = Vec::new();
    for (lease, attempt, disposition) in outcomes {
        let Some(caller) = callers.get(&lease.id.to_string()) else {
            applied.push(false);
            continue;
        };
        applied.push(true);
        attempts.push(serde_json::json!({
            "message_id": lease.id.to_string(),
            "attempt": attempt.attempt,
            "started_at": rows::micros(attempt.started_at),
            "duration_ms": attempt.duration_ms,
            "provider": attempt.provider,
            "outcome": attempt.outcome.as_str(),
            "smtp_code": attempt.smtp_code,
            "enhanced_code": attempt.enhanced_code,
            "response": attempt.response,
            "recipients": serde_json::to_string(&attempt.recipients)?,
        }));
        for event in events::for_outcome(lease.id, attempt, disposition, at) {
            events.push((caller.clone(), event));
        }
        suppressions.extend(attempt.suppressions(lease.id));
    }
    if !attempts.is_empty() {
        sqlx::query(
            "INSERT INTO delivery_attempts
                (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                 enhanced_code, response, recipients)
             SELECT value ->> '$.message_id', value ->> '$.attempt', value ->> '$.started_at',
                    value ->> '$.duration_ms', value ->> '$.provider', value ->> '$.outcome',
                    value ->> '$.smtp_code', value ->> '$.enhanced_code', value ->> '$.response',
                    value ->> '$.recipients'
               FROM json_each(?)
              WHERE true
             ON CONFLICT (message_id, attempt) DO NOTHING",
        )
        .bind(serde_json::Value::Array(attempts).to_string())
        .execute(&mut *tx)
        .await?;
    }
    super::events::write_many(&mut *tx, events).await?;
    for entry in suppressions {
        super::suppressions::insert(&mut *tx, &entry).await?;
    }
    Ok(applied)
}

pub(super) async fn release(
    pool: &SqlitePool,
    leases: &[JobLease],
    delay: Duration,
) -> Result<u64, StoreError> {
    let now = now();
    let due = now + micros(delay);
    let mut released = 0;
    let mut tx = pool.begin().await?;
    for lease in leases {
        released += sqlx::query(
            "UPDATE messages
                SET status = 'queued', lease_token = NULL, due_at = ?, updated_at = ?,
                    attempt_count = max(attempt_count - 1, 0)
              WHERE id = ? AND lease_token = ? AND status = 'sending'",
        )
        .bind(due)
        .bind(now)
        .bind(lease.id.to_string())
        .bind(lease.token.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(released)
}

pub(super) async fn renew(
    pool: &SqlitePool,
    leases: &[JobLease],
    lease: Duration,
) -> Result<Vec<JobLease>, StoreError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let held: Vec<serde_json::Value> = leases
        .iter()
        .map(|lease| serde_json::json!({"id": lease.id.to_string(), "token": lease.token.to_string()}))
        .collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "UPDATE messages SET due_at = ?1
           FROM json_each(?2) AS l
          WHERE messages.id = l.value ->> '$.id' AND messages.lease_token = l.value ->> '$.token'
            AND messages.status = 'sending'
         RETURNING messages.id, messages.lease_token",
    )
    .bind(now() + micros(lease))
    .bind(serde_json::Value::Array(held).to_string())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, token)| {
            Ok(JobLease {
                id: parse_uuid(&id)?,
                token: parse_uuid(&token)?,
            })
        })
        .collect()
}

pub(super) async fn cancel(
    pool: &SqlitePool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<bool, StoreError> {
    let now = now();
    let mut tx = pool.begin().await?;
    let cancelled = sqlx::query(
        "UPDATE messages SET status = 'cancelled', finished_at = ?, updated_at = ?, lease_token = NULL
          WHERE id = ? AND (? IS NULL OR caller = ?) AND status = 'queued'",
    )
    .bind(now)
    .bind(now)
    .bind(id.to_string())
    .bind(owner)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    if cancelled.rows_affected() == 0 {
        return Ok(false);
    }
    super::events::write_for_message(&mut tx, id, [events::cancelled(id)]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn reschedule(
    pool: &SqlitePool,
    owner: Option<&str>,
    id: Uuid,
    send_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let at = rows::micros(send_at);
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE messages SET send_at = ?1, due_at = ?1, updated_at = ?2
          WHERE id = ?3 AND (?4 IS NULL OR caller = ?4) AND status = 'queued'
            AND attempt_count = series_base",
    )
    .bind(at)
    .bind(now())
    .bind(id.to_string())
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    if send_at > OffsetDateTime::now_utc() {
        super::events::write_for_message(&mut tx, id, [events::scheduled(id, send_at)]).await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn requeue(
    pool: &SqlitePool,
    filter: &RequeueFilter,
    dry_run: bool,
) -> Result<Requeued, StoreError> {
    let mut tx = pool.begin().await?;
    let matched = sqlx::query(
        "SELECT id, envelope, attempt_count, body_dropped_at IS NOT NULL AS dropped FROM messages
          WHERE status = 'failed'
            AND (?1 IS NULL OR id = ?1)
            AND (?2 IS NULL OR caller = ?2)
            AND (?3 IS NULL OR created_at >= ?3)
            AND (?4 IS NULL OR created_at < ?4)
            AND (?5 IS NULL OR EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?5))
            AND (?6 IS NULL OR last_provider = ?6)",
    )
    .bind(filter.id.map(|id| id.to_string()))
    .bind(filter.owner.as_deref())
    .bind(filter.created_after.map(rows::micros))
    .bind(filter.created_before.map(rows::micros))
    .bind(filter.tag.as_deref())
    .bind(filter.provider.as_deref())
    .fetch_all(&mut *tx)
    .await?;
    let mut counts = Requeued::default();
    let now = now();
    for row in &matched {
        if row.try_get::<bool, _>("dropped")? {
            counts.skipped += 1;
            continue;
        }
        counts.requeued += 1;
        if dry_run {
            continue;
        }
        let id: String = row.try_get("id")?;
        // Recipients an earlier attempt delivered to are not sent to again.
        let sent: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT lower(json_extract(r.value, '$.address'))
               FROM delivery_attempts AS d, json_each(d.recipients) AS r
              WHERE d.message_id = ? AND json_extract(r.value, '$.outcome') = 'sent'",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        let pending = if sent.is_empty() {
            None
        } else {
            let envelope: Envelope = rows::json(row, "envelope")?;
            let left: Vec<&str> = envelope
                .recipients()
                .into_iter()
                .filter(|address| {
                    !sent
                        .iter()
                        .any(|(done,)| done.eq_ignore_ascii_case(address))
                })
                .collect();
            Some(serde_json::to_string(&left)?)
        };
        sqlx::query(
            "UPDATE messages
                SET status = 'queued', due_at = ?2, updated_at = ?2, series_base = attempt_count,
                    series_started_at = ?2, pending_recipients = ?3, finished_at = NULL,
                    lease_token = NULL
              WHERE id = ?1 AND status = 'failed'",
        )
        .bind(&id)
        .bind(now)
        .bind(pending)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(counts)
}

pub(super) async fn depth(pool: &SqlitePool) -> Result<Vec<(&'static str, i64)>, StoreError> {
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT status, due_at > ? AS later, count(*) FROM messages
          WHERE status IN ('queued', 'sending') GROUP BY 1, 2",
    )
    .bind(now())
    .fetch_all(pool)
    .await?;
    Ok(crate::store::depth_by_state(rows))
}
