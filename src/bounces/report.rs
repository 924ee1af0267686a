//! Reading reports that arrive by mail: delivery status notifications (RFC 3464) and feedback reports
//! (RFC 5965), each a `multipart/report` whose machine-readable part is read here field by field.

use mail_parser::{MessageParser, MimeHeaders};

/// What a recipient's block of a DSN says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed for good.
    Failed,
    /// Delivery is delayed; the reporting server keeps trying.
    Delayed,
    /// Delivered, relayed or expanded: nothing went wrong.
    Other,
}

/// One recipient of a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// The recipient (`Original-Recipient`, else `Final-Recipient`), without its address type.
    pub recipient: String,
    /// What happened.
    pub action: Action,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The remote server's words (`Diagnostic-Code`), without its type.
    pub diagnostic: Option<String>,
}

/// A report read from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification.
    Delivery {
        /// The recipients it reports on.
        recipients: Vec<RecipientStatus>,
        /// The `Message-ID` of the message it reports on, when the report includes its headers.
        original_message_id: Option<String>,
    },
    /// A feedback report (a complaint).
    Feedback {
        /// `abuse`, `fraud`, ...
        kind: String,
        /// The recipient that complained, when the report says.
        recipient: Option<String>,
        /// The `Message-ID` of the message complained about.
        original_message_id: Option<String>,
    },
}

/// Why a message could not be read as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not a MIME message at all.
    #[error("not a MIME message")]
    NotMime,
    /// No `message/delivery-status` or `message/feedback-report` part.
    #[error("not a delivery status notification or a feedback report")]
    NotAReport,
    /// The report part has no usable fields.
    #[error("the report has no recipient fields")]
    Empty,
}

/// Reads `data` as a DSN or a feedback report.
pub fn parse(data: &[u8]) -> Result<Report, ReportError> {
    let message = MessageParser::default()
        .parse(data)
        .ok_or(ReportError::NotMime)?;
    let mut report_part = None;
    let mut original_message_id = None;
    for part in &message.parts {
        let Some(content_type) = part.content_type() else {
            continue;
        };
        let kind = format!(
            "{}/{}",
            content_type.ctype().to_ascii_lowercase(),
            content_type.subtype().unwrap_or("").to_ascii_lowercase()
        );
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                report_part = Some((true, part.contents().to_vec()));
            }
            "message/feedback-report" => report_part = Some((false, part.contents().to_vec())),
            "message/rfc822"
            | "message/global"
            | "text/rfc822-headers"
            | "message/rfc822-headers"
                if original_message_id.is_none() =>
            {
                original_message_id = match part.message() {
                    Some(original) => original.message_id().map(str::to_owned),
                    None => header_value(part.contents(), "message-id"),
                }
                .map(|id| bracketed(&id));
            }
            _ => {}
        }
    }
    let (delivery, fields) = report_part.ok_or(ReportError::NotAReport)?;
    let blocks = blocks(&String::from_utf8_lossy(&fields));
    if delivery {
        // The first block is about the message; each one after it, about a recipient.
        let recipients: Vec<RecipientStatus> = blocks
            .iter()
            .skip(1)
            .filter_map(|block| {
                let recipient = field(block, "original-recipient")
                    .or_else(|| field(block, "final-recipient"))
                    .map(|value| address_of(&value))?;
                let action = match field(block, "action")?.to_ascii_lowercase().trim() {
                    "failed" => Action::Failed,
                    "delayed" => Action::Delayed,
                    _ => Action::Other,
                };
                Some(RecipientStatus {
                    recipient,
                    action,
                    status: field(block, "status")
                        .map(|status| status.split_whitespace().next().unwrap_or("").to_owned()),
                    diagnostic: field(block, "diagnostic-code").map(|value| address_of(&value)),
                })
            })
            .collect();
        if recipients.is_empty() {
            return Err(ReportError::Empty);
        }
        return Ok(Report::Delivery {
            recipients,
            original_message_id,
        });
    }
    let block = blocks.first().ok_or(ReportError::Empty)?;
    Ok(Report::Feedback {
        kind: field(block, "feedback-type")
            .map(|kind| kind.trim().to_ascii_lowercase())
            .ok_or(ReportError::Empty)?,
        recipient: field(block, "original-rcpt-to")
            .or_else(|| field(block, "removal-recipient"))
            .map(|value| address_of(&value)),
        original_message_id,
    })
}

/// `<id>`, whatever the report wrote.
fn bracketed(id: &str) -> String {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    format!("<{id}>")
}

/// The header-like blocks of a report part (RFC 3464 §2.1), unfolded, split at blank lines.
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    blocks
}

fn field(block: &[(String, String)], name: &str) -> Option<String> {
    block
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.clone())
}

/// A typed value (`rfc822; ann@example.org`, `smtp; 550 ...`) without its type.
fn address_of(value: &str) -> String {
    match value.split_once(';') {
        Some((_, rest)) => rest
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
        None => value
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
    }
}

/// A header's value in a block of raw headers.
fn header_value(headers: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    blocks(&text).first().and_then(|block| field(block, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example.org\r\n\
To: b-token@bounces.example.com\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
Arrival-Date: Sun, 6 Dec 2026 10:00:00 +0000\r\n\
\r\n\
Final-Recipient: rfc822; ann@example.org\r\n\
Original-Recipient: rfc822;ann@example.org\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address\r\n\
\trejected: User unknown\r\n\
\r\n\
Final-Recipient: rfc822; bob@example.org\r\n\
Action: delayed\r\n\
Status: 4.4.1\r\n\
\r\n\
--B\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: Shop <shop@example.com>\r\n\
Message-ID: <abc@example.com>\r\n\
Subject: Your order\r\n\
\r\n\
--B--\r\n";

    #[test]
    fn reads_a_delivery_status_notification() {
        let report = parse(DSN.as_bytes()).unwrap();
        let Report::Delivery {
            recipients,
            original_message_id,
        } = report
        else {
            panic!("{report:?}");
        };
        assert_eq!(original_message_id.as_deref(), Some("<abc@example.com>"));
        assert_eq!(recipients.len(), 2);
        assert_eq!(recipients[0].recipient, "ann@example.org");
        assert_eq!(recipients[0].action, Action::Failed);
        assert_eq!(recipients[0].status.as_deref(), Some("5.1.1"));
        let diagnostic = recipients[0].diagnostic.as_deref().unwrap();
        assert!(
            diagnostic.contains("Recipient address rejected: User unknown"),
            "{diagnostic}"
        );
        assert_eq!(recipients[1].action, Action::Delayed);
    }

    #[test]
    fn reads_a_feedback_report() {
        let arf = "From: feedback@isp.example\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
--F\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an email abuse report.\r\n\
--F\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: SomeGenerator/1.0\r\n\
Version: 1\r\n\
Original-Rcpt-To: <carol@example.org>\r\n\
\r\n\
--F\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: Shop <shop@example.com>\r\n\
To: carol@example.org\r\n\
Message-ID: <def@example.com>\r\n\
Subject: Offer\r\n\
\r\n\
Hello\r\n\
--F--\r\n";
        assert_eq!(
            parse(arf.as_bytes()).unwrap(),
            Report::Feedback {
                kind: "abuse".into(),
                recipient: Some("carol@example.org".into()),
                original_message_id: Some("<def@example.com>".into()),
            }
        );
    }

    #[test]
    fn anything_else_is_not_a_report() {
        assert_eq!(
            parse(b"From: a@example.com\r\nSubject: hi\r\n\r\nHello\r\n"),
            Err(ReportError::NotAReport)
        );
        let empty = DSN
            .replace("Final-Recipient", "X-Final")
            .replace("Original-Recipient", "X-Orig");
        assert_eq!(parse(empty.as_bytes()), Err(ReportError::Empty));
    }
}
