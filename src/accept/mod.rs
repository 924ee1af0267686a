//! The one accept path. Every way a message comes in (the JSON API today; SMTP submission, raw MIME and
//! forms as they arrive) parses its own shape into a [`NewMessage`] and hands it here: the caller's
//! permission and sender domains are checked, the idempotency key applied, the message committed, and
//! only then is the caller answered.

use uuid::Uuid;

use crate::auth::{Caller, Scope};
use crate::domain::{IdempotencyKey, Limits, MessageStatus, NewMessage, RequestFingerprint};
use crate::metrics::Metrics;
use crate::store::{EnqueueOutcome, EnqueueRequest, SharedStore, StoreError};

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
    /// The idempotency key was used before with a different request.
    #[error("this idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// The queue could not commit the message.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The accept path: permit, deduplicate, commit.
pub struct Acceptor {
    store: SharedStore,
    limits: Limits,
    metrics: Metrics,
}

impl Acceptor {
    /// An accept path committing to `store`; ingresses parse messages within `limits`.
    pub fn new(store: SharedStore, limits: Limits, metrics: Metrics) -> Self {
        Self {
            store,
            limits,
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
        if !caller.has(Scope::Send) {
            return Err(AcceptError::NotPermitted);
        }
        // The author's domain, and the envelope sender's where a caller's own message gives one.
        let envelope = &submission.message.content.envelope;
        for address in [&envelope.from.address, envelope.return_path()] {
            let domain = address.domain();
            if !caller.may_send_from(domain) {
                return Err(AcceptError::SenderNotAllowed(domain.to_owned()));
            }
        }
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
}
