//! The JSON shapes of messages in responses. Times are RFC 3339.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Mailbox, MessageStatus};
use crate::store::{AttemptRecord, MessageRecord, MessageSummary, Page, RecipientResult};

/// A message as listed.
#[derive(Serialize)]
pub struct MessageView {
    id: Uuid,
    status: MessageStatus,
    message_id: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    reply_to: Vec<Mailbox>,
    subject: String,
    tags: Vec<String>,
    metadata: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    send_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
    attempt_count: i32,
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

/// One delivery attempt.
#[derive(Serialize)]
pub struct AttemptView {
    attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    duration_ms: i32,
    provider: String,
    outcome: String,
    smtp_code: Option<i16>,
    enhanced_code: Option<String>,
    response: Option<String>,
    recipients: Vec<RecipientResult>,
}

/// A page of messages.
#[derive(Serialize)]
pub struct PageView {
    items: Vec<MessageView>,
    next_cursor: Option<String>,
}

impl MessageView {
    fn from_summary(summary: MessageSummary, attempts: Option<Vec<AttemptView>>) -> Self {
        Self {
            id: summary.id,
            status: summary.status,
            message_id: summary.message_id,
            from: summary.from,
            to: summary.to,
            cc: summary.cc,
            bcc: summary.bcc,
            reply_to: summary.reply_to,
            subject: summary.subject,
            tags: summary.tags,
            metadata: summary.metadata,
            created_at: summary.created_at,
            updated_at: summary.updated_at,
            send_at: summary.send_at,
            next_attempt_at: summary.next_attempt_at,
            sent_at: summary.sent_at,
            attempt_count: summary.attempt_count,
            last_error: summary.last_error,
            attempts,
        }
    }
}

impl From<MessageRecord> for MessageView {
    fn from(record: MessageRecord) -> Self {
        let attempts = record.attempts.into_iter().map(AttemptView::from).collect();
        Self::from_summary(record.summary, Some(attempts))
    }
}

impl From<AttemptRecord> for AttemptView {
    fn from(attempt: AttemptRecord) -> Self {
        Self {
            attempt: attempt.attempt,
            started_at: attempt.started_at,
            duration_ms: attempt.duration_ms,
            provider: attempt.provider,
            outcome: attempt.outcome,
            smtp_code: attempt.smtp_code,
            enhanced_code: attempt.enhanced_code,
            response: attempt.response,
            recipients: attempt.recipients,
        }
    }
}

impl From<Page> for PageView {
    fn from(page: Page) -> Self {
        Self {
            items: page
                .items
                .into_iter()
                .map(|summary| MessageView::from_summary(summary, None))
                .collect(),
            next_cursor: page.next_cursor.map(|id| id.simple().to_string()),
        }
    }
}
