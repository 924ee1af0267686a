//! Reading messages from SQLite rows; times are stored as microseconds since the Unix epoch.

use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::store::StoreError;
use crate::store::records::{AttemptRecord, MessageFilter, MessageSummary, Page};

/// The columns [`summary`] reads.
const SUMMARY_COLUMNS: &str = "id, status, message_id, envelope, tags, metadata, created_at, updated_at, \
     send_at, due_at, sent_at, attempt_count, last_error";

/// Now, in stored form.
pub(super) fn now() -> i64 {
    micros(OffsetDateTime::now_utc())
}

/// A time in stored form.
pub(super) fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn time(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn optional_time(micros: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    micros.map(time).transpose()
}

pub(super) fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn summary(row: &SqliteRow) -> Result<MessageSummary, StoreError> {
    let status: MessageStatus = row.try_get::<String, _>("status")?.parse()?;
    Ok(MessageSummary {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        status,
        message_id: row.try_get("message_id")?,
        envelope: json(row, "envelope")?,
        tags: json(row, "tags")?,
        metadata: json(row, "metadata")?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
        send_at: optional_time(row.try_get("send_at")?)?,
        next_attempt_at: if status == MessageStatus::Queued {
            Some(time(row.try_get("due_at")?)?)
        } else {
            None
        },
        sent_at: optional_time(row.try_get("sent_at")?)?,
        attempt_count: row.try_get("attempt_count")?,
        last_error: row.try_get("last_error")?,
    })
}

/// A JSON text column.
pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &str,
) -> Result<T, StoreError> {
    Ok(serde_json::from_str(&row.try_get::<String, _>(column)?)?)
}

fn attempt(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        started_at: time(row.try_get("started_at")?)?,
        duration_ms: row.try_get("duration_ms")?,
        provider: row.try_get("provider")?,
        outcome: row.try_get::<String, _>("outcome")?.parse()?,
        smtp_code: row.try_get("smtp_code")?,
        enhanced_code: row.try_get("enhanced_code")?,
        response: row.try_get("response")?,
        recipients: json(row, "recipients")?,
    })
}

pub(super) async fn find_message(
    pool: &SqlitePool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<Option<MessageSummary>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM messages WHERE id = ? AND (? IS NULL OR caller = ?)"
    ))
    .bind(id.to_string())
    .bind(owner)
    .bind(owner)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(summary)
    .transpose()
}

pub(super) async fn attempts(
    pool: &SqlitePool,
    id: Uuid,
) -> Result<Vec<AttemptRecord>, StoreError> {
    sqlx::query(
        "SELECT attempt, started_at, duration_ms, provider, outcome, smtp_code, enhanced_code, response,
                recipients
           FROM delivery_attempts WHERE message_id = ? ORDER BY attempt",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(attempt)
    .collect()
}

pub(super) async fn list_messages(
    pool: &SqlitePool,
    owner: Option<&str>,
    filter: &MessageFilter,
) -> Result<Page, StoreError> {
    // UUIDv7 text sorts in time order, like the uuid column does in PostgreSQL.
    let items = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM messages
          WHERE (?1 IS NULL OR caller = ?1)
            AND (?2 IS NULL OR status = ?2)
            AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?3))
            AND (?4 IS NULL OR created_at >= ?4)
            AND (?5 IS NULL OR created_at < ?5)
            AND (?6 IS NULL OR id < ?6)
          ORDER BY id DESC
          LIMIT ?7"
    ))
    .bind(owner)
    .bind(filter.status.map(MessageStatus::as_str))
    .bind(filter.tag.as_deref())
    .bind(filter.created_after.map(micros))
    .bind(filter.created_before.map(micros))
    .bind(filter.after.map(|id| id.to_string()))
    .bind(filter.rows())
    .fetch_all(pool)
    .await?
    .iter()
    .map(summary)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, filter.limit))
}
