//! When to try again: capped exponential backoff with jitter, bounded by attempts and age.

use std::time::Duration;

use rand::Rng;

/// The retry schedule of transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub initial_delay: Duration,
    /// Largest delay between attempts.
    pub max_delay: Duration,
    /// Growth factor per attempt.
    pub coefficient: f64,
    /// Relative jitter: a delay `d` becomes uniform in `[d·(1−j), d·(1+j)]`, so replicas that failed
    /// together do not retry together.
    pub jitter: f64,
    /// Attempts after which a message fails.
    pub max_attempts: u32,
    /// Age after which a message fails instead of being retried.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            coefficient: 2.0,
            jitter: 0.2,
            max_attempts: 10,
            max_age: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, given that `attempt` (1-based) just failed; `None`
    /// when the message has used up its attempts or its age.
    pub fn next_delay(&self, attempt: u32, age: Duration) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.coefficient.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        let delay = Duration::from_secs_f64((capped * factor).max(0.0));
        if age + delay > self.max_age {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(100),
            ..RetryPolicy::default()
        };
        for (attempt, expected) in [
            (1, 10.0),
            (2, 20.0),
            (3, 40.0),
            (4, 80.0),
            (5, 100.0),
            (9, 100.0),
        ] {
            let delay = policy
                .next_delay(attempt, Duration::ZERO)
                .unwrap()
                .as_secs_f64();
            assert!(
                delay >= expected * 0.8 - 1e-9 && delay <= expected * 1.2 + 1e-9,
                "attempt {attempt}: {delay}"
            );
        }
    }

    #[test]
    fn stops_at_max_attempts_and_max_age() {
        let policy = RetryPolicy::default();
        assert!(policy.next_delay(10, Duration::ZERO).is_none());
        assert!(
            policy
                .next_delay(1, Duration::from_secs(3 * 24 * 3600))
                .is_none()
        );
        assert!(policy.next_delay(1, Duration::ZERO).is_some());
    }
}
