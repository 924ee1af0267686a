//! A caller's own message (SMTP submission, `POST /v1/send/raw`): checked as posthorn's own output is
//! (CRLF only, lines of at most 998 octets, no NUL), read for its envelope and its stream
//! (`X-Posthorn-Stream`), stripped of `Bcc` and of that header, given a `Message-ID` and a `Date` when it
//! lacks them, and otherwise relayed byte for byte.

use mail_parser::{Address, MessageParser};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use uuid::Uuid;

use super::address::{EmailAddress, Mailbox};
use super::message::message_id;
use super::{
    Body, DomainError, Envelope, Limits, MessageContent, NewMessage, Source, Stream, text,
};

/// RFC 5322 §2.1.1.
const MAX_LINE: usize = 998;

/// The header that names a message's stream; it is removed before the message is sent.
pub const STREAM_HEADER: &str = "X-Posthorn-Stream";

/// A caller's message as it arrived, with its envelope if the way in has one.
#[derive(Debug)]
pub struct RawSubmission<'a> {
    /// The message: headers, a blank line, the body; lines end in CRLF (SMTP's dot-stuffing undone).
    pub data: &'a [u8],
    /// The envelope sender (`MAIL FROM`); `None`: the `From` address.
    pub sender: Option<EmailAddress>,
    /// The envelope recipients (`RCPT TO`); `None`: the `To`, `Cc` and `Bcc` addresses.
    pub recipients: Option<Vec<EmailAddress>>,
    /// The way it came in.
    pub source: Source,
}

/// What the message's own `Message-ID` was, if it had one (callers' retries are recognised by it).
#[derive(Debug)]
pub struct RawMessage {
    /// The message to store.
    pub message: NewMessage,
    /// The `Message-ID` the caller gave, without angle brackets.
    pub given_message_id: Option<String>,
}

impl RawSubmission<'_> {
    /// Checks the message and builds what is stored: the envelope from its headers (and the SMTP
    /// envelope), and the bytes to relay.
    pub fn parse(self, limits: &Limits, now: OffsetDateTime) -> Result<RawMessage, DomainError> {
        check_lines(self.data)?;
        let parsed = MessageParser::default()
            .parse(self.data)
            .ok_or_else(|| invalid("is not an RFC 5322 message"))?;
        let from = single_mailbox(parsed.from())?;
        let header_to = mailboxes("to", parsed.to())?;
        let header_cc = mailboxes("cc", parsed.cc())?;
        let header_bcc = mailboxes("bcc", parsed.bcc())?;
        let reply_to = mailboxes("reply_to", parsed.reply_to())?;
        let subject = parsed.subject().unwrap_or_default().to_owned();
        if subject.chars().any(|c| c.is_control() && c != '\t') {
            return Err(DomainError::invalid(
                "subject",
                "decodes to a control character (CR, LF, NUL, ...)",
            ));
        }
        let (to, cc, bcc) = match self.recipients {
            None => (header_to, header_cc, header_bcc),
            Some(recipients) => split_by_header(recipients, &header_to, &header_cc),
        };
        let count = to.len() + cc.len() + bcc.len();
        if count > limits.max_recipients {
            return Err(DomainError::TooManyRecipients {
                field: "recipients".into(),
                count,
                max: limits.max_recipients,
            });
        }
        let mut envelope = Envelope::new(from, [to, cc, bcc, reply_to], String::new())?;
        // The subject is listed as decoded (and at most 998 characters); the wire keeps the header as
        // it was written.
        envelope.subject = subject.chars().take(998).collect();
        envelope.sender = self
            .sender
            .filter(|sender| *sender != envelope.from.address);
        check_attachments(&parsed, limits)?;

        let given_message_id = parsed.message_id().map(str::to_owned);
        let id = Uuid::now_v7();
        let message_id = match &given_message_id {
            Some(given) => format!("<{given}>"),
            None => message_id(id, envelope.from.address.domain()),
        };
        let has_date = parsed.date().is_some();
        let stream = stream_of(&parsed)?;
        let raw = relayed(
            self.data,
            (given_message_id.is_none()).then_some(message_id.as_str()),
            (!has_date).then_some(now),
        )?;
        let message = NewMessage {
            id,
            message_id,
            content: MessageContent {
                envelope,
                body: Body {
                    text: None,
                    html: None,
                    headers: Vec::new(),
                    attachments: Vec::new(),
                },
                raw: Some(raw),
            },
            tags: Vec::new(),
            metadata: Default::default(),
            send_at: None,
            source: self.source,
            template: None,
            stream,
        };
        Ok(RawMessage {
            message,
            given_message_id,
        })
    }
}

fn invalid(reason: &str) -> DomainError {
    DomainError::invalid("message", reason)
}

/// Every line ends in CRLF (a bare CR or LF is how end-of-data smuggling starts), none is longer than
/// 998 octets, and there is no NUL.
fn check_lines(data: &[u8]) -> Result<(), DomainError> {
    if data.contains(&0) {
        return Err(invalid("contains a NUL byte"));
    }
    let mut line_start = 0;
    let mut index = 0;
    while index < data.len() {
        match data[index] {
            b'\r' if data.get(index + 1) == Some(&b'\n') => {
                if index - line_start > MAX_LINE {
                    return Err(line_too_long());
                }
                index += 2;
                line_start = index;
            }
            b'\r' | b'\n' => {
                return Err(invalid(
                    "has a bare CR or LF; every line must end with CRLF",
                ));
            }
            _ => index += 1,
        }
    }
    if data.len() - line_start > MAX_LINE {
        return Err(line_too_long());
    }
    Ok(())
}

fn line_too_long() -> DomainError {
    invalid("has a line longer than 998 octets (RFC 5322 2.1.1)")
}

/// The one author of the message.
fn single_mailbox(address: Option<&Address<'_>>) -> Result<Mailbox, DomainError> {
    let mut all = mailboxes("from", address)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(DomainError::Address {
            field: "from".into(),
            source: super::AddressError::Empty,
        }),
        _ => Err(DomainError::invalid("from", "must name one author")),
    }
}

/// The addresses of a header, as posthorn's own mailboxes (so with posthorn's checks).
fn mailboxes(field: &str, address: Option<&Address<'_>>) -> Result<Vec<Mailbox>, DomainError> {
    let Some(address) = address else {
        return Ok(Vec::new());
    };
    address
        .iter()
        .filter_map(|addr| addr.address().map(|email| (addr.name(), email)))
        .map(|(name, email)| {
            let address = EmailAddress::parse(email).map_err(|source| DomainError::Address {
                field: field.to_owned(),
                source,
            })?;
            let name = name.map(str::trim).filter(|name| !name.is_empty());
            let refused = name.and_then(|name| {
                if name.chars().any(char::is_control) {
                    Some(super::AddressError::ControlCharacter)
                } else if text::has_bidi_control(name) {
                    Some(super::AddressError::BidiControl)
                } else {
                    None
                }
            });
            if let Some(source) = refused {
                return Err(DomainError::Address {
                    field: field.to_owned(),
                    source,
                });
            }
            Ok(Mailbox {
                name: name.map(str::to_owned),
                address,
            })
        })
        .collect()
}

/// The envelope recipients as the listing shows them: those named in `To` or `Cc` with the header's
/// display name, the rest as blind copies. Only these receive the message.
fn split_by_header(
    recipients: Vec<EmailAddress>,
    header_to: &[Mailbox],
    header_cc: &[Mailbox],
) -> (Vec<Mailbox>, Vec<Mailbox>, Vec<Mailbox>) {
    let named = |list: &[Mailbox], address: &EmailAddress| {
        list.iter()
            .find(|mailbox| {
                mailbox
                    .address
                    .as_str()
                    .eq_ignore_ascii_case(address.as_str())
            })
            .cloned()
    };
    let (mut to, mut cc, mut bcc) = (Vec::new(), Vec::new(), Vec::new());
    for address in recipients {
        if let Some(mailbox) = named(header_to, &address) {
            to.push(mailbox);
        } else if let Some(mailbox) = named(header_cc, &address) {
            cc.push(mailbox);
        } else {
            bcc.push(Mailbox {
                name: None,
                address,
            });
        }
    }
    (to, cc, bcc)
}

/// The JSON API's attachment limits, applied to the parsed MIME.
fn check_attachments(
    parsed: &mail_parser::Message<'_>,
    limits: &Limits,
) -> Result<(), DomainError> {
    if parsed.attachment_count() > limits.max_attachments {
        return Err(DomainError::TooManyAttachments {
            max: limits.max_attachments,
        });
    }
    for (index, part) in parsed.attachments().enumerate() {
        if part.contents().len() > limits.max_attachment_size {
            return Err(DomainError::Attachment {
                field: format!("attachments[{index}]"),
                source: super::AttachmentError::TooLarge {
                    max: limits.max_attachment_size,
                },
            });
        }
    }
    Ok(())
}

/// The bytes to relay: the message without its `Bcc` headers, with `Message-ID` and `Date` put first
/// when they are missing.
fn relayed(
    data: &[u8],
    message_id: Option<&str>,
    date: Option<OffsetDateTime>,
) -> Result<Vec<u8>, DomainError> {
    let head_end = data
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(data.len(), |position| position + 2);
    let (head, body) = data.split_at(head_end);
    let mut out = Vec::with_capacity(data.len() + 128);
    if let Some(message_id) = message_id {
        out.extend_from_slice(format!("Message-ID: {message_id}\r\n").as_bytes());
    }
    if let Some(date) = date {
        let date = date
            .format(&Rfc2822)
            .map_err(|_| invalid("has no Date, and the time cannot be written"))?;
        out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    let mut skipping = false;
    for line in head.split_inclusive(|byte| *byte == b'\n') {
        let continuation = line
            .first()
            .is_some_and(|byte| *byte == b' ' || *byte == b'\t');
        if !continuation {
            skipping = header_name(line).is_some_and(|name| {
                name.eq_ignore_ascii_case(b"bcc")
                    || name.eq_ignore_ascii_case(STREAM_HEADER.as_bytes())
            });
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// The stream the message's `X-Posthorn-Stream` header names; transactional without one. A value
/// that names no stream, or the header given twice, is refused.
fn stream_of(parsed: &mail_parser::Message<'_>) -> Result<Stream, DomainError> {
    let stream_invalid = |reason: &str| DomainError::invalid("stream", reason);
    let mut values = parsed.header_values(STREAM_HEADER);
    let Some(value) = values.next() else {
        return Ok(Stream::default());
    };
    if values.next().is_some() {
        return Err(stream_invalid(
            "the X-Posthorn-Stream header is given more than once",
        ));
    }
    value.as_text().and_then(Stream::parse).ok_or_else(|| {
        stream_invalid("the X-Posthorn-Stream header must be transactional or broadcast")
    })
}

/// The name of the header that starts on `line`.
fn header_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|byte| *byte == b':')?;
    Some(line[..colon].trim_ascii_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(data: &str, recipients: Option<Vec<&str>>) -> Result<RawMessage, DomainError> {
        RawSubmission {
            data: data.as_bytes(),
            sender: Some(EmailAddress::parse("bounces@example.com").unwrap()),
            recipients: recipients.map(|list| {
                list.into_iter()
                    .map(|address| EmailAddress::parse(address).unwrap())
                    .collect()
            }),
            source: Source::Smtp,
        }
        .parse(&Limits::default(), OffsetDateTime::now_utc())
    }

    const MESSAGE: &str = "From: Shop <shop@example.com>\r\nTo: Ann <ann@example.org>\r\nBcc: hidden@example.org,\r\n secret@example.org\r\nSubject: Hi\r\n\r\nHello\r\n";

    #[test]
    fn bcc_is_stripped_and_message_id_and_date_are_added() {
        let raw = submit(MESSAGE, Some(vec!["ann@example.org", "hidden@example.org"])).unwrap();
        let data = String::from_utf8(raw.message.content.raw.unwrap()).unwrap();
        assert!(!data.to_ascii_lowercase().contains("bcc"), "{data}");
        assert!(!data.contains("secret@"), "{data}");
        assert!(data.starts_with("Message-ID: <"), "{data}");
        assert!(data.contains("\r\nDate: "), "{data}");
        assert!(data.ends_with("Subject: Hi\r\n\r\nHello\r\n"), "{data}");
        assert!(raw.given_message_id.is_none());
        let envelope = raw.message.content.envelope;
        assert_eq!(envelope.to[0].name.as_deref(), Some("Ann"));
        assert_eq!(envelope.bcc[0].address.as_str(), "hidden@example.org");
        assert_eq!(
            envelope.recipients(),
            vec!["ann@example.org", "hidden@example.org"]
        );
        assert_eq!(envelope.return_path().as_str(), "bounces@example.com");
    }

    #[test]
    fn a_given_message_id_is_kept() {
        let data = format!(
            "Message-ID: <abc@example.com>\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n{MESSAGE}"
        );
        let raw = submit(&data, None).unwrap();
        assert_eq!(raw.given_message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(raw.message.message_id, "<abc@example.com>");
        let relayed = String::from_utf8(raw.message.content.raw.unwrap()).unwrap();
        assert!(
            relayed.starts_with("Message-ID: <abc@example.com>\r\nDate: Sun"),
            "{relayed}"
        );
        // Without an SMTP envelope, the headers name the recipients, Bcc included.
        assert_eq!(raw.message.content.envelope.recipients().len(), 3);
    }

    #[test]
    fn smuggling_and_bad_lines_are_refused() {
        for bad in [
            "From: a@example.com\r\nTo: b@example.org\r\n\r\nx\n.\nMAIL FROM:<c@example.com>\r\n",
            "From: a@example.com\r\nTo: b@example.org\r\n\r\nx\r.\rDATA\r\n",
            "From: a@example.com\r\nTo: b@example.org\r\n\r\nx\r\n.\nEVIL\r\n",
            "From: a@example.com\r\nTo: b@example.org\r\n\r\nnul\0\r\n",
        ] {
            assert!(submit(bad, None).is_err(), "{bad:?}");
        }
        let long = format!(
            "From: a@example.com\r\nTo: b@example.org\r\n\r\n{}\r\n",
            "x".repeat(999)
        );
        assert!(submit(&long, None).is_err());
        let fits = format!(
            "From: a@example.com\r\nTo: b@example.org\r\n\r\n{}\r\n",
            "x".repeat(998)
        );
        assert!(submit(&fits, None).is_ok());
        assert!(submit("To: b@example.org\r\n\r\nno author\r\n", None).is_err());
    }
}
