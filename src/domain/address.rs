//! Email addresses and mailboxes, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::text;

/// RFC 5321 §4.5.3.1: local part at most 64 octets, domain 255, a path at most 256 including `<>`.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_ADDRESS: usize = 254;
const MAX_DISPLAY_NAME: usize = 256;

/// Why an address was refused; the text is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty input.
    #[error("is empty")]
    Empty,
    /// CR, LF, NUL or another control character anywhere in the value.
    #[error("contains a control character (CR, LF, NUL, ...)")]
    ControlCharacter,
    /// Longer than RFC 5321 allows.
    #[error("is too long (local part <= 64, domain <= 255, address <= 254 octets)")]
    TooLong,
    /// The display name is too long.
    #[error("display name is longer than 256 characters")]
    NameTooLong,
    /// A bidirectional control character would make the name read as something else.
    #[error(
        "display name contains a bidirectional control character (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)"
    )]
    BidiControl,
    /// An RFC 2047 encoded-word in the display name decodes to a control character.
    #[error(
        "display name holds an RFC 2047 encoded-word (=?...?=) that decodes to a control character"
    )]
    EncodedControl,
    /// Not of the form `local@domain`, or either half is not valid.
    #[error("is not a valid email address")]
    Invalid,
}

/// A syntactically valid email address (`local@domain`), within RFC 5321 lengths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses a bare address.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let (local, domain) = input.rsplit_once('@').ok_or(AddressError::Invalid)?;
        if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN || input.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        lettre::Address::from_str(input).map_err(|_| AddressError::Invalid)?;
        Ok(Self(input.to_owned()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }

    /// Whether the local part needs SMTPUTF8 (RFC 6531) to be sent.
    pub fn needs_smtputf8(&self) -> bool {
        !self.0.is_ascii()
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address with an optional display name: `Name <local@domain>` or `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The display name, without quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address.
    pub address: EmailAddress,
}

impl Mailbox {
    /// Parses `Name <addr>`, `"Name" <addr>`, `<addr>` or `addr` (RFC 5322 §3.4, by lettre's parser:
    /// a display name with specials such as `,` or `<` is quoted, `"a <b@x.example>" <c@example.com>`).
    /// Control characters and lengths are checked here first, so each refusal says what is wrong.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        // A bare address (the common case) needs no phrase parsing.
        if !input.contains(['<', '"', '(']) {
            return Ok(Self {
                name: None,
                address: EmailAddress::parse(input)?,
            });
        }
        let parsed =
            lettre::message::Mailbox::from_str(input).map_err(|_| AddressError::Invalid)?;
        let address = EmailAddress::parse(parsed.email.as_ref())?;
        let name = parsed.name.map(|name| name.trim().to_owned());
        if let Some(name) = &name {
            if name.chars().count() > MAX_DISPLAY_NAME {
                return Err(AddressError::NameTooLong);
            }
            if text::has_bidi_control(name) {
                return Err(AddressError::BidiControl);
            }
            if text::hides_control_characters(name) {
                return Err(AddressError::EncodedControl);
            }
        }
        Ok(Self {
            name: name.filter(|name| !name.is_empty()),
            address,
        })
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}>", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        let plain = Mailbox::parse("a@example.com").unwrap();
        assert_eq!(plain.name, None);
        assert_eq!(plain.address.as_str(), "a@example.com");
        let named = Mailbox::parse("Ada Lovelace <ada@example.com>").unwrap();
        assert_eq!(named.name.as_deref(), Some("Ada Lovelace"));
        let quoted = Mailbox::parse(r#""Doe, \"J\"" <j@example.com>"#).unwrap();
        assert_eq!(quoted.name.as_deref(), Some(r#"Doe, "J""#));
        assert_eq!(Mailbox::parse("<x@example.com>").unwrap().name, None);
        let specials = Mailbox::parse(r#""a <b@x.example>" <c@example.com>"#).unwrap();
        assert_eq!(specials.name.as_deref(), Some("a <b@x.example>"));
        assert_eq!(specials.address.as_str(), "c@example.com");
    }

    #[test]
    fn refuses_injection_and_garbage() {
        for bad in [
            "a@example.com\r\nBcc: victim@example.com",
            "Name\n <a@example.com>",
            "a@example.com>",
            "Name <a@example.com> trailing",
            "no-at-sign",
            "",
            "a@@example.com",
            "a b@example.com",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn enforces_rfc5321_lengths() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(EmailAddress::parse(&long_local), Err(AddressError::TooLong));
        let ok_local = format!("{}@example.com", "a".repeat(64));
        assert!(EmailAddress::parse(&ok_local).is_ok());
    }
}
