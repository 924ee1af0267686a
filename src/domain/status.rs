//! The life cycle of a message.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a message is in its life: `queued` → `sending` → `sent` | `failed`, or `cancelled` while queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Stored and waiting until it is due (or due for a retry).
    Queued,
    /// Claimed by a worker; an attempt is under way.
    Sending,
    /// The upstream accepted it.
    Sent,
    /// Permanently refused, or out of attempts.
    Failed,
    /// Cancelled by the caller before sending began.
    Cancelled,
}

impl MessageStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [MessageStatus; 5] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Failed,
        MessageStatus::Cancelled,
    ];

    /// The lower-case name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Failed => "failed",
            MessageStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a status name.
#[derive(Debug, thiserror::Error)]
#[error("unknown status `{0}` (expected queued, sending, sent, failed or cancelled)")]
pub struct UnknownStatus(String);

impl FromStr for MessageStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}
