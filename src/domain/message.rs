//! A message as posthorn accepts, stores and sends it: its [`Envelope`] (addresses and subject, what
//! listings show) and its [`Body`] (what delivery needs besides), each declared once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::DomainError;
use super::Source;
use super::Stream;
use super::address::{EmailAddress, Mailbox};
use super::attachment::Attachment;
use super::fields;
use super::header::CustomHeader;
use super::template::TemplateUse;

/// Addresses and subject: who a message is from and for, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Author, and envelope sender unless `sender` says otherwise.
    pub from: Mailbox,
    /// The envelope sender (SMTP `MAIL FROM`) when it is not the author's address: a caller's own MIME
    /// may give one of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<EmailAddress>,
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
            sender: None,
            to,
            cc,
            bcc,
            reply_to,
            subject,
        })
    }

    /// The envelope sender: `sender` when given, else the author's address.
    pub fn return_path(&self) -> &EmailAddress {
        self.sender.as_ref().unwrap_or(&self.from.address)
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

/// What taking an address out of an envelope leaves (a data-protection erasure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasing {
    /// The address is not in the envelope.
    Absent,
    /// It was the only recipient: nothing of the message is left to keep.
    Alone,
    /// The envelope without it, in every list.
    Redacted(Envelope),
}

impl Envelope {
    /// Takes `address` (any case) out of to, cc, bcc and reply_to.
    pub fn erase(&self, address: &str) -> Erasing {
        let matches = |mailbox: &Mailbox| mailbox.address.as_str().eq_ignore_ascii_case(address);
        let present = self
            .to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .chain(&self.reply_to)
            .any(matches);
        if !present {
            return Erasing::Absent;
        }
        let mut redacted = self.clone();
        for list in [
            &mut redacted.to,
            &mut redacted.cc,
            &mut redacted.bcc,
            &mut redacted.reply_to,
        ] {
            list.retain(|mailbox| !matches(mailbox));
        }
        if redacted.to.is_empty() && redacted.cc.is_empty() && redacted.bcc.is_empty() {
            Erasing::Alone
        } else {
            Erasing::Redacted(redacted)
        }
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

/// What goes on the wire: the envelope and the body, or the caller's own MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent {
    /// Addresses and subject.
    pub envelope: Envelope,
    /// Bodies, headers and attachments (empty for a caller's own MIME).
    pub body: Body,
    /// The caller's own message (SMTP submission, the raw route), checked at accept and relayed byte for
    /// byte; `None` when posthorn composes the message from `body`.
    pub raw: Option<Vec<u8>>,
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
    /// The way it came in.
    pub source: Source,
    /// The template it was rendered from, if it was.
    pub template: Option<TemplateUse>,
    /// Its stream (priority lane).
    pub stream: Stream,
}

impl NewMessage {
    /// A new message of the JSON API with a fresh id and `Message-ID`.
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
            source: Source::Api,
            template: None,
            stream: Stream::default(),
        }
    }
}

/// `<uuid@sender-domain>`: unique per message, and shows which system made it.
pub(super) fn message_id(id: Uuid, domain: &str) -> String {
    let domain = if domain.is_ascii() && !domain.starts_with('[') {
        domain
    } else {
        "posthorn.invalid"
    };
    format!("<{}@{}>", id.simple(), domain)
}

/// The message id a `Message-ID` posthorn made carries (`<id@domain>`, the id in simple form).
pub fn id_in_message_id(header: &str) -> Option<Uuid> {
    let inner = header.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _) = inner.split_once('@')?;
    (local.len() == 32)
        .then(|| Uuid::try_parse(local).ok())
        .flatten()
}
