//! The accept path's batch: idempotency keys first, in a fixed order so two batches never deadlock,
//! then every message of the batch and its job in one statement, and at most one notification.

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::{EventColumns, interval, queue};
use crate::domain::MessageStatus;
use crate::store::StoreError;
use crate::store::records::{Accepted, BatchOutcome, BatchRequest, EnqueueOutcome, EnqueueRequest};

/// Commits a batch of enqueue requests in one transaction.
pub(super) async fn commit_enqueues(
    pool: PgPool,
    retention: Duration,
    requests: Vec<EnqueueRequest>,
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let requests: Vec<&EnqueueRequest> = requests.iter().collect();
    if requests.iter().all(|request| request.idempotency.is_none()) {
        // Without keys the batch is one statement, atomic on its own: no BEGIN and COMMIT round trips.
        insert_messages(&pool, &requests).await?;
        return Ok(requests.iter().map(|request| created(request)).collect());
    }
    let mut tx = pool.begin().await?;
    let outcomes = claim_keys(&mut tx, &requests, retention).await?;
    insert_fresh(&mut tx, &requests, &outcomes).await?;
    tx.commit().await?;
    Ok(settle(&requests, outcomes))
}

/// A batch key's answer: each item's message id, in request order.
type BatchAnswer = Vec<Option<Uuid>>;

/// Commits a batch request: its own key, every item's key and every message, in one transaction.
pub(super) async fn commit_batch(
    pool: &PgPool,
    retention: Duration,
    request: BatchRequest,
) -> Result<BatchOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some((key, fingerprint)) = &request.idempotency {
        let claimed: Option<(i32,)> = sqlx::query_as(
            "INSERT INTO idempotency_keys (caller, key, fingerprint, message_id, batch)
             VALUES ($1, $2, $3, $4, '[]')
             ON CONFLICT (caller, key) DO UPDATE
                SET fingerprint = EXCLUDED.fingerprint,
                    message_id = EXCLUDED.message_id,
                    batch = EXCLUDED.batch,
                    created_at = now()
                WHERE idempotency_keys.created_at < now() - $5::interval
             RETURNING 1",
        )
        .bind(&request.caller)
        .bind(key.as_str())
        .bind(&fingerprint.0[..])
        .bind(Uuid::nil())
        .bind(interval(retention))
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            let (stored, batch): (Vec<u8>, Option<Json<BatchAnswer>>) = sqlx::query_as(
                "SELECT fingerprint, batch FROM idempotency_keys WHERE caller = $1 AND key = $2",
            )
            .bind(&request.caller)
            .bind(key.as_str())
            .fetch_one(&mut *tx)
            .await?;
            return Ok(match batch {
                Some(Json(ids)) if stored == fingerprint.0 => BatchOutcome::Replayed(ids),
                _ => BatchOutcome::KeyReused,
            });
        }
    }
    let requests: Vec<&EnqueueRequest> = request.messages.iter().collect();
    let outcomes = claim_keys(&mut tx, &requests, retention).await?;
    let reused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, outcome)| matches!(outcome, Some(EnqueueOutcome::KeyReused)))
        .map(|(index, _)| index)
        .collect();
    if request.all_or_nothing && !reused.is_empty() {
        tx.rollback().await?;
        return Ok(BatchOutcome::ItemKeysReused(reused));
    }
    insert_fresh(&mut tx, &requests, &outcomes).await?;
    let outcomes = settle(&requests, outcomes);
    if let Some((key, _)) = &request.idempotency {
        sqlx::query("UPDATE idempotency_keys SET batch = $3 WHERE caller = $1 AND key = $2")
            .bind(&request.caller)
            .bind(key.as_str())
            .bind(Json(BatchOutcome::slot_ids(&request.slots, &outcomes)))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(BatchOutcome::Committed(outcomes))
}

/// Claims every request's idempotency key, in (caller, key) order: two batches holding each other's
/// keys would otherwise deadlock. `Some` for a request answered by its key (replayed or refused).
async fn claim_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[&EnqueueRequest],
    retention: Duration,
) -> Result<Vec<Option<EnqueueOutcome>>, StoreError> {
    let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; requests.len()];
    let mut keyed: Vec<usize> = (0..requests.len())
        .filter(|&index| requests[index].idempotency.is_some())
        .collect();
    keyed.sort_by(|&a, &b| {
        let key = |index: usize| {
            let request = requests[index];
            (
                request.caller.as_str(),
                request.idempotency.as_ref().map(|(key, _)| key.as_str()),
            )
        };
        key(a).cmp(&key(b))
    });
    for index in keyed {
        outcomes[index] = claim_idempotency_key(tx, requests[index], retention).await?;
    }
    Ok(outcomes)
}

/// Inserts the requests their keys did not answer.
async fn insert_fresh(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[&EnqueueRequest],
    outcomes: &[Option<EnqueueOutcome>],
) -> Result<(), StoreError> {
    let fresh: Vec<&EnqueueRequest> = requests
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(request, _)| *request)
        .collect();
    if !fresh.is_empty() {
        insert_messages(&mut **tx, &fresh).await?;
    }
    Ok(())
}

/// Every request's outcome: its key's answer, or created now.
fn settle(
    requests: &[&EnqueueRequest],
    outcomes: Vec<Option<EnqueueOutcome>>,
) -> Vec<EnqueueOutcome> {
    requests
        .iter()
        .zip(outcomes)
        .map(|(request, outcome)| outcome.unwrap_or_else(|| created(request)))
        .collect()
}

fn created(request: &EnqueueRequest) -> EnqueueOutcome {
    EnqueueOutcome::Created(Accepted {
        id: request.message.id,
        status: MessageStatus::Queued,
    })
}

/// Inserts the idempotency record first: a concurrent request with the same key then waits on the
/// unique index until this transaction ends, and afterwards sees its outcome. Within one batch the
/// second request with a key sees the first's row and is answered with the first's message.
async fn claim_idempotency_key(
    tx: &mut Transaction<'_, Postgres>,
    request: &EnqueueRequest,
    retention: Duration,
) -> Result<Option<EnqueueOutcome>, StoreError> {
    let Some((key, fingerprint)) = &request.idempotency else {
        return Ok(None);
    };
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO idempotency_keys (caller, key, fingerprint, message_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (caller, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint,
                message_id = EXCLUDED.message_id,
                batch = NULL,
                created_at = now()
            WHERE idempotency_keys.created_at < now() - $5::interval
         RETURNING message_id",
    )
    .bind(&request.caller)
    .bind(key.as_str())
    .bind(&fingerprint.0[..])
    .bind(request.message.id)
    .bind(interval(retention))
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    let (stored_fingerprint, message_id): (Vec<u8>, Uuid) = sqlx::query_as(
        "SELECT fingerprint, message_id FROM idempotency_keys WHERE caller = $1 AND key = $2",
    )
    .bind(&request.caller)
    .bind(key.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(if stored_fingerprint == fingerprint.0 {
        EnqueueOutcome::Replayed(Accepted {
            id: message_id,
            status: MessageStatus::Queued,
        })
    } else {
        EnqueueOutcome::KeyReused
    }))
}

/// One statement inserts the whole batch's messages and their jobs, and sends one notification if
/// anything is due now; it is delivered at commit, so no worker wakes for a job it cannot see yet.
async fn insert_messages<'e>(
    executor: impl PgExecutor<'e>,
    requests: &[&EnqueueRequest],
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(requests.len());
    let mut callers = Vec::with_capacity(requests.len());
    let mut message_ids = Vec::with_capacity(requests.len());
    let mut envelopes = Vec::with_capacity(requests.len());
    let mut bodies = Vec::with_capacity(requests.len());
    let mut tags = Vec::with_capacity(requests.len());
    let mut metadata = Vec::with_capacity(requests.len());
    let mut send_at = Vec::with_capacity(requests.len());
    let mut sources = Vec::with_capacity(requests.len());
    let mut raws = Vec::with_capacity(requests.len());
    let mut templates = Vec::with_capacity(requests.len());
    let mut versions = Vec::with_capacity(requests.len());
    let mut streams = Vec::with_capacity(requests.len());
    let mut events = EventColumns::default();
    let now = time::OffsetDateTime::now_utc();
    for request in requests {
        let message = &request.message;
        ids.push(message.id);
        callers.push(request.caller.as_str());
        message_ids.push(message.message_id.as_str());
        // Serialized straight into the statement's buffer: a body (attachments and all) is written
        // once, not first into a JSON value and then again.
        envelopes.push(Json(&message.content.envelope));
        bodies.push(Json(&message.content.body));
        tags.push(Json(&message.tags));
        metadata.push(Json(&message.metadata));
        send_at.push(message.send_at);
        sources.push(message.source.as_str());
        raws.push(message.content.raw.as_deref());
        templates.push(message.template.as_ref().map(|used| used.name.as_str()));
        versions.push(message.template.as_ref().map(|used| used.version));
        streams.push(message.stream.as_str());
        events.extend(crate::store::events::for_accept(message, now));
    }
    sqlx::query(
        "WITH inserted AS (
             INSERT INTO messages (id, caller, message_id, envelope, body, tags, metadata, send_at,
                                   source, raw, template, template_version, stream)
             SELECT id, caller, message_id, envelope, body,
                    ARRAY(SELECT jsonb_array_elements_text(tags)), metadata, send_at, source, raw,
                    template, template_version, stream
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[],
                           $7::jsonb[], $8::timestamptz[], $10::text[], $11::bytea[], $12::text[],
                           $13::integer[], $18::text[])
                    AS batch(id, caller, message_id, envelope, body, tags, metadata, send_at, source,
                             raw, template, template_version, stream)
             RETURNING id, caller, send_at, stream
         ),
         queued AS (
             INSERT INTO jobs (message_id, due_at, lane)
             SELECT id, COALESCE(send_at, now()), CASE WHEN stream = 'broadcast' THEN 1 ELSE 0 END
               FROM inserted
             RETURNING due_at
         ),
         logged AS (
             INSERT INTO events (message_id, caller, type, recipient, data)
             SELECT e.message_id, i.caller, e.type, e.recipient, e.data
               FROM UNNEST($14::uuid[], $15::text[], $16::text[], $17::jsonb[]) WITH ORDINALITY
                    AS e(message_id, type, recipient, data, n)
               JOIN inserted AS i ON i.id = e.message_id
              ORDER BY e.n
         )
         SELECT pg_notify($9, '') FROM queued WHERE due_at <= now() LIMIT 1",
    )
    .bind(&ids)
    .bind(&callers)
    .bind(&message_ids)
    .bind(&envelopes)
    .bind(&bodies)
    .bind(&tags)
    .bind(&metadata)
    .bind(&send_at)
    .bind(queue::CHANNEL)
    .bind(&sources)
    .bind(&raws)
    .bind(&templates)
    .bind(&versions)
    .bind(&events.message_ids)
    .bind(&events.kinds)
    .bind(&events.recipients)
    .bind(&events.data)
    .bind(&streams)
    .fetch_optional(executor)
    .await?;
    Ok(())
}
