//! What the store keeps for webhooks: endpoints, deliveries (one per event and endpoint) and their
//! attempts.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::events::EventRecord;
use crate::domain::EventType;

/// A webhook endpoint as shown (its secret never is, but once at creation and rotation).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointRecord {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// What it is for.
    pub description: String,
    /// Event types delivered to it; empty: all.
    pub events: Vec<EventType>,
    /// Callers whose messages' events it receives; empty: every caller's.
    pub callers: Vec<String>,
    /// Whether deliveries go out.
    pub enabled: bool,
    /// Why it was disabled, when it was by posthorn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When deliveries began to fail, while they do.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An endpoint to create.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// What it is for.
    pub description: String,
    /// Event types; empty: all.
    pub events: Vec<EventType>,
    /// Callers; empty: all.
    pub callers: Vec<String>,
    /// `whsec_` and base64 of the key.
    pub secret: String,
}

/// A change to an endpoint: each field given replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    /// A new URL.
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New event types.
    pub events: Option<Vec<EventType>>,
    /// New callers.
    pub callers: Option<Vec<String>>,
    /// Enable (clearing why it was disabled and its failing streak) or disable.
    pub enabled: Option<bool>,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub id: i64,
    /// The claim that holds it.
    pub token: Uuid,
    /// Its endpoint.
    pub endpoint_id: Uuid,
    /// Where it goes.
    pub url: String,
    /// The secrets to sign with: the current one, and the previous one while it is still honoured.
    pub secrets: Vec<String>,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// What is delivered.
    pub event: EventRecord,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub attempt: i32,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency_ms: u32,
    /// What went wrong, when it did.
    pub error: Option<String>,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The endpoint answered 2xx.
    Succeeded,
    /// It failed; try again after this long.
    Retry(Duration),
    /// It failed, and the schedule is spent.
    Failed,
    /// The endpoint answered 410: it is disabled, and the delivery fails.
    Gone,
}

/// A delivery as shown.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    /// The delivery's id.
    pub id: i64,
    /// The event delivered (`evt_...`, its `webhook-id`).
    pub event_id: String,
    /// Its type.
    pub event_type: EventType,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// When it is tried next, while pending.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// Which events a replay sends again.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Events written at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Events written before this time.
    pub until: Option<OffsetDateTime>,
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
}

/// Whether an endpoint takes an event: its type and its caller are among the endpoint's (or the
/// endpoint takes all).
pub fn takes(
    endpoint_events: &[String],
    endpoint_callers: &[String],
    kind: &str,
    caller: &str,
) -> bool {
    (endpoint_events.is_empty() || endpoint_events.iter().any(|wanted| wanted == kind))
        && (endpoint_callers.is_empty() || endpoint_callers.iter().any(|wanted| wanted == caller))
}
