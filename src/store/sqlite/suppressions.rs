//! The suppression list on SQLite.

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::rows::{now, parse_uuid};
use crate::store::StoreError;
use crate::store::columns::Columns;
use crate::store::records::{
    NewSuppression, SuppressionFilter, SuppressionPage, SuppressionRecord,
};

const COLUMNS: &str = "address, reason, message_id, detail, created_at";

fn record(row: &SqliteRow) -> Result<SuppressionRecord, StoreError> {
    let reason: String = row.try_get("reason")?;
    let message_id: Option<String> = row.try_get("message_id")?;
    Ok(SuppressionRecord {
        address: row.try_get("address")?,
        reason: reason.parse()?,
        message_id: message_id.as_deref().map(parse_uuid).transpose()?,
        detail: row.try_get("detail")?,
        created_at: row.time("created_at")?,
    })
}

pub(super) async fn list(
    pool: &SqlitePool,
    filter: &SuppressionFilter,
) -> Result<SuppressionPage, StoreError> {
    let limit = filter.limit.max(1) as usize;
    let mut items = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM suppressions
          WHERE (?1 IS NULL OR address = lower(?1))
            AND (?2 IS NULL OR reason = ?2)
            AND (?3 IS NULL OR address > ?3)
          ORDER BY address
          LIMIT ?4"
    ))
    .bind(filter.address.as_deref())
    .bind(filter.reason.map(|reason| reason.as_str()))
    .bind(filter.after.as_deref())
    .bind(limit as i64 + 1)
    .fetch_all(pool)
    .await?
    .iter()
    .map(record)
    .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|last| last.address.clone())
    });
    Ok(SuppressionPage {
        items,
        next_cursor: next_cursor.flatten(),
    })
}

/// Adds an entry unless the address is on the list already; whether it did.
pub(super) async fn insert(
    tx: &mut SqliteConnection,
    entry: &NewSuppression,
) -> Result<bool, StoreError> {
    let result = sqlx::query(
        "INSERT INTO suppressions (address, reason, message_id, detail, created_at)
         VALUES (lower(?), ?, ?, ?, ?)
         ON CONFLICT (address) DO NOTHING",
    )
    .bind(&entry.address)
    .bind(entry.reason.as_str())
    .bind(entry.message_id.map(|id| id.to_string()))
    .bind(&entry.detail)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub(super) async fn add(
    pool: &SqlitePool,
    entry: &NewSuppression,
) -> Result<(SuppressionRecord, bool), StoreError> {
    let mut tx = pool.begin().await?;
    let created = insert(&mut tx, entry).await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM suppressions WHERE address = lower(?)"
    ))
    .bind(&entry.address)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((record(&row)?, created))
}

pub(super) async fn remove(pool: &SqlitePool, address: &str) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM suppressions WHERE address = lower(?)")
        .bind(address)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}
