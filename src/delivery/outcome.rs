//! SMTP replies and what they mean for a message: sent, retry, or fail.

use std::fmt;

use lettre::transport::smtp::Error as SmtpError;

pub use crate::domain::OutcomeClass;

/// An SMTP reply, or what stood in for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, when the server answered.
    pub code: Option<u16>,
    /// The RFC 3463 enhanced status code (`5.1.1`), when the server sent one.
    pub enhanced: Option<String>,
    /// The server's text, or a description of what went wrong.
    pub text: String,
}

impl Reply {
    /// A positive reply from lettre.
    pub fn from_response(response: &lettre::transport::smtp::response::Response) -> Self {
        let text = response.message().collect::<Vec<_>>().join(" ");
        Self::with_code(u16::from(response.code()), text)
    }

    /// A reply with a code and text; the enhanced code is taken from the start of the text.
    pub fn with_code(code: u16, text: String) -> Self {
        let enhanced = text
            .split_whitespace()
            .next()
            .filter(|word| is_enhanced_code(word))
            .map(str::to_owned);
        Self {
            code: Some(code),
            enhanced,
            text: truncate(text),
        }
    }

    /// No reply: a timeout, a dropped connection, a TLS failure.
    pub fn none(what: impl Into<String>) -> Self {
        Self {
            code: None,
            enhanced: None,
            text: truncate(what.into()),
        }
    }

    /// The reply carried by a lettre error. Negative replies keep their code and text; other errors
    /// become a description without any connection details.
    pub fn from_error(error: &SmtpError) -> Self {
        match error.status() {
            Some(code) => {
                let text = std::error::Error::source(error)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                Self::with_code(u16::from(code), text)
            }
            None if error.is_timeout() => Self::none("timed out"),
            None if error.is_tls() => Self::none(format!("TLS failure: {error}")),
            None => Self::none(error.to_string()),
        }
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.code.is_some_and(|code| (400..500).contains(&code))
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code.is_some_and(|code| (500..600).contains(&code))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code} {}", self.text),
            None => f.write_str(&self.text),
        }
    }
}

/// `class.subject.detail`, RFC 3463 §2.
fn is_enhanced_code(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Server texts are bounded so a hostile upstream cannot bloat the attempts table, and lose NUL
/// characters, which no database text column takes (one would make the outcome impossible to record).
fn truncate(mut text: String) -> String {
    const MAX: usize = 1000;
    text.retain(|c| c != '\0');
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// How the upstream answered RCPT TO for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReply {
    /// The address.
    pub address: String,
    /// `Sent` (accepted), `Transient` or `Permanent`.
    pub class: OutcomeClass,
    /// The RCPT reply.
    pub reply: Reply,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The class that decides what happens to the message.
    pub class: OutcomeClass,
    /// The reply that decided it.
    pub reply: Reply,
    /// Per-recipient RCPT results (empty when the transaction ended before RCPT).
    pub recipients: Vec<RecipientReply>,
}

impl AttemptOutcome {
    /// An outcome decided before any recipient was tried.
    pub fn whole(class: OutcomeClass, reply: Reply) -> Self {
        Self {
            class,
            reply,
            recipients: Vec::new(),
        }
    }

    /// Recipients that must be tried again (temporarily refused at RCPT).
    pub fn retry_recipients(&self) -> Vec<String> {
        self.recipients
            .iter()
            .filter(|r| r.class == OutcomeClass::Transient)
            .map(|r| r.address.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_recognised() {
        let reply = Reply::with_code(550, "5.1.1 <x@example.com>: user unknown".into());
        assert_eq!(reply.enhanced.as_deref(), Some("5.1.1"));
        assert!(reply.is_permanent());
        let reply = Reply::with_code(451, "try again later".into());
        assert_eq!(reply.enhanced, None);
        assert!(reply.is_transient());
        assert!(!is_enhanced_code("1.2.3"));
        assert!(!is_enhanced_code("4.1234.1"));
    }
}
