//! Fault injection, one file per family: the database restarted under load or down at start, an
//! upstream that refuses connections, `kill -9` at each point of a send, a storm of one idempotency
//! key, a long-held snapshot, and secrets that must never leak. Every test is bounded in time and uses
//! loopback only.

mod idempotency_storm;
mod kill9;
mod postgres_down;
mod postgres_restart;
mod secrets;
mod snapshot;
mod upstream_refusing;

use posthorn::auth::Scope;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::process;
use crate::support::smtp::SmtpServer;

/// A send+read token for the test secret.
pub(crate) fn token() -> String {
    process::token("faults", &[Scope::Send, Scope::Read])
}

pub(crate) fn rfc3339(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339")
}

/// How many messages the server received with this Message-ID.
pub(crate) fn copies(smtp: &SmtpServer, message_id: &str) -> usize {
    smtp.received()
        .iter()
        .filter(|mail| mail.header("Message-ID").as_deref() == Some(message_id))
        .count()
}
