//! A message as a caller submits it ([`MessageDraft`]) and as posthorn accepts it ([`NewMessage`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::address::Mailbox;
use super::attachment::Attachment;
use super::header::{CustomHeader, HeaderError};
use super::{DomainError, Limits};

const MAX_SUBJECT: usize = 998;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 128;
const MAX_METADATA: usize = 50;
const MAX_METADATA_KEY: usize = 128;
const MAX_METADATA_VALUE: usize = 1024;

/// One address or a list of them, as callers naturally write either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"a@example.com"`
    One(String),
    /// `["a@example.com", "B <b@example.com>"]`
    Many(Vec<String>),
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// An attachment as submitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDraft {
    /// The name shown to the recipient.
    pub filename: String,
    /// Base64 of the bytes.
    pub content: String,
    /// Media type; `application/octet-stream` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The body of `POST /send`, before validation. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageDraft {
    /// `Name <addr>` or `addr`.
    pub from: String,
    /// Primary recipients.
    #[serde(default)]
    pub to: Option<OneOrMany>,
    /// Carbon-copy recipients.
    #[serde(default)]
    pub cc: Option<OneOrMany>,
    /// Blind recipients: in the envelope, never in a header.
    #[serde(default)]
    pub bcc: Option<OneOrMany>,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: Option<OneOrMany>,
    /// Subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// Plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Custom headers from the allow-list.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Files to attach.
    #[serde(default)]
    pub attachments: Option<Vec<AttachmentDraft>>,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Caller data kept with the message.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// RFC 3339 time before which the message is not sent.
    #[serde(default)]
    pub send_at: Option<String>,
}

/// What goes on the wire: headers and bodies, all validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageContent {
    /// Author and envelope sender.
    pub from: Mailbox,
    /// Primary recipients.
    pub to: Vec<Mailbox>,
    /// Carbon-copy recipients.
    pub cc: Vec<Mailbox>,
    /// Blind recipients.
    pub bcc: Vec<Mailbox>,
    /// Reply-To addresses.
    pub reply_to: Vec<Mailbox>,
    /// Subject line (may be empty).
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Custom headers.
    pub headers: Vec<CustomHeader>,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

impl MessageContent {
    /// Every envelope recipient (to, cc and bcc), without duplicates, in order.
    pub fn envelope_recipients(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for mailbox in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            let address = mailbox.address.as_str();
            if !seen.iter().any(|s: &&str| s.eq_ignore_ascii_case(address)) {
                seen.push(address);
            }
        }
        seen
    }
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
    /// Validates a draft against the limits; `now` anchors the scheduling window.
    pub fn parse(
        draft: MessageDraft,
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let from = Mailbox::parse(&draft.from).map_err(|source| DomainError::Address {
            field: "from".into(),
            source,
        })?;
        let to = mailboxes("to", draft.to.as_ref(), limits.max_recipients)?;
        let cc = mailboxes("cc", draft.cc.as_ref(), limits.max_recipients)?;
        let bcc = mailboxes("bcc", draft.bcc.as_ref(), limits.max_recipients)?;
        let reply_to = mailboxes("reply_to", draft.reply_to.as_ref(), limits.max_recipients)?;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(DomainError::NoRecipients);
        }

        let subject = draft.subject.unwrap_or_default();
        if subject.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "subject",
                "contains a control character (CR, LF, NUL, ...)",
            ));
        }
        if subject.chars().count() > MAX_SUBJECT {
            return Err(DomainError::invalid(
                "subject",
                "is longer than 998 characters",
            ));
        }

        let text = draft.text.filter(|text| !text.is_empty());
        let html = draft.html.filter(|html| !html.is_empty());
        if text.is_none() && html.is_none() {
            return Err(DomainError::MissingBody);
        }
        for (field, body) in [("text", &text), ("html", &html)] {
            if body.as_deref().is_some_and(|b| b.contains('\0')) {
                return Err(DomainError::invalid(field, "contains a NUL character"));
            }
        }

        let headers = custom_headers(draft.headers.unwrap_or_default(), limits.max_headers)?;
        let attachments = attachments(draft.attachments.unwrap_or_default(), limits)?;
        let tags = tags(draft.tags.unwrap_or_default())?;
        let metadata = metadata(draft.metadata.unwrap_or_default())?;
        let send_at = draft
            .send_at
            .map(|text| send_at(&text, now, limits.max_schedule_ahead))
            .transpose()?;

        let id = Uuid::now_v7();
        let message_id = message_id(id, from.address.domain());
        Ok(Self {
            id,
            message_id,
            content: MessageContent {
                from,
                to,
                cc,
                bcc,
                reply_to,
                subject,
                text,
                html,
                headers,
                attachments,
            },
            tags,
            metadata,
            send_at,
        })
    }
}

fn mailboxes(
    field: &str,
    input: Option<&OneOrMany>,
    max: usize,
) -> Result<Vec<Mailbox>, DomainError> {
    let Some(input) = input else {
        return Ok(Vec::new());
    };
    let items = input.as_slice();
    if items.len() > max {
        return Err(DomainError::TooManyRecipients {
            field: field.into(),
            count: items.len(),
            max,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            Mailbox::parse(item).map_err(|source| DomainError::Address {
                field: match input {
                    OneOrMany::One(_) => field.to_owned(),
                    OneOrMany::Many(_) => format!("{field}[{index}]"),
                },
                source,
            })
        })
        .collect()
}

fn custom_headers(
    input: BTreeMap<String, String>,
    max: usize,
) -> Result<Vec<CustomHeader>, DomainError> {
    if input.len() > max {
        return Err(DomainError::TooManyHeaders { max });
    }
    let mut headers: Vec<CustomHeader> = Vec::with_capacity(input.len());
    for (name, value) in &input {
        let header = CustomHeader::parse(name, value)?;
        if headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(&header.name))
        {
            return Err(HeaderError::Duplicate(header.name).into());
        }
        headers.push(header);
    }
    Ok(headers)
}

fn attachments(
    input: Vec<AttachmentDraft>,
    limits: &Limits,
) -> Result<Vec<Attachment>, DomainError> {
    if input.len() > limits.max_attachments {
        return Err(DomainError::TooManyAttachments {
            max: limits.max_attachments,
        });
    }
    input
        .iter()
        .enumerate()
        .map(|(index, draft)| {
            Attachment::parse(
                &draft.filename,
                &draft.content,
                draft.content_type.as_deref(),
                limits.max_attachment_size,
            )
            .map_err(|source| DomainError::Attachment {
                field: format!("attachments[{index}]"),
                source,
            })
        })
        .collect()
}

fn tags(input: Vec<String>) -> Result<Vec<String>, DomainError> {
    if input.len() > MAX_TAGS {
        return Err(DomainError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    for (index, tag) in input.iter().enumerate() {
        if tag.is_empty() || tag.chars().count() > MAX_TAG || tag.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                format!("tags[{index}]"),
                format!("must be 1-{MAX_TAG} characters without control characters"),
            ));
        }
    }
    Ok(input)
}

fn metadata(input: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
    if input.len() > MAX_METADATA {
        return Err(DomainError::invalid(
            "metadata",
            format!("at most {MAX_METADATA} entries are allowed"),
        ));
    }
    for (key, value) in &input {
        if key.is_empty()
            || key.chars().count() > MAX_METADATA_KEY
            || key.chars().any(char::is_control)
        {
            return Err(DomainError::invalid(
                "metadata",
                format!("keys must be 1-{MAX_METADATA_KEY} characters without control characters"),
            ));
        }
        if value.contains('\0') {
            return Err(DomainError::invalid(
                format!("metadata.{key}"),
                "contains a NUL character",
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(DomainError::invalid(
                format!("metadata.{key}"),
                format!("is longer than {MAX_METADATA_VALUE} characters"),
            ));
        }
    }
    Ok(input)
}

fn send_at(
    text: &str,
    now: OffsetDateTime,
    max_ahead: Duration,
) -> Result<OffsetDateTime, DomainError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| DomainError::InvalidSendAt)?;
    if at - now > max_ahead {
        return Err(DomainError::SendAtTooFar {
            max: describe_duration(max_ahead),
        });
    }
    Ok(at)
}

/// "30 days", "12 hours", "90 minutes": a window as a caller reads it.
fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (value, unit) = if seconds.is_multiple_of(86_400) {
        (seconds / 86_400, "day")
    } else if seconds.is_multiple_of(3600) {
        (seconds / 3600, "hour")
    } else if seconds.is_multiple_of(60) {
        (seconds / 60, "minute")
    } else {
        (seconds, "second")
    };
    format!("{value} {unit}{}", if value == 1 { "" } else { "s" })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(json: serde_json::Value) -> MessageDraft {
        serde_json::from_value(json).unwrap()
    }

    fn parse(json: serde_json::Value) -> Result<NewMessage, DomainError> {
        NewMessage::parse(draft(json), &Limits::default(), OffsetDateTime::now_utc())
    }

    #[test]
    fn accepts_a_full_message() {
        let message = parse(serde_json::json!({
            "from": "Shop <shop@example.com>",
            "to": ["a@example.org", "B <b@example.org>"],
            "bcc": "audit@example.com",
            "subject": "Your order",
            "text": "Thanks",
            "headers": {"X-Order": "42"},
            "tags": ["order"],
            "metadata": {"order": "42"},
            "send_at": "2000-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(message.content.envelope_recipients().len(), 3);
        assert!(message.message_id.ends_with("@example.com>"));
    }

    #[test]
    fn refuses_what_it_must() {
        let base =
            || serde_json::json!({"from": "a@example.com", "to": "b@example.com", "text": "x"});
        let mut no_body = base();
        no_body["text"] = serde_json::Value::Null;
        assert!(matches!(parse(no_body), Err(DomainError::MissingBody)));
        let mut injected = base();
        injected["subject"] = "hi\r\nBcc: x@example.com".into();
        assert!(matches!(
            parse(injected),
            Err(DomainError::InvalidField { .. })
        ));
        let mut far = base();
        far["send_at"] = "2999-01-01T00:00:00Z".into();
        assert!(matches!(parse(far), Err(DomainError::SendAtTooFar { .. })));
        let mut not_time = base();
        not_time["send_at"] = "tomorrow".into();
        assert!(matches!(parse(not_time), Err(DomainError::InvalidSendAt)));
        let mut many = base();
        many["to"] = serde_json::json!(vec!["x@example.com"; 51]);
        assert!(matches!(
            parse(many),
            Err(DomainError::TooManyRecipients { max: 50, .. })
        ));
    }
}
