//! A provider's rate limit (`rate_limit = "14/s"`, `"600/m"`, `"50000/d"`), held for the whole
//! deployment. Sends are paced one slot apart (a generic cell rate algorithm without burst: an
//! upstream that allows 14 a second gets at most 14 in any second). The slots are reserved in the
//! store a batch at a time, so every replica draws from one schedule without the schedule's row
//! becoming a hot spot: on PostgreSQL one small row per provider, taken about ten times a second at
//! most per process; on SQLite (one process) the process's own.

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;
pub use crate::rate_limit::RateLimit;
use crate::store::SharedStore;

/// Slots reserved and not used yet: the next one, and how many are left.
#[derive(Debug, Default)]
struct Slots {
    next: Option<Instant>,
    left: u32,
}

/// Paces one provider's sends in this process, on the deployment's schedule.
pub struct Pacer {
    provider: String,
    limit: RateLimit,
    store: SharedStore,
    metrics: Metrics,
    slots: Mutex<Slots>,
}

impl Pacer {
    /// A pacer for `provider` at `limit`, its schedule kept in `store`.
    pub fn new(provider: &str, limit: RateLimit, store: SharedStore, metrics: Metrics) -> Self {
        Self {
            provider: provider.to_owned(),
            limit,
            store,
            metrics,
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Waits for this process's next slot, reserving a batch of them when none is left. Senders take
    /// their turns one after another. A store that cannot be reached leaves this process pacing on its
    /// own (it may then exceed the deployment's limit by what the other replicas send).
    pub async fn wait_turn(&self) {
        let interval = self.limit.interval();
        let mut slots = self.slots.lock().await;
        if slots.left == 0 {
            let batch = self.limit.batch();
            let first = match self
                .store
                .reserve_slots(&self.provider, batch, interval)
                .await
            {
                Ok(wait) => Instant::now() + wait,
                Err(error) => {
                    tracing::warn!(
                        provider = %self.provider,
                        error = %crate::telemetry::error_chain(&error),
                        "reserving send slots failed; pacing this process alone"
                    );
                    slots
                        .next
                        .map_or_else(Instant::now, |next| next.max(Instant::now()))
                }
            };
            *slots = Slots {
                next: Some(first),
                left: batch,
            };
        }
        let at = slots.next.unwrap_or_else(Instant::now);
        slots.next = Some(at + interval);
        slots.left -= 1;
        if at > Instant::now() {
            self.metrics
                .provider_throttled
                .with_label_values(&[self.provider.as_str()])
                .inc();
            tokio::time::sleep_until(at).await;
        }
    }
}
