//! Retention and erasure on SQLite. A message enters the retention indexes when it finishes, so each
//! pass reads only messages that are due, a batch at a time on the single writer.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use uuid::Uuid;

use super::rows::{self, now};
use crate::domain::{Body, Envelope, Erasing};
use crate::store::records::{Erasure, RetentionPass};
use crate::store::{StoreError, contains_pattern, dropped_body};

/// Drops the bodies of up to `limit` messages that finished before `finished_before` (micros).
pub(super) async fn drop_bodies(
    pool: &SqlitePool,
    finished_before: i64,
    limit: u32,
) -> Result<RetentionPass, StoreError> {
    let result = sqlx::query(
        "UPDATE messages SET body = ?, raw = NULL, body_dropped_at = ?
          WHERE id IN (SELECT id FROM messages
                        WHERE finished_at IS NOT NULL AND body_dropped_at IS NULL
                          AND finished_at < ?
                        LIMIT ?)",
    )
    .bind(serde_json::to_string(&dropped_body())?)
    .bind(now())
    .bind(finished_before)
    .bind(i64::from(limit))
    .execute(pool)
    .await?;
    Ok(pass(result.rows_affected(), limit))
}

/// Deletes up to `limit` messages (their attempts go with them, and their events) that finished before
/// `finished_before` (micros).
pub(super) async fn delete_finished(
    pool: &SqlitePool,
    finished_before: i64,
    limit: u32,
) -> Result<RetentionPass, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT m.id FROM messages AS m
          WHERE m.finished_at IS NOT NULL AND m.finished_at < ?
            AND NOT EXISTS (SELECT 1 FROM events AS e
                              JOIN webhook_deliveries AS d ON d.event_id = e.id
                             WHERE e.message_id = m.id AND d.status = 'pending')
          LIMIT ?",
    )
    .bind(finished_before)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let ids = serde_json::to_string(&ids.iter().map(|(id,)| id).collect::<Vec<_>>())?;
    for statement in [
        "DELETE FROM webhook_deliveries WHERE event_id IN
             (SELECT id FROM events WHERE message_id IN (SELECT value FROM json_each(?)))",
        "DELETE FROM events WHERE message_id IN (SELECT value FROM json_each(?))",
    ] {
        sqlx::query(statement).bind(&ids).execute(&mut *tx).await?;
    }
    let result = sqlx::query("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(pass(result.rows_affected(), limit))
}

/// A full batch means more may be due; the indexes find them again, so there is no position to keep.
fn pass(affected: u64, limit: u32) -> RetentionPass {
    RetentionPass {
        affected,
        resume: (affected >= u64::from(limit)).then_some(Uuid::nil()),
        first_kept: None,
    }
}

pub(super) async fn erase(pool: &SqlitePool, address: &str) -> Result<Erasure, StoreError> {
    let mut tx = pool.begin().await?;
    // A cheap text match finds the candidates; the envelope decides.
    let rows = sqlx::query(
        "SELECT id, envelope, status IN ('queued', 'sending') AS queued FROM messages
          WHERE lower(envelope) LIKE ? ESCAPE '\\'",
    )
    .bind(contains_pattern(address))
    .fetch_all(&mut *tx)
    .await?;
    let mut erasure = Erasure::default();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let envelope: Envelope = rows::json(row, "envelope")?;
        let queued: bool = row.try_get("queued")?;
        match envelope.erase(address) {
            Erasing::Absent => {}
            Erasing::Alone => {
                // Its attempts go with it (foreign key); its events' webhook deliveries do not.
                for statement in [
                    "DELETE FROM webhook_deliveries
                      WHERE event_id IN (SELECT id FROM events WHERE message_id = ?)",
                    "DELETE FROM events WHERE message_id = ?",
                    "DELETE FROM messages WHERE id = ?",
                ] {
                    sqlx::query(statement).bind(&id).execute(&mut *tx).await?;
                }
                erasure.removed += 1;
            }
            Erasing::Redacted(envelope) => {
                let dropped = (!queued)
                    .then(|| serde_json::to_string(&dropped_body()))
                    .transpose()?;
                sqlx::query(
                    "UPDATE messages
                        SET envelope = ?2, updated_at = ?3,
                            body = coalesce(?4, body),
                            raw = CASE WHEN ?4 IS NULL THEN raw END,
                            body_dropped_at = CASE WHEN ?4 IS NULL THEN body_dropped_at
                                                   ELSE coalesce(body_dropped_at, ?3) END,
                            pending_recipients = CASE WHEN pending_recipients IS NOT NULL THEN (
                                SELECT json_group_array(value) FROM json_each(pending_recipients)
                                 WHERE lower(value) <> lower(?5)) END
                      WHERE id = ?1",
                )
                .bind(&id)
                .bind(serde_json::to_string(&envelope)?)
                .bind(now())
                .bind(dropped)
                .bind(address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE delivery_attempts
                        SET recipients = (SELECT json_group_array(json(value))
                                            FROM json_each(recipients)
                                           WHERE lower(json_extract(value, '$.address')) <> lower(?2))
                      WHERE message_id = ?1",
                )
                .bind(&id)
                .bind(address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE events SET recipient = NULL
                      WHERE message_id = ?1 AND lower(recipient) = lower(?2)",
                )
                .bind(&id)
                .bind(address)
                .execute(&mut *tx)
                .await?;
                erasure.redacted += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(erasure)
}

pub(super) async fn body(
    pool: &SqlitePool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<Option<Body>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT body FROM messages WHERE id = ?1 AND (?2 IS NULL OR caller = ?2)")
            .bind(id.to_string())
            .bind(owner)
            .fetch_optional(pool)
            .await?;
    row.map(|(text,)| Ok(serde_json::from_str(&text)?))
        .transpose()
}
