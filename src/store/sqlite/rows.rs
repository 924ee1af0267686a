//! How SQLite keeps the values records are read from: times as microseconds since the Unix epoch, ids
//! as text, lists and documents as JSON text.

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::MessageStatus;
use crate::store::StoreError;
use crate::store::columns::{self, Columns, native_columns};
use crate::store::records::{AttemptRecord, MessageFilter, MessageSummary, Page};

/// Now, in stored form.
pub(super) fn now() -> i64 {
    micros(OffsetDateTime::now_utc())
}

/// A time in stored form.
pub(super) fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub(super) fn time(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|error| StoreError::Corrupt(error.to_string()))
}

pub(super) fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// The summary columns. The time of the next attempt is the due time of a queued message.
fn summary_columns() -> String {
    columns::SUMMARY
        .map(|column| match column {
            "next_attempt_at" => "CASE WHEN status = 'queued' THEN due_at END AS next_attempt_at",
            column => column,
        })
        .join(", ")
}

/// A JSON text column.
pub(super) fn json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(&row.try_get::<String, _>(column)?)?)
}

impl Columns for SqliteRow {
    native_columns!();

    fn uuid(&self, column: &str) -> Result<Uuid, StoreError> {
        parse_uuid(&self.try_get::<String, _>(column)?)
    }

    fn time(&self, column: &str) -> Result<OffsetDateTime, StoreError> {
        time(self.try_get(column)?)
    }

    fn optional_time(&self, column: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.try_get::<Option<i64>, _>(column)?
            .map(time)
            .transpose()
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, StoreError> {
        json(self, column)
    }

    fn list(&self, column: &str) -> Result<Vec<String>, StoreError> {
        json(self, column)
    }
}

pub(super) async fn find_message(
    pool: &SqlitePool,
    owner: Option<&str>,
    id: Uuid,
) -> Result<Option<MessageSummary>, StoreError> {
    sqlx::query(&format!(
        "SELECT {} FROM messages WHERE id = ? AND (? IS NULL OR caller = ?)",
        summary_columns()
    ))
    .bind(id.to_string())
    .bind(owner)
    .bind(owner)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(columns::summary)
    .transpose()
}

pub(super) async fn attempts(
    pool: &SqlitePool,
    id: Uuid,
) -> Result<Vec<AttemptRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {} FROM delivery_attempts WHERE message_id = ? ORDER BY attempt",
        columns::ATTEMPT
    ))
    .bind(id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(columns::attempt)
    .collect()
}

pub(super) async fn list_messages(
    pool: &SqlitePool,
    owner: Option<&str>,
    filter: &MessageFilter,
) -> Result<Page, StoreError> {
    // UUIDv7 text sorts in time order, like the uuid column does in PostgreSQL.
    let items = sqlx::query(&format!(
        "SELECT {} FROM messages
          WHERE (?1 IS NULL OR caller = ?1)
            AND (?2 IS NULL OR status = ?2)
            AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?3))
            AND (?4 IS NULL OR created_at >= ?4)
            AND (?5 IS NULL OR created_at < ?5)
            AND (?6 IS NULL OR id < ?6)
            AND (?8 IS NULL OR EXISTS (
                 SELECT 1 FROM json_each(messages.envelope, '$.to') AS r
                  WHERE lower(json_extract(r.value, '$.address')) = lower(?8)
                 UNION ALL
                 SELECT 1 FROM json_each(messages.envelope, '$.cc') AS r
                  WHERE lower(json_extract(r.value, '$.address')) = lower(?8)
                 UNION ALL
                 SELECT 1 FROM json_each(messages.envelope, '$.bcc') AS r
                  WHERE lower(json_extract(r.value, '$.address')) = lower(?8)))
          ORDER BY id DESC
          LIMIT ?7",
        summary_columns()
    ))
    .bind(owner)
    .bind(filter.status.map(MessageStatus::as_str))
    .bind(filter.tag.as_deref())
    .bind(filter.created_after.map(micros))
    .bind(filter.created_before.map(micros))
    .bind(filter.after.map(|id| id.to_string()))
    .bind(filter.rows())
    .bind(filter.recipient.as_deref())
    .fetch_all(pool)
    .await?
    .iter()
    .map(columns::summary)
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, filter.limit))
}
