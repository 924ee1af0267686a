//! Reports on SQLite: what bounces and complaints say of messages, and the unreadable ones kept.

use sqlx::sqlite::SqlitePool;
use uuid::Uuid;

use super::rows::now;
use crate::domain::id_in_message_id;
use crate::store::StoreError;
use crate::store::events::NewEvent;
use crate::store::records::NewSuppression;

pub(super) async fn record(
    pool: &SqlitePool,
    message: Uuid,
    events: Vec<NewEvent>,
    suppressions: Vec<NewSuppression>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let caller: Option<(String,)> = sqlx::query_as("SELECT caller FROM messages WHERE id = ?")
        .bind(message.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let Some((caller,)) = caller else {
        return Ok(false);
    };
    super::events::write(&mut tx, &caller, events).await?;
    for entry in suppressions {
        super::suppressions::insert(&mut tx, &entry).await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn by_header(pool: &SqlitePool, header: &str) -> Result<Option<Uuid>, StoreError> {
    let header = format!(
        "<{}>",
        header.trim().trim_start_matches('<').trim_end_matches('>')
    );
    if let Some(id) = id_in_message_id(&header) {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT id FROM messages WHERE id = ? AND message_id = ?")
                .bind(id.to_string())
                .bind(&header)
                .fetch_optional(pool)
                .await?;
        if found.is_some() {
            return Ok(Some(id));
        }
    }
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM messages WHERE message_id = ? AND raw IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(&header)
    .fetch_optional(pool)
    .await?;
    found.map(|(id,)| super::rows::parse_uuid(&id)).transpose()
}

pub(super) async fn keep(
    pool: &SqlitePool,
    source: &str,
    raw: &[u8],
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO inbound_reports (source, error, raw, received_at) VALUES (?, ?, ?, ?)",
    )
    .bind(source)
    .bind(error)
    .bind(raw)
    .bind(now())
    .execute(pool)
    .await?;
    Ok(())
}
