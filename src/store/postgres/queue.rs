//! The claim path: claiming, recording outcomes, releasing, cancelling, and wake-ups.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::types::Json;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{EventColumns, interval};
use crate::domain::{Body, Envelope, EventType, MessageContent};
use crate::store::StoreError;
use crate::store::broadcast_share;
use crate::store::events;
use crate::store::records::{
    AttemptRecord, ClaimedJob, Disposition, JobLease, RecipientResult, RequeueFilter, Requeued,
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
    // read what to send from their messages. The update finds its rows by key (`= ANY` of the picked
    // ids, one index probe each): written as a join, the planner hashed the whole job table for every
    // claim once the queue held some thousands of jobs (33 ms instead of 11 ms for 400 of 40000).
    let rows = sqlx::query(
        "WITH first AS (
             -- Transactional jobs first, leaving room for a share of broadcast ones.
             SELECT message_id, due_at, lease_token IS NOT NULL AS reclaimed, 0 AS lane
             FROM jobs
             WHERE lane = 0 AND due_at <= now()
             ORDER BY due_at
             LIMIT $1 - $4
             FOR UPDATE SKIP LOCKED
         ),
         bulk AS (
             SELECT message_id, due_at, lease_token IS NOT NULL AS reclaimed, 1 AS lane
             FROM jobs
             WHERE lane = 1 AND due_at <= now()
             ORDER BY due_at
             LIMIT $1 - (SELECT count(*) FROM first)
             FOR UPDATE SKIP LOCKED
         ),
         rest AS (
             -- The share broadcast did not use goes to transactional jobs after all.
             SELECT message_id, due_at, lease_token IS NOT NULL AS reclaimed, 0 AS lane
             FROM jobs
             WHERE lane = 0 AND due_at <= now()
               AND message_id NOT IN (SELECT message_id FROM first)
             ORDER BY due_at
             LIMIT $1 - (SELECT count(*) FROM first) - (SELECT count(*) FROM bulk)
             FOR UPDATE SKIP LOCKED
         ),
         due AS (
             SELECT * FROM first UNION ALL SELECT * FROM rest UNION ALL SELECT * FROM bulk
         ),
         claimed AS (
             UPDATE jobs AS j
                SET attempt_count = j.attempt_count + 1,
                    lease_token = $2,
                    due_at = now() + $3::interval,
                    updated_at = now()
              WHERE j.message_id = ANY (ARRAY(SELECT message_id FROM due))
             RETURNING j.message_id, j.attempt_count, j.pending_recipients, j.series_base,
                       j.series_started_at
         )
         SELECT c.message_id AS id, c.attempt_count, c.pending_recipients, due.reclaimed,
                coalesce(m.status IN ('queued', 'sending'), false) AS unfinished,
                m.message_id, m.caller, m.tags, m.stream, m.envelope, m.body, m.raw, m.created_at,
                c.series_base,
                coalesce(c.series_started_at, m.created_at) AS series_started_at,
                ARRAY(SELECT s.address FROM suppressions AS s
                       WHERE s.address IN (
                           SELECT lower(r->>'address')
                             FROM jsonb_array_elements(
                                  coalesce(m.envelope->'to', '[]') || coalesce(m.envelope->'cc', '[]')
                                  || coalesce(m.envelope->'bcc', '[]')) AS r)) AS suppressed
           FROM claimed AS c
           JOIN due ON due.message_id = c.message_id
           LEFT JOIN messages AS m ON m.id = c.message_id
          ORDER BY due.lane, due.due_at",
    )
    .bind(i64::from(limit))
    .bind(token)
    .bind(interval(lease))
    .bind(i64::from(broadcast_share(limit)))
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
            caller: row.try_get("caller")?,
            tags: row.try_get("tags")?,
            stream: crate::store::columns::stream(row.try_get("stream")?)?,
            content: MessageContent {
                envelope,
                body,
                raw: row.try_get("raw")?,
            },
            created_at: row.try_get("created_at")?,
            pending_recipients: row.try_get("pending_recipients")?,
            reclaimed: row.try_get("reclaimed")?,
            series_base: row.try_get("series_base")?,
            series_started_at: row.try_get("series_started_at")?,
            suppressed: row.try_get("suppressed")?,
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

/// A batch of outcomes as the statement reads it: one array per column, unnested together. Typed arrays
/// reach PostgreSQL in binary; a JSON document of the batch had to be parsed twice there (once as the
/// parameter, once into records), which took a fifth of the statement's time.
#[derive(Default)]
struct OutcomeColumns<'a> {
    id: Vec<Uuid>,
    token: Vec<Uuid>,
    status: Vec<&'static str>,
    delay_ms: Vec<i64>,
    pending: Vec<Option<Json<&'a [String]>>>,
    error: Vec<Option<&'a str>>,
    attempt: Vec<i32>,
    started_at: Vec<OffsetDateTime>,
    duration_ms: Vec<i32>,
    provider: Vec<&'a str>,
    outcome: Vec<&'static str>,
    smtp_code: Vec<Option<i16>>,
    enhanced_code: Vec<Option<&'a str>>,
    response: Vec<Option<&'a str>>,
    recipients: Vec<Json<&'a [RecipientResult]>>,
    events: EventColumns,
    bounced_ids: Vec<Uuid>,
    bounced_tokens: Vec<Uuid>,
    bounced_addresses: Vec<String>,
    bounced_details: Vec<Option<String>>,
}

impl<'a> OutcomeColumns<'a> {
    fn new(outcomes: &'a [Outcome]) -> Self {
        let mut columns = Self::default();
        let now = OffsetDateTime::now_utc();
        for (lease, attempt, disposition) in outcomes {
            columns.events.extend_with_token(
                events::for_outcome(lease.id, attempt, disposition, now),
                lease.token,
            );
            for entry in attempt.suppressions(lease.id) {
                columns.bounced_ids.push(lease.id);
                columns.bounced_tokens.push(lease.token);
                columns.bounced_addresses.push(entry.address);
                columns.bounced_details.push(entry.detail);
            }
            columns.id.push(lease.id);
            columns.token.push(lease.token);
            columns.status.push(disposition.status().as_str());
            columns
                .delay_ms
                .push(disposition.retry_delay().map_or(0, |delay| {
                    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
                }));
            columns
                .pending
                .push(disposition.pending_recipients().map(Json));
            columns.error.push(disposition.error());
            columns.attempt.push(attempt.attempt);
            columns.started_at.push(attempt.started_at);
            columns.duration_ms.push(attempt.duration_ms);
            columns.provider.push(&attempt.provider);
            columns.outcome.push(attempt.outcome.as_str());
            columns.smtp_code.push(attempt.smtp_code);
            columns.enhanced_code.push(attempt.enhanced_code.as_deref());
            columns.response.push(attempt.response.as_deref());
            columns.recipients.push(Json(&attempt.recipients));
        }
        columns
    }
}

/// Records a batch of outcomes in one statement (so one round trip and one commit, with no explicit
/// transaction); each is applied only if its lease still holds. Returns, per outcome, whether it was.
pub(super) async fn commit_outcomes(
    pool: PgPool,
    outcomes: Vec<Outcome>,
) -> Result<Vec<bool>, StoreError> {
    let columns = OutcomeColumns::new(&outcomes);
    // Every write is fenced by the lease token: the job is deleted or rescheduled, and the attempt
    // written, only where the worker still holds the job. A worker whose lease was taken over cannot
    // overwrite the newer attempt's outcome. The attempt records what became of the message; the message
    // row itself is not written (the view `message_states` reads the outcome off the attempt).
    let applied: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "WITH o AS (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::jsonb[],
                                  $6::text[], $7::integer[], $8::timestamptz[], $9::integer[],
                                  $10::text[], $11::text[], $12::smallint[], $13::text[], $14::text[],
                                  $15::jsonb[])
                 AS o(id, token, status, delay_ms, pending, error, attempt, started_at, duration_ms,
                      provider, outcome, smtp_code, enhanced_code, response, recipients)
         ),
         -- A message sent or failed leaves the queue; one to retry goes back to it, due later.
         settled AS (
             DELETE FROM jobs AS j
              USING o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status <> 'queued'
             RETURNING o.*
         ),
         retried AS (
             UPDATE jobs AS j
                SET lease_token = NULL,
                    due_at = now() + o.delay_ms * interval '1 millisecond',
                    pending_recipients = CASE WHEN o.pending IS NOT NULL
                        THEN ARRAY(SELECT jsonb_array_elements_text(o.pending)) END,
                    updated_at = now()
               FROM o
              WHERE j.message_id = o.id AND j.lease_token = o.token AND o.status = 'queued'
             RETURNING o.*
         ),
         applied AS (
             SELECT * FROM settled UNION ALL SELECT * FROM retried
         ),
         -- Only for a message that exists (attempts have no foreign key: a lookup per attempt).
         attempts AS (
             INSERT INTO delivery_attempts
                 (message_id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                  enhanced_code, response, recipients, status, error, recorded_at)
             SELECT id, attempt, started_at, duration_ms, provider, outcome, smtp_code,
                    enhanced_code, response, recipients, status, error, now()
               FROM applied AS a
              WHERE EXISTS (SELECT 1 FROM messages AS m WHERE m.id = a.id)
             ON CONFLICT (message_id, attempt) DO NOTHING
         ),
         logged AS (
             INSERT INTO events (message_id, caller, type, recipient, data)
             SELECT e.message_id, m.caller, e.type, e.recipient, e.data
               FROM UNNEST($16::uuid[], $17::uuid[], $18::text[], $19::text[], $20::jsonb[])
                    WITH ORDINALITY AS e(message_id, token, type, recipient, data, n)
               JOIN applied AS a ON a.id = e.message_id AND a.token = e.token
               JOIN messages AS m ON m.id = e.message_id
              ORDER BY e.n
         ),
         suppressed AS (
             INSERT INTO suppressions (address, reason, message_id, detail)
             SELECT DISTINCT ON (b.address) b.address, 'hard_bounce', b.message_id, b.detail
               FROM UNNEST($21::uuid[], $22::uuid[], $23::text[], $24::text[])
                    AS b(message_id, token, address, detail)
               JOIN applied AS a ON a.id = b.message_id AND a.token = b.token
             ON CONFLICT (address) DO NOTHING
         )
         SELECT id, token FROM applied",
    )
    .bind(&columns.id)
    .bind(&columns.token)
    .bind(&columns.status)
    .bind(&columns.delay_ms)
    .bind(&columns.pending)
    .bind(&columns.error)
    .bind(&columns.attempt)
    .bind(&columns.started_at)
    .bind(&columns.duration_ms)
    .bind(&columns.provider)
    .bind(&columns.outcome)
    .bind(&columns.smtp_code)
    .bind(&columns.enhanced_code)
    .bind(&columns.response)
    .bind(&columns.recipients)
    .bind(&columns.events.message_ids)
    .bind(&columns.events.tokens)
    .bind(&columns.events.kinds)
    .bind(&columns.events.recipients)
    .bind(&columns.events.data)
    .bind(&columns.bounced_ids)
    .bind(&columns.bounced_tokens)
    .bind(&columns.bounced_addresses)
    .bind(&columns.bounced_details)
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

pub(super) async fn release(
    pool: &PgPool,
    leases: &[JobLease],
    delay: Duration,
) -> Result<u64, StoreError> {
    if leases.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = leases.iter().map(|lease| lease.id).collect();
    let tokens: Vec<Uuid> = leases.iter().map(|lease| lease.token).collect();
    let result = sqlx::query(
        "UPDATE jobs AS j
            SET lease_token = NULL, due_at = now() + $3::interval, updated_at = now(),
                attempt_count = greatest(j.attempt_count - 1, 0)
           FROM unnest($1::uuid[], $2::uuid[]) AS l(id, token)
          WHERE j.message_id = l.id AND j.lease_token = l.token",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(interval(delay))
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn renew(
    pool: &PgPool,
    leases: &[JobLease],
    lease: Duration,
) -> Result<Vec<JobLease>, StoreError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = leases.iter().map(|lease| lease.id).collect();
    let tokens: Vec<Uuid> = leases.iter().map(|lease| lease.token).collect();
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE jobs AS j
            SET due_at = now() + $3::interval
           FROM unnest($1::uuid[], $2::uuid[]) AS l(id, token)
          WHERE j.message_id = l.id AND j.lease_token = l.token
         RETURNING j.message_id, l.token",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(interval(lease))
    .persistent(false)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, token)| JobLease { id, token })
        .collect())
}

pub(super) async fn cancel(
    pool: &PgPool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<bool, StoreError> {
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
    if dequeued.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "WITH cancelled AS (
             UPDATE messages SET status = 'cancelled', finished_at = now(), updated_at = now()
              WHERE id = $1
             RETURNING id, caller
         )
         INSERT INTO events (message_id, caller, type, data)
         SELECT id, caller, $2, '{}' FROM cancelled",
    )
    .bind(id)
    .bind(EventType::Cancelled.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn reschedule(
    pool: &PgPool,
    owner: Option<&str>,
    id: Uuid,
    send_at: OffsetDateTime,
) -> Result<bool, StoreError> {
    // Only a job no worker holds and no attempt of its series has used: a claim in progress holds the
    // job's row lock, so the update waits for it and then finds the job leased.
    let (moved,): (i64,) = sqlx::query_as(
        "WITH moved AS (
             UPDATE jobs AS j
                SET due_at = $3, updated_at = now()
               FROM messages AS m
              WHERE j.message_id = $1 AND j.lease_token IS NULL AND j.attempt_count = j.series_base
                AND m.id = j.message_id AND ($2::text IS NULL OR m.caller = $2)
                AND m.status = 'queued'
             RETURNING j.message_id
         ),
         noted AS (
             UPDATE messages SET send_at = $3, updated_at = now()
              WHERE id IN (SELECT message_id FROM moved)
             RETURNING id, caller
         ),
         logged AS (
             INSERT INTO events (message_id, caller, type, data)
             SELECT id, caller, $4, $5 FROM noted WHERE $3 > now()
         )
         SELECT count(*) FROM moved",
    )
    .bind(id)
    .bind(owner)
    .bind(send_at)
    .bind(EventType::Scheduled.as_str())
    .bind(events::scheduled(id, send_at).data)
    .fetch_one(pool)
    .await?;
    if moved > 0 && send_at <= OffsetDateTime::now_utc() {
        // Due now: wake a worker rather than leave the job to the next poll.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(pool)
            .await?;
    }
    Ok(moved > 0)
}

pub(super) async fn requeue(
    pool: &PgPool,
    filter: &RequeueFilter,
    dry_run: bool,
) -> Result<Requeued, StoreError> {
    // A failed message has no job; it gets one again, due now, whose series starts here. Recipients an
    // earlier attempt delivered to are not sent to again. An earlier release wrote `failed` on the
    // message itself: that goes back to `queued` too.
    let (requeued, skipped, _woken): (i64, i64, i64) = sqlx::query_as(
        "WITH matched AS (
             SELECT s.id, s.attempt_count, s.body_dropped_at IS NOT NULL AS dropped, s.stream
               FROM message_states AS s
              WHERE s.status = 'failed'
                AND ($1::uuid IS NULL OR s.id = $1)
                AND ($2::text IS NULL OR s.caller = $2)
                AND ($3::timestamptz IS NULL OR s.created_at >= $3)
                AND ($4::timestamptz IS NULL OR s.created_at < $4)
                AND ($5::text IS NULL OR s.tags @> ARRAY[$5::text])
                AND ($6::text IS NULL OR s.last_provider = $6)
         ),
         sent AS (
             SELECT d.message_id, array_agg(DISTINCT lower(r->>'address')) AS addresses
               FROM delivery_attempts AS d
               JOIN matched AS t ON t.id = d.message_id AND NOT t.dropped
              CROSS JOIN LATERAL jsonb_array_elements(d.recipients) AS r
              WHERE r->>'outcome' = 'sent'
              GROUP BY d.message_id
         ),
         requeued AS (
             INSERT INTO jobs (message_id, due_at, attempt_count, series_base, series_started_at,
                               pending_recipients, lane)
             SELECT t.id, now(), t.attempt_count, t.attempt_count, now(),
                    CASE WHEN sent.addresses IS NOT NULL THEN ARRAY(
                        SELECT DISTINCT r->>'address'
                          FROM messages AS m
                         CROSS JOIN LATERAL jsonb_array_elements(
                               coalesce(m.envelope->'to', '[]') || coalesce(m.envelope->'cc', '[]')
                               || coalesce(m.envelope->'bcc', '[]')) AS r
                         WHERE m.id = t.id AND lower(r->>'address') <> ALL (sent.addresses)) END,
                    CASE WHEN t.stream = 'broadcast' THEN 1 ELSE 0 END
               FROM matched AS t
               LEFT JOIN sent ON sent.message_id = t.id
              WHERE NOT t.dropped AND NOT $7
             ON CONFLICT (message_id) DO NOTHING
             RETURNING message_id
         ),
         reopened AS (
             UPDATE messages SET status = 'queued', finished_at = NULL, updated_at = now()
              WHERE id IN (SELECT message_id FROM requeued)
         ),
         woken AS (
             SELECT pg_notify($8, '') FROM requeued LIMIT 1
         )
         SELECT CASE WHEN $7 THEN (SELECT count(*) FROM matched WHERE NOT dropped)
                     ELSE (SELECT count(*) FROM requeued) END,
                (SELECT count(*) FROM matched WHERE dropped),
                (SELECT count(*) FROM woken)",
    )
    .bind(filter.id)
    .bind(filter.owner.as_deref())
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(filter.tag.as_deref())
    .bind(filter.provider.as_deref())
    .bind(dry_run)
    .bind(CHANNEL)
    .fetch_one(pool)
    .await?;
    Ok(Requeued {
        requeued: u64::try_from(requeued).unwrap_or(0),
        skipped: u64::try_from(skipped).unwrap_or(0),
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
    Ok(crate::store::depth_by_state(rows))
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
