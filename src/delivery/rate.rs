//! A provider's rate limit (`rate_limit = "14/s"`, `"600/m"`, `"50000/d"`), held for the whole
//! deployment. Sends are paced one slot apart (a generic cell rate algorithm without burst: an
//! upstream that allows 14 a second gets at most 14 in any second). The slots are reserved in the
//! store a batch at a time, so every replica draws from one schedule without the schedule's row
//! becoming a hot spot: on PostgreSQL one small row per provider, taken about ten times a second at
//! most per process; on SQLite (one process) the process's own.

use std::fmt;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::store::SharedStore;

/// Messages per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// How many.
    pub count: u32,
    /// Per how long.
    pub per: Duration,
}

impl RateLimit {
    /// `N/s`, `N/m`, `N/h` or `N/d`, N from 1.
    pub fn parse(text: &str) -> Result<Self, String> {
        let refused = || {
            format!("rate_limit `{text}` is not N/s, N/m, N/h or N/d (e.g. \"14/s\", \"50000/d\")")
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(refused)?;
        let count: u32 = count.trim().parse().map_err(|_| refused())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(refused()),
        };
        if count == 0 {
            return Err(format!(
                "rate_limit `{text}` must allow at least one message"
            ));
        }
        Ok(Self { count, per })
    }

    /// The time between two sends.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }

    /// Slots reserved at once: about a tenth of a second's worth, from 1 to 50.
    pub fn batch(&self) -> u32 {
        let per_tenth = f64::from(self.count) * 0.1 / self.per.as_secs_f64();
        per_tenth.ceil().clamp(1.0, 50.0) as u32
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_their_units_and_batches_are_a_tenth_of_a_second() {
        let ses = RateLimit::parse("14/s").unwrap();
        assert_eq!(ses.interval(), Duration::from_secs(1) / 14);
        assert_eq!(ses.batch(), 2);
        assert_eq!(ses.to_string(), "14/s");
        assert_eq!(RateLimit::parse(" 600/m ").unwrap().batch(), 1);
        assert_eq!(RateLimit::parse("5000/s").unwrap().batch(), 50);
        let daily = RateLimit::parse("50000/d").unwrap();
        assert_eq!(daily.per, Duration::from_secs(86_400));
        assert_eq!(daily.to_string(), "50000/d");
        for bad in ["", "14", "14/w", "x/s", "0/s", "-1/s", "14/"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
    }
}
