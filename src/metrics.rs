//! One registry, named metrics. Names follow Prometheus conventions: `posthorn_*`, counters end in
//! `_total`, durations in `_seconds`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Requests the HTTP server refused before any route saw them (they do not parse as HTTP, or a client
/// stalled its request head). Counted where the server logs them, which is process-wide, so the one
/// counter is registered in every registry.
static MALFORMED_REQUESTS: LazyLock<Result<IntCounter, prometheus::Error>> = LazyLock::new(|| {
    IntCounter::new(
        "posthorn_http_malformed_requests_total",
        "Requests refused before routing because they were not well-formed HTTP (or arrived too slowly).",
    )
});

/// Counts one malformed request.
pub fn count_malformed_request() {
    if let Ok(counter) = &*MALFORMED_REQUESTS {
        counter.inc();
    }
}

/// Every metric posthorn exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages accepted by the API (committed to the queue).
    pub messages_accepted: IntCounter,
    /// Requests answered from an idempotency record instead of creating a message.
    pub idempotent_replays: IntCounter,
    /// Requests refused with 429 by the per-caller rate limit.
    pub rate_limited: IntCounter,
    /// Messages the upstream accepted.
    pub messages_sent: IntCounter,
    /// Messages that failed for good.
    pub messages_failed: IntCounter,
    /// Attempts that ended in a scheduled retry.
    pub messages_retried: IntCounter,
    /// Attempts by provider and outcome class.
    pub delivery_attempts: IntCounterVec,
    /// Deciding SMTP reply codes by provider (`none` when no reply came).
    pub smtp_replies: IntCounterVec,
    /// Sends that may have delivered a message twice: unknown outcomes retried, expired leases taken over.
    pub possible_duplicates: IntCounter,
    /// Outcomes not recorded because another worker had taken the job over.
    pub leases_lost: IntCounter,
    /// Time from acceptance to the upstream's acceptance.
    pub delivery_duration: Histogram,
    /// Time one claim statement takes (its commit included): when it nears the time the senders take
    /// to work through a batch, they wait for work.
    pub claim_duration: Histogram,
    /// Unfinished messages by state, computed at scrape time.
    pub queue_depth: IntGaugeVec,
    /// SMTP connections per provider: `open`, `in_use`, `max`.
    pub smtp_connections: IntGaugeVec,
    /// Each provider's circuit: 1 for its current state, 0 for the others.
    pub provider_circuit_state: IntGaugeVec,
    /// Messages that waited for a slot of their provider's rate limit.
    pub provider_throttled: IntCounterVec,
    /// Posts to public forms by form and outcome: `accepted`, `trapped` (honeypot), `origin_refused`,
    /// `rate_limited`, `captcha_failed`, `refused`.
    pub form_posts: IntCounterVec,
    /// SMTP submission sessions by how they ended.
    pub submission_sessions: IntCounterVec,
    /// Messages submitted over SMTP by result: `accepted`, `replayed`, `refused`, `deferred`.
    pub submission_messages: IntCounterVec,
    /// Refusals of SMTP submission by reason (each with its reply code; see the README).
    pub submission_refusals: IntCounterVec,
    /// Work of the retention tasks: `bodies_dropped`, `messages_deleted`.
    pub retention: IntCounterVec,
    /// Failed messages put back in the queue by a retry or a redrive.
    pub messages_requeued: IntCounter,
    /// Webhook delivery attempts by outcome: `succeeded`, `failed`.
    pub webhook_deliveries: IntCounterVec,
    /// Webhook deliveries not yet delivered (or given up), read at scrape time.
    pub webhook_backlog: IntGauge,
    /// Bounce and complaint reports by source and result (`recorded`, `unmatched`, `malformed`).
    pub reports: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(counter.clone()))?;
                Ok(counter)
            };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(gauge.clone()))?;
                Ok(gauge)
            };
        let delivery_duration = Histogram::with_opts(
            HistogramOpts::new(
                "posthorn_delivery_duration_seconds",
                "Time from acceptance by the API to acceptance by the upstream.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                3600.0, 14400.0, 86400.0,
            ]),
        )?;
        registry.register(Box::new(delivery_duration.clone()))?;
        let claim_duration = Histogram::with_opts(
            HistogramOpts::new(
                "posthorn_claim_duration_seconds",
                "Time one claim of due jobs takes, from the statement to its commit.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(claim_duration.clone()))?;
        match &*MALFORMED_REQUESTS {
            Ok(counter) => registry.register(Box::new(counter.clone()))?,
            Err(error) => return Err(prometheus::Error::Msg(error.to_string())),
        }
        Ok(Self {
            messages_accepted: counter(
                "posthorn_messages_accepted_total",
                "Messages accepted by the API and committed to the queue.",
            )?,
            idempotent_replays: counter(
                "posthorn_idempotent_replays_total",
                "Send requests answered by replaying an earlier response for the same Idempotency-Key.",
            )?,
            rate_limited: counter(
                "posthorn_rate_limited_total",
                "Requests refused with 429 by the per-caller rate limit.",
            )?,
            messages_sent: counter(
                "posthorn_messages_sent_total",
                "Messages accepted by the upstream.",
            )?,
            messages_failed: counter(
                "posthorn_messages_failed_total",
                "Messages that failed permanently or ran out of attempts.",
            )?,
            messages_retried: counter(
                "posthorn_messages_retried_total",
                "Delivery attempts that ended in a scheduled retry.",
            )?,
            delivery_attempts: counter_vec(
                "posthorn_delivery_attempts_total",
                "Delivery attempts by provider and outcome (sent, transient, permanent, unknown).",
                &["provider", "outcome"],
            )?,
            smtp_replies: counter_vec(
                "posthorn_smtp_replies_total",
                "Deciding SMTP reply codes by provider (none: no reply).",
                &["provider", "code"],
            )?,
            possible_duplicates: counter(
                "posthorn_possible_duplicates_total",
                "Sends that may have delivered a message twice (unknown outcome after DATA, or a job taken over after its lease expired).",
            )?,
            leases_lost: counter(
                "posthorn_leases_lost_total",
                "Outcomes not recorded because the job's lease had expired and another worker held it.",
            )?,
            delivery_duration,
            claim_duration,
            queue_depth: gauge_vec(
                "posthorn_queue_depth",
                "Unfinished messages by state (queued: due; scheduled: due later; sending).",
                &["status"],
            )?,
            smtp_connections: gauge_vec(
                "posthorn_smtp_connections",
                "SMTP connections per provider (state: open, in_use, max).",
                &["provider", "state"],
            )?,
            form_posts: counter_vec(
                "posthorn_form_posts_total",
                "Posts to public forms by form and outcome (accepted, trapped, origin_refused, rate_limited, captcha_failed, refused).",
                &["form", "outcome"],
            )?,
            provider_throttled: counter_vec(
                "posthorn_provider_throttled_total",
                "Messages that waited for a slot of their provider's rate limit, by provider.",
                &["provider"],
            )?,
            provider_circuit_state: gauge_vec(
                "posthorn_provider_circuit_state",
                "Each provider's circuit in this process: 1 for its state (closed, open, half_open), 0 for the others.",
                &["provider", "state"],
            )?,
            submission_sessions: counter_vec(
                "posthorn_submission_sessions_total",
                "SMTP submission sessions by how they ended (quit, closed, timeout, too_many_errors, tls_failed, shutdown, refused).",
                &["result"],
            )?,
            submission_messages: counter_vec(
                "posthorn_submission_messages_total",
                "Messages submitted over SMTP by result (accepted, replayed, refused, deferred).",
                &["result"],
            )?,
            submission_refusals: counter_vec(
                "posthorn_submission_refusals_total",
                "SMTP submission refusals by reason.",
                &["reason"],
            )?,
            retention: counter_vec(
                "posthorn_retention_total",
                "Finished messages retention has dropped the bodies of (bodies_dropped) or deleted (messages_deleted).",
                &["action"],
            )?,
            messages_requeued: counter(
                "posthorn_messages_requeued_total",
                "Failed messages put back in the queue by a retry or a redrive.",
            )?,
            webhook_deliveries: counter_vec(
                "posthorn_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (succeeded: 2xx; failed: anything else).",
                &["outcome"],
            )?,
            reports: counter_vec(
                "posthorn_reports_total",
                "Bounce and complaint reports by source (mail, ses, postmark) and result (recorded, unmatched, malformed).",
                &["source", "result"],
            )?,
            webhook_backlog: {
                let gauge = IntGauge::new(
                    "posthorn_webhook_backlog",
                    "Webhook deliveries pending (due now or retrying later).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            registry,
        })
    }

    /// The registry, for collectors that register themselves (HTTP metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }
}
