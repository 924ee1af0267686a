//! Group commit for the accept path: concurrent enqueues share one transaction and one WAL flush.
//!
//! Requests queue on a channel; a few committer tasks each take whatever is waiting (up to a batch),
//! run it in one transaction (idempotency keys first, in a fixed order so two batches never deadlock,
//! then every message in one multi-row INSERT) and answer every request of the batch after the commit.
//! Nothing waits for a batch to fill: an idle server commits a lone request at once, a busy one commits
//! many per flush. 202 still means committed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{interval, queue};
use crate::domain::MessageStatus;
use crate::store::StoreError;
use crate::store::content;
use crate::store::records::{Accepted, EnqueueOutcome, EnqueueRequest};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 128;
/// Requests waiting for a committer before `enqueue` itself waits (back-pressure).
const QUEUE: usize = 4096;

struct Pending {
    request: EnqueueRequest,
    reply: oneshot::Sender<Result<EnqueueOutcome, StoreError>>,
}

/// The sending side; committer tasks run until it is dropped.
pub(super) struct Committer {
    sender: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts `tasks` committers on `pool`, in `runtime`.
    pub(super) fn start(
        runtime: &tokio::runtime::Handle,
        pool: PgPool,
        retention: Duration,
        tasks: usize,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..tasks.max(1) {
            runtime.spawn(run(pool.clone(), retention, receiver.clone()));
        }
        Self { sender }
    }

    /// Enqueues one request and waits until its batch is committed (or failed).
    pub(super) async fn submit(
        &self,
        request: EnqueueRequest,
    ) -> Result<EnqueueOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?
    }
}

async fn run(pool: PgPool, retention: Duration, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(pending) => batch.push(pending),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
        }
        let requests: Vec<&EnqueueRequest> = batch.iter().map(|pending| &pending.request).collect();
        match commit(&pool, retention, &requests).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                // Nothing of the batch was committed: every request gets the error (and no 202).
                for pending in batch {
                    let _ = pending.reply.send(Err(error.replicate()));
                }
            }
        }
    }
}

async fn commit(
    pool: &PgPool,
    retention: Duration,
    requests: &[&EnqueueRequest],
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut outcomes: Vec<Option<EnqueueOutcome>> = vec![None; requests.len()];
    // Keys are claimed in (caller, key) order: two batches holding each other's keys would deadlock.
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
        outcomes[index] = claim_idempotency_key(&mut tx, requests[index], retention).await?;
    }
    let fresh: Vec<&EnqueueRequest> = requests
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(request, _)| *request)
        .collect();
    if !fresh.is_empty() {
        insert_messages(&mut tx, &fresh).await?;
    }
    tx.commit().await?;
    Ok(requests
        .iter()
        .zip(outcomes)
        .map(|(request, outcome)| {
            outcome.unwrap_or(EnqueueOutcome::Created(Accepted {
                id: request.message.id,
                status: MessageStatus::Queued,
            }))
        })
        .collect())
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

/// One multi-row INSERT for the whole batch, and one notification if anything is due now; the
/// notification is delivered at commit, so no worker wakes for a row it cannot see yet.
async fn insert_messages(
    tx: &mut Transaction<'_, Postgres>,
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
    for request in requests {
        let message = &request.message;
        let (envelope, body) = content::split_content(&message.content)?;
        ids.push(message.id);
        callers.push(request.caller.as_str());
        message_ids.push(message.message_id.as_str());
        envelopes.push(envelope);
        bodies.push(body);
        tags.push(serde_json::to_value(&message.tags)?);
        metadata.push(serde_json::to_value(&message.metadata)?);
        send_at.push(message.send_at);
    }
    sqlx::query(
        "WITH inserted AS (
             INSERT INTO messages
                 (id, caller, message_id, envelope, body, tags, metadata, send_at, due_at)
             SELECT id, caller, message_id, envelope, body,
                    ARRAY(SELECT jsonb_array_elements_text(tags)), metadata, send_at,
                    COALESCE(send_at, now())
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[],
                           $7::jsonb[], $8::timestamptz[])
                    AS batch(id, caller, message_id, envelope, body, tags, metadata, send_at)
             RETURNING due_at
         )
         SELECT pg_notify($9, '') FROM inserted WHERE due_at <= now() LIMIT 1",
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
    .fetch_optional(&mut **tx)
    .await?;
    Ok(())
}
