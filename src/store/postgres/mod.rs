//! The PostgreSQL store: the production engine, shared by every replica.

mod accept;
mod events;
mod queue;
mod reports;
mod retention;
mod rows;
mod suppressions;
mod templates;
mod webhooks;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
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
    StoreError, StoreSettings, columns,
};
use crate::domain::{Body, MessageStatus, TemplateContent};
use crate::store::batch::{self, Batcher, Linger};
use retention::Retain;
use time::OffsetDateTime;

/// The migrations compiled into this build. Migrations applied by a newer release are tolerated, so
/// older replicas keep running during a rolling upgrade (migrations only ever add).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_ignore_missing(true);
    migrator
}

/// A pooled connection idle at least this long is pinged before it is used again.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Tasks committing delivery outcomes.
const OUTCOME_COMMITTERS: usize = 1;

/// Most enqueues committed in one transaction.
const ACCEPT_BATCH: usize = 128;

/// How an accept committer that emptied the queue waits for more. A steady stream of a few thousand
/// requests a second otherwise commits two or three messages per statement, each with its own parse,
/// plan, notification and WAL flush: end to end at 2500 msg/s, that was 80 % of a core of PostgreSQL
/// against 59 % with the wait. It waits only in a stream (a caller sending one request at a time is
/// never delayed) and only for a small batch: under full load, with 64 clients each waiting for its
/// answer, a fixed wait for every batch cut the accept rate by a third.
const ACCEPT_LINGER: Linger = Linger {
    wait: Duration::from_millis(2),
    enough: 16,
    streams_only: true,
};

/// Most outcomes committed in one statement. One committer records every sender's outcomes, so its rate
/// is this cap over the time of one commit: when commits slow down (WAL flushes queued behind a stream
/// of accepts take tens of milliseconds), a small cap would throttle delivery.
const OUTCOME_BATCH: usize = 1024;

/// How long the outcome committer keeps collecting before it commits a batch. No caller waits on an
/// outcome (senders go on to the next job), and every statement costs PostgreSQL a parse, a plan and a
/// WAL flush whatever its size: at a few thousand messages a second this turns batches of ~20 into
/// batches of ~100. A lease lasts minutes, so the delay cannot cost one.
const OUTCOME_LINGER: Linger = Linger {
    wait: Duration::from_millis(20),
    enough: OUTCOME_BATCH,
    streams_only: false,
};

/// A [`MessageStore`] on PostgreSQL.
pub struct PostgresStore {
    pool: PgPool,
    idempotency_retention: Duration,
    committers: usize,
    /// The runtime the store was opened in: committers run there, not on whichever HTTP worker
    /// thread happens to enqueue first.
    runtime: Option<tokio::runtime::Handle>,
    /// Group commit of enqueues, started on first use.
    accept: OnceLock<Batcher<EnqueueRequest, EnqueueOutcome>>,
    /// Group commit of delivery outcomes, started on first use.
    outcomes: OnceLock<Batcher<queue::Outcome, bool>>,
}

impl PostgresStore {
    /// Creates the pool. Connections are opened on first use, so a database that is still starting does
    /// not stop posthorn from starting.
    pub fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(settings.url.expose())
            .map_err(StoreError::Database)?
            .application_name("posthorn");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A connection in steady use is known to be alive: pinging it on every acquire would add a
            // round trip to each claim and commit. One that sat idle is checked first, so a database
            // restart costs no failed request.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            idempotency_retention: settings.idempotency_retention,
            // Each committer holds one connection while it commits; leave the rest for reads and claims.
            committers: (settings.max_connections / 3).clamp(1, 4) as usize,
            runtime: tokio::runtime::Handle::try_current().ok(),
            accept: OnceLock::new(),
            outcomes: OnceLock::new(),
        })
    }

    /// Starts a group-commit batcher in the runtime the store was opened in (not on whichever HTTP
    /// worker thread happens to write first).
    fn batcher<T: Send + 'static, O: Send + 'static>(
        &self,
        tasks: usize,
        max_batch: usize,
        linger: Linger,
        commit: batch::CommitFn<PgPool, T, O>,
    ) -> Batcher<T, O> {
        let runtime = self
            .runtime
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        Batcher::start(
            &runtime,
            self.pool.clone(),
            tasks,
            max_batch,
            linger,
            commit,
        )
    }

    /// The pool, for callers in the store's own tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Events to insert, one array per column (unnested by the statement that writes them).
#[derive(Default)]
struct EventColumns {
    message_ids: Vec<Uuid>,
    tokens: Vec<Uuid>,
    kinds: Vec<&'static str>,
    recipients: Vec<Option<String>>,
    data: Vec<serde_json::Value>,
}

impl EventColumns {
    fn extend(&mut self, events: impl IntoIterator<Item = super::NewEvent>) {
        self.extend_with_token(events, Uuid::nil());
    }

    /// Events of the change made under `token` (a lease): written only if that change applies.
    fn extend_with_token(
        &mut self,
        events: impl IntoIterator<Item = super::NewEvent>,
        token: Uuid,
    ) {
        for event in events {
            self.message_ids.push(event.message_id);
            self.tokens.push(token);
            self.kinds.push(event.kind.as_str());
            self.recipients.push(event.recipient);
            self.data.push(event.data);
        }
    }
}

/// A duration as a PostgreSQL interval literal.
fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx holds a PostgreSQL advisory lock while migrating, so replicas starting together take turns.
        migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn readiness(&self) -> Result<(), StoreError> {
        let applied: Option<i64> = sqlx::query_scalar(super::APPLIED_MIGRATION)
            .fetch_one(&self.pool)
            .await
            .map_err(|error| match StoreError::from(error) {
                StoreError::Database(_) => StoreError::NotMigrated,
                other => other,
            })?;
        super::require_migrated(&migrator(), applied)
    }

    async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        self.accept
            .get_or_init(|| {
                let retention = self.idempotency_retention;
                self.batcher(
                    self.committers,
                    ACCEPT_BATCH,
                    ACCEPT_LINGER,
                    Arc::new(move |pool, requests| {
                        Box::pin(accept::commit_enqueues(pool, retention, requests))
                    }),
                )
            })
            .submit(request)
            .await
    }

    async fn enqueue_batch(&self, request: BatchRequest) -> Result<BatchOutcome, StoreError> {
        accept::commit_batch(&self.pool, self.idempotency_retention, request).await
    }

    async fn find_message(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<MessageSummary>, StoreError> {
        sqlx::query(&format!(
            "SELECT {} FROM message_states WHERE id = $1 AND ($2::text IS NULL OR caller = $2)",
            rows::summary_columns()
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(columns::summary)
        .transpose()
    }

    async fn attempts(&self, id: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {} FROM delivery_attempts WHERE message_id = $1 ORDER BY attempt",
            columns::ATTEMPT
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(columns::attempt)
        .collect()
    }

    async fn message_events(&self, id: Uuid) -> Result<Vec<EventRecord>, StoreError> {
        events::of_message(&self.pool, id).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        events::feed(&self.pool, filter).await
    }

    async fn list_messages(
        &self,
        owner: Option<&str>,
        filter: &MessageFilter,
    ) -> Result<Page, StoreError> {
        let items = sqlx::query(&format!(
            "SELECT {} FROM message_states
             WHERE ($1::text IS NULL OR caller = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR tags @> ARRAY[$3::text])
               AND ($4::timestamptz IS NULL OR created_at >= $4)
               AND ($5::timestamptz IS NULL OR created_at < $5)
               AND ($6::uuid IS NULL OR id < $6)
               AND ($8::text IS NULL OR EXISTS (
                    SELECT 1 FROM jsonb_array_elements(
                        coalesce(envelope->'to', '[]') || coalesce(envelope->'cc', '[]')
                        || coalesce(envelope->'bcc', '[]')) AS r
                     WHERE lower(r->>'address') = lower($8)))
             ORDER BY id DESC
             LIMIT $7",
            rows::summary_columns()
        ))
        .bind(owner)
        .bind(filter.status.map(MessageStatus::as_str))
        .bind(filter.tag.as_deref())
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.after)
        .bind(filter.rows())
        .bind(filter.recipient.as_deref())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(columns::summary)
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(items, filter.limit))
    }

    async fn purge_idempotency_keys(&self, retention: Duration) -> Result<u64, StoreError> {
        let result =
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
                .bind(interval(retention))
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected())
    }

    async fn claim_due_jobs(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        queue::claim(&self.pool, limit, lease).await
    }

    async fn record_outcome(
        &self,
        lease: JobLease,
        attempt: AttemptRecord,
        disposition: Disposition,
    ) -> Result<bool, StoreError> {
        self.outcomes
            .get_or_init(|| {
                // Workers do not wait for their outcomes before the next send, so one committer
                // suffices, and it makes the batches (and so the commits per message) as large as
                // they can be.
                self.batcher(
                    OUTCOME_COMMITTERS,
                    OUTCOME_BATCH,
                    OUTCOME_LINGER,
                    Arc::new(|pool, outcomes| Box::pin(queue::commit_outcomes(pool, outcomes))),
                )
            })
            .submit((lease, attempt, disposition))
            .await
    }

    async fn release_jobs(&self, leases: &[JobLease]) -> Result<u64, StoreError> {
        queue::release(&self.pool, leases, Duration::ZERO).await
    }

    async fn defer_jobs(&self, leases: &[JobLease], delay: Duration) -> Result<u64, StoreError> {
        queue::release(&self.pool, leases, delay).await
    }

    async fn renew_leases(
        &self,
        leases: &[JobLease],
        lease: Duration,
    ) -> Result<Vec<JobLease>, StoreError> {
        queue::renew(&self.pool, leases, lease).await
    }

    async fn reserve_slots(
        &self,
        key: &str,
        count: u32,
        interval: Duration,
    ) -> Result<Duration, StoreError> {
        // The schedule's next free slot moves by the batch; the batch starts where it stood, or now.
        let (wait,): (f64,) = sqlx::query_as(
            "INSERT INTO send_schedules AS s (key, next_slot)
             VALUES ($1, now() + $2 * $3::interval)
             ON CONFLICT (key) DO UPDATE
                SET next_slot = greatest(s.next_slot, now()) + $2 * $3::interval
             RETURNING extract(epoch FROM greatest(next_slot - $2 * $3::interval - now(),
                                                   interval '0'))::float8",
        )
        .bind(key)
        .bind(i32::try_from(count).unwrap_or(i32::MAX))
        .bind(format!("{} microseconds", interval.as_micros()))
        .fetch_one(&self.pool)
        .await?;
        Ok(Duration::try_from_secs_f64(wait).unwrap_or_default())
    }

    async fn take_slot(
        &self,
        key: &str,
        every: Duration,
        window: Duration,
    ) -> Result<Result<(), Duration>, StoreError> {
        // The schedule moves one interval only when the slot is within the window; under a race the
        // row's lock decides, and the condition is evaluated again on the row as it is then.
        let taken = sqlx::query(
            "INSERT INTO send_schedules AS s (key, next_slot)
             VALUES ($1, now() + $2::interval)
             ON CONFLICT (key) DO UPDATE
                SET next_slot = greatest(s.next_slot, now()) + $2::interval
              WHERE greatest(s.next_slot, now()) + $2::interval - now() <= $3::interval",
        )
        .bind(key)
        .bind(interval(every))
        .bind(interval(window))
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if taken {
            return Ok(Ok(()));
        }
        let (wait,): (f64,) = sqlx::query_as(
            "SELECT coalesce(extract(epoch FROM greatest(next_slot, now()) + $2::interval
                                                 - now() - $3::interval)::float8, 0)
               FROM send_schedules WHERE key = $1",
        )
        .bind(key)
        .bind(interval(every))
        .bind(interval(window))
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or((0.0,));
        Ok(Err(
            Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or_default()
        ))
    }

    async fn purge_schedules(&self, idle: Duration) -> Result<u64, StoreError> {
        let result =
            sqlx::query("DELETE FROM send_schedules WHERE next_slot < now() - $1::interval")
                .bind(interval(idle))
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected())
    }

    async fn cancel_queued(&self, owner: Option<&str>, id: Uuid) -> Result<bool, StoreError> {
        queue::cancel(&self.pool, owner, id).await
    }

    async fn reschedule_queued(
        &self,
        owner: Option<&str>,
        id: Uuid,
        send_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        queue::reschedule(&self.pool, owner, id, send_at).await
    }

    async fn requeue_failed(
        &self,
        filter: &RequeueFilter,
        dry_run: bool,
    ) -> Result<Requeued, StoreError> {
        queue::requeue(&self.pool, filter, dry_run).await
    }

    async fn message_body(
        &self,
        owner: Option<&str>,
        id: Uuid,
    ) -> Result<Option<Body>, StoreError> {
        retention::body(&self.pool, owner, id).await
    }

    async fn create_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::write(&self.pool, name, content, author, false).await
    }

    async fn update_template(
        &self,
        name: &str,
        content: &TemplateContent,
        author: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::write(&self.pool, name, content, author, true).await
    }

    async fn template(
        &self,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        templates::get(&self.pool, name, version).await
    }

    async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        templates::list(&self.pool).await
    }

    async fn delete_template(&self, name: &str) -> Result<bool, StoreError> {
        templates::delete(&self.pool, name).await
    }

    async fn drop_bodies(
        &self,
        finished_before: OffsetDateTime,
        from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        retention::pass(&self.pool, Retain::DropBody, finished_before, from, limit).await
    }

    async fn delete_finished(
        &self,
        finished_before: OffsetDateTime,
        from: Uuid,
        limit: u32,
    ) -> Result<RetentionPass, StoreError> {
        retention::pass(&self.pool, Retain::Delete, finished_before, from, limit).await
    }

    async fn erase_recipient(&self, address: &str) -> Result<Erasure, StoreError> {
        retention::erase(&self.pool, address).await
    }

    async fn suppressions(
        &self,
        filter: &SuppressionFilter,
    ) -> Result<SuppressionPage, StoreError> {
        suppressions::list(&self.pool, filter).await
    }

    async fn add_suppression(
        &self,
        entry: &NewSuppression,
    ) -> Result<(SuppressionRecord, bool), StoreError> {
        suppressions::add(&self.pool, entry).await
    }

    async fn remove_suppression(&self, address: &str) -> Result<bool, StoreError> {
        suppressions::remove(&self.pool, address).await
    }

    async fn create_endpoint(&self, endpoint: &NewEndpoint) -> Result<EndpointRecord, StoreError> {
        webhooks::create(&self.pool, endpoint).await
    }

    async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        webhooks::list(&self.pool).await
    }

    async fn endpoint(&self, id: Uuid) -> Result<Option<EndpointRecord>, StoreError> {
        webhooks::get(&self.pool, id).await
    }

    async fn update_endpoint(
        &self,
        id: Uuid,
        change: &EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        webhooks::update(&self.pool, id, change).await
    }

    async fn delete_endpoint(&self, id: Uuid) -> Result<bool, StoreError> {
        webhooks::delete(&self.pool, id).await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: Uuid,
        secret: &str,
        keep_old_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        webhooks::rotate(&self.pool, id, secret, keep_old_until).await
    }

    async fn fan_out(&self, limit: u32) -> Result<u64, StoreError> {
        webhooks::fan_out(&self.pool, limit).await
    }

    async fn claim_deliveries(
        &self,
        limit: u32,
        per_endpoint: u32,
        lease: Duration,
        busy: &[Uuid],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        webhooks::claim(&self.pool, limit, per_endpoint, lease, busy).await
    }

    async fn record_delivery(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &DeliveryAttempt,
        result: DeliveryResult,
        disable_after: Duration,
    ) -> Result<bool, StoreError> {
        webhooks::record(&self.pool, delivery, attempt, result, disable_after).await
    }

    async fn deliveries(
        &self,
        endpoint: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        webhooks::deliveries(&self.pool, endpoint, before, limit).await
    }

    async fn replay(&self, endpoint: Uuid, replay: &Replay) -> Result<u64, StoreError> {
        webhooks::replay(&self.pool, endpoint, replay).await
    }

    async fn webhook_backlog(&self) -> Result<i64, StoreError> {
        webhooks::backlog(&self.pool).await
    }

    async fn record_report(
        &self,
        message: Uuid,
        events: Vec<crate::store::NewEvent>,
        suppressions: Vec<NewSuppression>,
    ) -> Result<bool, StoreError> {
        reports::record(&self.pool, message, events, suppressions).await
    }

    async fn message_by_header(&self, message_id: &str) -> Result<Option<Uuid>, StoreError> {
        reports::by_header(&self.pool, message_id).await
    }

    async fn keep_report(&self, source: &str, raw: &[u8], error: &str) -> Result<(), StoreError> {
        reports::keep(&self.pool, source, raw, error).await
    }

    async fn queue_depth(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        queue::depth(&self.pool).await
    }

    async fn listen_for_jobs(&self, wake: Arc<Notify>, stop: CancellationToken) {
        queue::listen(&self.pool, wake, stop).await;
    }
}
