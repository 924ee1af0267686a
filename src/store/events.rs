//! Which events a change writes, and the cursor readers follow. Both engines write the events these
//! functions derive, in the same transaction as the change.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::records::{AttemptRecord, Disposition};
use crate::domain::{EventType, NewMessage, OutcomeClass};

/// An event to write with a change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The message it is about.
    pub message_id: Uuid,
    /// What happened.
    pub kind: EventType,
    /// The recipient, where the event is about one.
    pub recipient: Option<String>,
    /// What else there is to know: the SMTP reply, the reason, the next attempt.
    pub data: Value,
}

/// A stored event as readers see it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// `evt_` and its number: stable, unique, the `webhook-id` of its deliveries.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// `message_id`, `caller`, `recipient` where it applies, and what the change adds.
    pub data: Value,
    /// Where a reader that has seen this event goes on.
    #[serde(skip)]
    pub cursor: EventCursor,
}

impl EventRecord {
    /// An event read back: the stored data with the message, its caller and the recipient added.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        number: i64,
        cursor: EventCursor,
        kind: EventType,
        message_id: Uuid,
        caller: String,
        recipient: Option<String>,
        data: Value,
        created_at: OffsetDateTime,
    ) -> Self {
        let mut fields = match data {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        fields.insert("message_id".into(), json!(message_id));
        fields.insert("caller".into(), json!(caller));
        if let Some(recipient) = recipient {
            fields.insert("recipient".into(), json!(recipient));
        }
        Self {
            id: format!("evt_{number}"),
            kind,
            created_at,
            data: Value::Object(fields),
            cursor,
        }
    }
}

/// A position in the event feed: after the events of transaction `txid` up to event `id`. On SQLite,
/// where events commit in id order, `txid` is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    /// The transaction.
    pub txid: u64,
    /// The event.
    pub id: i64,
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.txid, self.id)
    }
}

/// The text is not a cursor this API gave.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API returned")]
pub struct BadCursor;

impl FromStr for EventCursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, BadCursor> {
        let (txid, id) = text.split_once('-').ok_or(BadCursor)?;
        // Digits only: no signs, no spaces.
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(txid) || !digits(id) {
            return Err(BadCursor);
        }
        Ok(Self {
            txid: txid.parse().map_err(|_| BadCursor)?,
            id: id.parse().map_err(|_| BadCursor)?,
        })
    }
}

/// Which events a feed reads.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this caller's messages.
    pub owner: Option<String>,
    /// Only these kinds (all when empty).
    pub types: Vec<EventType>,
    /// Only this message's events.
    pub message_id: Option<Uuid>,
    /// Only events after this position.
    pub after: Option<EventCursor>,
    /// Page size.
    pub limit: u32,
}

/// A page of the feed.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events, in feed order.
    pub items: Vec<EventRecord>,
    /// Where the next page starts: after the last event given, or where the request started.
    pub next_cursor: EventCursor,
}

/// The events of accepting a message: accepted, and scheduled when it is due later.
pub fn for_accept(message: &NewMessage, now: OffsetDateTime) -> Vec<NewEvent> {
    let mut events = vec![NewEvent {
        message_id: message.id,
        kind: EventType::Accepted,
        recipient: None,
        data: json!({ "source": message.source }),
    }];
    if let Some(at) = message.send_at.filter(|at| *at > now) {
        events.push(scheduled(message.id, at));
    }
    events
}

/// The event of a message moved to `at`.
pub fn scheduled(message_id: Uuid, at: OffsetDateTime) -> NewEvent {
    NewEvent {
        message_id,
        kind: EventType::Scheduled,
        recipient: None,
        data: json!({ "send_at": rfc3339(at) }),
    }
}

/// The event of a cancelled message.
pub fn cancelled(message_id: Uuid) -> NewEvent {
    NewEvent {
        message_id,
        kind: EventType::Cancelled,
        recipient: None,
        data: json!({}),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The events of an attempt's outcome: per recipient where the upstream answered per recipient (sent,
/// delayed with the next attempt's time, or failed with the reason), else one for the message.
pub fn for_outcome(
    message_id: Uuid,
    attempt: &AttemptRecord,
    disposition: &Disposition,
    now: OffsetDateTime,
) -> Vec<NewEvent> {
    let next_attempt = disposition
        .retry_delay()
        .and_then(|delay| time::Duration::try_from(delay).ok())
        .map(|delay| rfc3339(now + delay));
    let event = |kind: EventType,
                 recipient: Option<&str>,
                 code: Option<i16>,
                 enhanced: Option<&str>,
                 response: Option<&str>| {
        let mut data = Map::new();
        data.insert("attempt".into(), json!(attempt.attempt));
        data.insert("provider".into(), json!(attempt.provider));
        if code.is_some() || response.is_some() {
            data.insert(
                "smtp".into(),
                json!({ "code": code, "enhanced_code": enhanced, "response": response }),
            );
        }
        match kind {
            EventType::DeliveryDelayed => {
                data.insert("next_attempt_at".into(), json!(next_attempt));
            }
            EventType::Suppressed => {
                data.insert("reason".into(), json!("suppressed"));
            }
            EventType::Failed => {
                let reason = disposition
                    .error()
                    .map(str::to_owned)
                    .or_else(|| response.map(str::to_owned));
                data.insert("reason".into(), json!(reason));
            }
            _ => {}
        }
        NewEvent {
            message_id,
            kind,
            recipient: recipient.map(str::to_owned),
            data: Value::Object(data),
        }
    };
    let unfinished = match disposition {
        Disposition::Retry { .. } => EventType::DeliveryDelayed,
        _ => EventType::Failed,
    };
    if attempt.recipients.is_empty() {
        let kind = match disposition {
            Disposition::Sent => EventType::Sent,
            Disposition::Retry { .. } => EventType::DeliveryDelayed,
            Disposition::Failed { .. } => EventType::Failed,
        };
        return vec![event(
            kind,
            None,
            attempt.smtp_code,
            attempt.enhanced_code.as_deref(),
            attempt.response.as_deref(),
        )];
    }
    let mut events: Vec<NewEvent> = attempt
        .recipients
        .iter()
        .map(|result| {
            let kind = match result.outcome {
                _ if result.suppressed => EventType::Suppressed,
                OutcomeClass::Sent => EventType::Sent,
                OutcomeClass::Permanent => EventType::Failed,
                OutcomeClass::Transient | OutcomeClass::Unknown => unfinished,
            };
            // A recipient that shared the message's fate (accepted at RCPT) was decided by the reply
            // that decided the message; one refused at RCPT, by its own.
            let (code, enhanced, response) = if result.outcome == attempt.outcome {
                (
                    attempt.smtp_code,
                    attempt.enhanced_code.as_deref(),
                    attempt.response.as_deref(),
                )
            } else {
                (result.smtp_code, None, result.response.as_deref())
            };
            event(kind, Some(&result.address), code, enhanced, response)
        })
        .collect();
    // Nobody left to send to: the message itself fails, for that reason.
    if matches!(disposition, Disposition::Failed { .. })
        && attempt.recipients.iter().all(|result| result.suppressed)
    {
        let mut failed = event(EventType::Failed, None, None, None, None);
        failed.data["reason"] = json!("suppressed");
        events.push(failed);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_nothing_else() {
        let cursor = EventCursor { txid: 812, id: 45 };
        assert_eq!(cursor.to_string().parse::<EventCursor>(), Ok(cursor));
        for bad in [
            "", "5", "5-", "-5", "5--1", "+5-1", "5-+1", " 5-1", "5-1x", "a-b",
        ] {
            assert!(bad.parse::<EventCursor>().is_err(), "{bad:?}");
        }
    }
}
