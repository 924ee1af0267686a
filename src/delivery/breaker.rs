//! A provider's circuit breaker: after `failures` connection-level failures in a row (no connection,
//! TLS or AUTH refused, a `421` greeting, a connection lost before the message was handed over) the
//! circuit opens and the provider gets no messages; after the cool-down one probe connection is let
//! through, and its result closes or reopens the circuit. Each process keeps its own: it reflects what
//! this process saw. A recipient's own 4xx or 5xx says nothing about the provider and is not counted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Messages go through.
    Closed,
    /// No messages until the cool-down is over.
    Open,
    /// One probe is (or may be) under way.
    HalfOpen,
}

impl CircuitState {
    /// Every state, in the order metrics list them.
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];

    /// The name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive connection-level failures that open the circuit.
    pub failures: u32,
    /// How long an open circuit stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// May a send go through this provider now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes.
    Go,
    /// Yes, as the probe that decides whether the circuit closes.
    Probe,
    /// No: the circuit is open (or its probe is under way) for about this long yet.
    Wait(Duration),
}

/// What a breaker shows.
#[derive(Debug, Clone)]
pub struct BreakerView {
    /// The state now.
    pub state: CircuitState,
    /// Connection-level failures in a row.
    pub consecutive_failures: u32,
    /// The last connection-level failure, and when it happened.
    pub last_error: Option<(String, OffsetDateTime)>,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    failures: u32,
    /// Open: until when. Half-open: when the probe was let through (a probe that never reports back
    /// frees the way again after a cool-down).
    since: Instant,
    last_error: Option<(String, OffsetDateTime)>,
}

/// One provider's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                since: Instant::now(),
                last_error: None,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut inner) => f(&mut inner),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether a send may go through now; an open circuit past its cool-down lets one probe through.
    pub fn admit(&self) -> Admission {
        let cooldown = self.settings.cooldown;
        self.with(|inner| {
            let now = Instant::now();
            match inner.state {
                CircuitState::Closed => Admission::Go,
                CircuitState::Open | CircuitState::HalfOpen => {
                    let ready = inner.since + cooldown;
                    if now >= ready {
                        inner.state = CircuitState::HalfOpen;
                        inner.since = now;
                        Admission::Probe
                    } else {
                        Admission::Wait(ready - now)
                    }
                }
            }
        })
    }

    /// The provider answered (a connection was made and the server replied): the circuit closes.
    pub fn succeeded(&self) {
        self.with(|inner| {
            inner.state = CircuitState::Closed;
            inner.failures = 0;
        });
    }

    /// A connection-level failure; returns whether the circuit is open now.
    pub fn failed(&self, error: &str) -> bool {
        let threshold = self.settings.failures.max(1);
        self.with(|inner| {
            inner.failures = inner.failures.saturating_add(1);
            inner.last_error = Some((error.to_owned(), OffsetDateTime::now_utc()));
            // A failed probe reopens the circuit at once; otherwise the threshold decides.
            if inner.state == CircuitState::HalfOpen || inner.failures >= threshold {
                if inner.state != CircuitState::Open {
                    tracing::warn!(error, failures = inner.failures, "provider circuit opened");
                }
                inner.state = CircuitState::Open;
                inner.since = Instant::now();
            }
            inner.state == CircuitState::Open
        })
    }

    /// What it shows now.
    pub fn view(&self) -> BreakerView {
        self.with(|inner| BreakerView {
            state: inner.state,
            consecutive_failures: inner.failures,
            last_error: inner.last_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown: Duration) -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            cooldown,
        })
    }

    #[test]
    fn consecutive_failures_open_the_circuit_and_a_success_resets_the_count() {
        let breaker = breaker(Duration::from_secs(60));
        assert!(!breaker.failed("refused"));
        assert!(!breaker.failed("refused"));
        breaker.succeeded();
        assert!(!breaker.failed("refused"));
        assert!(!breaker.failed("refused"));
        assert_eq!(breaker.admit(), Admission::Go);
        assert!(breaker.failed("refused"));
        assert!(matches!(breaker.admit(), Admission::Wait(_)));
        let view = breaker.view();
        assert_eq!(view.state, CircuitState::Open);
        assert_eq!(view.last_error.unwrap().0, "refused");
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let breaker = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            breaker.failed("timed out");
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(breaker.admit(), Admission::Probe);
        assert!(matches!(breaker.admit(), Admission::Wait(_)), "one probe");
        assert!(breaker.failed("timed out"), "a failed probe reopens");
        assert_eq!(breaker.view().state, CircuitState::Open);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.succeeded();
        assert_eq!(breaker.view().state, CircuitState::Closed);
        assert_eq!(breaker.admit(), Admission::Go);
    }
}
