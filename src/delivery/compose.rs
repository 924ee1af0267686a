//! Turns a stored message into the exact bytes sent after DATA.
//!
//! Bodies are normalised to CRLF before lettre sees them, so no bare CR or LF reaches the wire and the
//! transport's dot-stuffing sees every line start; lettre picks 7bit, quoted-printable or base64 so no
//! body line exceeds 998 octets. Header lines are held to 78 octets where a space allows a fold, and
//! never exceed 998: the subject's words too long for a line are encoded (RFC 2047, in pieces that
//! fold), address lists are folded between addresses, and what cannot be folded (a custom header's
//! long word) was refused at accept.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::SystemTime;

use email_encoding::headers::writer::EmailWriter;
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
    let MessageContent { envelope, body, .. } = input.content;
    let mut builder = Message::builder()
        .message_id(Some(input.message_id.to_owned()))
        .date(input.date)
        .from(mailbox(&envelope.from)?)
        .raw_header(subject(&envelope.subject)?);
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
    Ok(fold_header_lines(ensure_crlf(message.formatted())))
}

/// The longest word a header carries as it is: with a folding space before it, it fits a 78-octet line.
const MAX_PLAIN_WORD: usize = 76;

/// The `Subject` header. As lettre writes it (words folded at spaces, words that are not ASCII encoded),
/// and a word too long for a line encoded too, which splits it into encoded-words that fold between
/// them: a 998-character subject without a space fits on lines of 78 octets.
fn subject(text: &str) -> Result<HeaderValue, ComposeError> {
    let failed = |_| ComposeError::Header("Subject".into());
    let mut encoded = String::with_capacity(text.len() + text.len() / 4 + 16);
    {
        let mut writer = EmailWriter::new(&mut encoded, "Subject: ".len(), 0, false);
        let mut pending = String::new();
        for word in text.split_inclusive(' ') {
            let bare = word.trim_end_matches(' ');
            if bare.is_ascii() && bare.len() <= MAX_PLAIN_WORD {
                encode_words(&mut pending, &mut writer).map_err(failed)?;
                writer.folding().write_str(word).map_err(failed)?;
            } else {
                pending.push_str(word);
            }
        }
        encode_words(&mut pending, &mut writer).map_err(failed)?;
    }
    Ok(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str("Subject"),
        text.to_owned(),
        encoded,
    ))
}

/// Writes the words in `pending` as RFC 2047 encoded-words, keeping their trailing spaces as spaces.
fn encode_words(pending: &mut String, writer: &mut EmailWriter<'_>) -> std::fmt::Result {
    if pending.is_empty() {
        return Ok(());
    }
    let words = pending.trim_end_matches(' ');
    email_encoding::headers::rfc2047::encode(words, writer)?;
    for _ in words.len()..pending.len() {
        writer.space();
    }
    pending.clear();
    Ok(())
}

/// The header lines folded to 78 octets where whitespace allows (RFC 5322 §2.2.3): a line break goes in
/// before a space or tab, which unfolding takes out again, so the header means the same. lettre folds
/// most headers itself, but writes a list of addresses on one line whatever its length.
fn fold_header_lines(message: Vec<u8>) -> Vec<u8> {
    const LINE: usize = 78;
    let end = message
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(message.len(), |position| position + 2);
    let (head, body) = message.split_at(end);
    if head
        .split(|byte| *byte == b'\n')
        .all(|line| line.len() <= LINE + 1)
    {
        return message;
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in head.split_inclusive(|byte| *byte == b'\n') {
        let mut rest = line;
        // A fold right after the colon would leave the name alone on its line.
        let mut earliest = line
            .iter()
            .position(|byte| *byte == b':')
            .map_or(1, |colon| colon + 2);
        while rest.len() > LINE + 2 {
            let blank = |byte: &u8| *byte == b' ' || *byte == b'\t';
            let fold = rest[..=LINE]
                .iter()
                .rposition(blank)
                .filter(|position| *position >= earliest)
                .or_else(|| {
                    let after = rest.len().saturating_sub(2);
                    (LINE + 1..after).find(|index| blank(&rest[*index]))
                });
            let Some(fold) = fold else { break };
            out.extend_from_slice(&rest[..fold]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[fold..];
            earliest = 1;
        }
        out.extend_from_slice(rest);
    }
    out.extend_from_slice(body);
    out
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
                sender: None,
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
            raw: None,
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
    fn long_header_lines_are_folded_at_whitespace_and_mean_the_same() {
        let to: Vec<String> = (0..50).map(|i| format!("user{i:03}@example.org")).collect();
        let message = format!(
            "To: {}\r\nX-Long: {}\r\nSubject: short\r\n\r\nbody line {}\r\n",
            to.join(", "),
            "w".repeat(120),
            "b ".repeat(100)
        );
        let folded = String::from_utf8(fold_header_lines(message.clone().into_bytes())).unwrap();
        let (head, body) = folded.split_once("\r\n\r\n").unwrap();
        for line in head.split("\r\n") {
            // Longer only where no whitespace after the name allowed a fold.
            let earliest = line.find(':').map_or(1, |colon| colon + 2);
            assert!(
                line.len() <= 78 || !line[earliest..].contains(' '),
                "{line}"
            );
        }
        assert_eq!(
            body,
            message.split_once("\r\n\r\n").unwrap().1,
            "bodies are not folded"
        );
        let unfolded = head.replace("\r\n ", " ");
        assert_eq!(unfolded, message.split_once("\r\n\r\n").unwrap().0);
    }

    #[test]
    fn a_subject_word_too_long_for_a_line_is_encoded() {
        let long = "s".repeat(998);
        let header = subject(&long).unwrap();
        let mut headers = lettre::message::header::Headers::new();
        headers.insert_raw(header);
        let text = headers.to_string();
        for line in text.split("\r\n") {
            assert!(line.len() <= 78, "{} octets: {line}", line.len());
        }
        assert!(text.contains("=?utf-8?b?"), "{text}");
        let tabbed = subject("a\tb c").unwrap();
        let mut headers = lettre::message::header::Headers::new();
        headers.insert_raw(tabbed);
        assert_eq!(headers.to_string(), "Subject: a\tb c\r\n");
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
