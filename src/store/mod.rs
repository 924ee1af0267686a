//! The queue. A [`MessageStore`] is the only place that knows how messages are kept; all SQL lives in
//! its implementations.

mod error;
pub mod postgres;
mod records;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use error::StoreError;
pub use records::{
    Accepted, AttemptRecord, EnqueueOutcome, EnqueueRequest, MessageFilter, MessageRecord,
    MessageSummary, Page, RecipientResult,
};

/// A shared handle to the configured store.
pub type SharedStore = Arc<dyn MessageStore>;

/// The queue operations posthorn needs from a database.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Applies pending schema migrations; safe when several processes start at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Succeeds when the database answers and its schema is current.
    async fn readiness(&self) -> Result<(), StoreError>;

    /// Stores a message, and its idempotency key if any, in one transaction; returns once committed.
    async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError>;

    /// One message with its attempts; `owner` restricts the lookup to that caller's messages.
    async fn get_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageRecord>, StoreError>;

    /// A page of messages, newest first; `owner` restricts the listing to that caller's messages.
    async fn list_messages(
        &self,
        owner: Option<&str>,
        filter: &MessageFilter,
    ) -> Result<Page, StoreError>;

    /// Forgets idempotency keys older than `retention`; returns how many were removed.
    async fn purge_idempotency_keys(&self, retention: Duration) -> Result<u64, StoreError>;
}
