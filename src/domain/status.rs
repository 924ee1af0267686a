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

/// The text is not a status (or outcome) name.
#[derive(Debug, thiserror::Error)]
#[error("unknown status `{found}` (expected {expected})")]
pub struct UnknownStatus {
    found: String,
    expected: &'static str,
}

impl UnknownStatus {
    /// `found` is not one of `expected`.
    pub fn new(found: &str, expected: &'static str) -> Self {
        Self {
            found: found.to_owned(),
            expected,
        }
    }
}

impl FromStr for MessageStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                found: s.to_owned(),
                expected: "queued, sending, sent, failed or cancelled",
            })
    }
}

/// The way a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `POST /v1/send` (JSON).
    Api,
    /// SMTP submission.
    Smtp,
    /// `POST /v1/send/raw` (a complete RFC 5322 message).
    Raw,
    /// `POST /v1/forms/{id}` (a visitor's post to a contact form).
    Form,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [Source::Api, Source::Smtp, Source::Raw, Source::Form];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Smtp => "smtp",
            Source::Raw => "raw",
            Source::Form => "form",
        }
    }
}

impl FromStr for Source {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                found: s.to_owned(),
                expected: "api, smtp, raw or form",
            })
    }
}

/// How one delivery attempt (or one recipient of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeClass {
    /// 2xx after DATA (or, for a recipient, 2xx to RCPT).
    Sent,
    /// 4xx, timeouts and dropped connections before the end of DATA: retry.
    Transient,
    /// 5xx: do not retry.
    Permanent,
    /// The reply after the final dot never came: the upstream may have the message (RFC 1047).
    Unknown,
}

impl OutcomeClass {
    /// Every class.
    pub const ALL: [OutcomeClass; 4] = [
        OutcomeClass::Sent,
        OutcomeClass::Transient,
        OutcomeClass::Permanent,
        OutcomeClass::Unknown,
    ];

    /// The label used in attempt records, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Sent => "sent",
            OutcomeClass::Transient => "transient",
            OutcomeClass::Permanent => "permanent",
            OutcomeClass::Unknown => "unknown",
        }
    }
}

impl FromStr for OutcomeClass {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|class| class.as_str() == s)
            .ok_or_else(|| UnknownStatus {
                found: s.to_owned(),
                expected: "sent, transient, permanent or unknown",
            })
    }
}
