//! The one accept path. Every way a message comes in (the JSON API today; SMTP submission, raw MIME and
//! forms as they arrive) parses its own shape into a [`NewMessage`] and hands it here: the caller's
//! permission and sender domains are checked, the idempotency key applied, the message committed, and
//! only then is the caller answered.

use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::domain::{
    IdempotencyKey, Limits, MessageStatus, NewMessage, RequestFingerprint, RouteFacts, Routes,
};
use crate::metrics::Metrics;
use crate::store::{
    BatchOutcome, BatchRequest, EnqueueOutcome, EnqueueRequest, SharedStore, StoreError,
};

/// A message as an ingress parsed it, with the caller's idempotency key if there was one.
#[derive(Debug)]
pub struct Submission {
    /// The validated message.
    pub message: NewMessage,
    /// The caller's key and the fingerprint of the request it came with.
    pub idempotency: Option<(IdempotencyKey, RequestFingerprint)>,
}

/// The answer to an accepted message, given only once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message's id.
    pub id: Uuid,
    /// Its status at acceptance.
    pub status: MessageStatus,
    /// The same key and request were seen before: this is the first answer again.
    pub replayed: bool,
}

/// Why a message was not accepted (beyond its own validity, which the ingress checks).
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The caller does not hold the `send` scope.
    #[error("this caller may not send messages")]
    NotPermitted,
    /// The caller may not send from the message's sender domain.
    #[error("this caller may not send from the domain `{0}`")]
    SenderNotAllowed(String),
    /// No route takes the message (routes are configured, and none matches it, nor is there a default).
    #[error(
        "no route takes this message: no [[routes]] entry matches it and there is no default route"
    )]
    NoRoute,
    /// The idempotency key was used before with a different request.
    #[error("this idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// A batch replayed from its key: this item was refused when the batch was first sent.
    #[error("this item was refused when the batch was first sent with this idempotency key")]
    RefusedBefore,
    /// The queue could not commit the message.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a batch treats an item it cannot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// One refused item refuses the batch: nothing is queued.
    Strict,
    /// The other items are queued; each refused item is answered with its error.
    Permissive,
}

/// A batch as an ingress parsed it.
#[derive(Debug)]
pub struct BatchSubmission {
    /// The items in request order: a parsed message, or `None` where the ingress refused the item.
    pub items: Vec<Option<Submission>>,
    /// The key of the whole batch and the fingerprint of the request it came with.
    pub idempotency: Option<(IdempotencyKey, RequestFingerprint)>,
    /// Strict or permissive.
    pub mode: BatchMode,
}

/// The answer to a batch, given only once it is committed: per item in request order, its receipt or
/// why it was refused here (`None`: the ingress's own refusal stands).
#[derive(Debug)]
pub struct BatchReceipt {
    /// Per item.
    pub items: Vec<Option<Result<Receipt, AcceptError>>>,
    /// The batch's key and request were seen before: this is the first answer again.
    pub replayed: bool,
}

/// Why a batch was not accepted as a whole.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The caller does not hold the `send` scope.
    #[error("this caller may not send messages")]
    NotPermitted,
    /// The batch's idempotency key was used before with a different request.
    #[error("this idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// Strict mode: these items (by request index) were refused here, and so the batch. The ingress
    /// adds the items it refused itself.
    #[error("the batch has items that cannot be accepted")]
    Refused(Vec<(usize, AcceptError)>),
    /// The queue could not commit the batch.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The accept path: permit, deduplicate, commit.
pub struct Acceptor {
    store: SharedStore,
    limits: Limits,
    routes: Routes,
    metrics: Metrics,
}

impl Acceptor {
    /// An accept path committing to `store`; ingresses parse messages within `limits`; a message
    /// must be taken by one of `routes` (when any provider is configured).
    pub fn new(store: SharedStore, limits: Limits, routes: Routes, metrics: Metrics) -> Self {
        Self {
            store,
            limits,
            routes,
            metrics,
        }
    }

    /// The bounds every ingress parses messages within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Accepts one message for `caller`; returns once it is committed (or replayed).
    #[tracing::instrument(skip_all, fields(caller = %caller.sub, message_id = %submission.message.id))]
    pub async fn accept(
        &self,
        caller: &Caller,
        submission: Submission,
    ) -> Result<Receipt, AcceptError> {
        self.permit(caller, &submission.message)?;
        let outcome = self
            .store
            .enqueue(EnqueueRequest {
                caller: caller.sub.clone(),
                message: submission.message,
                idempotency: submission.idempotency,
            })
            .await?;
        match outcome {
            EnqueueOutcome::Created(accepted) => {
                self.metrics.messages_accepted.inc();
                tracing::info!(id = %accepted.id, "message accepted");
                Ok(Receipt {
                    id: accepted.id,
                    status: accepted.status,
                    replayed: false,
                })
            }
            EnqueueOutcome::Replayed(accepted) => {
                self.metrics.idempotent_replays.inc();
                Ok(Receipt {
                    id: accepted.id,
                    status: accepted.status,
                    replayed: true,
                })
            }
            EnqueueOutcome::KeyReused => Err(AcceptError::IdempotencyKeyReused),
        }
    }

    /// Whether `caller` may send `message`: the `send` scope, and the author's domain (and the envelope
    /// sender's, where a caller's own message gives one) among the caller's domains. Every way a
    /// message is accepted, or previewed, asks this first.
    pub fn permit(&self, caller: &Caller, message: &NewMessage) -> Result<(), AcceptError> {
        if !caller.has(Scope::Send) {
            return Err(AcceptError::NotPermitted);
        }
        let envelope = &message.content.envelope;
        for address in [&envelope.from.address, envelope.return_path()] {
            let domain = address.domain();
            if !caller.may_send_from(domain) {
                return Err(AcceptError::SenderNotAllowed(domain.to_owned()));
            }
        }
        if !self.routes.is_empty()
            && self
                .routes
                .route(&RouteFacts::of(
                    &message.content.envelope,
                    message.stream,
                    &caller.sub,
                    &message.tags,
                ))
                .is_none()
        {
            return Err(AcceptError::NoRoute);
        }
        Ok(())
    }

    /// Accepts a batch for `caller` in one transaction; returns once it is committed (or replayed).
    #[tracing::instrument(skip_all, fields(caller = %caller.sub, items = batch.items.len()))]
    pub async fn accept_batch(
        &self,
        caller: &Caller,
        batch: BatchSubmission,
    ) -> Result<BatchReceipt, BatchError> {
        if !caller.has(Scope::Send) {
            return Err(BatchError::NotPermitted);
        }
        let count = batch.items.len();
        let mut refused: Vec<(usize, AcceptError)> = Vec::new();
        let mut ingress_refused = false;
        let mut messages = Vec::new();
        let mut slots = Vec::with_capacity(count);
        for (index, item) in batch.items.into_iter().enumerate() {
            let Some(submission) = item else {
                ingress_refused = true;
                slots.push(None);
                continue;
            };
            match self.permit(caller, &submission.message) {
                Ok(()) => {
                    slots.push(Some(messages.len()));
                    messages.push(EnqueueRequest {
                        caller: caller.sub.clone(),
                        message: submission.message,
                        idempotency: submission.idempotency,
                    });
                }
                Err(error) => {
                    refused.push((index, error));
                    slots.push(None);
                }
            }
        }
        let strict = batch.mode == BatchMode::Strict;
        if strict && (ingress_refused || !refused.is_empty()) {
            return Err(BatchError::Refused(refused));
        }
        let outcome = self
            .store
            .enqueue_batch(BatchRequest {
                caller: caller.sub.clone(),
                messages,
                slots: slots.clone(),
                idempotency: batch.idempotency,
                all_or_nothing: strict,
            })
            .await?;
        let mut refused: Vec<Option<AcceptError>> = {
            let mut by_index: Vec<Option<AcceptError>> = (0..count).map(|_| None).collect();
            for (index, error) in refused {
                by_index[index] = Some(error);
            }
            by_index
        };
        let receipt = |id, replayed| Receipt {
            id,
            status: MessageStatus::Queued,
            replayed,
        };
        match outcome {
            BatchOutcome::Committed(outcomes) => {
                let mut items = Vec::with_capacity(count);
                let mut created = 0;
                for (index, slot) in slots.iter().enumerate() {
                    items.push(match slot.and_then(|at| outcomes.get(at)) {
                        Some(EnqueueOutcome::Created(accepted)) => {
                            created += 1;
                            Some(Ok(receipt(accepted.id, false)))
                        }
                        Some(EnqueueOutcome::Replayed(accepted)) => {
                            self.metrics.idempotent_replays.inc();
                            Some(Ok(receipt(accepted.id, true)))
                        }
                        Some(EnqueueOutcome::KeyReused) => {
                            Some(Err(AcceptError::IdempotencyKeyReused))
                        }
                        None => refused[index].take().map(Err),
                    });
                }
                self.metrics.messages_accepted.inc_by(created);
                tracing::info!(accepted = created, "batch accepted");
                Ok(BatchReceipt {
                    items,
                    replayed: false,
                })
            }
            BatchOutcome::Replayed(ids) => {
                self.metrics.idempotent_replays.inc();
                let items = (0..count)
                    .map(|index| match ids.get(index).copied().flatten() {
                        Some(id) => Some(Ok(receipt(id, true))),
                        None if slots[index].is_none() => refused[index].take().map(Err),
                        None => Some(Err(AcceptError::RefusedBefore)),
                    })
                    .collect();
                Ok(BatchReceipt {
                    items,
                    replayed: true,
                })
            }
            BatchOutcome::KeyReused => Err(BatchError::IdempotencyKeyReused),
            BatchOutcome::ItemKeysReused(indexes) => Err(BatchError::Refused(
                slots
                    .iter()
                    .enumerate()
                    .filter(|(_, slot)| slot.is_some_and(|at| indexes.contains(&at)))
                    .map(|(index, _)| (index, AcceptError::IdempotencyKeyReused))
                    .collect(),
            )),
        }
    }
}
