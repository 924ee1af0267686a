//! The rules of a message's fields, shared by every way a message comes in: each ingress reads its own
//! shape (JSON, a form, MIME) and hands the values here, naming each by the field the caller wrote.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::address::Mailbox;
use super::attachment::Attachment;
use super::header::{CustomHeader, HeaderError};
use super::{DomainError, Limits, text};

const MAX_SUBJECT: usize = 998;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 128;
const MAX_METADATA: usize = 50;
const MAX_METADATA_KEY: usize = 128;
const MAX_METADATA_VALUE: usize = 1024;

/// The addresses of one field; with `indexed`, errors name the item (`to[2]`), else the field.
pub fn mailboxes(
    field: &str,
    items: &[String],
    indexed: bool,
    max: usize,
) -> Result<Vec<Mailbox>, DomainError> {
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
                field: if indexed {
                    format!("{field}[{index}]")
                } else {
                    field.to_owned()
                },
                source,
            })
        })
        .collect()
}

/// A subject: at most 998 characters without control characters (tab is text), and no encoded-word
/// that decodes to one.
pub fn subject(text: &str) -> Result<(), DomainError> {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(DomainError::invalid(
            "subject",
            "contains a control character (CR, LF, NUL, ...)",
        ));
    }
    if text::hides_control_characters(text) {
        return Err(DomainError::invalid(
            "subject",
            "holds an RFC 2047 encoded-word (=?...?=) that decodes to a control character",
        ));
    }
    if text.chars().count() > MAX_SUBJECT {
        return Err(DomainError::invalid(
            "subject",
            "is longer than 998 characters",
        ));
    }
    Ok(())
}

/// Custom headers by name: each on the allow-list, none twice (ignoring case), at most `max`.
pub fn custom_headers(
    input: &BTreeMap<String, String>,
    max: usize,
) -> Result<Vec<CustomHeader>, DomainError> {
    if input.len() > max {
        return Err(DomainError::TooManyHeaders { max });
    }
    let mut headers: Vec<CustomHeader> = Vec::with_capacity(input.len());
    for (name, value) in input {
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

/// Attachments given as `(filename, base64 content, content type)`, within the limits. The contents are
/// taken, not copied.
pub fn attachments(
    input: Vec<(String, String, Option<String>)>,
    limits: &Limits,
) -> Result<Vec<Attachment>, DomainError> {
    if input.len() > limits.max_attachments {
        return Err(DomainError::TooManyAttachments {
            max: limits.max_attachments,
        });
    }
    input
        .into_iter()
        .enumerate()
        .map(|(index, (filename, content, content_type))| {
            Attachment::parse(
                &filename,
                content,
                content_type.as_deref(),
                limits.max_attachment_size,
            )
            .map_err(|source| DomainError::Attachment {
                field: format!("attachments[{index}]"),
                source,
            })
        })
        .collect()
}

/// Labels: at most 20, each 1-128 characters without control characters.
pub fn tags(input: Vec<String>) -> Result<Vec<String>, DomainError> {
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

/// Caller data: at most 50 entries of bounded keys and values.
pub fn metadata(input: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, DomainError> {
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

/// An RFC 3339 time no further ahead of `now` than `max_ahead`, within the years 1970 to 9999 (UTC):
/// what every store and serializer can hold (`0000-01-01T00:00:00+00:01` is year -1 in UTC).
pub fn send_at(
    text: &str,
    now: OffsetDateTime,
    max_ahead: Duration,
) -> Result<OffsetDateTime, DomainError> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| DomainError::InvalidSendAt)?;
    // 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z, as seconds since the epoch.
    if !(0..=253_402_300_799).contains(&at.unix_timestamp()) {
        return Err(DomainError::SendAtOutOfRange);
    }
    if at - now > max_ahead {
        return Err(DomainError::SendAtTooFar {
            max: humantime::format_duration(max_ahead).to_string(),
        });
    }
    Ok(at)
}
