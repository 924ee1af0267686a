//! The delivery loops: one claimer claims batches of due jobs in one short statement each and hands
//! them to senders, which send a few jobs at a time on one connection outside any transaction and record
//! their outcomes (group-committed with the other senders' outcomes) while they send the next ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{Prepared, conclude};
use super::handoff::HandOff;
use super::lease::HeldLeases;
use super::retry::RetryPolicy;
use super::transport::{Delivered, Queued, Transport, Unsent};
use crate::domain::RouteFacts;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, ClaimedJob, Disposition, JobLease, SharedStore};

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

/// Most jobs a sender takes at once (those already waiting). They go out one after another on one
/// connection, each one's data in the same write as the next one's envelope, so a batch of n costs n + 1
/// round trips to the upstream (the last one's reply is waited for before the next batch's envelope
/// goes out): 32 keeps a distant upstream's connections 97 % busy. Fewer are taken when fewer are
/// waiting, so that a burst still spreads over every connection.
pub(super) const SEND_BATCH: usize = 32;

/// The longest wait before a failed claim is tried again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// After a claim that found fewer jobs than it asked for, the next one starts no sooner than this after
/// it. Under a steady stream of messages each claim then takes what arrived in the meantime instead of
/// one or two jobs per statement; a backlog is claimed without pause.
const CLAIM_PACE: Duration = Duration::from_millis(5);

/// Everything the claimer and the senders need; shared by all of them in a process.
pub struct Worker {
    pub(super) store: SharedStore,
    pub(super) transport: Transport,
    pub(super) policy: RetryPolicy,
    pub(super) suppress_hard_bounces: bool,
    pub(super) verp: Option<crate::domain::Verp>,
    pub(super) dkim: super::dkim::DkimSigner,
    pub(super) settings: WorkerSettings,
    pub(super) metrics: Metrics,
    pub(super) wake: Arc<Notify>,
    pub(super) held: Arc<HeldLeases>,
    /// How many messages can be on the wire at once: the senders, or the providers' connections if
    /// there are fewer. Waiting jobs are shared out over this many.
    pub(super) lanes: usize,
}

impl Worker {
    /// The claim loop: claims due jobs whenever the hand-off queue has room for a whole batch, and
    /// hands them over through `queue`. One claimer per process means one claim per batch and one
    /// wake-up per notification, however many senders there are, while every sender still gets work.
    /// The queue is closed when the claimer ends, so that the senders end once it is empty.
    pub async fn claim(self: Arc<Self>, queue: Arc<HandOff>, stop: CancellationToken) {
        self.claim_until_stopped(&queue, &stop).await;
        queue.close();
    }

    async fn claim_until_stopped(&self, queue: &HandOff, stop: &CancellationToken) {
        let batch = self.settings.batch_size.max(1) as usize;
        loop {
            // Room for a whole batch (the senders take jobs as they free up; a batch more waits).
            let room = tokio::select! {
                room = queue.room_for(batch) => room,
                () = stop.cancelled() => return,
            };
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
            self.held.add(jobs.iter().map(|job| job.lease), started);
            let claimed_at = Instant::now();
            // Only this task puts, and the room was there. Jobs not taken (the senders are gone)
            // stay held and are released at shutdown.
            queue.put(jobs);
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

    /// A sender: takes claimed jobs and delivers them until `stop`, finishing the sends in progress.
    pub async fn send(self: Arc<Self>, queue: Arc<HandOff>, stop: CancellationToken) {
        // Outcomes are recorded while the next jobs are sent, so the upstream connection stays busy and
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
            let taken = tokio::select! {
                biased;
                () = stop.cancelled() => Vec::new(),
                taken = queue.take(self.lanes, SEND_BATCH) => taken,
            };
            // Jobs still queued at shutdown stay held, and are released then.
            if taken.is_empty() {
                break;
            }
            self.deliver(taken, &mut recording, &stop).await;
        }
        while recording.join_next().await.is_some() {}
    }

    /// Sends a few jobs one after another on one connection, and records each outcome as soon as it
    /// is known (in `recording`). Jobs whose lease is no longer known to hold (renewals failed), and
    /// those not yet started when `stop` comes, are given back instead.
    async fn deliver(
        self: &Arc<Self>,
        taken: Vec<ClaimedJob>,
        recording: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) {
        // While a send is in flight the heartbeat renews its lease, so no other worker takes the job
        // over however long the upstream takes; a send starts only while its lease is known to hold.
        let mut expired = Vec::new();
        let mut ready = Vec::with_capacity(taken.len());
        for job in taken {
            if !self.held.may_start(&job.lease) {
                expired.push(job.lease);
                continue;
            }
            match Prepared::new(&job, self.verp.as_ref(), &self.dkim) {
                Ok(prepared) => ready.push((job, prepared)),
                Err(outcome) => {
                    let provider = self
                        .transport
                        .provider_for(&route_facts(&job))
                        .unwrap_or("none")
                        .to_owned();
                    let delivered = Delivered {
                        provider,
                        outcome,
                        started_at: OffsetDateTime::now_utc(),
                        duration: Duration::ZERO,
                    };
                    let (report, disposition) = conclude(
                        &job,
                        delivered,
                        &self.policy,
                        self.suppress_hard_bounces,
                        &self.metrics,
                    );
                    self.start_recording(recording, job.lease, report, disposition);
                }
            }
        }
        // Given back before the others are sent: their leases may run out.
        self.release_unsent(expired, Duration::ZERO).await;
        let queued: Vec<Queued<'_>> = ready
            .iter()
            .map(|(job, prepared)| Queued {
                id: job.lease.id,
                lease: job.lease,
                held: &self.held,
                route: route_facts(job),
                transaction: prepared.transaction(),
            })
            .collect();
        let unsent = self
            .transport
            .send_all(&queued, stop, |index, delivered| {
                let job = &ready[index].0;
                let (report, disposition) = conclude(
                    job,
                    delivered,
                    &self.policy,
                    self.suppress_hard_bounces,
                    &self.metrics,
                );
                self.start_recording(recording, job.lease, report, disposition);
            })
            .await;
        // Not started: their leases were no longer known to hold, or the sender stops
        // (due again at once); or every provider of their route has its circuit open (due when the
        // first cool-down ends).
        let (now, later): (Vec<&Unsent>, Vec<&Unsent>) =
            unsent.iter().partition(|unsent| unsent.wait.is_zero());
        self.release_unsent(
            now.iter()
                .map(|unsent| ready[unsent.index].0.lease)
                .collect(),
            Duration::ZERO,
        )
        .await;
        if let Some(wait) = later.iter().map(|unsent| unsent.wait).max() {
            self.release_unsent(
                later
                    .iter()
                    .map(|unsent| ready[unsent.index].0.lease)
                    .collect(),
                wait,
            )
            .await;
        }
    }

    /// Records an outcome in the background: the sender goes on sending meanwhile.
    fn start_recording(
        self: &Arc<Self>,
        recording: &mut JoinSet<()>,
        lease: JobLease,
        report: AttemptRecord,
        disposition: Disposition,
    ) {
        let worker = Arc::clone(self);
        recording.spawn(async move {
            worker.record(lease, report, disposition).await;
            worker.held.remove(&lease);
        });
    }

    /// Gives back jobs that were not sent: they are due again after `delay`, with no attempt used.
    async fn release_unsent(&self, leases: Vec<JobLease>, delay: Duration) {
        if leases.is_empty() {
            return;
        }
        tracing::debug!(jobs = leases.len(), ?delay, "releasing jobs not sent");
        let released = if delay.is_zero() {
            self.store.release_jobs(&leases).await
        } else {
            self.store.defer_jobs(&leases, delay).await
        };
        match released {
            Ok(_) => {
                for lease in &leases {
                    self.held.remove(lease);
                }
            }
            Err(error) => {
                // Not renewed any more either: the leases run out and the jobs are claimed again.
                for lease in &leases {
                    self.held.remove(lease);
                }
                tracing::warn!(error = %error, "releasing jobs failed; their leases will expire")
            }
        }
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
}

/// What a job's route is chosen by.
fn route_facts(job: &ClaimedJob) -> RouteFacts<'_> {
    RouteFacts::of(&job.content.envelope, job.stream, &job.caller, &job.tags)
}
