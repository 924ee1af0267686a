//! Webhooks (Standard Webhooks 1.0): the events table is the outbox. A fan-out step turns new events
//! into deliveries, one per endpoint that takes them; senders claim due deliveries with leases (so
//! replicas deliver each once), sign and post them, and record each attempt. A failure is retried on a
//! schedule; a slow or dead endpoint holds a few slots of its own, never mail delivery or the others.

mod guard;
mod send;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use guard::{Guard, UrlError, is_public};

use crate::metrics::Metrics;
use crate::store::SharedStore;

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// What targets may be.
    pub guard: Guard,
    /// The delay before each retry: after the first failed attempt, the first, and so on; once spent,
    /// the delivery fails.
    pub schedule: Vec<Duration>,
    /// Deadline of one delivery (connect, send, answer).
    pub timeout: Duration,
    /// An endpoint whose deliveries have failed this long is disabled when a schedule runs out.
    pub disable_after: Duration,
    /// Deliveries in flight at once, per process.
    pub concurrency: usize,
    /// Deliveries in flight to one endpoint at once, per process.
    pub per_endpoint: usize,
    /// How often new events and due retries are looked for.
    pub poll_interval: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            guard: Guard::default(),
            schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(840),
                minutes(1200),
                minutes(1440),
            ],
            timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            concurrency: 32,
            per_endpoint: 4,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// A new signing secret: `whsec_` and base64 of 24 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Events read by one fan-out statement.
const FAN_OUT_BATCH: u32 = 500;

/// The shortest time between two looks for new events.
const FAN_OUT_PACE: Duration = Duration::from_millis(100);

/// The running dispatcher of one process.
pub struct Webhooks {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    /// Starts fanning out and delivering.
    pub fn start(
        store: SharedStore,
        settings: WebhookSettings,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let client = send::client(&settings)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, settings, metrics, client, stop.clone()));
        Ok(Self { stop, task })
    }

    /// Stops claiming; deliveries in flight get `grace` to finish (their leases expire otherwise,
    /// and another process takes them over).
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

async fn run(
    store: SharedStore,
    settings: WebhookSettings,
    metrics: Metrics,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let in_flight: Arc<Mutex<HashMap<Uuid, usize>>> = Arc::default();
    let mut sending = JoinSet::new();
    // A lease outlasts a delivery's deadline with room to record it.
    let lease = settings.timeout * 4 + Duration::from_secs(30);
    let mut fanned_out: Option<tokio::time::Instant> = None;
    loop {
        while sending.try_join_next().is_some() {}
        // New events are looked for at most every FAN_OUT_PACE; freed slots are refilled at once.
        if fanned_out.is_none_or(|at| at.elapsed() >= FAN_OUT_PACE) {
            if let Err(error) = fan_out(&store).await {
                tracing::warn!(error = %crate::telemetry::error_chain(&error), "webhook fan-out failed");
            }
            fanned_out = Some(tokio::time::Instant::now());
        }
        let (busy, free) = {
            let counts = in_flight.lock().map(|c| c.clone()).unwrap_or_default();
            let busy: Vec<Uuid> = counts
                .iter()
                .filter(|(_, count)| **count >= settings.per_endpoint)
                .map(|(id, _)| *id)
                .collect();
            let total: usize = counts.values().sum();
            (busy, settings.concurrency.saturating_sub(total))
        };
        if free > 0 {
            match store
                .claim_deliveries(
                    u32::try_from(free).unwrap_or(u32::MAX),
                    u32::try_from(settings.per_endpoint).unwrap_or(u32::MAX),
                    lease,
                    &busy,
                )
                .await
            {
                Ok(claimed) => {
                    for delivery in claimed {
                        if let Ok(mut counts) = in_flight.lock() {
                            *counts.entry(delivery.endpoint_id).or_default() += 1;
                        }
                        let store = store.clone();
                        let settings = settings.clone();
                        let metrics = metrics.clone();
                        let client = client.clone();
                        let in_flight = in_flight.clone();
                        sending.spawn(async move {
                            let endpoint = delivery.endpoint_id;
                            send::deliver(&store, &settings, &metrics, &client, delivery).await;
                            if let Ok(mut counts) = in_flight.lock()
                                && let Some(count) = counts.get_mut(&endpoint)
                            {
                                *count = count.saturating_sub(1);
                                if *count == 0 {
                                    counts.remove(&endpoint);
                                }
                            }
                        });
                    }
                }
                Err(error) => tracing::warn!(
                    error = %crate::telemetry::error_chain(&error),
                    "claiming webhook deliveries failed"
                ),
            }
        }
        // Again as soon as a delivery frees its slot; otherwise after the poll interval.
        tokio::select! {
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
            () = stop.cancelled() => break,
        }
    }
    while sending.join_next().await.is_some() {}
}

/// Turns every new event into deliveries, a batch at a time.
async fn fan_out(store: &SharedStore) -> Result<(), crate::store::StoreError> {
    while store.fan_out(FAN_OUT_BATCH).await? >= u64::from(FAN_OUT_BATCH) {}
    Ok(())
}
