//! Attachments: a file name, a media type and base64 content checked at the edge.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

const MAX_FILENAME: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why an attachment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// Empty, too long, or containing control characters.
    #[error("filename must be 1-255 characters without control characters")]
    InvalidFilename,
    /// Not `type/subtype` with optional parameters.
    #[error("content_type is not a valid media type")]
    InvalidContentType,
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
    pub fn parse(
        filename: &str,
        content: &str,
        content_type: Option<&str>,
        max_size: usize,
    ) -> Result<Self, AttachmentError> {
        if filename.trim().is_empty()
            || filename.chars().count() > MAX_FILENAME
            || filename.chars().any(char::is_control)
        {
            return Err(AttachmentError::InvalidFilename);
        }
        let content_type = content_type.unwrap_or(DEFAULT_CONTENT_TYPE).trim();
        if content_type.chars().any(char::is_control)
            || lettre::message::header::ContentType::parse(content_type).is_err()
        {
            return Err(AttachmentError::InvalidContentType);
        }
        // MIME producers often wrap base64 at 76 columns; whitespace carries no data.
        let compact: String = content.split_ascii_whitespace().collect();
        // Reject before decoding when the encoded length alone proves the limit is exceeded.
        if compact.len() / 4 * 3 > max_size + 3 {
            return Err(AttachmentError::TooLarge { max: max_size });
        }
        let size = STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| AttachmentError::InvalidBase64)?
            .len();
        if size > max_size {
            return Err(AttachmentError::TooLarge { max: max_size });
        }
        Ok(Self {
            filename: filename.to_owned(),
            content_type: content_type.to_owned(),
            content: compact,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_base64_and_size() {
        let ok = Attachment::parse("a.txt", "aGVs\nbG8=", Some("text/plain"), 10).unwrap();
        assert_eq!(ok.size, 5);
        assert_eq!(ok.content, "aGVsbG8=");
        assert_eq!(
            Attachment::parse("a.txt", "!!notbase64", None, 10),
            Err(AttachmentError::InvalidBase64)
        );
        assert_eq!(
            Attachment::parse("a.txt", "aGVsbG8=", None, 4),
            Err(AttachmentError::TooLarge { max: 4 })
        );
    }

    #[test]
    fn refuses_injection_in_names_and_types() {
        assert_eq!(
            Attachment::parse("a\r\nb.txt", "", None, 10),
            Err(AttachmentError::InvalidFilename)
        );
        assert_eq!(
            Attachment::parse("a.txt", "", Some("text/plain\r\nX-Evil: 1"), 10),
            Err(AttachmentError::InvalidContentType)
        );
    }
}
