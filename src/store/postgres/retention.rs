//! Retention and erasure: bodies dropped and rows deleted once messages are old enough, a recipient's
//! data erased on request. Each pass is a few short statements over at most a batch of messages, found
//! through the primary key (ids are time-ordered), so the queue never waits on them.

use sqlx::Row;
use sqlx::postgres::PgPool;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Body, Envelope, Erasing};
use crate::store::records::{Erasure, RetentionPass};
use crate::store::{StoreError, after, contains_pattern, dropped_body, id_bound};

/// What a retention pass does to a message that finished long enough ago.
#[derive(Clone, Copy)]
pub(super) enum Retain {
    /// Drops its body and bytes, keeps its row.
    DropBody,
    /// Deletes it with its attempts.
    Delete,
}

/// Looks at up to `limit` messages from id `from` accepted before `finished_before` and applies
/// `action` to those finished before then.
pub(super) async fn pass(
    pool: &PgPool,
    action: Retain,
    finished_before: OffsetDateTime,
    from: Uuid,
    limit: u32,
) -> Result<RetentionPass, StoreError> {
    let only_kept_bodies = matches!(action, Retain::DropBody);
    let rows = sqlx::query(
        "SELECT m.id,
                j.message_id IS NULL
                AND greatest(m.updated_at, m.finished_at,
                             (SELECT max(d.recorded_at) FROM delivery_attempts AS d
                               WHERE d.message_id = m.id)) < $3 AS due
           FROM messages AS m
           LEFT JOIN jobs AS j ON j.message_id = m.id
          WHERE m.id >= $1 AND m.id < $2 AND (NOT $5 OR m.body_dropped_at IS NULL)
          ORDER BY m.id
          LIMIT $4",
    )
    .bind(from)
    .bind(id_bound(finished_before))
    .bind(finished_before)
    .bind(i64::from(limit))
    .bind(only_kept_bodies)
    .persistent(false)
    .fetch_all(pool)
    .await?;
    let mut due = Vec::new();
    let mut first_kept = None;
    let mut last = None;
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        last = Some(id);
        if row.try_get::<Option<bool>, _>("due")?.unwrap_or(false) {
            due.push(id);
        } else if first_kept.is_none() {
            first_kept = Some(id);
        }
    }
    let affected = if due.is_empty() {
        0
    } else {
        match action {
            Retain::DropBody => drop_bodies(pool, &due).await?,
            Retain::Delete => delete(pool, &due).await?,
        }
    };
    Ok(RetentionPass {
        affected,
        resume: last
            .filter(|_| rows.len() as u64 >= u64::from(limit))
            .map(after),
        first_kept,
    })
}

/// Drops the bodies of messages that are still out of the queue.
async fn drop_bodies(pool: &PgPool, ids: &[Uuid]) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "UPDATE messages AS m SET body = $2, raw = NULL, body_dropped_at = now()
          WHERE m.id = ANY($1) AND m.body_dropped_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.message_id = m.id)",
    )
    .bind(ids)
    .bind(Json(dropped_body()))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Deletes messages that are still out of the queue, with their attempts.
async fn delete(pool: &PgPool, ids: &[Uuid]) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted: Vec<(Uuid,)> = sqlx::query_as(
        "DELETE FROM messages AS m
          WHERE m.id = ANY($1)
            AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.message_id = m.id)
            -- An event still to be delivered to a webhook keeps its message until it is.
            AND NOT EXISTS (SELECT 1 FROM events AS e
                              JOIN webhook_deliveries AS d ON d.event_id = e.id
                             WHERE e.message_id = m.id AND d.status = 'pending')
         RETURNING m.id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let deleted: Vec<Uuid> = deleted.into_iter().map(|(id,)| id).collect();
    for statement in [
        "DELETE FROM delivery_attempts WHERE message_id = ANY($1)",
        "DELETE FROM webhook_deliveries
          WHERE event_id IN (SELECT id FROM events WHERE message_id = ANY($1))",
        "DELETE FROM events WHERE message_id = ANY($1)",
    ] {
        sqlx::query(statement)
            .bind(&deleted)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deleted.len() as u64)
}

/// Messages looked at per statement while erasing.
const ERASE_BATCH: i64 = 500;

pub(super) async fn erase(pool: &PgPool, address: &str) -> Result<Erasure, StoreError> {
    let pattern = contains_pattern(address);
    let mut erasure = Erasure::default();
    let mut from = Uuid::nil();
    loop {
        // A cheap text match finds the candidates; the envelope decides.
        let rows = sqlx::query(
            "SELECT m.id, m.envelope, j.message_id IS NOT NULL AS queued
               FROM messages AS m
               LEFT JOIN jobs AS j ON j.message_id = m.id
              WHERE m.id >= $1 AND lower(m.envelope::text) LIKE $2 ESCAPE '\\'
              ORDER BY m.id
              LIMIT $3",
        )
        .bind(from)
        .bind(&pattern)
        .bind(ERASE_BATCH)
        .persistent(false)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        from = after(last.try_get("id")?);
        let full = rows.len() as i64 >= ERASE_BATCH;
        let mut tx = pool.begin().await?;
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let Json(envelope): Json<Envelope> = row.try_get("envelope")?;
            let queued: bool = row.try_get("queued")?;
            match envelope.erase(address) {
                Erasing::Absent => {}
                Erasing::Alone => {
                    for statement in [
                        "DELETE FROM jobs WHERE message_id = $1",
                        "DELETE FROM delivery_attempts WHERE message_id = $1",
                        "DELETE FROM webhook_deliveries
                          WHERE event_id IN (SELECT id FROM events WHERE message_id = $1)",
                        "DELETE FROM events WHERE message_id = $1",
                        "DELETE FROM messages WHERE id = $1",
                    ] {
                        sqlx::query(statement).bind(id).execute(&mut *tx).await?;
                    }
                    erasure.removed += 1;
                }
                Erasing::Redacted(envelope) => {
                    redact(&mut tx, id, &envelope, address, queued).await?;
                    erasure.redacted += 1;
                }
            }
        }
        tx.commit().await?;
        if !full {
            break;
        }
    }
    Ok(erasure)
}

/// Takes the address out of a message kept for its other recipients: its envelope, its attempts'
/// per-recipient results, the recipients its job has left, and (once it is finished) its body.
async fn redact(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    envelope: &Envelope,
    address: &str,
    queued: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE messages
            SET envelope = $2, updated_at = now(),
                body = CASE WHEN $3 THEN body ELSE $4 END,
                raw = CASE WHEN $3 THEN raw END,
                body_dropped_at = CASE WHEN $3 THEN body_dropped_at
                                       ELSE coalesce(body_dropped_at, now()) END
          WHERE id = $1",
    )
    .bind(id)
    .bind(Json(envelope))
    .bind(queued)
    .bind(Json(dropped_body()))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE delivery_attempts
            SET recipients = (SELECT coalesce(jsonb_agg(r), '[]') FROM jsonb_array_elements(recipients) AS r
                               WHERE lower(r->>'address') <> lower($2))
          WHERE message_id = $1",
    )
    .bind(id)
    .bind(address)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE events SET recipient = NULL
          WHERE message_id = $1 AND lower(recipient) = lower($2)",
    )
    .bind(id)
    .bind(address)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET pending_recipients = ARRAY(
                SELECT p FROM unnest(pending_recipients) AS p WHERE lower(p) <> lower($2))
          WHERE message_id = $1 AND pending_recipients IS NOT NULL",
    )
    .bind(id)
    .bind(address)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn body(
    pool: &PgPool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<Option<Body>, StoreError> {
    let row: Option<(Json<Body>,)> = sqlx::query_as(
        "SELECT body FROM messages WHERE id = $1 AND ($2::text IS NULL OR caller = $2)",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(Json(body),)| body))
}
