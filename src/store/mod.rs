//! The queue. A [`MessageStore`] is the only place that knows how messages are kept; all SQL lives in
//! its implementations.

mod columns;
mod error;
pub mod postgres;
mod records;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use error::StoreError;

use crate::secret::Secret;
pub use records::{
    Accepted, AttemptRecord, CancelOutcome, ClaimedJob, Disposition, EnqueueOutcome,
    EnqueueRequest, JobLease, MessageFilter, MessageRecord, MessageSummary, Page, RecipientResult,
};

/// A shared handle to the configured store.
pub type SharedStore = Arc<dyn MessageStore>;

/// Where the queue lives and how it is used.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `postgres://...` for PostgreSQL, `sqlite://path` for the embedded engine.
    pub url: Secret,
    /// Most connections this process opens (PostgreSQL; SQLite has one writer).
    pub max_connections: u32,
    /// How long an operation waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// How long an idempotency key blocks reuse.
    pub idempotency_retention: Duration,
}

impl StoreSettings {
    /// Whether the URL names the embedded engine.
    pub fn is_embedded(&self) -> bool {
        self.url.expose().starts_with("sqlite:")
    }
}

/// Opens the store the settings name. Connections are opened on first use, so a database that is still
/// starting does not stop posthorn from starting.
pub fn open(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    Ok(if settings.is_embedded() {
        Arc::new(sqlite::SqliteStore::connect(settings)?)
    } else {
        Arc::new(postgres::PostgresStore::connect(settings)?)
    })
}

/// The queue operations posthorn needs from a database.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Applies pending schema migrations; safe when several processes start at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Succeeds when the database answers and its schema is current.
    async fn readiness(&self) -> Result<(), StoreError>;

    /// Stores a message, and its idempotency key if any, in one transaction; returns once committed.
    async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError>;

    /// One message without its attempts; `owner` restricts the lookup to that caller's messages.
    async fn find_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageSummary>, StoreError>;

    /// A message's delivery attempts, oldest first.
    async fn attempts(&self, id: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;

    /// One message with its attempts; `owner` restricts the lookup to that caller's messages.
    async fn get_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let Some(summary) = self.find_message(owner, id).await? else {
            return Ok(None);
        };
        let attempts = self.attempts(id).await?;
        Ok(Some(MessageRecord { summary, attempts }))
    }

    /// A page of messages, newest first; `owner` restricts the listing to that caller's messages.
    async fn list_messages(
        &self,
        owner: Option<&str>,
        filter: &MessageFilter,
    ) -> Result<Page, StoreError>;

    /// Forgets idempotency keys older than `retention`; returns how many were removed.
    async fn purge_idempotency_keys(&self, retention: Duration) -> Result<u64, StoreError>;

    /// Claims up to `limit` due jobs in one short statement and commits: each gets a lease of `lease`
    /// on the database clock. Jobs whose lease expired are claimed again.
    async fn claim_due_jobs(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Records an attempt and the job's next state in one transaction, only if `lease` still holds
    /// the job; returns whether it did.
    async fn record_outcome(
        &self,
        lease: JobLease,
        attempt: AttemptRecord,
        disposition: Disposition,
    ) -> Result<bool, StoreError>;

    /// Gives claimed jobs back without an attempt (shutdown, or a lease too short to use).
    async fn release_jobs(&self, leases: &[JobLease]) -> Result<u64, StoreError>;

    /// Cancels the message if it is still queued and no worker holds it; returns whether it did.
    async fn cancel_queued(&self, owner: Option<&str>, id: Uuid) -> Result<bool, StoreError>;

    /// Cancels a message that is still queued, or says why it could not.
    async fn cancel_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<CancelOutcome, StoreError> {
        if self.cancel_queued(owner, id).await? {
            return Ok(CancelOutcome::Cancelled);
        }
        Ok(match self.find_message(owner, id).await? {
            None => CancelOutcome::NotFound,
            Some(message) => CancelOutcome::TooLate(message.status),
        })
    }

    /// Unfinished messages by state: `queued` (due), `scheduled` (due later), `sending`.
    async fn queue_depth(&self) -> Result<Vec<(&'static str, i64)>, StoreError>;

    /// Wakes `wake` whenever a job is enqueued anywhere, until `stop`; survives lost connections.
    /// Workers poll as well, so a store without notifications may return at once.
    async fn listen_for_jobs(&self, wake: Arc<Notify>, stop: CancellationToken);
}

/// Folds `(status, due later?, count)` rows into the queue depth by state: `queued` (due now),
/// `scheduled` (due later) and `sending`.
fn depth_by_state(rows: Vec<(String, bool, i64)>) -> Vec<(&'static str, i64)> {
    let mut queued = 0;
    let mut scheduled = 0;
    let mut sending = 0;
    for (status, later, count) in rows {
        match (status.as_str(), later) {
            ("queued", false) => queued += count,
            ("queued", true) => scheduled += count,
            _ => sending += count,
        }
    }
    vec![
        ("queued", queued),
        ("scheduled", scheduled),
        ("sending", sending),
    ]
}

/// The newest migration applied, in both stores' bookkeeping table.
const APPLIED_MIGRATION: &str = "SELECT max(version) FROM _sqlx_migrations WHERE success";

/// Fails with [`StoreError::NotMigrated`] unless every migration compiled into this build is applied.
fn require_migrated(
    migrator: &sqlx::migrate::Migrator,
    applied: Option<i64>,
) -> Result<(), StoreError> {
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    if applied.unwrap_or(0) < latest {
        return Err(StoreError::NotMigrated);
    }
    Ok(())
}
