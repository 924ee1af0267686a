//! One registry, named metrics. Names follow Prometheus conventions: `posthorn_*`, counters end in
//! `_total`, durations in `_seconds`.

use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

/// Every metric posthorn exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages accepted by the API (committed to the queue).
    pub messages_accepted: IntCounter,
    /// Requests answered from an idempotency record instead of creating a message.
    pub idempotent_replays: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let messages_accepted = IntCounter::new(
            "posthorn_messages_accepted_total",
            "Messages accepted by the API and committed to the queue.",
        )?;
        let idempotent_replays = IntCounter::new(
            "posthorn_idempotent_replays_total",
            "Send requests answered by replaying an earlier response for the same Idempotency-Key.",
        )?;
        registry.register(Box::new(messages_accepted.clone()))?;
        registry.register(Box::new(idempotent_replays.clone()))?;
        Ok(Self {
            registry,
            messages_accepted,
            idempotent_replays,
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
