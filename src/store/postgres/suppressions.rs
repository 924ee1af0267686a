//! The suppression list on PostgreSQL.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::store::StoreError;
use crate::store::records::{
    NewSuppression, SuppressionFilter, SuppressionPage, SuppressionRecord,
};

const COLUMNS: &str = "address, reason, message_id, detail, created_at";

fn record(row: &PgRow) -> Result<SuppressionRecord, StoreError> {
    let reason: String = row.try_get("reason")?;
    Ok(SuppressionRecord {
        address: row.try_get("address")?,
        reason: reason.parse()?,
        message_id: row.try_get("message_id")?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn list(
    pool: &PgPool,
    filter: &SuppressionFilter,
) -> Result<SuppressionPage, StoreError> {
    let limit = filter.limit.max(1) as usize;
    let mut items = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM suppressions
          WHERE ($1::text IS NULL OR address = lower($1))
            AND ($2::text IS NULL OR reason = $2)
            AND ($3::text IS NULL OR address > $3)
          ORDER BY address
          LIMIT $4"
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

pub(super) async fn add(
    pool: &PgPool,
    entry: &NewSuppression,
) -> Result<(SuppressionRecord, bool), StoreError> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO suppressions (address, reason, message_id, detail)
         VALUES (lower($1), $2, $3, $4)
         ON CONFLICT (address) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(&entry.address)
    .bind(entry.reason.as_str())
    .bind(entry.message_id)
    .bind(&entry.detail)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        return Ok((record(&row)?, true));
    }
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM suppressions WHERE address = lower($1)"
    ))
    .bind(&entry.address)
    .fetch_one(pool)
    .await?;
    Ok((record(&row)?, false))
}

pub(super) async fn remove(pool: &PgPool, address: &str) -> Result<bool, StoreError> {
    let result = sqlx::query("DELETE FROM suppressions WHERE address = lower($1)")
        .bind(address)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}
