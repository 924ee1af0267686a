//! How a message's content is split into columns: the envelope (read by listings) and the body (read
//! by delivery). Shared by every store implementation.

use serde::{Deserialize, Serialize};

use crate::domain::{Attachment, CustomHeader, Mailbox, MessageContent};
use crate::store::StoreError;

/// Addresses and subject: what listings show.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
}

/// Bodies, headers and attachments: what delivery needs besides the envelope.
#[derive(Serialize, Deserialize)]
pub(crate) struct Body {
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<CustomHeader>,
    pub attachments: Vec<Attachment>,
}

/// Splits a message into its envelope and body columns.
pub(crate) fn split_content(
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
pub(crate) fn join_content(envelope: Envelope, body: Body) -> MessageContent {
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

/// Folds `(status, due later?, count)` rows into the queue depth by state: `queued` (due now),
/// `scheduled` (due later) and `sending`.
pub(crate) fn depth_by_state(rows: Vec<(String, bool, i64)>) -> Vec<(&'static str, i64)> {
    let mut queued = 0;
    let mut scheduled = 0;
    let mut sending = 0;
    for (status, later, count) in rows {
        match (status.as_str(), later) {
            ("queued", false) => queued += count,
            ("queued", true) => scheduled += count,
            _ => sending += count,
        }
    }
    vec![
        ("queued", queued),
        ("scheduled", scheduled),
        ("sending", sending),
    ]
}
