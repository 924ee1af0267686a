//! A message as posthorn accepts, stores and sends it: its [`Envelope`] (addresses and subject, what
//! listings show) and its [`Body`] (what delivery needs besides), each declared once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::DomainError;
use super::address::Mailbox;
use super::attachment::Attachment;
use super::fields;
use super::header::CustomHeader;

/// Addresses and subject: who a message is from and for, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Author and envelope sender.
    pub from: Mailbox,
    /// Primary recipients.
    pub to: Vec<Mailbox>,
    /// Carbon-copy recipients.
    pub cc: Vec<Mailbox>,
    /// Blind recipients: in the SMTP envelope, never in a header.
    pub bcc: Vec<Mailbox>,
    /// Reply-To addresses.
    pub reply_to: Vec<Mailbox>,
    /// Subject line (may be empty).
    pub subject: String,
}

impl Envelope {
    /// An envelope with at least one recipient and a subject that can be a header.
    pub fn new(
        from: Mailbox,
        recipients: [Vec<Mailbox>; 4],
        subject: String,
    ) -> Result<Self, DomainError> {
        let [to, cc, bcc, reply_to] = recipients;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(DomainError::NoRecipients);
        }
        fields::subject(&subject)?;
        Ok(Self {
            from,
            to,
            cc,
            bcc,
            reply_to,
            subject,
        })
    }

    /// Every envelope recipient (to, cc and bcc), without duplicates, in order.
    pub fn recipients(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for mailbox in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            let address = mailbox.address.as_str();
            if !seen.iter().any(|s: &&str| s.eq_ignore_ascii_case(address)) {
                seen.push(address);
            }
        }
        seen
    }

    /// The first recipient's domain: logs name domains, never addresses.
    pub fn first_domain(&self) -> &str {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .next()
            .map_or("", |mailbox| mailbox.address.domain())
    }
}

/// Bodies, headers and attachments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Custom headers from the allow-list.
    pub headers: Vec<CustomHeader>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

impl Body {
    /// A body with text, HTML or both (empty ones count as absent), neither holding a NUL.
    pub fn new(
        text: Option<String>,
        html: Option<String>,
        headers: Vec<CustomHeader>,
        attachments: Vec<Attachment>,
    ) -> Result<Self, DomainError> {
        let text = text.filter(|text| !text.is_empty());
        let html = html.filter(|html| !html.is_empty());
        if text.is_none() && html.is_none() {
            return Err(DomainError::MissingBody);
        }
        for (field, body) in [("text", &text), ("html", &html)] {
            if body.as_deref().is_some_and(|b| b.contains('\0')) {
                return Err(DomainError::invalid(field, "contains a NUL character"));
            }
        }
        Ok(Self {
            text,
            html,
            headers,
            attachments,
        })
    }
}

/// What goes on the wire: the envelope and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent {
    /// Addresses and subject.
    pub envelope: Envelope,
    /// Bodies, headers and attachments.
    pub body: Body,
}

/// A validated message ready to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// posthorn's id for the message (UUIDv7, time-ordered).
    pub id: Uuid,
    /// The stable `Message-ID` header, fixed at accept so duplicates are recognisable.
    pub message_id: String,
    /// Headers and bodies.
    pub content: MessageContent,
    /// Labels for filtering.
    pub tags: Vec<String>,
    /// Caller data.
    pub metadata: BTreeMap<String, String>,
    /// When the message becomes due; `None` means now.
    pub send_at: Option<OffsetDateTime>,
}

impl NewMessage {
    /// A new message with a fresh id and `Message-ID`.
    pub fn new(
        content: MessageContent,
        tags: Vec<String>,
        metadata: BTreeMap<String, String>,
        send_at: Option<OffsetDateTime>,
    ) -> Self {
        let id = Uuid::now_v7();
        let message_id = message_id(id, content.envelope.from.address.domain());
        Self {
            id,
            message_id,
            content,
            tags,
            metadata,
            send_at,
        }
    }
}

/// `<uuid@sender-domain>`: unique per message, and shows which system made it.
fn message_id(id: Uuid, domain: &str) -> String {
    let domain = if domain.is_ascii() && !domain.starts_with('[') {
        domain
    } else {
        "posthorn.invalid"
    };
    format!("<{}@{}>", id.simple(), domain)
}
