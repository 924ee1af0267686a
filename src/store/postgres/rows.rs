//! Mapping between rows and records.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::domain::{Attachment, CustomHeader, Mailbox, MessageContent, MessageStatus};
use crate::store::StoreError;
use crate::store::records::{AttemptRecord, MessageSummary, RecipientResult};

/// The columns [`summary`] reads.
pub(super) const SUMMARY_COLUMNS: &str = "id, status, message_id, envelope, tags, metadata, created_at, \
     updated_at, send_at, due_at, sent_at, attempt_count, last_error";

/// Addresses and subject: what listings show.
#[derive(Serialize, Deserialize)]
pub(super) struct Envelope {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
}

/// Bodies, headers and attachments: what delivery needs besides the envelope.
#[derive(Serialize, Deserialize)]
pub(super) struct Body {
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<CustomHeader>,
    pub attachments: Vec<Attachment>,
}

/// Splits a message into its envelope and body columns.
pub(super) fn split_content(
    content: &MessageContent,
) -> Result<(serde_json::Value, serde_json::Value), StoreError> {
    #[derive(Serialize)]
    struct EnvelopeRef<'a> {
        from: &'a Mailbox,
        to: &'a [Mailbox],
        cc: &'a [Mailbox],
        bcc: &'a [Mailbox],
        reply_to: &'a [Mailbox],
        subject: &'a str,
    }
    #[derive(Serialize)]
    struct BodyRef<'a> {
        text: &'a Option<String>,
        html: &'a Option<String>,
        headers: &'a [CustomHeader],
        attachments: &'a [Attachment],
    }
    let envelope = serde_json::to_value(EnvelopeRef {
        from: &content.from,
        to: &content.to,
        cc: &content.cc,
        bcc: &content.bcc,
        reply_to: &content.reply_to,
        subject: &content.subject,
    })?;
    let body = serde_json::to_value(BodyRef {
        text: &content.text,
        html: &content.html,
        headers: &content.headers,
        attachments: &content.attachments,
    })?;
    Ok((envelope, body))
}

/// Joins the envelope and body columns back into a message.
pub(super) fn join_content(envelope: Envelope, body: Body) -> MessageContent {
    MessageContent {
        from: envelope.from,
        to: envelope.to,
        cc: envelope.cc,
        bcc: envelope.bcc,
        reply_to: envelope.reply_to,
        subject: envelope.subject,
        text: body.text,
        html: body.html,
        headers: body.headers,
        attachments: body.attachments,
    }
}

fn status(row: &PgRow) -> Result<MessageStatus, StoreError> {
    let text: String = row.try_get("status")?;
    text.parse()
        .map_err(|error: crate::domain::UnknownStatusError| StoreError::Corrupt(error.to_string()))
}

/// Reads a row selected with [`SUMMARY_COLUMNS`].
pub(super) fn summary(row: &PgRow) -> Result<MessageSummary, StoreError> {
    let status = status(row)?;
    let Json(envelope): Json<Envelope> = row.try_get("envelope")?;
    let Json(metadata) = row.try_get("metadata")?;
    Ok(MessageSummary {
        id: row.try_get("id")?,
        status,
        message_id: row.try_get("message_id")?,
        from: envelope.from,
        to: envelope.to,
        cc: envelope.cc,
        bcc: envelope.bcc,
        reply_to: envelope.reply_to,
        subject: envelope.subject,
        tags: row.try_get("tags")?,
        metadata,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        send_at: row.try_get("send_at")?,
        next_attempt_at: if status == MessageStatus::Queued {
            Some(row.try_get("due_at")?)
        } else {
            None
        },
        sent_at: row.try_get("sent_at")?,
        attempt_count: row.try_get("attempt_count")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Reads a `delivery_attempts` row.
pub(super) fn attempt(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    let Json(recipients): Json<Vec<RecipientResult>> = row.try_get("recipients")?;
    Ok(AttemptRecord {
        attempt: row.try_get("attempt")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row.try_get("duration_ms")?,
        provider: row.try_get("provider")?,
        outcome: row.try_get("outcome")?,
        smtp_code: row.try_get("smtp_code")?,
        enhanced_code: row.try_get("enhanced_code")?,
        response: row.try_get("response")?,
        recipients,
    })
}
