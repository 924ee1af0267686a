//! Webhooks on SQLite: the same model as PostgreSQL's; every write runs on the single writer, so the
//! fan-out and the claims need no locks of their own.

use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{self, micros, now, parse_uuid};
use crate::domain::EventType;
use crate::store::StoreError;
use crate::store::columns::Columns;
use crate::store::events::{EventCursor, EventRecord};
use crate::store::webhooks::{
    ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryResult, EndpointChange,
    EndpointRecord, NewEndpoint, Replay, takes,
};

const ENDPOINT: &str = "id, url, description, events, callers, enabled, disabled_reason, failing_since, \
     created_at, updated_at";

fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn names(kinds: &[EventType]) -> Result<String, StoreError> {
    Ok(serde_json::to_string(
        &kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
    )?)
}

fn endpoint(row: &SqliteRow) -> Result<EndpointRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let events: Vec<String> = rows::json(row, "events")?;
    Ok(EndpointRecord {
        id: parse_uuid(&id)?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: events
            .iter()
            .map(|name| name.parse().map_err(StoreError::from))
            .collect::<Result<_, _>>()?,
        callers: rows::json(row, "callers")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        failing_since: row.optional_time("failing_since")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

pub(super) async fn create(
    pool: &SqlitePool,
    new: &NewEndpoint,
) -> Result<EndpointRecord, StoreError> {
    let now = now();
    let row = sqlx::query(&format!(
        "INSERT INTO webhook_endpoints (id, url, description, events, callers, secret, created_at,
                                        updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         RETURNING {ENDPOINT}"
    ))
    .bind(new.id.to_string())
    .bind(&new.url)
    .bind(&new.description)
    .bind(names(&new.events)?)
    .bind(serde_json::to_string(&new.callers)?)
    .bind(&new.secret)
    .bind(now)
    .bind(now)
    .fetch_one(pool)
    .await?;
    endpoint(&row)
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(endpoint)
    .collect()
}

pub(super) async fn get(pool: &SqlitePool, id: Uuid) -> Result<Option<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(endpoint)
    .transpose()
}

pub(super) async fn update(
    pool: &SqlitePool,
    id: Uuid,
    change: &EndpointChange,
) -> Result<Option<EndpointRecord>, StoreError> {
    sqlx::query(&format!(
        "UPDATE webhook_endpoints
            SET url = coalesce(?2, url),
                description = coalesce(?3, description),
                events = coalesce(?4, events),
                callers = coalesce(?5, callers),
                enabled = coalesce(?6, enabled),
                disabled_reason = CASE WHEN ?6 IS NULL THEN disabled_reason END,
                failing_since = CASE WHEN ?6 THEN NULL ELSE failing_since END,
                updated_at = ?7
          WHERE id = ?1
         RETURNING {ENDPOINT}"
    ))
    .bind(id.to_string())
    .bind(change.url.as_deref())
    .bind(change.description.as_deref())
    .bind(change.events.as_deref().map(names).transpose()?)
    .bind(
        change
            .callers
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
    )
    .bind(change.enabled)
    .bind(now())
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(endpoint)
    .transpose()
}

pub(super) async fn delete(pool: &SqlitePool, id: Uuid) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?")
        .bind(id.to_string())
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn rotate(
    pool: &SqlitePool,
    id: Uuid,
    secret: &str,
    keep_old_until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "UPDATE webhook_endpoints
            SET previous_secret = secret, previous_secret_until = ?3, secret = ?2, updated_at = ?4
          WHERE id = ?1",
    )
    .bind(id.to_string())
    .bind(secret)
    .bind(micros(keep_old_until))
    .bind(now())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn fan_out(pool: &SqlitePool, limit: u32) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let (cursor,): (i64,) = sqlx::query_as("SELECT event_id FROM webhook_fanout WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let events: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT id, type, caller, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
    )
    .bind(cursor)
    .bind(i64::from(limit.max(1)))
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = events.last().map(|event| event.0) else {
        return Ok(0);
    };
    let endpoints: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT id, events, callers, created_at FROM webhook_endpoints WHERE enabled",
    )
    .fetch_all(&mut *tx)
    .await?;
    let endpoints = endpoints
        .into_iter()
        .map(|(id, events, callers, created_at)| {
            Ok((
                id,
                serde_json::from_str::<Vec<String>>(&events)?,
                serde_json::from_str::<Vec<String>>(&callers)?,
                created_at,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let now = now();
    for (event, kind, caller, written) in &events {
        for (endpoint, kinds, callers, created_at) in &endpoints {
            if *created_at <= *written && takes(kinds, callers, kind, caller) {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (endpoint_id, event_id, due_at, created_at,
                                                     updated_at)
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(endpoint)
                .bind(event)
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    sqlx::query("UPDATE webhook_fanout SET event_id = ? WHERE id = 1")
        .bind(last)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(events.len() as u64)
}

pub(super) async fn claim(
    pool: &SqlitePool,
    limit: u32,
    per_endpoint: u32,
    lease: Duration,
    busy: &[Uuid],
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let token = Uuid::now_v7();
    let now = now();
    let busy = serde_json::to_string(&busy.iter().map(Uuid::to_string).collect::<Vec<_>>())?;
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "UPDATE webhook_deliveries
            SET lease_token = ?1, due_at = ?2, attempts = attempts + 1, updated_at = ?3
          WHERE id IN (
                SELECT id FROM (
                    SELECT e.id, e.due_at,
                           row_number() OVER (PARTITION BY e.endpoint_id ORDER BY e.due_at) AS place
                      FROM (SELECT d.id, d.endpoint_id, d.due_at FROM webhook_deliveries AS d
                             WHERE d.status = 'pending' AND d.due_at <= ?3
                               AND d.endpoint_id NOT IN (SELECT value FROM json_each(?4))
                             ORDER BY d.due_at
                             LIMIT ?5 * 8) AS e
                      JOIN webhook_endpoints AS w ON w.id = e.endpoint_id AND w.enabled)
                 WHERE place <= ?6
                 ORDER BY due_at
                 LIMIT ?5)
         RETURNING id, endpoint_id, event_id, attempts",
    )
    .bind(token.to_string())
    .bind(now + duration_micros(lease))
    .bind(now)
    .bind(&busy)
    .bind(i64::from(limit.max(1)))
    .bind(i64::from(per_endpoint.max(1)))
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let endpoint_id: String = row.try_get("endpoint_id")?;
        let event_id: i64 = row.try_get("event_id")?;
        let endpoint = sqlx::query(
            "SELECT url, secret,
                    CASE WHEN previous_secret_until > ? THEN previous_secret END AS previous_secret
               FROM webhook_endpoints WHERE id = ?",
        )
        .bind(now)
        .bind(&endpoint_id)
        .fetch_one(&mut *tx)
        .await?;
        let event = sqlx::query(
            "SELECT message_id, caller, type, recipient, data, created_at FROM events WHERE id = ?",
        )
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(event) = event else {
            // The event is gone (retention removed its message): nothing is left to deliver.
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', lease_token = NULL WHERE id = ?",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            continue;
        };
        let kind: String = event.try_get("type")?;
        let message_id: String = event.try_get("message_id")?;
        let mut secrets = vec![endpoint.try_get::<String, _>("secret")?];
        secrets.extend(endpoint.try_get::<Option<String>, _>("previous_secret")?);
        claimed.push(ClaimedDelivery {
            id,
            token,
            endpoint_id: parse_uuid(&endpoint_id)?,
            url: endpoint.try_get("url")?,
            secrets,
            attempt: row.try_get("attempts")?,
            event: EventRecord::new(
                event_id,
                EventCursor {
                    txid: 0,
                    id: event_id,
                },
                kind.parse()?,
                parse_uuid(&message_id)?,
                event.try_get("caller")?,
                event.try_get("recipient")?,
                rows::json(&event, "data")?,
                event.time("created_at")?,
            ),
        });
    }
    tx.commit().await?;
    Ok(claimed)
}

pub(super) async fn record(
    pool: &SqlitePool,
    delivery: &ClaimedDelivery,
    attempt: &DeliveryAttempt,
    result: DeliveryResult,
    disable_after: Duration,
) -> Result<bool, StoreError> {
    let now = now();
    let (status, due_at) = match result {
        DeliveryResult::Succeeded => ("succeeded", None),
        DeliveryResult::Retry(delay) => ("pending", Some(now + duration_micros(delay))),
        DeliveryResult::Failed | DeliveryResult::Gone => ("failed", None),
    };
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE webhook_deliveries
            SET status = ?3, lease_token = NULL, updated_at = ?4, due_at = coalesce(?5, due_at)
          WHERE id = ?1 AND lease_token = ?2",
    )
    .bind(delivery.id)
    .bind(delivery.token.to_string())
    .bind(status)
    .bind(now)
    .bind(due_at)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(delivery.id)
    .bind(attempt.attempt)
    .bind(micros(attempt.started_at))
    .bind(attempt.status_code.map(i64::from))
    .bind(i64::from(attempt.latency_ms))
    .bind(&attempt.error)
    .execute(&mut *tx)
    .await?;
    let endpoint = delivery.endpoint_id.to_string();
    match result {
        DeliveryResult::Succeeded => {
            sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ?")
                .bind(&endpoint)
                .execute(&mut *tx)
                .await?;
        }
        DeliveryResult::Retry(_) => {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ?) WHERE id = ?",
            )
            .bind(now)
            .bind(&endpoint)
            .execute(&mut *tx)
            .await?;
        }
        DeliveryResult::Gone => {
            sqlx::query(
                "UPDATE webhook_endpoints
                    SET enabled = 0, updated_at = ?, disabled_reason = 'the endpoint answered 410 Gone'
                  WHERE id = ?",
            )
            .bind(now)
            .bind(&endpoint)
            .execute(&mut *tx)
            .await?;
        }
        DeliveryResult::Failed => {
            sqlx::query(
                "UPDATE webhook_endpoints
                    SET failing_since = coalesce(failing_since, ?1),
                        enabled = enabled AND coalesce(failing_since, ?1) > ?1 - ?2,
                        disabled_reason = CASE WHEN coalesce(failing_since, ?1) > ?1 - ?2
                                               THEN disabled_reason ELSE ?3 END,
                        updated_at = ?1
                  WHERE id = ?4",
            )
            .bind(now)
            .bind(duration_micros(disable_after))
            .bind(format!(
                "deliveries failed for {}",
                humantime::format_duration(disable_after)
            ))
            .bind(&endpoint)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn deliveries(
    pool: &SqlitePool,
    endpoint: Uuid,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, e.type, d.status, d.due_at, d.created_at
           FROM webhook_deliveries AS d
           LEFT JOIN events AS e ON e.id = d.event_id
          WHERE d.endpoint_id = ?1 AND (?2 IS NULL OR d.id < ?2)
          ORDER BY d.id DESC
          LIMIT ?3",
    )
    .bind(endpoint.to_string())
    .bind(before)
    .bind(i64::from(limit.max(1)))
    .fetch_all(pool)
    .await?;
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let kind: Option<String> = row.try_get("type")?;
        let attempts = sqlx::query(
            "SELECT attempt, started_at, status_code, latency_ms, error FROM webhook_attempts
              WHERE delivery_id = ? ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|attempt| {
            Ok(DeliveryAttempt {
                attempt: attempt.try_get("attempt")?,
                started_at: attempt.time("started_at")?,
                status_code: attempt
                    .try_get::<Option<i64>, _>("status_code")?
                    .and_then(|code| u16::try_from(code).ok()),
                latency_ms: u32::try_from(attempt.try_get::<i64, _>("latency_ms")?).unwrap_or(0),
                error: attempt.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        records.push(DeliveryRecord {
            id,
            event_id: format!("evt_{}", row.try_get::<i64, _>("event_id")?),
            event_type: kind.as_deref().unwrap_or("email.accepted").parse()?,
            next_attempt_at: if status == "pending" {
                Some(row.time("due_at")?)
            } else {
                None
            },
            status,
            created_at: row.time("created_at")?,
            attempts,
        });
    }
    Ok(records)
}

pub(super) async fn replay(
    pool: &SqlitePool,
    endpoint: Uuid,
    replay: &Replay,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(row) = sqlx::query("SELECT events, callers FROM webhook_endpoints WHERE id = ?")
        .bind(endpoint.to_string())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(0);
    };
    let kinds: Vec<String> = rows::json(&row, "events")?;
    let callers: Vec<String> = rows::json(&row, "callers")?;
    let wanted: Vec<&str> = replay.types.iter().map(|kind| kind.as_str()).collect();
    let events: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, type, caller FROM events
          WHERE (?1 IS NULL OR created_at >= ?1) AND (?2 IS NULL OR created_at < ?2)
          ORDER BY id",
    )
    .bind(replay.since.map(micros))
    .bind(replay.until.map(micros))
    .fetch_all(&mut *tx)
    .await?;
    let now = now();
    let mut queued = 0;
    for (event, kind, caller) in events {
        if !takes(&kinds, &callers, &kind, &caller)
            || !(wanted.is_empty() || wanted.contains(&kind.as_str()))
        {
            continue;
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, due_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(endpoint.to_string())
        .bind(event)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        queued += 1;
    }
    tx.commit().await?;
    Ok(queued)
}

pub(super) async fn backlog(pool: &SqlitePool) -> Result<i64, StoreError> {
    let (pending,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    Ok(pending)
}
