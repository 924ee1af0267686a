//! Turns a stored message into the exact bytes sent after DATA.
//!
//! Bodies are normalised to CRLF before lettre sees them, so no bare CR or LF reaches the wire and the
//! transport's dot-stuffing sees every line start; lettre picks 7bit, quoted-printable or base64 so no
//! line exceeds 998 octets.

use std::str::FromStr;
use std::time::SystemTime;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{
    Attachment as LettreAttachment, Mailbox as LettreMailbox, MultiPart, SinglePart,
};
use lettre::{Address, Message};

use crate::domain::{Body, Mailbox, MessageContent};

/// Why a stored message could not be turned into MIME. Permanent: retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// An address no longer parses (it was validated at accept, so this means stored data changed).
    #[error("address `{0}` cannot be encoded")]
    Address(String),
    /// A custom header name is not encodable.
    #[error("header `{0}` cannot be encoded")]
    Header(String),
    /// Stored attachment content is not base64.
    #[error("attachment `{0}` cannot be decoded")]
    Attachment(String),
    /// lettre refused to build the message.
    #[error("message cannot be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// Everything needed to compose a message besides its content.
pub struct Composition<'a> {
    /// The stored content.
    pub content: &'a MessageContent,
    /// The stable `Message-ID`, with angle brackets.
    pub message_id: &'a str,
    /// The `Date` header: when the message was accepted, identical on every attempt.
    pub date: SystemTime,
}

/// Builds the RFC 5322 message; the envelope is driven separately, so `Bcc` never becomes a header.
pub fn compose(input: &Composition<'_>) -> Result<Vec<u8>, ComposeError> {
    let MessageContent { envelope, body } = input.content;
    let mut builder = Message::builder()
        .message_id(Some(input.message_id.to_owned()))
        .date(input.date)
        .from(mailbox(&envelope.from)?)
        .subject(envelope.subject.clone());
    for to in &envelope.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in &envelope.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    for reply_to in &envelope.reply_to {
        builder = builder.reply_to(mailbox(reply_to)?);
    }
    for header in &body.headers {
        let name = HeaderName::new_from_ascii(header.name.clone())
            .map_err(|_| ComposeError::Header(header.name.clone()))?;
        builder = builder.raw_header(HeaderValue::new(name, header.value.clone()));
    }
    // An explicit envelope lets a message with only Bcc recipients be built without a To header.
    let sender = address(&envelope.from)?;
    let recipients = envelope
        .to
        .iter()
        .chain(&envelope.cc)
        .chain(&envelope.bcc)
        .map(address)
        .collect::<Result<Vec<_>, _>>()?;
    builder = builder.envelope(lettre::address::Envelope::new(Some(sender), recipients)?);

    let parts = body_part(body);
    let message = if body.attachments.is_empty() {
        match parts {
            Parts::Single(part) => builder.singlepart(part)?,
            Parts::Multi(part) => builder.multipart(part)?,
        }
    } else {
        let mut mixed = match parts {
            Parts::Single(part) => MultiPart::mixed().singlepart(part),
            Parts::Multi(part) => MultiPart::mixed().multipart(part),
        };
        for attachment in &body.attachments {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(attachment.content.as_bytes())
                .map_err(|_| ComposeError::Attachment(attachment.filename.clone()))?;
            let content_type = ContentType::parse(&attachment.content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|_| ComposeError::Header("Content-Type".into()))?;
            mixed = mixed.singlepart(
                LettreAttachment::new(safe_filename(&attachment.filename))
                    .body(bytes, content_type),
            );
        }
        builder.multipart(mixed)?
    };
    Ok(ensure_crlf(message.formatted()))
}

enum Parts {
    Single(SinglePart),
    Multi(MultiPart),
}

fn body_part(body: &Body) -> Parts {
    let text = body.text.as_deref().map(normalize_newlines);
    let html = body.html.as_deref().map(normalize_newlines);
    match (text, html) {
        (Some(text), Some(html)) => Parts::Multi(MultiPart::alternative_plain_html(text, html)),
        (None, Some(html)) => Parts::Single(SinglePart::html(html)),
        (Some(text), None) => Parts::Single(SinglePart::plain(text)),
        (None, None) => Parts::Single(SinglePart::plain(String::new())),
    }
}

/// CRLF, bare CR and bare LF all become one CRLF. Given LF alone, lettre would insert each missing CR
/// one at a time, moving the rest of the body every time; given CRLF it has nothing to do.
fn normalize_newlines(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    // CR and LF are ASCII, so every cut below falls between characters.
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        let width = match bytes[index] {
            b'\r' if bytes.get(index + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => {
                index += 1;
                continue;
            }
        };
        out.push_str(&text[start..index]);
        out.push_str("\r\n");
        index += width;
        start = index;
    }
    out.push_str(&text[start..]);
    out
}

/// True if every CR in `bytes` is followed by LF and every LF follows a CR.
fn crlf_only(bytes: &[u8]) -> bool {
    let mut previous = 0u8;
    for &byte in bytes {
        if (byte == b'\n') != (previous == b'\r') {
            return false;
        }
        previous = byte;
    }
    previous != b'\r'
}

/// A last guard on the invariant: every line break in the output is CRLF.
fn ensure_crlf(bytes: Vec<u8>) -> Vec<u8> {
    if crlf_only(&bytes) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\r' if bytes.get(index + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                index += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    out
}

/// The last path component, with characters that confuse mail clients or file systems replaced.
fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '"' | ':' | '*' | '?' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    if trimmed.is_empty() {
        "attachment".into()
    } else {
        trimmed.to_owned()
    }
}

fn address(mailbox: &Mailbox) -> Result<Address, ComposeError> {
    Address::from_str(mailbox.address.as_str())
        .map_err(|_| ComposeError::Address(mailbox.address.to_string()))
}

fn mailbox(mailbox: &Mailbox) -> Result<LettreMailbox, ComposeError> {
    Ok(LettreMailbox::new(mailbox.name.clone(), address(mailbox)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attachment, EmailAddress, Envelope};

    fn content(text: &str) -> MessageContent {
        let mb = |a: &str| Mailbox {
            name: None,
            address: EmailAddress::parse(a).unwrap(),
        };
        MessageContent {
            envelope: Envelope {
                from: mb("shop@example.com"),
                to: vec![],
                cc: vec![],
                bcc: vec![mb("hidden@example.org")],
                reply_to: vec![],
                subject: "Grüße".into(),
            },
            body: Body {
                text: Some(text.into()),
                html: Some("<p>hi</p>".into()),
                headers: vec![],
                attachments: vec![Attachment {
                    filename: "../../etc/passwd".into(),
                    content_type: "text/plain".into(),
                    content: "aGk=".into(),
                    size: 2,
                }],
            },
        }
    }

    fn compose_text(text: &str) -> Vec<u8> {
        let content = content(text);
        compose(&Composition {
            content: &content,
            message_id: "<id@example.com>",
            date: SystemTime::UNIX_EPOCH,
        })
        .unwrap()
    }

    #[test]
    fn every_kind_of_line_break_becomes_one_crlf() {
        assert_eq!(normalize_newlines("plain"), "plain");
        assert_eq!(normalize_newlines("a\nb"), "a\r\nb");
        assert_eq!(normalize_newlines("a\r\nb\rc\n\rd"), "a\r\nb\r\nc\r\n\r\nd");
        assert_eq!(normalize_newlines("\r\r\n\r"), "\r\n\r\n\r\n");
        assert_eq!(normalize_newlines("ü\r\nß\r\n\n"), "ü\r\nß\r\n\r\n");
        assert_eq!(normalize_newlines(""), "");
    }

    #[test]
    fn crlf_check_finds_every_bare_break() {
        assert!(crlf_only(b""));
        assert!(crlf_only(b"a\r\nb\r\n"));
        assert!(!crlf_only(b"\nab"));
        assert!(!crlf_only(b"a\nb"));
        assert!(!crlf_only(b"a\rb"));
        assert!(!crlf_only(b"ab\r"));
        assert!(!crlf_only(b"a\r\r\nb"));
        assert_eq!(ensure_crlf(b"a\nb\rc\r\n".to_vec()), b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn only_crlf_and_short_lines_reach_the_wire() {
        let long = "x".repeat(5000);
        let bytes = compose_text(&format!("a\n.\nb\r.\rc\r\n.\r\nd\n{long}\nübel"));
        for (index, byte) in bytes.iter().enumerate() {
            if *byte == b'\n' {
                assert_eq!(bytes[index - 1], b'\r', "bare LF at {index}");
            }
            if *byte == b'\r' {
                assert_eq!(bytes.get(index + 1), Some(&b'\n'), "bare CR at {index}");
            }
        }
        for line in bytes.split(|b| *b == b'\n') {
            assert!(line.len() <= 999, "line of {} octets", line.len());
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.to_ascii_lowercase().contains("\nbcc:"),
            "Bcc must not be a header"
        );
        assert!(text.contains("Message-ID: <id@example.com>"));
        assert!(text.contains("multipart/alternative"));
        assert!(
            !text.contains("../"),
            "attachment names lose their directories"
        );
    }
}
