//! Per-caller token buckets: each caller may make `rate` requests per second on average, with bursts of
//! up to `burst`. A small hand-written bucket rather than a crate, because the answer needs the numbers
//! a client is told (remaining requests, seconds until the next one) and per-caller quotas.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A quota: sustained requests per second and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Tokens added per second; 0 means unlimited.
    pub per_second: f64,
    /// Bucket size: the most requests allowed at once.
    pub burst: u32,
}

impl Quota {
    fn unlimited(&self) -> bool {
        self.per_second <= 0.0 || self.burst == 0
    }
}

/// The state of a caller's bucket after a request was let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowed {
    /// The bucket size.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

/// A refused request: when to try again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    /// The bucket size.
    pub limit: u32,
    /// Seconds until one request is allowed again (at least 1).
    pub retry_after: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The quotas: one for every caller, and some callers' own.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The quota of callers without one of their own.
    pub default: Quota,
    /// Quotas by caller `sub`.
    pub callers: HashMap<String, Quota>,
}

/// Buckets for every caller seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    default: Quota,
    overrides: HashMap<String, Quota>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before full (idle) ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter with a default quota and per-caller overrides.
    pub fn new(settings: RateLimitSettings) -> Self {
        Self {
            default: settings.default,
            overrides: settings.callers,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn quota(&self, caller: &str) -> Quota {
        self.overrides.get(caller).copied().unwrap_or(self.default)
    }

    /// Takes one token from `caller`'s bucket, or says when one will be there.
    pub fn check(&self, caller: &str) -> Result<Option<Allowed>, Limited> {
        self.check_at(caller, Instant::now())
    }

    fn check_at(&self, caller: &str, now: Instant) -> Result<Option<Allowed>, Limited> {
        let quota = self.quota(caller);
        if quota.unlimited() {
            return Ok(None);
        }
        let capacity = f64::from(quota.burst);
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; limiting is not worth failing requests over.
            return Ok(None);
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(caller) {
            buckets.retain(|name, bucket| {
                let quota = self.overrides.get(name).copied().unwrap_or(self.default);
                refill(bucket, quota, now) < f64::from(quota.burst)
            });
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let tokens = refill(bucket, quota, now);
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / quota.per_second;
            return Err(Limited {
                limit: quota.burst,
                retry_after: (wait.ceil() as u64).max(1),
            });
        }
        bucket.tokens = tokens - 1.0;
        Ok(Some(Allowed {
            limit: quota.burst,
            remaining: bucket.tokens.floor() as u32,
            reset: ((capacity - bucket.tokens) / quota.per_second).ceil() as u64,
        }))
    }
}

/// Adds the tokens earned since the last update; returns the new count.
fn refill(bucket: &mut Bucket, quota: Quota, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated);
    bucket.tokens =
        (bucket.tokens + elapsed.as_secs_f64() * quota.per_second).min(f64::from(quota.burst));
    bucket.updated = now;
    bucket.tokens
}

impl Quota {
    /// A quota from configuration values.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(RateLimitSettings {
            default: Quota::new(2.0, 3),
            callers: HashMap::new(),
        });
        let start = Instant::now();
        for remaining in [2, 1, 0] {
            assert_eq!(
                limiter.check_at("a", start).unwrap().unwrap().remaining,
                remaining
            );
        }
        let limited = limiter.check_at("a", start).unwrap_err();
        assert_eq!(limited.retry_after, 1);
        assert!(
            limiter.check_at("b", start).is_ok(),
            "buckets are per caller"
        );
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(500))
                .is_ok(),
            "one token after 0.5 s"
        );
        assert!(
            limiter
                .check_at("a", start + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn overrides_and_unlimited() {
        let limiter = RateLimiter::new(RateLimitSettings {
            default: Quota::new(0.0, 0),
            callers: HashMap::from([("tight".to_owned(), Quota::new(1.0, 1))]),
        });
        let now = Instant::now();
        assert_eq!(limiter.check_at("anyone", now), Ok(None));
        assert!(limiter.check_at("tight", now).is_ok());
        assert!(limiter.check_at("tight", now).is_err());
    }
}

/// So many per period: a provider's messages (`rate_limit = "14/s"`) or a form's posts per visitor
/// (`rate_limit_per_ip = "5/m"`).
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

    /// The time between two.
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

#[cfg(test)]
mod rate_limit_tests {
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
