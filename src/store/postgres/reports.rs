//! Reports on PostgreSQL: what bounces and complaints say of messages, and the unreadable ones kept.

use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::EventColumns;
use crate::domain::id_in_message_id;
use crate::store::StoreError;
use crate::store::events::NewEvent;
use crate::store::records::NewSuppression;

pub(super) async fn record(
    pool: &PgPool,
    message: Uuid,
    events: Vec<NewEvent>,
    suppressions: Vec<NewSuppression>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let caller: Option<(String,)> = sqlx::query_as("SELECT caller FROM messages WHERE id = $1")
        .bind(message)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((caller,)) = caller else {
        return Ok(false);
    };
    let mut columns = EventColumns::default();
    columns.extend(events);
    sqlx::query(
        "INSERT INTO events (message_id, caller, type, recipient, data)
         SELECT e.message_id, $1, e.type, e.recipient, e.data
           FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY
                AS e(message_id, type, recipient, data, n)
          ORDER BY e.n",
    )
    .bind(&caller)
    .bind(&columns.message_ids)
    .bind(&columns.kinds)
    .bind(&columns.recipients)
    .bind(&columns.data)
    .execute(&mut *tx)
    .await?;
    for entry in suppressions {
        sqlx::query(
            "INSERT INTO suppressions (address, reason, message_id, detail)
             VALUES (lower($1), $2, $3, $4)
             ON CONFLICT (address) DO NOTHING",
        )
        .bind(&entry.address)
        .bind(entry.reason.as_str())
        .bind(entry.message_id)
        .bind(&entry.detail)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn by_header(pool: &PgPool, header: &str) -> Result<Option<Uuid>, StoreError> {
    let header = format!(
        "<{}>",
        header.trim().trim_start_matches('<').trim_end_matches('>')
    );
    if let Some(id) = id_in_message_id(&header) {
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM messages WHERE id = $1 AND message_id = $2")
                .bind(id)
                .bind(&header)
                .fetch_optional(pool)
                .await?;
        if found.is_some() {
            return Ok(Some(id));
        }
    }
    let found: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM messages WHERE message_id = $1 AND raw IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(&header)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(id,)| id))
}

pub(super) async fn keep(
    pool: &PgPool,
    source: &str,
    raw: &[u8],
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO inbound_reports (source, error, raw) VALUES ($1, $2, $3)")
        .bind(source)
        .bind(error)
        .bind(raw)
        .execute(pool)
        .await?;
    Ok(())
}
