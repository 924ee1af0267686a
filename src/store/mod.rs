//! The queue. A [`MessageStore`] is the only place that knows how messages are kept; all SQL lives in
//! its implementations.

mod batch;
mod columns;
mod error;
pub mod events;
pub mod postgres;
mod records;
pub mod sqlite;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use error::StoreError;
pub use events::{EventCursor, EventFilter, EventPage, EventRecord, NewEvent};
pub use webhooks::{
    ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryResult, EndpointChange,
    EndpointRecord, NewEndpoint, Replay,
};

use crate::domain::{Body, TemplateContent};
use crate::secret::Secret;
pub use records::{
    Accepted, AttemptRecord, BatchOutcome, BatchRequest, CancelOutcome, ClaimedJob, Disposition,
    EnqueueOutcome, EnqueueRequest, Erasure, JobLease, MessageFilter, MessageRecord,
    MessageSummary, NewSuppression, Page, RecipientResult, RequeueFilter, Requeued,
    RescheduleOutcome, RetentionPass, SuppressionFilter, SuppressionPage, SuppressionRecord,
    TemplateRecord,
};
use time::OffsetDateTime;

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

    /// Stores a batch in one transaction: its key, every item's key and every message; returns once
    /// committed.
    async fn enqueue_batch(&self, request: BatchRequest) -> Result<BatchOutcome, StoreError>;

    /// One message without its attempts; `owner` restricts the lookup to that caller's messages.
    async fn find_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageSummary>, StoreError>;

    /// A message's delivery attempts, oldest first.
    async fn attempts(&self, id: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;

    /// A message's events, oldest first.
    async fn message_events(&self, id: Uuid) -> Result<Vec<EventRecord>, StoreError>;

    /// A page of the event feed: following `next_cursor` yields every event exactly once, in an order
    /// that never changes behind the cursor (an event that commits late is not passed over).
    async fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError>;

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
        let events = self.message_events(id).await?;
        Ok(Some(MessageRecord {
            summary,
            attempts,
            events,
        }))
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

    /// Extends each of `leases` that still holds its job to `lease` from now on the database clock;
    /// returns those it extended (the others' jobs were finished or taken over meanwhile).
    async fn renew_leases(
        &self,
        leases: &[JobLease],
        lease: Duration,
    ) -> Result<Vec<JobLease>, StoreError>;

    /// Reserves `count` consecutive send slots `interval` apart on the schedule named `key` (a
    /// provider's rate limit, shared by every process of the deployment); returns how long until the
    /// first of them.
    async fn reserve_slots(
        &self,
        key: &str,
        count: u32,
        interval: Duration,
    ) -> Result<Duration, StoreError>;

    /// Takes one slot of the budget named `key`: one slot per `interval`, at most `window` of them
    /// ahead (a burst of `window / interval`), for every process of the deployment together on
    /// PostgreSQL (the process's own on SQLite). `Ok(Err(wait))` when the budget is spent: how long
    /// until a slot frees. Nothing is taken then.
    async fn take_slot(
        &self,
        key: &str,
        interval: Duration,
        window: Duration,
    ) -> Result<Result<(), Duration>, StoreError>;

    /// Forgets the schedules of budgets and rate limits idle for longer than `idle`.
    async fn purge_schedules(&self, idle: Duration) -> Result<u64, StoreError>;

    /// Gives back jobs not sent, due again after `delay` (no provider could take them now); no
    /// attempt is used. Returns how many were still held.
    async fn defer_jobs(&self, leases: &[JobLease], delay: Duration) -> Result<u64, StoreError>;

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

    /// Moves a message that has not started sending to `send_at`, only where `owner` owns it.
    async fn reschedule_queued(
        &self,
        owner: Option<&str>,
        id: Uuid,
        send_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Reschedules a message that has not started sending, or says why it could not.
    async fn reschedule(
        &self,
        owner: Option<&str>,
        id: Uuid,
        send_at: OffsetDateTime,
    ) -> Result<RescheduleOutcome, StoreError> {
        if self.reschedule_queued(owner, id, send_at).await? {
            return Ok(RescheduleOutcome::Rescheduled);
        }
        Ok(match self.find_message(owner, id).await? {
            None => RescheduleOutcome::NotFound,
            Some(message) => RescheduleOutcome::TooLate(message.status),
        })
    }

    /// Puts the failed messages `filter` matches back in the queue, each with a new series of attempts
    /// (the old attempts kept); messages whose bodies retention dropped are skipped. Dry, only counts.
    async fn requeue_failed(
        &self,
        filter: &RequeueFilter,
        dry_run: bool,
    ) -> Result<Requeued, StoreError>;

    /// A message's body; `owner` restricts the lookup to that caller's messages.
    async fn message_body(&self, owner: Option<&str>, id: Uuid)
    -> Result<Option<Body>, StoreError>;

    /// Stores version 1 of a new template (or the next version of a deleted one); `None` if a template
    /// of that name exists.
    async fn create_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError>;

    /// Stores the next version of a template; `None` if there is no such template.
    async fn update_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError>;

    /// A template's newest version, or the version asked for; deleted templates are not found.
    async fn template(
        &self,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<TemplateRecord>, StoreError>;

    /// The newest version of every template, by name.
    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError>;

    /// Deletes a template (every version stays stored, marked deleted); returns whether there was one.
    async fn delete_template(&self, name: &str) -> Result<bool, StoreError>;

    /// Drops the bodies of up to `limit` messages that finished before `finished_before`, starting at
    /// id `from` (ids are time-ordered).
    async fn drop_bodies(
        &self,
        finished_before: OffsetDateTime,
        from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError>;

    /// Deletes up to `limit` messages (with their attempts) that finished before `finished_before`,
    /// starting at id `from`.
    async fn delete_finished(
        &self,
        finished_before: OffsetDateTime,
        from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError>;

    /// Erases a recipient's data: messages to them alone are deleted, the others keep their rows with
    /// the address taken out (and, once finished, without their bodies).
    async fn erase_recipient(&self, address: &str) -> Result<Erasure, StoreError>;

    /// A page of the suppression list.
    async fn suppressions(&self, filter: &SuppressionFilter)
    -> Result<SuppressionPage, StoreError>;

    /// Adds an address to the suppression list; an entry already there is kept as it is. Returns the
    /// entry and whether it is new.
    async fn add_suppression(
        &self,
        entry: &NewSuppression,
    ) -> Result<(SuppressionRecord, bool), StoreError>;

    /// Takes an address off the suppression list; returns whether it was on it.
    async fn remove_suppression(&self, address: &str) -> Result<bool, StoreError>;

    /// Creates a webhook endpoint.
    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<EndpointRecord, StoreError>;

    /// Every webhook endpoint, oldest first.
    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError>;

    /// One webhook endpoint.
    async fn endpoint(&self, id: Uuid) -> Result<Option<EndpointRecord>, StoreError>;

    /// Changes an endpoint; `None` if there is none.
    async fn update_endpoint(
        &self,
        id: Uuid,
        change: &EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError>;

    /// Deletes an endpoint with its deliveries; returns whether there was one.
    async fn delete_endpoint(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Gives an endpoint a new secret; the old one keeps signing too until `keep_old_until`.
    async fn rotate_endpoint_secret(
        &self,
        id: Uuid,
        secret: &str,
        keep_old_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Writes the deliveries of up to `limit` events after the fan-out's cursor (to every enabled
    /// endpoint that takes them) and moves the cursor, in one transaction; returns how many events it
    /// read. A replica that finds another fanning out reads none.
    async fn fan_out(&self, limit: u32) -> Result<u64, StoreError>;

    /// Claims up to `limit` due deliveries of enabled endpoints not in `busy`, at most `per_endpoint`
    /// of any one endpoint, each with a lease.
    async fn claim_deliveries(
        &self,
        limit: u32,
        per_endpoint: u32,
        lease: Duration,
        busy: &[Uuid],
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Records an attempt and what becomes of the delivery (and its endpoint), only if the lease still
    /// holds it. An endpoint failing for `disable_after` is disabled when a delivery's schedule is spent.
    async fn record_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        result: DeliveryResult,
        disable_after: Duration,
    ) -> Result<bool, StoreError>;

    /// An endpoint's deliveries, newest first, after delivery `before` when given.
    async fn deliveries(
        &self,
        endpoint: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Queues the endpoint's events again (those it takes, written in the replay's window); returns
    /// how many.
    async fn replay(&self, endpoint: Uuid, replay: &Replay) -> Result<u64, StoreError>;

    /// Pending webhook deliveries.
    async fn webhook_backlog(&self) -> Result<i64, StoreError>;

    /// Records what a report (a bounce, a complaint) says of a message: its events and suppressions, in
    /// one transaction; `false` if there is no such message.
    async fn record_report(
        &self,
        message: Uuid,
        events: Vec<NewEvent>,
        suppressions: Vec<NewSuppression>,
    ) -> Result<bool, StoreError>;

    /// The message whose `Message-ID` header this is (posthorn's own ids name their message; a
    /// caller's are looked up).
    async fn message_by_header(&self, message_id: &str) -> Result<Option<Uuid>, StoreError>;

    /// Keeps a report that could not be read, for an operator to look at.
    async fn keep_report(&self, source: &str, raw: &[u8], error: &str) -> Result<(), StoreError>;

    /// Unfinished messages by state: `queued` (due), `scheduled` (due later), `sending`.
    async fn queue_depth(&self) -> Result<Vec<(&'static str, i64)>, StoreError>;

    /// Wakes `wake` whenever a job is enqueued anywhere, until `stop`; survives lost connections.
    /// Workers poll as well, so a store without notifications may return at once.
    async fn listen_for_jobs(&self, wake: Arc<Notify>, stop: CancellationToken);
}

/// Folds `(status, due later?, count)` rows into the queue depth by state: `queued` (due now),
/// `scheduled` (due later) and `sending`.
/// Jobs of a claim of `limit` kept for broadcast messages while transactional ones are due: a tenth,
/// and at least one of a claim of two or more, so broadcast mail always progresses. A share broadcast
/// does not use goes to transactional jobs.
pub(crate) fn broadcast_share(limit: u32) -> u32 {
    if limit < 2 { 0 } else { (limit / 10).max(1) }
}

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

/// The smallest UUIDv7 made at or after `at`: every message accepted before `at` has a smaller id.
fn id_bound(at: OffsetDateTime) -> Uuid {
    let millis = u128::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Uuid::from_u128((millis & ((1 << 48) - 1)) << 80)
}

/// The id just after `id`, where a retention pass resumes.
fn after(id: Uuid) -> Uuid {
    Uuid::from_u128(id.as_u128().saturating_add(1))
}

/// A LIKE pattern (escape character: backslash) matching text that holds `needle` in lower case.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The body a message keeps once retention dropped it.
fn dropped_body() -> Body {
    Body {
        text: None,
        html: None,
        headers: Vec::new(),
        attachments: Vec::new(),
    }
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
