//! The embedded store: SQLite in WAL mode, for a single node with no database server.
//!
//! SQLite has one writer at a time; every write goes through a pool of exactly one connection, so
//! writers queue in the process instead of failing with SQLITE_BUSY, and a claim (select due rows,
//! lease them) is one transaction no other writer can interleave with. Reads use their own pool and
//! see the last committed state (WAL). The database clock is the process clock.

mod queue;
mod rows;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::records::{
    Accepted, AttemptRecord, ClaimedJob, Disposition, EnqueueOutcome, EnqueueRequest, JobLease,
    MessageFilter, MessageSummary, Page,
};
use super::{MessageStore, StoreError, StoreSettings};
use crate::domain::MessageStatus;

/// The migrations compiled into this build (migrations applied by a newer release are tolerated).
fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/sqlite");
    migrator.set_ignore_missing(true);
    migrator
}

/// A [`MessageStore`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    idempotency_retention: Duration,
    enqueued: Arc<Notify>,
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
        })
    }

    async fn enqueue_in(&self, request: &EnqueueRequest) -> Result<EnqueueOutcome, StoreError> {
        let now = rows::now();
        let mut tx = self.writer.begin().await?;
        if let Some((key, fingerprint)) = &request.idempotency {
            let existing: Option<(Vec<u8>, String, i64)> = sqlx::query_as(
                "SELECT fingerprint, message_id, created_at FROM idempotency_keys WHERE caller = ? AND key = ?",
            )
            .bind(&request.caller)
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let retention =
                i64::try_from(self.idempotency_retention.as_micros()).unwrap_or(i64::MAX);
            match existing {
                Some((stored, message_id, created_at)) if created_at >= now - retention => {
                    tx.rollback().await?;
                    return Ok(if stored == fingerprint.0 {
                        EnqueueOutcome::Replayed(Accepted {
                            id: rows::parse_uuid(&message_id)?,
                            status: MessageStatus::Queued,
                        })
                    } else {
                        EnqueueOutcome::KeyReused
                    });
                }
                _ => {
                    sqlx::query(
                        "INSERT INTO idempotency_keys (caller, key, fingerprint, message_id, created_at)
                         VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (caller, key) DO UPDATE
                            SET fingerprint = excluded.fingerprint, message_id = excluded.message_id,
                                created_at = excluded.created_at",
                    )
                    .bind(&request.caller)
                    .bind(key.as_str())
                    .bind(&fingerprint.0[..])
                    .bind(request.message.id.to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let message = &request.message;
        let envelope = serde_json::to_string(&message.content.envelope)?;
        let body = serde_json::to_string(&message.content.body)?;
        let send_at = message.send_at.map(rows::micros);
        sqlx::query(
            "INSERT INTO messages
                (id, caller, message_id, envelope, body, tags, metadata, created_at, updated_at, send_at,
                 due_at, source, raw)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(message.id.to_string())
        .bind(&request.caller)
        .bind(&message.message_id)
        .bind(envelope)
        .bind(body)
        .bind(serde_json::to_string(&message.tags)?)
        .bind(serde_json::to_string(&message.metadata)?)
        .bind(now)
        .bind(now)
        .bind(send_at)
        .bind(send_at.unwrap_or(now))
        .bind(message.source.as_str())
        .bind(message.content.raw.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if send_at.is_none_or(|at| at <= now) {
            self.enqueued.notify_waiters();
        }
        Ok(EnqueueOutcome::Created(Accepted {
            id: message.id,
            status: MessageStatus::Queued,
        }))
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
        self.enqueue_in(&request).await
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
        queue::record(&self.writer, lease, attempt, disposition).await
    }

    async fn release_jobs(&self, leases: &[JobLease]) -> Result<u64, StoreError> {
        let released = queue::release(&self.writer, leases).await?;
        if released > 0 {
            self.enqueued.notify_waiters();
        }
        Ok(released)
    }

    async fn cancel_queued(&self, owner: Option<&str>, id: Uuid) -> Result<bool, StoreError> {
        queue::cancel(&self.writer, owner, id).await
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
