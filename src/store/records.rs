//! What goes into the store and what comes out of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Envelope, IdempotencyKey, MessageContent, MessageStatus, NewMessage, OutcomeClass,
    RequestFingerprint, Source, TemplateContent, TemplateUse,
};

/// A message to store, with the caller that owns it and its idempotency key.
#[derive(Debug)]
pub struct EnqueueRequest {
    /// The caller's `sub`.
    pub caller: String,
    /// The validated message.
    pub message: NewMessage,
    /// The caller's key and the fingerprint of the request it came with.
    pub idempotency: Option<(IdempotencyKey, RequestFingerprint)>,
}

/// The answer given for an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The message's id.
    pub id: Uuid,
    /// Its status at acceptance.
    pub status: MessageStatus,
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// The message was stored now.
    Created(Accepted),
    /// The same key and request were seen before: this is the first answer again.
    Replayed(Accepted),
    /// The key was used before with a different request.
    KeyReused,
}

/// A message as listed: its state, envelope and labels, without bodies. Times serialize as RFC 3339.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    /// posthorn's id.
    pub id: Uuid,
    /// Current status.
    pub status: MessageStatus,
    /// The `Message-ID` header.
    pub message_id: String,
    /// Addresses and subject.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// Labels.
    pub tags: Vec<String>,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// When it was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its status last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it was scheduled for, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub send_at: Option<OffsetDateTime>,
    /// When it will next be tried, while queued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When the upstream accepted it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// Attempts made so far.
    pub attempt_count: i32,
    /// The reason of the last failed attempt.
    pub last_error: Option<String>,
    /// The way it came in: `api`, `smtp` or `raw`.
    pub source: Source,
    /// The template it was rendered from, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateUse>,
    /// When retention dropped its body (it can no longer be sent again).
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub body_dropped_at: Option<OffsetDateTime>,
    /// Its stream.
    pub stream: crate::domain::Stream,
}

/// A message with its delivery attempts.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// Everything but the attempts.
    pub summary: MessageSummary,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Every event, oldest first.
    pub events: Vec<super::EventRecord>,
}

/// One delivery attempt and the reply that decided it, as recorded and as read back.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: i32,
    /// When the attempt began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// How long it took.
    pub duration_ms: i32,
    /// The upstream it went to.
    pub provider: String,
    /// How it ended.
    pub outcome: OutcomeClass,
    /// The deciding SMTP reply code, if a reply came.
    pub smtp_code: Option<i16>,
    /// The enhanced status code (RFC 3463), if the server sent one.
    pub enhanced_code: Option<String>,
    /// The server's text, or what went wrong when no reply came.
    pub response: Option<String>,
    /// The result for each recipient.
    pub recipients: Vec<RecipientResult>,
    /// Addresses this attempt showed to be bad (a hard bounce), for the suppression list; not stored
    /// with the attempt.
    #[serde(skip)]
    pub hard_bounces: Vec<String>,
}

/// How the upstream answered `RCPT TO` for one recipient (stored as JSON with its attempt).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientResult {
    /// The address.
    pub address: String,
    /// `sent` (accepted and delivered), `transient`, `permanent` or `unknown`.
    pub outcome: OutcomeClass,
    /// The SMTP reply code.
    pub smtp_code: Option<i16>,
    /// The server's text.
    pub response: Option<String>,
    /// Skipped: the address is on the suppression list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suppressed: bool,
}

/// Filters and paging for listings.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this status.
    pub status: Option<MessageStatus>,
    /// Only messages carrying this tag.
    pub tag: Option<String>,
    /// Only messages to this address (in `to`, `cc` or `bcc`; any case).
    pub recipient: Option<String>,
    /// Only messages accepted at or after this time.
    pub created_after: Option<OffsetDateTime>,
    /// Only messages accepted before this time.
    pub created_before: Option<OffsetDateTime>,
    /// Continue after this id (the previous page's `next_cursor`).
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The messages, newest first.
    pub items: Vec<MessageSummary>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<Uuid>,
}

impl Page {
    /// The page of a query that asked for one row more than `limit`: that row, if it came, only says
    /// there is a next page.
    pub(crate) fn from_rows(mut items: Vec<MessageSummary>, limit: u32) -> Self {
        let limit = limit.max(1) as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| last.id)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

impl MessageFilter {
    /// The rows a listing asks for: one more than the page, to learn whether another follows.
    pub(crate) fn rows(&self) -> i64 {
        i64::from(self.limit.max(1)) + 1
    }
}

/// A claimed job's lease: only its holder may record an outcome or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobLease {
    /// The message.
    pub id: Uuid,
    /// The claim that holds it.
    pub token: Uuid,
}

/// A job claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The lease under which it was claimed.
    pub lease: JobLease,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// The stable `Message-ID`.
    pub message_id: String,
    /// The caller that sent it.
    pub caller: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its stream.
    pub stream: crate::domain::Stream,
    /// What to send.
    pub content: MessageContent,
    /// When it was accepted.
    pub created_at: OffsetDateTime,
    /// Recipients left after a partial delivery; `None` means all.
    pub pending_recipients: Option<Vec<String>>,
    /// The job was taken over from a lease that expired: an earlier attempt may have delivered it.
    pub reclaimed: bool,
    /// Its recipients on the suppression list (lower case): skipped.
    pub suppressed: Vec<String>,
    /// Attempts made before this series began (a message put back in the queue starts a new one).
    pub series_base: i32,
    /// When this series began: its acceptance, or when it was put back in the queue.
    pub series_started_at: OffsetDateTime,
}

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Delivered: done.
    Sent,
    /// Try again after `delay`, only to `recipients` when given.
    Retry {
        /// How long to wait.
        delay: std::time::Duration,
        /// The recipients still to be tried; `None` means all.
        recipients: Option<Vec<String>>,
        /// Why it will be retried.
        error: String,
    },
    /// Given up.
    Failed {
        /// Why.
        error: String,
    },
}

impl Disposition {
    /// The status the message takes.
    pub fn status(&self) -> MessageStatus {
        match self {
            Disposition::Sent => MessageStatus::Sent,
            Disposition::Retry { .. } => MessageStatus::Queued,
            Disposition::Failed { .. } => MessageStatus::Failed,
        }
    }

    /// How long until the next attempt, for a retry.
    pub fn retry_delay(&self) -> Option<std::time::Duration> {
        match self {
            Disposition::Retry { delay, .. } => Some(*delay),
            _ => None,
        }
    }

    /// The recipients still to be tried, for a retry of some of them.
    pub fn pending_recipients(&self) -> Option<&[String]> {
        match self {
            Disposition::Retry { recipients, .. } => recipients.as_deref(),
            _ => None,
        }
    }

    /// Why it was retried or given up.
    pub fn error(&self) -> Option<&str> {
        match self {
            Disposition::Sent => None,
            Disposition::Retry { error, .. } | Disposition::Failed { error } => Some(error),
        }
    }
}

/// What `cancel_message` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The message is now cancelled.
    Cancelled,
    /// No such message for this caller.
    NotFound,
    /// The message is past the point of cancelling.
    TooLate(crate::domain::MessageStatus),
}

/// What `reschedule` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescheduleOutcome {
    /// The message is now due at the new time.
    Rescheduled,
    /// No such message for this caller.
    NotFound,
    /// The message has started sending (or is finished): its time can no longer change.
    TooLate(crate::domain::MessageStatus),
}

/// Messages of several items committed together: one transaction, every item or none.
#[derive(Debug)]
pub struct BatchRequest {
    /// The caller's `sub`.
    pub caller: String,
    /// The messages to store, each with its own idempotency key if it has one.
    pub messages: Vec<EnqueueRequest>,
    /// For each item of the request, in order, its index in `messages` (`None`: the item was refused
    /// before it reached the store).
    pub slots: Vec<Option<usize>>,
    /// The key of the whole batch and the fingerprint of the request it came with.
    pub idempotency: Option<(IdempotencyKey, RequestFingerprint)>,
    /// An item whose own key was used before with another request stops the whole batch (strict).
    pub all_or_nothing: bool,
}

/// What `enqueue_batch` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Committed: for each message, in order, what became of it.
    Committed(Vec<EnqueueOutcome>),
    /// The batch's key and request were seen before: for each item, the message it was answered with
    /// then (`None` for an item refused then).
    Replayed(Vec<Option<Uuid>>),
    /// The batch's key was used before with a different request.
    KeyReused,
    /// Items (indexes into `messages`) whose own keys were used before with different requests; with
    /// `all_or_nothing`, nothing was stored.
    ItemKeysReused(Vec<usize>),
}

impl BatchOutcome {
    /// The answer to remember under the batch's key: each item's message id, in request order.
    pub(crate) fn slot_ids(
        slots: &[Option<usize>],
        outcomes: &[EnqueueOutcome],
    ) -> Vec<Option<Uuid>> {
        slots
            .iter()
            .map(|slot| {
                slot.and_then(|index| match outcomes.get(index) {
                    Some(
                        EnqueueOutcome::Created(accepted) | EnqueueOutcome::Replayed(accepted),
                    ) => Some(accepted.id),
                    _ => None,
                })
            })
            .collect()
    }
}

/// A stored version of a template.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateRecord {
    /// Its name.
    pub name: String,
    /// Its version: 1 for the first, one more for each change.
    pub version: i32,
    /// The parts as written.
    #[serde(flatten)]
    pub content: TemplateContent,
    /// The caller that wrote this version.
    pub created_by: String,
    /// When this version was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Which failed messages a redrive puts back in the queue.
#[derive(Debug, Clone, Default)]
pub struct RequeueFilter {
    /// Only this message (and only the owner's, when `owner` is set).
    pub id: Option<Uuid>,
    /// Only this caller's messages.
    pub owner: Option<String>,
    /// Only messages accepted at or after this time.
    pub created_after: Option<OffsetDateTime>,
    /// Only messages accepted before this time.
    pub created_before: Option<OffsetDateTime>,
    /// Only messages carrying this tag.
    pub tag: Option<String>,
    /// Only messages whose last attempt went to this provider.
    pub provider: Option<String>,
}

/// What a redrive did (or, dry, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requeued {
    /// Failed messages put back in the queue.
    pub requeued: u64,
    /// Failed messages that matched but cannot be sent again (retention dropped their bodies).
    pub skipped: u64,
}

/// One batch of a retention pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// Messages whose body was dropped, or which were deleted.
    pub affected: u64,
    /// Where the pass goes on (more may be due), or `None` when it is over.
    pub resume: Option<Uuid>,
    /// The first message this batch looked at and kept (not finished long enough): the next pass need
    /// not look before it.
    pub first_kept: Option<Uuid>,
}

/// What erasing a recipient's data did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Messages to that recipient alone, deleted with their attempts.
    pub removed: u64,
    /// Messages with other recipients too, kept with that address taken out.
    pub redacted: u64,
}

/// An address on the suppression list.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressionRecord {
    /// The address, in lower case.
    pub address: String,
    /// Why.
    pub reason: crate::domain::SuppressionReason,
    /// The message whose bounce or complaint added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    /// What the report said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Which suppressions a listing shows.
#[derive(Debug, Clone, Default)]
pub struct SuppressionFilter {
    /// Only this address.
    pub address: Option<String>,
    /// Only this reason.
    pub reason: Option<crate::domain::SuppressionReason>,
    /// Continue after this address (the previous page's `next_cursor`).
    pub after: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A page of the suppression list, by address.
#[derive(Debug, Clone)]
pub struct SuppressionPage {
    /// The entries.
    pub items: Vec<SuppressionRecord>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// An entry to add to the suppression list.
#[derive(Debug, Clone)]
pub struct NewSuppression {
    /// The address (any case; kept in lower case).
    pub address: String,
    /// Why.
    pub reason: crate::domain::SuppressionReason,
    /// The message whose bounce or complaint shows it.
    pub message_id: Option<Uuid>,
    /// What the report said.
    pub detail: Option<String>,
}

impl AttemptRecord {
    /// The suppression entries this attempt adds: its hard bounces, with the reply that showed each.
    pub(crate) fn suppressions(&self, message_id: Uuid) -> Vec<NewSuppression> {
        self.hard_bounces
            .iter()
            .map(|address| NewSuppression {
                address: address.to_lowercase(),
                reason: crate::domain::SuppressionReason::HardBounce,
                message_id: Some(message_id),
                detail: self
                    .recipients
                    .iter()
                    .find(|r| r.address.eq_ignore_ascii_case(address))
                    .and_then(|r| r.response.clone())
                    .or_else(|| self.response.clone()),
            })
            .collect()
    }
}
