//! Custom headers a caller may set: an allow-list, never a deny-list.

use serde::{Deserialize, Serialize};

use super::text;

/// Longest header name accepted (RFC 5322 allows more, but no real header needs it).
const MAX_NAME: usize = 76;
/// RFC 5322 §2.1.1: a line must not exceed 998 characters.
const MAX_LINE: usize = 998;
/// The longest value accepted, in characters (it may be folded over several lines).
const MAX_VALUE: usize = 998;

/// Headers outside the `X-` space that a caller may set; every other one is posthorn's or the upstream's.
const ALLOWED: &[&str] = &[
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "list-help",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "in-reply-to",
    "references",
    "auto-submitted",
    "precedence",
    "importance",
    "priority",
    "sensitivity",
    "keywords",
    "comments",
    "organization",
    "feedback-id",
];

/// Why a custom header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The name has characters outside `A-Z a-z 0-9 -` or is too long.
    #[error("header name `{0}` is not valid (letters, digits and '-', at most 76)")]
    InvalidName(String),
    /// The name is not on the allow-list.
    #[error(
        "header `{0}` may not be set by callers (allowed: X-*, List-*, In-Reply-To, References, ...)"
    )]
    Forbidden(String),
    /// The same header twice, ignoring case.
    #[error("header `{0}` is given twice")]
    Duplicate(String),
    /// CR, LF or another control character in the value (tab is allowed).
    #[error("value of header `{0}` contains a control character (CR, LF, NUL, ...)")]
    ControlCharacter(String),
    /// The value is longer than a header line may be.
    #[error("value of header `{0}` is longer than 998 characters")]
    TooLong(String),
    /// An RFC 2047 encoded-word in the value decodes to a control character.
    #[error(
        "value of header `{0}` holds an RFC 2047 encoded-word (=?...?=) that decodes to a control character"
    )]
    EncodedControl(String),
    /// A run of the value without a space cannot be folded into a 998-octet line.
    #[error(
        "value of header `{name}` has a word of {length} characters without a space; the name, `: ` and the longest word must fit in one 998-octet line (at most {max} characters here)"
    )]
    WordTooLong {
        /// The header.
        name: String,
        /// The word's length.
        length: usize,
        /// The longest word that fits.
        max: usize,
    },
}

/// A validated custom header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomHeader {
    /// The header name as the caller spelled it.
    pub name: String,
    /// The unfolded value.
    pub value: String,
}

impl CustomHeader {
    /// Validates one caller-supplied header.
    pub fn parse(name: &str, value: &str) -> Result<Self, HeaderError> {
        let valid_name = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_name {
            return Err(HeaderError::InvalidName(printable(name)));
        }
        let lower = name.to_ascii_lowercase();
        // `X-Posthorn-*` headers are posthorn's own (the stream is the `stream` field in JSON).
        let allowed =
            (lower.starts_with("x-") && lower.len() > 2 && !lower.starts_with("x-posthorn-"))
                || ALLOWED.contains(&lower.as_str());
        if !allowed {
            return Err(HeaderError::Forbidden(name.to_owned()));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(HeaderError::ControlCharacter(name.to_owned()));
        }
        if value.chars().count() > MAX_VALUE {
            return Err(HeaderError::TooLong(name.to_owned()));
        }
        if text::hides_control_characters(value) {
            return Err(HeaderError::EncodedControl(name.to_owned()));
        }
        // Lines are folded at spaces and tabs, and words that are not ASCII are encoded (RFC 2047) in
        // pieces that fold; an ASCII word is written as it is, so it must fit after `Name: `.
        let max = MAX_LINE - name.len() - 2;
        if let Some(length) = value
            .split([' ', '\t'])
            .filter(|word| word.is_ascii())
            .map(str::len)
            .find(|length| *length > max)
        {
            return Err(HeaderError::WordTooLong {
                name: name.to_owned(),
                length,
                max,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A header name made safe to echo in an error message.
fn printable(name: &str) -> String {
    name.chars()
        .take(MAX_NAME)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        assert!(CustomHeader::parse("X-Campaign", "spring").is_ok());
        assert!(CustomHeader::parse("List-Unsubscribe", "<mailto:u@example.com>").is_ok());
        for forbidden in [
            "Bcc",
            "Received",
            "Return-Path",
            "DKIM-Signature",
            "From",
            "Content-Type",
            "X-",
            "X-Posthorn-Stream",
        ] {
            assert!(
                matches!(
                    CustomHeader::parse(forbidden, "v"),
                    Err(HeaderError::Forbidden(_))
                ),
                "{forbidden} accepted"
            );
        }
    }

    #[test]
    fn names_and_values_cannot_inject() {
        assert!(matches!(
            CustomHeader::parse("X-A: b", "v"),
            Err(HeaderError::InvalidName(_))
        ));
        assert!(matches!(
            CustomHeader::parse("X A", "v"),
            Err(HeaderError::InvalidName(_))
        ));
        for value in ["a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\0b"] {
            assert!(matches!(
                CustomHeader::parse("X-A", value),
                Err(HeaderError::ControlCharacter(_))
            ));
        }
    }
}
