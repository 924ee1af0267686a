//! Mapping between rows and records.

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::store::StoreError;
use crate::store::records::{AttemptRecord, MessageSummary};

/// The columns [`summary`] reads, from the view `message_states` (migration `20261201000001`): a
/// message with its current state, put together from its job and its last attempt.
pub(super) const SUMMARY_COLUMNS: &str = "id, status, message_id, envelope, tags, metadata, created_at, \
     updated_at, send_at, next_attempt_at, sent_at, attempt_count, last_error";

/// The columns [`attempt`] reads from `delivery_attempts`.
pub(super) const ATTEMPT_COLUMNS: &str = "attempt, started_at, duration_ms, provider, outcome, \
     smtp_code, enhanced_code, response, recipients";

/// Reads a row selected with [`SUMMARY_COLUMNS`].
pub(super) fn summary(row: &PgRow) -> Result<MessageSummary, StoreError> {
    let Json(envelope) = row.try_get("envelope")?;
    let Json(metadata) = row.try_get("metadata")?;
    Ok(MessageSummary {
        id: row.try_get("id")?,
        status: row.try_get::<String, _>("status")?.parse()?,
        message_id: row.try_get("message_id")?,
        envelope,
        tags: row.try_get("tags")?,
        metadata,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        send_at: row.try_get("send_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        sent_at: row.try_get("sent_at")?,
        attempt_count: row.try_get("attempt_count")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Reads a row selected with [`ATTEMPT_COLUMNS`].
pub(super) fn attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    let Json(recipients) = row.try_get("recipients")?;
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row.try_get("duration_ms")?,
        provider: row.try_get("provider")?,
        outcome: row.try_get::<String, _>("outcome")?.parse()?,
        smtp_code: row.try_get("smtp_code")?,
        enhanced_code: row.try_get("enhanced_code")?,
        response: row.try_get("response")?,
        recipients,
    })
}
