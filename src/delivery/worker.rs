//! The delivery loops: one claimer claims batches of due jobs in one short statement each and hands
//! them to senders, which send each job outside any transaction and record its outcome (group-committed
//! with the other senders' outcomes) while they send the next.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lettre::Address;
use time::OffsetDateTime;
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::compose::{Composition, compose};
use super::outcome::{AttemptOutcome, OutcomeClass, Reply};
use super::retry::RetryPolicy;
use super::session::Transaction;
use super::transport::Transport;
use crate::metrics::Metrics;
use crate::store::{
    AttemptRecord, ClaimedJob, Disposition, JobLease, RecipientResult, SharedStore,
};

/// How workers claim.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs claimed per statement.
    pub batch_size: u32,
    /// Lease taken on each claimed job.
    pub lease: Duration,
    /// How often an idle worker looks for due jobs without a notification.
    pub poll_interval: Duration,
}

/// The fewest outcomes a sender may have waiting for their commit before it waits itself.
const MIN_OUTCOMES_IN_FLIGHT: usize = 64;

/// The longest wait before a failed claim is tried again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// After a claim that found fewer jobs than it asked for, the next one starts no sooner than this after
/// it. Under a steady stream of messages each claim then takes what arrived in the meantime instead of
/// one or two jobs per statement; a backlog is claimed without pause.
const CLAIM_PACE: Duration = Duration::from_millis(5);

/// Leases this process holds right now, so a forced shutdown can give them back.
#[derive(Default)]
pub struct HeldLeases(Mutex<HashSet<JobLease>>);

impl HeldLeases {
    fn add(&self, leases: impl IntoIterator<Item = JobLease>) {
        if let Ok(mut held) = self.0.lock() {
            held.extend(leases);
        }
    }

    fn remove(&self, lease: &JobLease) {
        if let Ok(mut held) = self.0.lock() {
            held.remove(lease);
        }
    }

    /// Takes every lease still held.
    pub fn drain(&self) -> Vec<JobLease> {
        self.0
            .lock()
            .map(|mut held| held.drain().collect())
            .unwrap_or_default()
    }
}

/// A claimed job on its way from the claimer to a sender.
pub struct Assigned {
    job: ClaimedJob,
    claimed_at: Instant,
}

/// Everything the claimer and the senders need; shared by all of them in a process.
pub struct Worker {
    pub(super) store: SharedStore,
    pub(super) transport: Transport,
    pub(super) policy: RetryPolicy,
    pub(super) settings: WorkerSettings,
    pub(super) metrics: Metrics,
    pub(super) wake: Arc<Notify>,
    pub(super) held: Arc<HeldLeases>,
}

impl Worker {
    /// The claim loop: claims due jobs whenever the hand-off queue has room for a whole batch, and
    /// hands them over through `queue`. One claimer per process means one claim per batch and one
    /// wake-up per notification, however many senders there are, while every sender still gets work.
    pub async fn claim(self: Arc<Self>, queue: mpsc::Sender<Assigned>, stop: CancellationToken) {
        let batch = self.settings.batch_size.max(1) as usize;
        loop {
            // Room for a whole batch (the senders take jobs as they free up; a batch more waits).
            tokio::select! {
                room = queue.reserve_many(batch) => if room.is_err() { return },
                () = stop.cancelled() => return,
            }
            let room = queue.capacity().min(batch);
            // Registered before claiming, so a notification that arrives during the claim is not lost.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let started = Instant::now();
            let jobs = match self
                .store
                .claim_due_jobs(u32::try_from(room).unwrap_or(u32::MAX), self.settings.lease)
                .await
            {
                Ok(jobs) => {
                    self.metrics
                        .claim_duration
                        .observe(started.elapsed().as_secs_f64());
                    jobs
                }
                Err(error) => {
                    tracing::warn!(
                        error = %crate::telemetry::error_chain(&error),
                        "claiming jobs failed; retrying"
                    );
                    // Still listening: once the database is back, a notification ends the wait early.
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(self.settings.poll_interval.min(CLAIM_RETRY)) => {}
                        () = stop.cancelled() => return,
                    }
                    continue;
                }
            };
            let drained = jobs.len() < room;
            self.held.add(jobs.iter().map(|job| job.lease));
            let claimed_at = Instant::now();
            for job in jobs {
                // Only this task sends, and the room was there: this does not wait. Jobs not handed
                // over (the senders are gone) stay held and are released at shutdown.
                if queue.send(Assigned { job, claimed_at }).await.is_err() {
                    return;
                }
            }
            // Fewer than asked for (none, or a few): nothing else is due now. Claiming again at once
            // would mostly claim one job at a time under a steady trickle; the next enqueue's
            // notification (or the poll) says when there is more.
            if drained {
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    () = stop.cancelled() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep_until((claimed_at + CLAIM_PACE).into()) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }

    /// A sender: takes claimed jobs and delivers them until `stop`, finishing the send in progress.
    pub async fn send(
        self: Arc<Self>,
        queue: Arc<AsyncMutex<mpsc::Receiver<Assigned>>>,
        stop: CancellationToken,
    ) {
        // Outcomes are recorded while the next job is sent, so the upstream connection stays busy and
        // the outcomes of all senders share commits. Every one is recorded before the sender ends.
        let mut recording = JoinSet::new();
        // At least a few dozen: an outcome commit waits up to the committer's linger (20 ms), and a
        // sender allowed only one or two outcomes in flight (a tiny claim batch) would wait on each.
        let in_flight = (self.settings.batch_size.max(1) as usize).max(MIN_OUTCOMES_IN_FLIGHT);
        loop {
            while recording.try_join_next().is_some() {}
            while recording.len() >= in_flight {
                recording.join_next().await;
            }
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                next = async { queue.lock().await.recv().await } => next,
            };
            // Jobs still queued at shutdown stay held, and are released then.
            let Some(Assigned { job, claimed_at }) = next else {
                break;
            };
            // Each send must finish inside its lease, or another worker could take the job over while
            // this one still talks to the upstream. A fresh claim always fits (the configuration
            // demands a lease of at least six timeouts); a job that waited too long is given back.
            let needed = self.transport.timeout() * 3;
            if claimed_at.elapsed() + needed > self.settings.lease {
                tracing::debug!(message_id = %job.lease.id, "releasing a job whose lease is running out");
                self.release(&[job.lease]).await;
                continue;
            }
            // The span is attached here rather than with `#[instrument]`, which keeps two copies of the
            // future (with and without a span) and so doubled what is moved for every message.
            let span =
                tracing::info_span!("deliver", message_id = %job.lease.id, attempt = job.attempt);
            let (lease, report, disposition) = self.deliver(job).instrument(span).await;
            let worker = Arc::clone(&self);
            recording.spawn(async move {
                worker.record(lease, report, disposition).await;
                worker.held.remove(&lease);
            });
        }
        while recording.join_next().await.is_some() {}
    }

    async fn release(&self, leases: &[JobLease]) {
        match self.store.release_jobs(leases).await {
            Ok(_) => {
                for lease in leases {
                    self.held.remove(lease);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "releasing jobs failed; their leases will expire")
            }
        }
    }

    /// Sends one job; returns what to record.
    async fn deliver(&self, job: ClaimedJob) -> (JobLease, AttemptRecord, Disposition) {
        let provider = self.transport.name().to_owned();
        if job.reclaimed {
            // The previous holder's lease expired mid-attempt: it may have delivered already.
            self.metrics.possible_duplicates.inc();
        }
        let started_at = OffsetDateTime::now_utc();
        let started = Instant::now();
        let outcome = self.attempt(&job).await;
        let duration = started.elapsed();

        self.metrics
            .delivery_attempts
            .with_label_values(&[provider.as_str(), outcome.class.as_str()])
            .inc();
        let code = outcome
            .reply
            .code
            .map_or_else(|| "none".to_owned(), |c| c.to_string());
        self.metrics
            .smtp_replies
            .with_label_values(&[provider.as_str(), code.as_str()])
            .inc();
        if outcome.class == OutcomeClass::Unknown {
            self.metrics.possible_duplicates.inc();
        }

        let disposition = self.dispose(&job, &outcome);
        match &disposition {
            Disposition::Sent => {
                self.metrics.messages_sent.inc();
                let age = OffsetDateTime::now_utc() - job.created_at;
                self.metrics
                    .delivery_duration
                    .observe(age.as_seconds_f64().max(0.0));
                tracing::info!(domain = %first_domain(&job), reply = %outcome.reply, "message sent");
            }
            Disposition::Retry { delay, .. } => {
                self.metrics.messages_retried.inc();
                tracing::info!(
                    domain = %first_domain(&job),
                    reply = %outcome.reply,
                    retry_in = ?delay,
                    "delivery deferred"
                );
            }
            Disposition::Failed { error } => {
                self.metrics.messages_failed.inc();
                tracing::warn!(domain = %first_domain(&job), %error, "delivery failed");
            }
        }
        let report = AttemptRecord {
            attempt: job.attempt,
            started_at,
            duration_ms: i32::try_from(duration.as_millis()).unwrap_or(i32::MAX),
            provider,
            outcome: outcome.class.as_str().to_owned(),
            smtp_code: outcome.reply.code.and_then(|c| i16::try_from(c).ok()),
            enhanced_code: outcome.reply.enhanced.clone(),
            response: Some(outcome.reply.text.clone()).filter(|text| !text.is_empty()),
            recipients: outcome
                .recipients
                .iter()
                .map(|r| RecipientResult {
                    address: r.address.clone(),
                    outcome: r.class.as_str().to_owned(),
                    smtp_code: r.reply.code.and_then(|c| i16::try_from(c).ok()),
                    response: Some(r.reply.text.clone()).filter(|text| !text.is_empty()),
                })
                .collect(),
        };
        (job.lease, report, disposition)
    }

    /// Records the outcome, retrying briefly: the message has been handled, and losing the record
    /// would mean sending it again when the lease expires.
    #[tracing::instrument(skip_all, fields(message_id = %lease.id))]
    async fn record(&self, lease: JobLease, report: AttemptRecord, disposition: Disposition) {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..8 {
            match self
                .store
                .record_outcome(lease, report.clone(), disposition.clone())
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    self.metrics.leases_lost.inc();
                    tracing::warn!("lease was lost before the outcome was recorded");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "recording the outcome failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(
            "could not record the outcome; the job will be retried when its lease expires"
        );
    }

    fn dispose(&self, job: &ClaimedJob, outcome: &AttemptOutcome) -> Disposition {
        let age = (OffsetDateTime::now_utc() - job.created_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let attempt = u32::try_from(job.attempt).unwrap_or(u32::MAX);
        let retry = |recipients: Option<Vec<String>>| match self.policy.next_delay(attempt, age) {
            Some(delay) => Disposition::Retry {
                delay,
                recipients,
                error: outcome.reply.to_string(),
            },
            None => Disposition::Failed {
                error: format!("gave up after {attempt} attempts: {}", outcome.reply),
            },
        };
        match outcome.class {
            OutcomeClass::Sent => {
                let pending = outcome.retry_recipients();
                if pending.is_empty() {
                    Disposition::Sent
                } else {
                    retry(Some(pending))
                }
            }
            OutcomeClass::Transient | OutcomeClass::Unknown => {
                retry(job.pending_recipients.clone())
            }
            OutcomeClass::Permanent => Disposition::Failed {
                error: outcome.reply.to_string(),
            },
        }
    }

    async fn attempt(&self, job: &ClaimedJob) -> AttemptOutcome {
        let content = &job.content;
        let date = SystemTime::from(job.created_at);
        let data = match compose(&Composition {
            content,
            message_id: &job.message_id,
            date,
        }) {
            Ok(data) => data,
            Err(error) => {
                return AttemptOutcome::whole(
                    OutcomeClass::Permanent,
                    Reply::none(error.to_string()),
                );
            }
        };
        let Ok(sender) = Address::from_str(content.from.address.as_str()) else {
            return AttemptOutcome::whole(
                OutcomeClass::Permanent,
                Reply::none("sender is not encodable"),
            );
        };
        let recipients: Vec<Address> = match &job.pending_recipients {
            Some(pending) => pending
                .iter()
                .filter_map(|a| Address::from_str(a).ok())
                .collect(),
            None => content
                .envelope_recipients()
                .into_iter()
                .filter_map(|a| Address::from_str(a).ok())
                .collect(),
        };
        let transaction = Transaction {
            sender: &sender,
            recipients: &recipients,
            data: &data,
        };
        self.transport.send(job.lease.id, &transaction).await
    }
}

/// The first recipient's domain: logs name domains, never addresses.
fn first_domain(job: &ClaimedJob) -> String {
    job.content
        .to
        .iter()
        .chain(&job.content.cc)
        .chain(&job.content.bcc)
        .next()
        .map(|mailbox| mailbox.address.domain().to_owned())
        .unwrap_or_default()
}
