//! Idempotency keys and the fingerprint that tells a replay from a different request.

use sha2::{Digest, Sha256};

/// RFC draft-ietf-httpapi-idempotency-key-header leaves the length open; 255 fits every real key.
const MAX_KEY: usize = 255;

/// Why an `Idempotency-Key` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// Empty or longer than 255 characters.
    #[error("Idempotency-Key must be 1-255 characters long")]
    Length,
    /// Outside printable ASCII.
    #[error("Idempotency-Key must be printable ASCII")]
    NotPrintable,
}

/// A caller's idempotency key: 1-255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    pub fn parse(input: &str) -> Result<Self, IdempotencyKeyError> {
        if input.is_empty() || input.len() > MAX_KEY {
            return Err(IdempotencyKeyError::Length);
        }
        if !input.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(IdempotencyKeyError::NotPrintable);
        }
        Ok(Self(input.to_owned()))
    }

    /// The key of a message a caller wrote itself (SMTP submission): its `Message-ID`, which a client
    /// retrying after a lost reply sends again. In a namespace of its own, so it never meets a key given
    /// over HTTP; one too long or not printable is hashed.
    pub fn for_message_id(message_id: &str) -> Self {
        let key = format!("message-id:{message_id}");
        if Self::parse(&key).is_ok() {
            return Self(key);
        }
        let digest = Sha256::digest(message_id.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(format!("message-id:sha256:{hex}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of a request's canonical JSON: equal for equal requests whatever their key order or spacing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFingerprint(pub [u8; 32]);

impl RequestFingerprint {
    /// Fingerprints a parsed JSON body (serde_json's maps are sorted, so the encoding is canonical).
    pub fn of(body: &serde_json::Value) -> Self {
        let mut hasher = Sha256::new();
        // Writing into a hasher cannot fail; an error here would be a serde_json bug.
        let _ = serde_json::to_writer(HashWriter(&mut hasher), body);
        Self(hasher.finalize().into())
    }
}

impl RequestFingerprint {
    /// Fingerprints a message's bytes as they arrived.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Length));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(IdempotencyKeyError::Length)
        );
        assert_eq!(
            IdempotencyKey::parse("a\u{7f}"),
            Err(IdempotencyKeyError::NotPrintable)
        );
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "b":[1,2], "a":1 }"#).unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"a":2,"b":[1,2]}"#).unwrap();
        assert_eq!(RequestFingerprint::of(&a), RequestFingerprint::of(&b));
        assert_ne!(RequestFingerprint::of(&a), RequestFingerprint::of(&c));
    }
}
