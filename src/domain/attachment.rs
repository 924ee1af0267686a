//! Attachments: a file name, a media type and base64 content checked at the edge.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::text;

const MAX_FILENAME: usize = 255;
/// The longest `content_type` accepted (`type/subtype; charset=...`).
pub const MAX_CONTENT_TYPE: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why an attachment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// Empty, too long, or containing control characters.
    #[error("filename must be 1-255 characters without control characters")]
    InvalidFilename,
    /// A bidirectional control character would make the name read as something else.
    #[error(
        "filename contains a bidirectional control character (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)"
    )]
    BidiControl,
    /// An RFC 2047 encoded-word in the name decodes to a control character.
    #[error(
        "filename holds an RFC 2047 encoded-word (=?...?=) that decodes to a control character"
    )]
    EncodedControl,
    /// Not `type/subtype`, optionally with a `charset` parameter.
    #[error(
        "content_type must be type/subtype, optionally with a charset parameter, at most 255 characters"
    )]
    InvalidContentType,
    /// A container type, whose content would become MIME structure the caller wrote.
    #[error(
        "content_type may not be multipart/* or message/* for an attachment; send such a file as application/octet-stream"
    )]
    ContainerType,
    /// `content` is not standard base64.
    #[error("content is not valid base64")]
    InvalidBase64,
    /// Larger than the configured limit once decoded.
    #[error("content is larger than {max} bytes once decoded")]
    TooLarge {
        /// The configured limit.
        max: usize,
    },
}

/// A validated attachment; `content` holds canonical base64 (no whitespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The name shown to the recipient.
    pub filename: String,
    /// The media type, e.g. `application/pdf`.
    pub content_type: String,
    /// Base64 of the bytes.
    pub content: String,
    /// Size of the decoded bytes.
    pub size: usize,
}

impl Attachment {
    /// Validates one attachment against `max_size` (decoded bytes).
    /// `content` is taken as given, without a copy, unless it has whitespace to take out.
    pub fn parse(
        filename: &str,
        content: String,
        content_type: Option<&str>,
        max_size: usize,
    ) -> Result<Self, AttachmentError> {
        if filename.trim().is_empty()
            || filename.chars().count() > MAX_FILENAME
            || filename.chars().any(char::is_control)
        {
            return Err(AttachmentError::InvalidFilename);
        }
        if text::has_bidi_control(filename) {
            return Err(AttachmentError::BidiControl);
        }
        if text::hides_control_characters(filename) {
            return Err(AttachmentError::EncodedControl);
        }
        let content_type = media_type(content_type.unwrap_or(DEFAULT_CONTENT_TYPE))?;
        // MIME producers often wrap base64 at 76 columns; whitespace carries no data.
        let compact = if content.bytes().any(|byte| byte.is_ascii_whitespace()) {
            content.split_ascii_whitespace().collect()
        } else {
            content
        };
        // Reject before decoding when the encoded length alone proves the limit is exceeded.
        if compact.len() / 4 * 3 > max_size + 3 {
            return Err(AttachmentError::TooLarge { max: max_size });
        }
        let size = decoded_size(compact.as_bytes())?;
        if size > max_size {
            return Err(AttachmentError::TooLarge { max: max_size });
        }
        Ok(Self {
            filename: filename.to_owned(),
            content_type,
            content: compact,
            size,
        })
    }

    /// Whether `content_type` would be accepted as an attachment's media type.
    pub fn accepts_media_type(content_type: &str) -> bool {
        media_type(content_type).is_ok()
    }
}

/// Characters of base64 checked at a time (a multiple of 4, so that every block but the last decodes on
/// its own).
const CHECK_BLOCK: usize = 4096;

/// The size of standard base64 once decoded, checked a block at a time into a small buffer: a large
/// attachment is validated without holding its bytes a second time. Padding may end the last block only,
/// so this accepts exactly what decoding the whole at once does.
fn decoded_size(encoded: &[u8]) -> Result<usize, AttachmentError> {
    let mut buffer = [0u8; CHECK_BLOCK / 4 * 3];
    let mut size = 0;
    let mut blocks = encoded.chunks(CHECK_BLOCK).peekable();
    while let Some(block) = blocks.next() {
        if blocks.peek().is_some() && block.contains(&b'=') {
            return Err(AttachmentError::InvalidBase64);
        }
        size += STANDARD
            .decode_slice(block, &mut buffer)
            .map_err(|_| AttachmentError::InvalidBase64)?;
    }
    Ok(size)
}

/// `type/subtype`, optionally with `charset`: the only parameter a caller may give, so that no other
/// parameter (a `name` beside the file name, a `boundary`) reaches the part's header. Returned in
/// canonical form: lower case, `; charset=value`.
fn media_type(input: &str) -> Result<String, AttachmentError> {
    let input = input.trim();
    if input.len() > MAX_CONTENT_TYPE {
        return Err(AttachmentError::InvalidContentType);
    }
    let mut parts = input.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let (kind, subtype) = essence
        .split_once('/')
        .filter(|(kind, subtype)| is_token(kind) && is_token(subtype))
        .ok_or(AttachmentError::InvalidContentType)?;
    if kind == "multipart" || kind == "message" {
        return Err(AttachmentError::ContainerType);
    }
    let mut canonical = format!("{kind}/{subtype}");
    for parameter in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = parameter
            .split_once('=')
            .ok_or(AttachmentError::InvalidContentType)?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !name.trim().eq_ignore_ascii_case("charset")
            || !is_token(value)
            || canonical.contains(';')
        {
            return Err(AttachmentError::InvalidContentType);
        }
        canonical.push_str("; charset=");
        canonical.push_str(value);
    }
    Ok(canonical)
}

/// An RFC 2045 token: printable ASCII without spaces or tspecials.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_base64_and_size() {
        let ok = Attachment::parse("a.txt", "aGVs\nbG8=".into(), Some("text/plain"), 10).unwrap();
        assert_eq!(ok.size, 5);
        assert_eq!(ok.content, "aGVsbG8=");
        assert_eq!(
            Attachment::parse("a.txt", "!!notbase64".into(), None, 10),
            Err(AttachmentError::InvalidBase64)
        );
        assert_eq!(
            Attachment::parse("a.txt", "aGVsbG8=".into(), None, 4),
            Err(AttachmentError::TooLarge { max: 4 })
        );
    }

    #[test]
    fn block_by_block_checks_agree_with_decoding_the_whole() {
        let bytes: Vec<u8> = (0..20_000u32).map(|n| (n * 7 + n / 3) as u8).collect();
        for length in [0, 1, 2, 3, 3071, 3072, 3073, 6144, 6145, 20_000] {
            let encoded = STANDARD.encode(&bytes[..length]);
            let parsed = Attachment::parse("a.bin", encoded.clone(), None, 1 << 20).unwrap();
            assert_eq!(parsed.size, length);
            assert_eq!(parsed.content, encoded, "no whitespace: kept as given");
        }
        // Padding inside (two encodings run together) is refused, wherever a block ends.
        for first in [1, 3070, 3071, 3073] {
            let joined = STANDARD.encode(&bytes[..first]) + &STANDARD.encode(&bytes[..4]);
            assert!(STANDARD.decode(&joined).is_err());
            assert_eq!(
                Attachment::parse("a.bin", joined, None, 1 << 20),
                Err(AttachmentError::InvalidBase64),
                "{first}"
            );
        }
        // Trailing bits and a short last block are refused as a whole decode refuses them.
        for bad in ["aGVsbG9=", "aGVsbG8", "aGVsbG8=="] {
            assert!(STANDARD.decode(bad).is_err(), "{bad}");
            assert_eq!(
                Attachment::parse("a.bin", bad.into(), None, 100),
                Err(AttachmentError::InvalidBase64),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_injection_in_names_and_types() {
        assert_eq!(
            Attachment::parse("a\r\nb.txt", String::new(), None, 10),
            Err(AttachmentError::InvalidFilename)
        );
        assert_eq!(
            Attachment::parse("a.txt", String::new(), Some("text/plain\r\nX-Evil: 1"), 10),
            Err(AttachmentError::InvalidContentType)
        );
        assert_eq!(
            Attachment::parse("invoice\u{202E}fdp.exe", String::new(), None, 10),
            Err(AttachmentError::BidiControl)
        );
    }

    #[test]
    fn only_a_media_type_and_its_charset_reach_the_part() {
        let parse =
            |content_type| Attachment::parse("a.txt", String::new(), Some(content_type), 10);
        assert_eq!(
            parse(" Text/Plain ; charset=\"UTF-8\"")
                .unwrap()
                .content_type,
            "text/plain; charset=UTF-8"
        );
        assert_eq!(
            parse("application/pdf").unwrap().content_type,
            "application/pdf"
        );
        for refused in [
            "text/plain; name=\"evil.exe\"",
            "text/plain; charset=utf-8; charset=latin1",
            "text",
            "text/",
            "te xt/plain",
        ] {
            assert_eq!(
                parse(refused),
                Err(AttachmentError::InvalidContentType),
                "{refused}"
            );
        }
        for container in [
            "multipart/mixed; boundary=x",
            "message/rfc822",
            "Multipart/Alternative",
        ] {
            assert_eq!(
                parse(container),
                Err(AttachmentError::ContainerType),
                "{container}"
            );
        }
        assert_eq!(
            parse(&format!("application/{}", "x".repeat(250))),
            Err(AttachmentError::InvalidContentType)
        );
    }
}
