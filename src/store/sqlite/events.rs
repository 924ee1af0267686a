//! Events on SQLite: written by the single writer inside the change's transaction, so they commit in
//! id order and the feed follows the id.

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use uuid::Uuid;

use super::rows::{self, now, parse_uuid};
use crate::store::StoreError;
use crate::store::columns::Columns;
use crate::store::events::{EventCursor, EventFilter, EventPage, EventRecord, NewEvent};

const COLUMNS: &str = "id, message_id, caller, type, recipient, data, created_at";

fn record(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let id: i64 = row.try_get("id")?;
    let kind: String = row.try_get("type")?;
    let message_id: String = row.try_get("message_id")?;
    Ok(EventRecord::new(
        id,
        EventCursor { txid: 0, id },
        kind.parse()?,
        parse_uuid(&message_id)?,
        row.try_get("caller")?,
        row.try_get("recipient")?,
        rows::json(row, "data")?,
        row.time("created_at")?,
    ))
}

/// Writes `events` of `caller`'s message in the transaction `tx` belongs to.
pub(super) async fn write(
    tx: &mut SqliteConnection,
    caller: &str,
    events: impl IntoIterator<Item = NewEvent>,
) -> Result<(), StoreError> {
    let now = now();
    for event in events {
        sqlx::query(
            "INSERT INTO events (message_id, caller, type, recipient, data, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(event.message_id.to_string())
        .bind(caller)
        .bind(event.kind.as_str())
        .bind(event.recipient)
        .bind(serde_json::to_string(&event.data)?)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Writes events of several callers' messages in one statement.
pub(super) async fn write_many(
    tx: &mut SqliteConnection,
    events: Vec<(String, NewEvent)>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let now = now();
    let rows: Vec<serde_json::Value> = events
        .into_iter()
        .map(|(caller, event)| {
            serde_json::json!({
                "message_id": event.message_id.to_string(),
                "caller": caller,
                "type": event.kind.as_str(),
                "recipient": event.recipient,
                "data": event.data.to_string(),
            })
        })
        .collect();
    // The ids follow the array's order, as one INSERT per event would have given them.
    sqlx::query(
        "INSERT INTO events (message_id, caller, type, recipient, data, created_at)
         SELECT value ->> '$.message_id', value ->> '$.caller', value ->> '$.type',
                value ->> '$.recipient', value ->> '$.data', ?
           FROM json_each(?)
          ORDER BY key",
    )
    .bind(now)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes `events` of a message whose caller the statement looks up.
pub(super) async fn write_for_message(
    tx: &mut SqliteConnection,
    message_id: Uuid,
    events: impl IntoIterator<Item = NewEvent>,
) -> Result<(), StoreError> {
    let caller: Option<(String,)> = sqlx::query_as("SELECT caller FROM messages WHERE id = ?")
        .bind(message_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    match caller {
        Some((caller,)) => write(tx, &caller, events).await,
        None => Ok(()),
    }
}

pub(super) async fn of_message(
    pool: &SqlitePool,
    id: Uuid,
) -> Result<Vec<EventRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE message_id = ? ORDER BY id"
    ))
    .bind(id.to_string())
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect()
}

pub(super) async fn feed(pool: &SqlitePool, filter: &EventFilter) -> Result<EventPage, StoreError> {
    let after = filter.after.unwrap_or_default();
    let types: Vec<&str> = filter.types.iter().map(|kind| kind.as_str()).collect();
    let items = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events
          WHERE id > ?1
            AND (?2 IS NULL OR caller = ?2)
            AND (?3 = '[]' OR type IN (SELECT value FROM json_each(?3)))
            AND (?4 IS NULL OR message_id = ?4)
          ORDER BY id
          LIMIT ?5"
    ))
    .bind(after.id)
    .bind(filter.owner.as_deref())
    .bind(serde_json::to_string(&types)?)
    .bind(filter.message_id.map(|id| id.to_string()))
    .bind(i64::from(filter.limit.max(1)))
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = items.last().map_or(after, |last| last.cursor);
    Ok(EventPage { items, next_cursor })
}
