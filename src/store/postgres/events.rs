//! The event feed on PostgreSQL: only events of transactions older than every one still running are
//! read, in (transaction, id) order, so nothing can commit behind a reader's cursor.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::types::Json;
use uuid::Uuid;

use crate::store::StoreError;
use crate::store::events::{EventCursor, EventFilter, EventPage, EventRecord};

const COLUMNS: &str =
    "id, txid::text AS txid, message_id, caller, type, recipient, data, created_at";

fn record(row: &PgRow) -> Result<EventRecord, StoreError> {
    let id: i64 = row.try_get("id")?;
    let txid: String = row.try_get("txid")?;
    let txid = txid
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("event {id} has transaction id `{txid}`")))?;
    let kind: String = row.try_get("type")?;
    let Json(data): Json<serde_json::Value> = row.try_get("data")?;
    Ok(EventRecord::new(
        id,
        EventCursor { txid, id },
        kind.parse()?,
        row.try_get("message_id")?,
        row.try_get("caller")?,
        row.try_get("recipient")?,
        data,
        row.try_get("created_at")?,
    ))
}

pub(super) async fn of_message(pool: &PgPool, id: Uuid) -> Result<Vec<EventRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events WHERE message_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect()
}

pub(super) async fn feed(pool: &PgPool, filter: &EventFilter) -> Result<EventPage, StoreError> {
    let after = filter.after.unwrap_or_default();
    let types: Vec<&str> = filter.types.iter().map(|kind| kind.as_str()).collect();
    let items = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events
          WHERE (txid, id) > ($1::text::xid8, $2)
            AND txid < pg_snapshot_xmin(pg_current_snapshot())
            AND ($3::text IS NULL OR caller = $3)
            AND (cardinality($4::text[]) = 0 OR type = ANY($4))
            AND ($5::uuid IS NULL OR message_id = $5)
          ORDER BY txid, id
          LIMIT $6"
    ))
    .bind(after.txid.to_string())
    .bind(after.id)
    .bind(filter.owner.as_deref())
    .bind(&types)
    .bind(filter.message_id)
    .bind(i64::from(filter.limit.max(1)))
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = items.last().map_or(after, |last| last.cursor);
    Ok(EventPage { items, next_cursor })
}
