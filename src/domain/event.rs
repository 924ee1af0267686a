//! Events: what happened to a message, one row per change, written in the same transaction as the
//! change itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::status::UnknownStatus;

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// The message was accepted (committed to the queue).
    #[serde(rename = "email.accepted")]
    Accepted,
    /// It is due later than now (at acceptance, or moved).
    #[serde(rename = "email.scheduled")]
    Scheduled,
    /// The upstream took it (for a recipient).
    #[serde(rename = "email.sent")]
    Sent,
    /// A transient failure: another attempt is due.
    #[serde(rename = "email.delivery_delayed")]
    DeliveryDelayed,
    /// It failed for good (for a recipient).
    #[serde(rename = "email.failed")]
    Failed,
    /// A bounce arrived after the upstream had taken it.
    #[serde(rename = "email.bounced")]
    Bounced,
    /// A recipient marked it as spam.
    #[serde(rename = "email.complained")]
    Complained,
    /// A recipient on the suppression list was skipped.
    #[serde(rename = "email.suppressed")]
    Suppressed,
    /// It was cancelled before sending began.
    #[serde(rename = "email.cancelled")]
    Cancelled,
}

impl EventType {
    /// Every kind.
    pub const ALL: [EventType; 9] = [
        EventType::Accepted,
        EventType::Scheduled,
        EventType::Sent,
        EventType::DeliveryDelayed,
        EventType::Failed,
        EventType::Bounced,
        EventType::Complained,
        EventType::Suppressed,
        EventType::Cancelled,
    ];

    /// The name used in the API, webhooks and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Accepted => "email.accepted",
            EventType::Scheduled => "email.scheduled",
            EventType::Sent => "email.sent",
            EventType::DeliveryDelayed => "email.delivery_delayed",
            EventType::Failed => "email.failed",
            EventType::Bounced => "email.bounced",
            EventType::Complained => "email.complained",
            EventType::Suppressed => "email.suppressed",
            EventType::Cancelled => "email.cancelled",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownStatus::new(text, "an event type such as email.sent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in EventType::ALL {
            assert_eq!(kind.as_str().parse::<EventType>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("email.opened".parse::<EventType>().is_err());
    }
}
