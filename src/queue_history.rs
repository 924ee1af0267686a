//! The queue's depth over the last hour, sampled by this process (for the console's chart): no table,
//! no history beyond the process; a replica that starts shows what it saw since.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::store::SharedStore;

/// How often the depth is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// Samples kept: an hour's.
const KEPT: usize = 120;

/// One sample: when, and the count of each state (`queued`, `scheduled`, `sending`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Count by state.
    pub depth: Vec<(&'static str, i64)>,
}

/// The samples of the last hour, oldest first.
#[derive(Debug, Default)]
pub struct QueueHistory(Mutex<VecDeque<Sample>>);

impl QueueHistory {
    /// Adds a sample, forgetting the oldest beyond an hour's.
    pub fn record(&self, sample: Sample) {
        if let Ok(mut samples) = self.0.lock() {
            if samples.len() == KEPT {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lock()
            .map(|samples| samples.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Samples the queue's depth every [`SAMPLE_EVERY`] until `stop` (a failed read is skipped).
pub async fn sample(
    history: std::sync::Arc<QueueHistory>,
    store: SharedStore,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        match store.queue_depth().await {
            Ok(depth) => history.record(Sample {
                at: OffsetDateTime::now_utc(),
                depth,
            }),
            Err(error) => tracing::debug!(error = %error, "queue depth sample skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_samples_is_kept() {
        let history = QueueHistory::default();
        for n in 0..(KEPT as i64 + 5) {
            history.record(Sample {
                at: OffsetDateTime::UNIX_EPOCH,
                depth: vec![("queued", n)],
            });
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].depth, [("queued", 5)]);
    }
}
