//! The accept path on SQLite: one message, or a whole batch, per transaction on the single writer.

use std::time::Duration;

use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::rows::{self, now};
use crate::domain::{IdempotencyKey, MessageStatus, RequestFingerprint};
use crate::store::StoreError;
use crate::store::records::{Accepted, BatchOutcome, BatchRequest, EnqueueOutcome, EnqueueRequest};

/// A key as stored: its fingerprint, the message it names, when it was written, and a batch's answer.
type StoredKey = (Vec<u8>, String, i64, Option<String>);

/// Looks a caller's key up; `None` when it is unknown or expired.
async fn stored_key(
    tx: &mut SqliteConnection,
    caller: &str,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<Option<StoredKey>, StoreError> {
    let stored: Option<StoredKey> = sqlx::query_as(
        "SELECT fingerprint, message_id, created_at, batch FROM idempotency_keys
          WHERE caller = ? AND key = ?",
    )
    .bind(caller)
    .bind(key.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let oldest = now() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    Ok(stored.filter(|(_, _, created_at, _)| *created_at >= oldest))
}

/// Writes (or, once expired, overwrites) a key.
async fn write_key(
    tx: &mut SqliteConnection,
    caller: &str,
    key: &IdempotencyKey,
    fingerprint: &RequestFingerprint,
    message_id: Uuid,
    batch: Option<String>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, message_id, created_at, batch)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (caller, key) DO UPDATE
            SET fingerprint = excluded.fingerprint, message_id = excluded.message_id,
                created_at = excluded.created_at, batch = excluded.batch",
    )
    .bind(caller)
    .bind(key.as_str())
    .bind(&fingerprint.0[..])
    .bind(message_id.to_string())
    .bind(now())
    .bind(batch)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Applies a request's key: `Some` when the key answers it (replayed, or used for another request),
/// `None` when the message is to be stored (the key is written).
async fn claim_key(
    tx: &mut SqliteConnection,
    request: &EnqueueRequest,
    retention: Duration,
) -> Result<Option<EnqueueOutcome>, StoreError> {
    let Some((key, fingerprint)) = &request.idempotency else {
        return Ok(None);
    };
    match stored_key(tx, &request.caller, key, retention).await? {
        Some((stored, message_id, _, None)) if stored == fingerprint.0 => {
            Ok(Some(EnqueueOutcome::Replayed(Accepted {
                id: rows::parse_uuid(&message_id)?,
                status: MessageStatus::Queued,
            })))
        }
        Some(_) => Ok(Some(EnqueueOutcome::KeyReused)),
        None => {
            write_key(
                tx,
                &request.caller,
                key,
                fingerprint,
                request.message.id,
                None,
            )
            .await?;
            Ok(None)
        }
    }
}

/// Inserts one message; returns whether it is due now.
async fn insert(tx: &mut SqliteConnection, request: &EnqueueRequest) -> Result<bool, StoreError> {
    let now = now();
    let message = &request.message;
    let send_at = message.send_at.map(rows::micros);
    sqlx::query(
        "INSERT INTO messages
            (id, caller, message_id, envelope, body, tags, metadata, created_at, updated_at, send_at,
             due_at, source, raw, template, template_version, stream)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(message.id.to_string())
    .bind(&request.caller)
    .bind(&message.message_id)
    .bind(serde_json::to_string(&message.content.envelope)?)
    .bind(serde_json::to_string(&message.content.body)?)
    .bind(serde_json::to_string(&message.tags)?)
    .bind(serde_json::to_string(&message.metadata)?)
    .bind(now)
    .bind(now)
    .bind(send_at)
    .bind(send_at.unwrap_or(now))
    .bind(message.source.as_str())
    .bind(message.content.raw.as_deref())
    .bind(message.template.as_ref().map(|used| used.name.as_str()))
    .bind(message.template.as_ref().map(|used| used.version))
    .bind(message.stream.as_str())
    .execute(&mut *tx)
    .await?;
    super::events::write(
        tx,
        &request.caller,
        crate::store::events::for_accept(message, rows::time(now)?),
    )
    .await?;
    Ok(send_at.is_none_or(|at| at <= now))
}

fn created(request: &EnqueueRequest) -> EnqueueOutcome {
    EnqueueOutcome::Created(Accepted {
        id: request.message.id,
        status: MessageStatus::Queued,
    })
}

/// Stores one message and its key; returns the outcome and whether a due message was stored.
pub(super) async fn enqueue(
    tx: &mut SqliteConnection,
    request: &EnqueueRequest,
    retention: Duration,
) -> Result<(EnqueueOutcome, bool), StoreError> {
    if let Some(outcome) = claim_key(tx, request, retention).await? {
        return Ok((outcome, false));
    }
    let due = insert(tx, request).await?;
    Ok((created(request), due))
}

/// Stores a batch: its key, every item's key and every message. Returns the outcome, whether anything
/// due now was stored, and whether the transaction must be committed (a refusal stores nothing).
pub(super) async fn enqueue_batch(
    tx: &mut SqliteConnection,
    request: &BatchRequest,
    retention: Duration,
) -> Result<(BatchOutcome, bool, bool), StoreError> {
    if let Some((key, fingerprint)) = &request.idempotency {
        match stored_key(tx, &request.caller, key, retention).await? {
            Some((stored, _, _, Some(batch))) if stored == fingerprint.0 => {
                let ids: Vec<Option<Uuid>> = serde_json::from_str(&batch)?;
                return Ok((BatchOutcome::Replayed(ids), false, false));
            }
            Some(_) => return Ok((BatchOutcome::KeyReused, false, false)),
            None => {}
        }
    }
    let mut outcomes = Vec::with_capacity(request.messages.len());
    let mut due = false;
    for message in &request.messages {
        match claim_key(tx, message, retention).await? {
            Some(outcome) => outcomes.push(outcome),
            None => {
                due |= insert(tx, message).await?;
                outcomes.push(created(message));
            }
        }
    }
    let reused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome, EnqueueOutcome::KeyReused))
        .map(|(index, _)| index)
        .collect();
    if request.all_or_nothing && !reused.is_empty() {
        return Ok((BatchOutcome::ItemKeysReused(reused), false, false));
    }
    if let Some((key, fingerprint)) = &request.idempotency {
        let ids = BatchOutcome::slot_ids(&request.slots, &outcomes);
        write_key(
            tx,
            &request.caller,
            key,
            fingerprint,
            Uuid::nil(),
            Some(serde_json::to_string(&ids)?),
        )
        .await?;
    }
    Ok((BatchOutcome::Committed(outcomes), due, true))
}

/// What one enqueue of a group commit is answered: its outcome and whether a due message was stored,
/// or why it could not be.
pub(super) type Answer = Result<(EnqueueOutcome, bool), StoreError>;

/// Commits concurrent enqueues in one transaction on the writer (one WAL sync for all of them). If
/// any of them fails, the transaction is undone and each is committed in a transaction of its own, so
/// one that cannot be stored is answered with its error alone. Each answer says whether a due message
/// was stored.
pub(super) async fn commit_enqueues(
    writer: sqlx::SqlitePool,
    retention: Duration,
    requests: Vec<EnqueueRequest>,
) -> Result<Vec<Answer>, StoreError> {
    let mut tx = writer.begin().await?;
    if let Ok(answers) = enqueue_all(&mut tx, &requests, retention).await {
        tx.commit().await?;
        return Ok(answers.into_iter().map(Ok).collect());
    }
    tx.rollback().await?;
    let mut answers = Vec::with_capacity(requests.len());
    for request in &requests {
        let mut tx = writer.begin().await?;
        let answer = enqueue(&mut tx, request, retention).await;
        if answer.is_ok() {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        answers.push(answer);
    }
    Ok(answers)
}

/// Stores every request of a group commit on `tx`. Requests with an idempotency key, messages a caller
/// wrote whole (their bytes are a blob) and messages with attachments (a large body would be copied
/// into the batch's JSON, escaped, and parsed again by SQLite) go one by one; the others' messages are
/// one `INSERT ... SELECT FROM json_each` and their events one more, whatever their number.
async fn enqueue_all(
    tx: &mut SqliteConnection,
    requests: &[EnqueueRequest],
    retention: Duration,
) -> Result<Vec<(EnqueueOutcome, bool)>, StoreError> {
    let mut answers = Vec::with_capacity(requests.len());
    let now = now();
    let mut rows = Vec::new();
    let mut events = Vec::new();
    for request in requests {
        let content = &request.message.content;
        if request.idempotency.is_some()
            || content.raw.is_some()
            || !content.body.attachments.is_empty()
        {
            answers.push(enqueue(tx, request, retention).await?);
            continue;
        }
        let message = &request.message;
        let send_at = message.send_at.map(rows::micros);
        rows.push(serde_json::json!({
            "id": message.id.to_string(),
            "caller": request.caller,
            "message_id": message.message_id,
            "envelope": serde_json::to_string(&message.content.envelope)?,
            "body": serde_json::to_string(&message.content.body)?,
            "tags": serde_json::to_string(&message.tags)?,
            "metadata": serde_json::to_string(&message.metadata)?,
            "send_at": send_at,
            "due_at": send_at.unwrap_or(now),
            "source": message.source.as_str(),
            "template": message.template.as_ref().map(|used| used.name.as_str()),
            "template_version": message.template.as_ref().map(|used| used.version),
            "stream": message.stream.as_str(),
        }));
        for event in crate::store::events::for_accept(message, rows::time(now)?) {
            events.push((request.caller.clone(), event));
        }
        answers.push((created(request), send_at.is_none_or(|at| at <= now)));
    }
    if !rows.is_empty() {
        sqlx::query(
            "INSERT INTO messages
                (id, caller, message_id, envelope, body, tags, metadata, created_at, updated_at,
                 send_at, due_at, source, template, template_version, stream)
             SELECT value ->> '$.id', value ->> '$.caller', value ->> '$.message_id',
                    value ->> '$.envelope', value ->> '$.body', value ->> '$.tags',
                    value ->> '$.metadata', ?1, ?1, value ->> '$.send_at', value ->> '$.due_at',
                    value ->> '$.source', value ->> '$.template', value ->> '$.template_version',
                    value ->> '$.stream'
               FROM json_each(?2)
              ORDER BY key",
        )
        .bind(now)
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *tx)
        .await?;
        super::events::write_many(tx, events).await?;
    }
    Ok(answers)
}
