//! The embedded store: SQLite in WAL mode, for a single node with no database server.
//!
//! SQLite has one writer at a time; every write goes through a pool of exactly one connection, so
//! writers queue in the process instead of failing with SQLITE_BUSY, and a claim (select due rows,
//! lease them) is one transaction no other writer can interleave with. Reads use their own pool and
//! see the last committed state (WAL). The database clock is the process clock.

mod accept;
mod events;
mod queue;
mod reports;
mod retention;
mod rows;
mod suppressions;
mod templates;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::records::{
    AttemptRecord, BatchOutcome, BatchRequest, ClaimedJob, Disposition, EnqueueOutcome,
    EnqueueRequest, Erasure, JobLease, MessageFilter, MessageSummary, NewSuppression, Page,
    RequeueFilter, Requeued, RetentionPass, SuppressionFilter, SuppressionPage, SuppressionRecord,
    TemplateRecord,
};
use super::{
    ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryResult, EndpointChange,
    EndpointRecord, EventFilter, EventPage, EventRecord, MessageStore, NewEndpoint, Replay,
    StoreError, StoreSettings,
};
use crate::domain::{Body, TemplateContent};
use crate::store::batch::{Batcher, Linger};
use time::OffsetDateTime;

/// The migrations compiled into this build (migrations applied by a newer release are tolerated).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// Most enqueues committed in one transaction on the writer.
const ACCEPT_BATCH: usize = 256;

/// Enqueues do not wait for a batch to fill: the writer is busy with the previous one meanwhile, and
/// whatever arrived then is the next batch.
const ACCEPT_LINGER: Linger = Linger {
    wait: Duration::ZERO,
    enough: 1,
    streams_only: true,
};

/// Most outcomes committed in one transaction on the writer.
const OUTCOME_BATCH: usize = 512;

/// No sender waits on an outcome (it goes on to its next job), so the committer collects for a few
/// milliseconds: fewer, larger transactions, each one WAL sync.
const OUTCOME_LINGER: Linger = Linger {
    wait: Duration::from_millis(5),
    enough: OUTCOME_BATCH,
    streams_only: false,
};

/// Budgets kept in memory before those that are full again (and then the soonest full) are forgotten.
const MAX_SCHEDULES: usize = 10_000;

/// A [`MessageStore`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    idempotency_retention: Duration,
    enqueued: Arc<Notify>,
    /// Send schedules of rate-limited providers: the next free slot of each. One process uses this
    /// database, so its schedules live in memory.
    schedules: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
    /// Budgets (`take_slot`: forms' per-address limits), kept apart from the providers' schedules so
    /// that a flood of addresses can only ever evict other addresses.
    budgets: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
    /// The runtime the store was opened in: the accept committer runs there.
    runtime: Option<tokio::runtime::Handle>,
    /// Group commit of enqueues on the writer, started on first use: concurrent accepts share one
    /// transaction, and so one WAL sync.
    accept: Arc<OnceLock<Batcher<EnqueueRequest, accept::Answer>>>,
    /// Group commit of delivery outcomes on the writer, started on first use.
    outcomes: Arc<OnceLock<Batcher<queue::Outcome, Result<bool, StoreError>>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path/to/file.db`).
    pub fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        let acquire_timeout = settings.acquire_timeout;
        let options = SqliteConnectOptions::from_str(settings.url.expose())
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed transaction survives power loss too, which is what 202 promises.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(acquire_timeout.max(Duration::from_secs(5)));
        if let Some(parent) = Path::new(options.get_filename()).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout.max(Duration::from_secs(30)))
            .connect_lazy_with(options.clone());
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options.read_only(false));
        Ok(Self {
            writer,
            reader,
            idempotency_retention: settings.idempotency_retention,
            enqueued: Arc::new(Notify::new()),
            schedules: Arc::default(),
            budgets: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            accept: Arc::default(),
            outcomes: Arc::default(),
        })
    }

    /// The runtime the store was opened in (else the current one), for its committers.
    fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current)
    }

    /// Runs the accept path's writes in one transaction, committing only when they say so; wakes
    /// the workers when something due now was stored.
    async fn enqueue_with<T>(
        &self,
        write: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> Result<(T, bool, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.writer.begin().await?;
        let (outcome, due, commit) = write(&mut tx).await?;
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        if due {
            self.enqueued.notify_waiters();
        }
        Ok(outcome)
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.writer).await?;
        Ok(())
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        let applied: Option<i64> = sqlx::query_scalar(super::APPLIED_MIGRATION)
            .fetch_one(&self.reader)
            .await
            .map_err(|_| StoreError::NotMigrated)?;
        super::require_migrated(&migrator(), applied)
    }

    async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        let retention = self.idempotency_retention;
        let batcher = self.accept.get_or_init(|| {
            Batcher::start(
                &self.runtime(),
                self.writer.clone(),
                1,
                ACCEPT_BATCH,
                ACCEPT_LINGER,
                Arc::new(move |writer, requests| {
                    Box::pin(accept::commit_enqueues(writer, retention, requests))
                }),
            )
        });
        let (outcome, due) = batcher.submit(request).await??;
        if due {
            self.enqueued.notify_waiters();
        }
        Ok(outcome)
    }

    async fn enqueue_batch(&self, request: BatchRequest) -> Result<BatchOutcome, StoreError> {
        let retention = self.idempotency_retention;
        self.enqueue_with(async |tx| accept::enqueue_batch(tx, &request, retention).await)
            .await
    }

    async fn find_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageSummary>, StoreError> {
        rows::find_message(&self.reader, owner, id).await
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        rows::attempts(&self.reader, id).await
    }

    async fn message_events(&self, id: Uuid) -> Result<Vec<EventRecord>, StoreError> {
        events::of_message(&self.reader, id).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        events::feed(&self.reader, filter).await
    }

    async fn list_messages(
        &self,
        owner: Option<&str>,
        filter: &MessageFilter,
    ) -> Result<Page, StoreError> {
        rows::list_messages(&self.reader, owner, filter).await
    }

    async fn purge_idempotency_keys(&self, retention: Duration) -> Result<u64, StoreError> {
        let cutoff = rows::now() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        let result = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(cutoff)
            .execute(&self.writer)
            .await?;
        Ok(result.rows_affected())
    }

    async fn claim_due_jobs(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        queue::claim(&self.writer, limit, lease).await
    }

    async fn record_outcome(
        &self,
        lease: JobLease,
        attempt: AttemptRecord,
        disposition: Disposition,
    ) -> Result<bool, StoreError> {
        let batcher = self.outcomes.get_or_init(|| {
            Batcher::start(
                &self.runtime(),
                self.writer.clone(),
                1,
                OUTCOME_BATCH,
                OUTCOME_LINGER,
                Arc::new(|writer, outcomes| Box::pin(queue::commit_outcomes(writer, outcomes))),
            )
        });
        batcher.submit((lease, attempt, disposition)).await?
    }

    async fn release_jobs(&self, leases: &[JobLease]) -> Result<u64, StoreError> {
        let released = queue::release(&self.writer, leases, Duration::ZERO).await?;
        if released > 0 {
            self.enqueued.notify_waiters();
        }
        Ok(released)
    }

    async fn renew_leases(
        &self,
        leases: &[JobLease],
        lease: Duration,
    ) -> Result<Vec<JobLease>, StoreError> {
        queue::renew(&self.writer, leases, lease).await
    }

    async fn defer_jobs(&self, leases: &[JobLease], delay: Duration) -> Result<u64, StoreError> {
        queue::release(&self.writer, leases, delay).await
    }

    async fn reserve_slots(
        &self,
        key: &str,
        count: u32,
        interval: Duration,
    ) -> Result<Duration, StoreError> {
        let now = std::time::Instant::now();
        let mut schedules = self
            .schedules
            .lock()
            .map_err(|_| StoreError::Corrupt("the send schedules' lock is poisoned".into()))?;
        let next = schedules.entry(key.to_owned()).or_insert(now);
        let first = (*next).max(now);
        *next = first + interval * count;
        Ok(first - now)
    }

    async fn take_slot(
        &self,
        key: &str,
        interval: Duration,
        window: Duration,
    ) -> Result<Result<(), Duration>, StoreError> {
        let now = std::time::Instant::now();
        let mut budgets = self
            .budgets
            .lock()
            .map_err(|_| StoreError::Corrupt("the budgets' lock is poisoned".into()))?;
        if budgets.len() >= MAX_SCHEDULES && !budgets.contains_key(key) {
            // Budgets that are full again change nothing when forgotten; if that is not enough
            // (a flood of addresses), those that fill up soonest go first, down to half.
            budgets.retain(|_, next| *next > now);
            if budgets.len() >= MAX_SCHEDULES * 3 / 4 {
                let mut due: Vec<(std::time::Instant, String)> = budgets
                    .iter()
                    .map(|(key, next)| (*next, key.clone()))
                    .collect();
                due.sort_unstable();
                for (_, key) in due.into_iter().take(budgets.len() - MAX_SCHEDULES / 2) {
                    budgets.remove(&key);
                }
            }
        }
        let next = budgets.entry(key.to_owned()).or_insert(now);
        let slot = (*next).max(now) + interval;
        if slot - now > window {
            return Ok(Err(slot - now - window));
        }
        *next = slot;
        Ok(Ok(()))
    }

    async fn purge_schedules(&self, idle: Duration) -> Result<u64, StoreError> {
        let now = std::time::Instant::now();
        let mut budgets = self
            .budgets
            .lock()
            .map_err(|_| StoreError::Corrupt("the budgets' lock is poisoned".into()))?;
        let before = budgets.len();
        budgets.retain(|_, next| *next + idle > now);
        Ok((before - budgets.len()) as u64)
    }

    async fn cancel_queued(&self, owner: Option<&str>, id: Uuid) -> Result<bool, StoreError> {
        queue::cancel(&self.writer, owner, id).await
    }

    async fn reschedule_queued(
        &self,
        owner: Option<&str>,
        id: Uuid,
        send_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let moved = queue::reschedule(&self.writer, owner, id, send_at).await?;
        if moved && send_at <= OffsetDateTime::now_utc() {
            self.enqueued.notify_waiters();
        }
        Ok(moved)
    }

    async fn requeue_failed(
        &self,
        filter: &RequeueFilter,
        dry_run: bool,
    ) -> Result<Requeued, StoreError> {
        let requeued = queue::requeue(&self.writer, filter, dry_run).await?;
        if requeued.requeued > 0 && !dry_run {
            self.enqueued.notify_waiters();
        }
        Ok(requeued)
    }

    async fn message_body(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<Body>, StoreError> {
        retention::body(&self.reader, owner, id).await
    }

    async fn create_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::write(&self.writer, name, content, author, false).await
    }

    async fn update_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::write(&self.writer, name, content, author, true).await
    }

    async fn template(
        &self,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::get(&self.reader, name, version).await
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        templates::list(&self.reader).await
    }

    async fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        templates::delete(&self.writer, name).await
    }

    async fn drop_bodies(
        &self,
        finished_before: OffsetDateTime,
        _from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        retention::drop_bodies(&self.writer, rows::micros(finished_before), limit).await
    }

    async fn delete_finished(
        &self,
        finished_before: OffsetDateTime,
        _from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        retention::delete_finished(&self.writer, rows::micros(finished_before), limit).await
    }

    async fn erase_recipient(&self, address: &str) -> Result<Erasure, StoreError> {
        retention::erase(&self.writer, address).await
    }

    async fn suppressions(
        &self,
        filter: &SuppressionFilter,
    ) -> Result<SuppressionPage, StoreError> {
        suppressions::list(&self.reader, filter).await
    }

    async fn add_suppression(
        &self,
        entry: &NewSuppression,
    ) -> Result<(SuppressionRecord, bool), StoreError> {
        suppressions::add(&self.writer, entry).await
    }

    async fn remove_suppression(&self, address: &str) -> Result<bool, StoreError> {
        suppressions::remove(&self.writer, address).await
    }

    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<EndpointRecord, StoreError> {
        webhooks::create(&self.writer, endpoint).await
    }

    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        webhooks::list(&self.reader).await
    }

    async fn endpoint(&self, id: Uuid) -> Result<Option<EndpointRecord>, StoreError> {
        webhooks::get(&self.reader, id).await
    }

    async fn update_endpoint(
        &self,
        id: Uuid,
        change: &EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        webhooks::update(&self.writer, id, change).await
    }

    async fn delete_endpoint(&self, id: Uuid) -> Result<bool, StoreError> {
        webhooks::delete(&self.writer, id).await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: Uuid,
        secret: &str,
        keep_old_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        webhooks::rotate(&self.writer, id, secret, keep_old_until).await
    }

    async fn fan_out(&self, limit: u32) -> Result<u64, StoreError> {
        webhooks::fan_out(&self.writer, limit).await
    }

    async fn claim_deliveries(
        &self,
        limit: u32,
        per_endpoint: u32,
        lease: Duration,
        busy: &[Uuid],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        webhooks::claim(&self.writer, limit, per_endpoint, lease, busy).await
    }

    async fn record_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        result: DeliveryResult,
        disable_after: Duration,
    ) -> Result<bool, StoreError> {
        webhooks::record(&self.writer, delivery, attempt, result, disable_after).await
    }

    async fn deliveries(
        &self,
        endpoint: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        webhooks::deliveries(&self.reader, endpoint, before, limit).await
    }

    async fn replay(&self, endpoint: Uuid, replay: &Replay) -> Result<u64, StoreError> {
        webhooks::replay(&self.writer, endpoint, replay).await
    }

    async fn webhook_backlog(&self) -> Result<i64, StoreError> {
        webhooks::backlog(&self.reader).await
    }

    async fn record_report(
        &self,
        message: Uuid,
        events: Vec<crate::store::NewEvent>,
        suppressions: Vec<NewSuppression>,
    ) -> Result<bool, StoreError> {
        reports::record(&self.writer, message, events, suppressions).await
    }

    async fn message_by_header(&self, message_id: &str) -> Result<Option<Uuid>, StoreError> {
        reports::by_header(&self.reader, message_id).await
    }

    async fn keep_report(&self, source: &str, raw: &[u8], error: &str) -> Result<(), StoreError> {
        reports::keep(&self.writer, source, raw, error).await
    }

    async fn queue_depth(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        queue::depth(&self.reader).await
    }

    async fn listen_for_jobs(&self, wake: Arc<Notify>, stop: CancellationToken) {
        // Every writer is in this process: enqueues notify directly.
        loop {
            tokio::select! {
                () = self.enqueued.notified() => wake.notify_waiters(),
                () = stop.cancelled() => return,
            }
        }
    }
}
