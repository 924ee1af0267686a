//! Webhooks on PostgreSQL: endpoints, the fan-out from the event feed, and deliveries claimed with
//! leases so that several replicas deliver each one once.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::interval;
use crate::domain::EventType;
use crate::store::StoreError;
use crate::store::events::{EventCursor, EventRecord};
use crate::store::webhooks::{
    ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryResult, EndpointChange,
    EndpointRecord, NewEndpoint, Replay,
};

const ENDPOINT: &str = "id, url, description, events, callers, enabled, disabled_reason, failing_since, \
     created_at, updated_at";

fn kinds(names: Vec<String>) -> Result<Vec<EventType>, StoreError> {
    names
        .iter()
        .map(|name| name.parse().map_err(StoreError::from))
        .collect()
}

fn names(kinds: &[EventType]) -> Vec<&'static str> {
    kinds.iter().map(|kind| kind.as_str()).collect()
}

fn endpoint(row: &PgRow) -> Result<EndpointRecord, StoreError> {
    Ok(EndpointRecord {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: kinds(row.try_get("events")?)?,
        callers: row.try_get("callers")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        failing_since: row.try_get("failing_since")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) async fn create(pool: &PgPool, new: &NewEndpoint) -> Result<EndpointRecord, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO webhook_endpoints (id, url, description, events, callers, secret)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {ENDPOINT}"
    ))
    .bind(new.id)
    .bind(&new.url)
    .bind(&new.description)
    .bind(names(&new.events))
    .bind(&new.callers)
    .bind(&new.secret)
    .fetch_one(pool)
    .await?;
    endpoint(&row)
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(endpoint)
    .collect()
}

pub(super) async fn get(pool: &PgPool, id: Uuid) -> Result<Option<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(endpoint)
    .transpose()
}

pub(super) async fn update(
    pool: &PgPool,
    id: Uuid,
    change: &EndpointChange,
) -> Result<Option<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "UPDATE webhook_endpoints
            SET url = coalesce($2, url),
                description = coalesce($3, description),
                events = coalesce($4, events),
                callers = coalesce($5, callers),
                enabled = coalesce($6, enabled),
                disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason END,
                failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
                updated_at = now()
          WHERE id = $1
         RETURNING {ENDPOINT}"
    ))
    .bind(id)
    .bind(change.url.as_deref())
    .bind(change.description.as_deref())
    .bind(change.events.as_deref().map(names))
    .bind(change.callers.as_deref())
    .bind(change.enabled)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(endpoint)
    .transpose()
}

pub(super) async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn rotate(
    pool: &PgPool,
    id: Uuid,
    secret: &str,
    keep_old_until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE webhook_endpoints
            SET previous_secret = secret, previous_secret_until = $3, secret = $2, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(secret)
    .bind(keep_old_until)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn fan_out(pool: &PgPool, limit: u32) -> Result<u64, StoreError> {
    // The cursor row is locked for the statement: a replica that finds it locked reads nothing. Events
    // are read as the feed reads them, so none is passed over; each goes to the endpoints enabled and
    // created by the time it was written.
    let (read,): (i64,) = sqlx::query_as(
        "WITH cursor AS (
             SELECT txid, event_id FROM webhook_fanout WHERE id = 1 FOR UPDATE SKIP LOCKED
         ),
         batch AS (
             -- The cursor as values (init plans), so the feed index starts at it: joined as a row,
             -- it became a filter over every event before it, a scan growing with the table.
             SELECT e.id, e.txid, e.type, e.caller, e.created_at
               FROM events AS e
              WHERE (e.txid, e.id) > ((SELECT txid FROM cursor), (SELECT event_id FROM cursor))
                AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY e.txid, e.id
              LIMIT $1
         ),
         created AS (
             INSERT INTO webhook_deliveries (endpoint_id, event_id)
             SELECT w.id, b.id
               FROM batch AS b
               JOIN webhook_endpoints AS w
                 ON w.enabled AND w.created_at <= b.created_at
                AND (cardinality(w.events) = 0 OR b.type = ANY (w.events))
                AND (cardinality(w.callers) = 0 OR b.caller = ANY (w.callers))
              ORDER BY b.txid, b.id
         ),
         moved AS (
             UPDATE webhook_fanout AS f SET txid = last.txid, event_id = last.id
               FROM (SELECT txid, id FROM batch ORDER BY txid DESC, id DESC LIMIT 1) AS last
              WHERE f.id = 1
         )
         SELECT count(*) FROM batch",
    )
    .bind(i64::from(limit.max(1)))
    .persistent(false)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(read).unwrap_or(0))
}

pub(super) async fn claim(
    pool: &PgPool,
    limit: u32,
    per_endpoint: u32,
    lease: Duration,
    busy: &[Uuid],
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let token = Uuid::now_v7();
    // The earliest due of each endpoint first, at most `per_endpoint` of one: an endpoint with a
    // backlog does not take every slot from the others.
    let rows = sqlx::query(
        "WITH earliest AS (
             -- Through the index of pending deliveries: a backlog of any size costs one window.
             SELECT d.id, d.endpoint_id, d.due_at
               FROM webhook_deliveries AS d
              WHERE d.status = 'pending' AND d.due_at <= now() AND d.endpoint_id <> ALL ($3)
              ORDER BY d.due_at
              LIMIT $1 * 8
         ),
         candidates AS (
             SELECT id FROM (
                 SELECT e.id, e.due_at,
                        row_number() OVER (PARTITION BY e.endpoint_id ORDER BY e.due_at) AS place
                   FROM earliest AS e
                   JOIN webhook_endpoints AS w ON w.id = e.endpoint_id AND w.enabled
             ) AS ranked
              WHERE place <= $5
              ORDER BY due_at
              LIMIT $1
         ),
         -- Locked and checked again: a delivery another replica claimed since the candidates were
         -- read is pending still, but no longer due (its lease moved it).
         due AS (
             SELECT d.id FROM webhook_deliveries AS d
              WHERE d.id IN (SELECT id FROM candidates) AND d.status = 'pending'
                AND d.due_at <= now()
              FOR UPDATE SKIP LOCKED
         ),
         claimed AS (
             UPDATE webhook_deliveries AS d
                SET lease_token = $2, due_at = now() + $4::interval, attempts = d.attempts + 1,
                    updated_at = now()
              WHERE d.id IN (SELECT id FROM due)
             RETURNING d.id, d.endpoint_id, d.event_id, d.attempts
         )
         SELECT c.id, c.endpoint_id, c.attempts, w.url, w.secret,
                CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret,
                e.id AS event_number, e.txid::text AS txid, e.message_id, e.caller, e.type,
                e.recipient, e.data, e.created_at
           FROM claimed AS c
           JOIN webhook_endpoints AS w ON w.id = c.endpoint_id
           LEFT JOIN events AS e ON e.id = c.event_id",
    )
    .bind(i64::from(limit.max(1)))
    .bind(token)
    .bind(busy)
    .bind(interval(lease))
    .bind(i64::from(per_endpoint.max(1)))
    .fetch_all(pool)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut orphans = Vec::new();
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let Some(number) = row.try_get::<Option<i64>, _>("event_number")? else {
            orphans.push(id);
            continue;
        };
        let txid: String = row.try_get("txid")?;
        let kind: String = row.try_get("type")?;
        let Json(data): Json<serde_json::Value> = row.try_get("data")?;
        let mut secrets = vec![row.try_get::<String, _>("secret")?];
        secrets.extend(row.try_get::<Option<String>, _>("previous_secret")?);
        claimed.push(ClaimedDelivery {
            id,
            token,
            endpoint_id: row.try_get("endpoint_id")?,
            url: row.try_get("url")?,
            secrets,
            attempt: row.try_get("attempts")?,
            event: EventRecord::new(
                number,
                EventCursor {
                    txid: txid.parse().unwrap_or(0),
                    id: number,
                },
                kind.parse()?,
                row.try_get("message_id")?,
                row.try_get("caller")?,
                row.try_get("recipient")?,
                data,
                row.try_get("created_at")?,
            ),
        });
    }
    if !orphans.is_empty() {
        // The event is gone (retention removed its message): nothing is left to deliver.
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', lease_token = NULL, updated_at = now()
              WHERE id = ANY ($1) AND lease_token = $2",
        )
        .bind(&orphans)
        .bind(token)
        .execute(pool)
        .await?;
    }
    Ok(claimed)
}

pub(super) async fn record(
    pool: &PgPool,
    delivery: &ClaimedDelivery,
    attempt: &DeliveryAttempt,
    result: DeliveryResult,
    disable_after: Duration,
) -> Result<bool, StoreError> {
    let (status, retry_ms) = match result {
        DeliveryResult::Succeeded => ("succeeded", 0),
        DeliveryResult::Retry(delay) => (
            "pending",
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        ),
        DeliveryResult::Failed | DeliveryResult::Gone => ("failed", 0),
    };
    // What the attempt does to its endpoint: a success ends a failing streak, a failure starts one,
    // 410 disables it, and a spent schedule after `disable_after` of failures does too.
    let endpoint = match result {
        DeliveryResult::Succeeded => {
            "UPDATE webhook_endpoints SET failing_since = NULL
              WHERE id = $8 AND failing_since IS NOT NULL AND EXISTS (SELECT 1 FROM updated)"
        }
        DeliveryResult::Retry(_) => {
            "UPDATE webhook_endpoints SET failing_since = now()
              WHERE id = $8 AND failing_since IS NULL AND EXISTS (SELECT 1 FROM updated)"
        }
        DeliveryResult::Gone => {
            "UPDATE webhook_endpoints
                SET enabled = false, updated_at = now(),
                    disabled_reason = 'the endpoint answered 410 Gone'
              WHERE id = $8 AND EXISTS (SELECT 1 FROM updated)"
        }
        DeliveryResult::Failed => {
            "UPDATE webhook_endpoints
                SET failing_since = coalesce(failing_since, now()),
                    enabled = enabled AND coalesce(failing_since, now()) > now() - $9::interval,
                    disabled_reason = CASE WHEN coalesce(failing_since, now()) > now() - $9::interval
                                           THEN disabled_reason
                                           ELSE 'deliveries failed for ' || $10 END,
                    updated_at = now()
              WHERE id = $8 AND EXISTS (SELECT 1 FROM updated)"
        }
    };
    // One statement: the delivery (only while the lease holds it), its attempt and its endpoint.
    let (applied,): (i64,) = sqlx::query_as(&format!(
        "WITH updated AS (
             UPDATE webhook_deliveries
                SET status = $3, lease_token = NULL, updated_at = now(),
                    due_at = CASE WHEN $3 = 'pending' THEN now() + $4 * interval '1 millisecond'
                                  ELSE due_at END
              WHERE id = $1 AND lease_token = $2
             RETURNING id
         ),
         attempted AS (
             INSERT INTO webhook_attempts
                 (delivery_id, attempt, started_at, status_code, latency_ms, error)
             SELECT id, $5, $6, $7, $11, $12 FROM updated
             ON CONFLICT (delivery_id, attempt) DO NOTHING
         ),
         endpoint AS (
             {endpoint}
         )
         SELECT count(*) FROM updated"
    ))
    .bind(delivery.id)
    .bind(delivery.token)
    .bind(status)
    .bind(retry_ms)
    .bind(attempt.attempt)
    .bind(attempt.started_at)
    .bind(attempt.status_code.map(i32::from))
    .bind(delivery.endpoint_id)
    .bind(interval(disable_after))
    .bind(humantime::format_duration(disable_after).to_string())
    .bind(i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX))
    .bind(&attempt.error)
    .fetch_one(pool)
    .await?;
    Ok(applied > 0)
}

pub(super) async fn deliveries(
    pool: &PgPool,
    endpoint: Uuid,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, e.type, d.status, d.due_at, d.created_at,
                coalesce((SELECT jsonb_agg(jsonb_build_object(
                              'attempt', a.attempt, 'started_at', a.started_at,
                              'status_code', a.status_code, 'latency_ms', a.latency_ms,
                              'error', a.error) ORDER BY a.attempt)
                            FROM webhook_attempts AS a WHERE a.delivery_id = d.id), '[]') AS attempts
           FROM webhook_deliveries AS d
           LEFT JOIN events AS e ON e.id = d.event_id
          WHERE d.endpoint_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
          ORDER BY d.id DESC
          LIMIT $3",
    )
    .bind(endpoint)
    .bind(before)
    .bind(i64::from(limit.max(1)))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let kind: Option<String> = row.try_get("type")?;
            let Json(attempts): Json<Vec<StoredAttempt>> = row.try_get("attempts")?;
            Ok(DeliveryRecord {
                id: row.try_get("id")?,
                event_id: format!("evt_{}", row.try_get::<i64, _>("event_id")?),
                event_type: kind.as_deref().unwrap_or("email.accepted").parse()?,
                next_attempt_at: (status == "pending")
                    .then(|| row.try_get("due_at"))
                    .transpose()?,
                status,
                created_at: row.try_get("created_at")?,
                attempts: attempts
                    .into_iter()
                    .map(StoredAttempt::into_attempt)
                    .collect(),
            })
        })
        .collect()
}

/// An attempt as the listing aggregates it.
#[derive(serde::Deserialize)]
struct StoredAttempt {
    attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    status_code: Option<u16>,
    latency_ms: u32,
    error: Option<String>,
}

impl StoredAttempt {
    fn into_attempt(self) -> DeliveryAttempt {
        DeliveryAttempt {
            attempt: self.attempt,
            started_at: self.started_at,
            status_code: self.status_code,
            latency_ms: self.latency_ms,
            error: self.error,
        }
    }
}

pub(super) async fn replay(
    pool: &PgPool,
    endpoint: Uuid,
    replay: &Replay,
) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id)
         SELECT w.id, e.id
           FROM webhook_endpoints AS w
           JOIN events AS e
             ON (cardinality(w.events) = 0 OR e.type = ANY (w.events))
            AND (cardinality(w.callers) = 0 OR e.caller = ANY (w.callers))
          WHERE w.id = $1
            AND ($2::timestamptz IS NULL OR e.created_at >= $2)
            AND ($3::timestamptz IS NULL OR e.created_at < $3)
            AND (cardinality($4::text[]) = 0 OR e.type = ANY ($4))
          ORDER BY e.txid, e.id",
    )
    .bind(endpoint)
    .bind(replay.since)
    .bind(replay.until)
    .bind(names(&replay.types))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

pub(super) async fn backlog(pool: &PgPool) -> Result<i64, StoreError> {
    let (pending,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    Ok(pending)
}
