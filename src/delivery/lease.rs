//! The leases this process holds, and their heartbeat.
//!
//! A claim leases each job for `lease` on the database clock. While this process holds a job (waiting
//! for a sender, or with its send in flight, however long the upstream takes to answer), the heartbeat
//! renews the lease every third of it, so a lease only has to outlive one renewal interval, not the
//! longest possible session. A process that dies stops renewing, and its jobs are claimed again once
//! their leases run out. A send starts only while its lease is known to hold for at least one more
//! interval: when renewals fail (the database is out of reach), jobs not yet started are given back
//! before their leases can run out under them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{JobLease, SharedStore};

/// How often leases of `lease` are renewed: every third of it, so two renewals in a row may be late or
/// fail before a lease can run out.
pub fn renewal_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

/// The leases this process holds right now, each with the instant (on this process's clock) until
/// which it is known to hold.
pub struct HeldLeases {
    held: Mutex<HashMap<JobLease, Instant>>,
    lease: Duration,
}

impl HeldLeases {
    /// No leases yet; each claim takes leases of `lease`.
    pub fn new(lease: Duration) -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            lease,
        }
    }

    /// How often held leases are renewed.
    pub fn interval(&self) -> Duration {
        renewal_interval(self.lease)
    }

    /// Leases taken by a statement that started at `taken_at` (on the database clock they began no
    /// earlier, so they hold at least until `taken_at + lease`).
    pub(super) fn add(&self, leases: impl IntoIterator<Item = JobLease>, taken_at: Instant) {
        let until = taken_at + self.lease;
        if let Ok(mut held) = self.held.lock() {
            held.extend(leases.into_iter().map(|lease| (lease, until)));
        }
    }

    /// A job whose outcome is recorded, or that was given back.
    pub(super) fn remove(&self, lease: &JobLease) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(lease);
        }
    }

    /// Whether a send of this job may start: the lease is still this process's and holds for at least
    /// one more renewal interval.
    pub(super) fn may_start(&self, lease: &JobLease) -> bool {
        let now = Instant::now();
        self.held.lock().is_ok_and(|held| {
            held.get(lease)
                .is_some_and(|until| *until > now + self.interval())
        })
    }

    /// Takes every lease still held.
    pub fn drain(&self) -> Vec<JobLease> {
        self.held
            .lock()
            .map(|mut held| held.drain().map(|(lease, _)| lease).collect())
            .unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<JobLease> {
        self.held
            .lock()
            .map(|held| held.keys().copied().collect())
            .unwrap_or_default()
    }

    /// After a renewal that started at `at`: the leases `renewed` hold until `at + lease`; the others
    /// of `asked` are no longer this process's (their outcome was recorded meanwhile, or another
    /// process took the job over after its lease ran out) and are forgotten.
    fn renewed(&self, asked: &[JobLease], renewed: &[JobLease], at: Instant) -> usize {
        let until = at + self.lease;
        let Ok(mut held) = self.held.lock() else {
            return 0;
        };
        for lease in renewed {
            if let Some(known) = held.get_mut(lease) {
                *known = until;
            }
        }
        let renewed: std::collections::HashSet<&JobLease> = renewed.iter().collect();
        let mut lost = 0;
        for lease in asked {
            if !renewed.contains(lease) && held.remove(lease).is_some() {
                lost += 1;
            }
        }
        lost
    }
}

/// The heartbeat: renews every held lease each [`HeldLeases::interval`], until the task is aborted.
pub(super) async fn renew(held: Arc<HeldLeases>, store: SharedStore) {
    let mut ticks = tokio::time::interval(held.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let asked = held.snapshot();
        if asked.is_empty() {
            continue;
        }
        let at = Instant::now();
        match store.renew_leases(&asked, held.lease).await {
            Ok(renewed) => {
                let gone = held.renewed(&asked, &renewed, at);
                tracing::debug!(
                    renewed = renewed.len(),
                    gone,
                    "renewed the leases of jobs in hand"
                );
            }
            Err(error) => tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                held = asked.len(),
                "renewing leases failed; sends not yet started wait for the next renewal"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn lease() -> JobLease {
        JobLease {
            id: Uuid::now_v7(),
            token: Uuid::now_v7(),
        }
    }

    #[test]
    fn a_send_starts_only_while_the_lease_holds_for_another_interval() {
        let held = HeldLeases::new(Duration::from_secs(3));
        let (fresh, old, unknown) = (lease(), lease(), lease());
        held.add([fresh], Instant::now());
        held.add([old], Instant::now() - Duration::from_millis(2500));
        assert!(held.may_start(&fresh));
        assert!(!held.may_start(&old), "less than one interval left");
        assert!(!held.may_start(&unknown));
    }

    #[test]
    fn a_renewal_extends_what_it_renewed_and_forgets_the_rest() {
        let held = HeldLeases::new(Duration::from_secs(3));
        let (kept, taken_over) = (lease(), lease());
        let long_ago = Instant::now() - Duration::from_millis(2500);
        held.add([kept, taken_over], long_ago);
        let gone = held.renewed(&[kept, taken_over], &[kept], Instant::now());
        assert_eq!(gone, 1);
        assert!(held.may_start(&kept));
        assert!(!held.may_start(&taken_over));
        assert_eq!(held.drain(), vec![kept]);
    }
}
