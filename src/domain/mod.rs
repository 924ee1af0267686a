//! Domain types: parsed once at the edge, so the rest of posthorn cannot hold an invalid value.
//!
//! Nothing here knows HTTP or SQL.

mod address;
mod attachment;
mod event;
pub mod fields;
mod header;
mod idempotency;
mod message;
mod mime;
mod route;
mod status;
mod stream;
mod suppression;
mod template;
pub mod text;
mod verp;

use std::time::Duration;

pub use address::{AddressError, EmailAddress, Mailbox};
pub use attachment::{Attachment, AttachmentError};
pub use event::EventType;
pub use header::{CustomHeader, HeaderError};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError, RequestFingerprint};
pub use message::{Body, Envelope, Erasing, MessageContent, NewMessage, id_in_message_id};
pub use mime::{RawMessage, RawSubmission};
pub use route::{Route, RouteFacts, RouteMatch, Routes};
pub use status::{MessageStatus, OutcomeClass, Source, UnknownStatus as UnknownStatusError};
pub use stream::Stream;
pub use suppression::{SuppressionReason, is_hard_bounce};
pub use template::{
    Rendered, TemplateContent, TemplateError, TemplateUse, validate_name as validate_template_name,
};
pub use verp::Verp;

/// The bounds a submitted message must fit in.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most addresses in each of to, cc, bcc and reply_to.
    pub max_recipients: usize,
    /// Most attachments on one message.
    pub max_attachments: usize,
    /// Largest attachment, decoded bytes.
    pub max_attachment_size: usize,
    /// Most custom headers.
    pub max_headers: usize,
    /// How far ahead `send_at` may lie.
    pub max_schedule_ahead: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_recipients: 50,
            max_attachments: 20,
            max_attachment_size: 10 * 1024 * 1024,
            max_headers: 50,
            max_schedule_ahead: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why a submitted message was refused. Every variant names what is wrong in words a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// An address did not parse.
    #[error("{field} {source}")]
    Address {
        /// Where the address was, e.g. `to[2]`.
        field: String,
        /// What is wrong with it.
        #[source]
        source: AddressError,
    },
    /// Too many addresses in one field.
    #[error("{field} has {count} addresses; at most {max} are allowed")]
    TooManyRecipients {
        /// The field.
        field: String,
        /// How many were given.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// No address in to, cc or bcc.
    #[error("at least one recipient is required in to, cc or bcc")]
    NoRecipients,
    /// Neither text nor html.
    #[error("at least one of text or html is required")]
    MissingBody,
    /// A custom header was refused.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Too many custom headers.
    #[error("at most {max} custom headers are allowed")]
    TooManyHeaders {
        /// The configured limit.
        max: usize,
    },
    /// An attachment was refused.
    #[error("{field}: {source}")]
    Attachment {
        /// Which attachment, e.g. `attachments[0]`.
        field: String,
        /// What is wrong with it.
        #[source]
        source: AttachmentError,
    },
    /// Too many attachments.
    #[error("at most {max} attachments are allowed")]
    TooManyAttachments {
        /// The configured limit.
        max: usize,
    },
    /// `send_at` is not an RFC 3339 time.
    #[error("send_at must be an RFC 3339 date-time such as 2026-01-31T09:00:00Z")]
    InvalidSendAt,
    /// `send_at` lies outside the years every store and serializer can hold.
    #[error("send_at must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")]
    SendAtOutOfRange,
    /// `send_at` lies beyond the scheduling window.
    #[error("send_at may be at most {max} ahead")]
    SendAtTooFar {
        /// The window, human-readable.
        max: String,
    },
    /// A template could not be rendered with the send's variables.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Any other field with a rule of its own.
    #[error("{field} {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
}

impl DomainError {
    /// A field that breaks a rule of its own.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The request field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Address { field, .. }
            | Self::TooManyRecipients { field, .. }
            | Self::Attachment { field, .. }
            | Self::InvalidField { field, .. } => Some(field),
            Self::Header(_) | Self::TooManyHeaders { .. } => Some("headers"),
            Self::TooManyAttachments { .. } => Some("attachments"),
            Self::InvalidSendAt | Self::SendAtOutOfRange | Self::SendAtTooFar { .. } => {
                Some("send_at")
            }
            Self::NoRecipients => Some("to"),
            Self::MissingBody => Some("text"),
            Self::Template(error) => Some(match error {
                TemplateError::InvalidName => "template.name",
                TemplateError::MissingVariables { .. }
                | TemplateError::HeaderBreak { .. }
                | TemplateError::VariablesNotAnObject => "template.variables",
                _ => "template",
            }),
        }
    }
}
