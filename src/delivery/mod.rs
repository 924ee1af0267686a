//! Delivery: workers drain the queue through pooled SMTP connections.

mod attempt;
mod breaker;
mod compose;
mod connection;
pub mod dkim;
mod handoff;
mod lease;
mod outcome;
mod pool;
mod preview;
mod rate;
mod retry;
mod routing;
mod session;
mod timeouts;
mod transport;
mod upstream;
mod wire;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use breaker::{BreakerSettings, BreakerView, CircuitState};
pub use compose::{ComposeError, Composition, compose};
pub use lease::{HeldLeases, renewal_interval};
pub use outcome::{OutcomeClass, Reply};
pub use preview::{Preview, preview};
pub use rate::RateLimit;
pub use retry::RetryPolicy;
pub use routing::Providers;
pub use timeouts::Timeouts;
pub use transport::{Outbox, Provider, Transport};
pub use upstream::{TlsMode, Upstream, UpstreamError};
pub use worker::WorkerSettings;

use crate::metrics::Metrics;
use crate::store::SharedStore;

/// Connection counts of one provider's pool, for metrics.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// Provider name.
    pub provider: String,
    /// Connections open.
    pub open: usize,
    /// Connections in use.
    pub in_use: usize,
    /// The cap.
    pub max: usize,
}

/// Running workers of one process.
pub struct Delivery {
    workers: JoinSet<()>,
    listener: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    held: Arc<HeldLeases>,
    store: SharedStore,
    providers: Vec<Provider>,
}

/// Settings for [`Delivery::start`].
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The configured upstreams, in order.
    pub upstreams: Vec<Upstream>,
    /// The routes over them (empty: every message through every provider in order).
    pub routes: crate::domain::Routes,
    /// DKIM keys: each message is signed by those of its `From` domain.
    pub dkim: dkim::DkimSigner,
    /// Concurrent workers in this process.
    pub workers: usize,
    /// How workers claim.
    pub worker: WorkerSettings,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Add addresses that hard-bounce (enhanced status 5.1.x or 5.2.1) to the suppression list.
    pub suppress_hard_bounces: bool,
    /// Each message's envelope sender is its VERP address on the bounce domain, when configured.
    pub verp: Option<crate::domain::Verp>,
}

impl Delivery {
    /// Builds a provider (its pool, its breaker, and its pacer when it has a rate limit, on the
    /// schedule `store` keeps) from an upstream; fails on an unusable TLS setting.
    pub fn provider(
        upstream: Upstream,
        store: &SharedStore,
        metrics: &Metrics,
    ) -> Result<Provider, String> {
        let upstream = Arc::new(upstream);
        let pool = pool::build_pool(upstream.clone())?;
        let breaker = Arc::new(breaker::Breaker::new(upstream.breaker));
        let pacer = upstream.rate.map(|limit| {
            Arc::new(rate::Pacer::new(
                &upstream.name,
                limit,
                store.clone(),
                metrics.clone(),
            ))
        });
        Ok(Provider {
            upstream,
            pool,
            breaker,
            pacer,
        })
    }

    /// Starts the notification listener and the workers.
    pub fn start(
        store: SharedStore,
        transport: Transport,
        settings: DeliverySettings,
        metrics: Metrics,
    ) -> Self {
        let settings_workers = settings.workers.max(1);
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let held = Arc::new(HeldLeases::new(settings.worker.lease));
        // Renews the leases of jobs in hand until the last send has finished (it stops after the
        // workers, at shutdown).
        let heartbeat = tokio::spawn(lease::renew(held.clone(), store.clone()));
        let listener = tokio::spawn({
            let store = store.clone();
            let wake = wake.clone();
            let stop = stop.clone();
            async move { store.listen_for_jobs(wake, stop).await }
        });
        let worker = Arc::new(worker::Worker {
            store: store.clone(),
            transport: transport.clone(),
            policy: settings.retry,
            suppress_hard_bounces: settings.suppress_hard_bounces,
            verp: settings.verp,
            dkim: settings.dkim,
            settings: settings.worker,
            metrics,
            wake,
            held: held.clone(),
            lanes: settings_workers.min(transport.connections().unwrap_or(usize::MAX)),
        });
        // Up to two claim batches of jobs wait for the senders: the claimer claims the next batch
        // while a whole one is still queued, so the senders keep working through the claim (which
        // takes 10-30 ms for 200 jobs on a busy machine; with one batch of room they often ran dry).
        // With many connections, enough for a full send batch on each: on a distant upstream a batch
        // of one or two would spend a round trip in three waiting between batches.
        // Transactional jobs in it are taken first (`handoff`), so its size does not delay them.
        let room = (2 * worker.settings.batch_size.max(1) as usize)
            .max(worker.lanes.saturating_mul(worker::SEND_BATCH));
        let queue = Arc::new(handoff::HandOff::new(room));
        let mut workers = JoinSet::new();
        workers.spawn(worker.clone().claim(queue.clone(), stop.clone()));
        for _ in 0..settings_workers {
            workers.spawn(worker.clone().send(queue.clone(), stop.clone()));
        }
        let providers = match &transport {
            Transport::Smtp(providers) => {
                for provider in providers.list() {
                    tracing::info!(
                        provider = provider.name(),
                        upstream = %provider.upstream,
                        max_connections = provider.upstream.max_connections,
                        "provider"
                    );
                }
                tracing::info!(workers = settings_workers, "delivery started");
                providers.list().to_vec()
            }
            Transport::Outbox(outbox) => {
                tracing::info!(
                    workers = settings_workers,
                    outbox = %outbox.dir().display(),
                    "delivery started: messages are written to the outbox"
                );
                Vec::new()
            }
        };
        Self {
            workers,
            listener,
            heartbeat,
            stop,
            held,
            store,
            providers,
        }
    }

    /// Connection counts per provider.
    pub fn pool_status(&self) -> Vec<PoolStatus> {
        pool_status(&self.providers)
    }

    /// A cheap handle for reading pool status from elsewhere (the metrics endpoint).
    pub fn providers(&self) -> Vec<Provider> {
        self.providers.clone()
    }

    /// Stops claiming, lets in-flight sends finish within `grace`, then releases whatever is still
    /// held so nothing stays claimed.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("grace period over; abandoning in-flight sends");
            self.workers.abort_all();
            while self.workers.join_next().await.is_some() {}
        }
        self.listener.abort();
        self.heartbeat.abort();
        let leftover = self.held.drain();
        if !leftover.is_empty() {
            match self.store.release_jobs(&leftover).await {
                Ok(released) => tracing::info!(released, "released claimed jobs"),
                Err(error) => {
                    tracing::warn!(error = %error, "releasing jobs failed; their leases will expire")
                }
            }
        }
        for provider in &self.providers {
            provider.pool.close();
        }
    }
}

/// Connection counts of the given providers.
pub fn pool_status(providers: &[Provider]) -> Vec<PoolStatus> {
    providers
        .iter()
        .map(|provider| {
            let status = provider.pool.status();
            PoolStatus {
                provider: provider.upstream.name.clone(),
                open: status.size,
                in_use: status.size.saturating_sub(status.available),
                max: status.max_size,
            }
        })
        .collect()
}
