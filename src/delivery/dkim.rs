//! DKIM signing (RFC 6376; Ed25519 per RFC 8463): a message leaves with one `DKIM-Signature` for each
//! key of its `From` domain, so that receivers can tie it to that domain (DMARC alignment).
//!
//! A key is parsed once ([`DkimKey::from_pem`]); a message is signed by borrowing it, with
//! relaxed/relaxed canonicalization (it survives the re-folding and whitespace changes relays make) over
//! those of [`SIGNED_HEADERS`] the message has. [`generate`] makes a fresh key and the TXT record that
//! publishes it.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{self, Algorithm, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::Canonicalization;
use mail_parser::MessageParser;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// The headers signed, each when the message has it: those a receiver shows or acts on.
///
/// A name the message lacks is left out of `h=`: listed, it would sign the header's absence, and a
/// relay that adds a missing header (Postfix's cleanup adds `Date` and `Message-ID`) would break the
/// signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RFC 8301 asks for at least 1024 bits and recommends 2048; ring signs with 2048 to 4096. 2048 is
/// what large receivers expect, and its public key (392 base64 characters) is the one DNS providers
/// take most readily.
const RSA_BITS: usize = 2048;

/// Which signature algorithm a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DkimAlgorithm {
    /// `rsa-sha256`: what every receiver verifies.
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463): small keys, but not every receiver verifies it yet, so it is
    /// best published beside an RSA key.
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// `rsa-sha256` or `ed25519-sha256` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::RsaSha256, Self::Ed25519Sha256]
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The name `a=` and the configuration use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RsaSha256 => "rsa-sha256",
            Self::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be used, a message not signed, or a key not made. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// A configured key is unusable (its PEM, its algorithm, its domain or selector).
    #[error("DKIM key {0}")]
    Key(String),
    /// Signing a message failed.
    #[error("DKIM signing failed: {0}")]
    Sign(String),
    /// A new key could not be made.
    #[error("DKIM key generation failed: {0}")]
    Generate(String),
}

/// One signing key: a domain's selector.
pub struct DkimKey {
    domain: String,
    selector: String,
    algorithm: DkimAlgorithm,
    key: crypto::DkimKey,
}

impl DkimKey {
    /// Reads the private key in `pem` (PKCS#8, or PKCS#1 for RSA) for `selector._domainkey.domain`.
    ///
    /// The domain and selector must be ASCII DNS names (an internationalized domain in its `xn--`
    /// form): they are written into every signature.
    pub fn from_pem(
        domain: &str,
        selector: &str,
        algorithm: DkimAlgorithm,
        pem: &[u8],
    ) -> Result<Self, DkimError> {
        let name = format!("{selector}._domainkey.{domain}");
        if !is_dns_name(domain) {
            return Err(DkimError::Key(format!(
                "{name}: the domain must be an ASCII DNS name (letters, digits, hyphens; xn-- for an \
                 internationalized one)"
            )));
        }
        if !is_dns_name(selector) {
            return Err(DkimError::Key(format!(
                "{name}: the selector must be DNS labels (letters, digits, hyphens)"
            )));
        }
        let key = read_key(algorithm, pem)
            .map_err(|reason| DkimError::Key(format!("{name}: {reason}")))?;
        Ok(Self {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_owned(),
            algorithm,
            key,
        })
    }

    /// The signing domain (`d=`), in lower case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The algorithm (`a=`).
    pub fn algorithm(&self) -> DkimAlgorithm {
        self.algorithm
    }

    /// The `DKIM-Signature: ...\r\n` header for `message`, over the `headers` it has.
    fn signature(&self, headers: &[&str], message: &[u8]) -> Result<String, DkimError> {
        mail_auth::dkim::DkimSigner::from_key(Lent(&self.key))
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(headers.iter().copied())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map(|signature| signature.to_header())
            .map_err(|error| {
                DkimError::Sign(format!(
                    "{}._domainkey.{}: {error}",
                    self.selector, self.domain
                ))
            })
    }
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// mail-auth's signer owns its key; this lends it one that lives as long as the configuration, so a
/// key is parsed once rather than for every message.
struct Lent<'a>(&'a crypto::DkimKey);

impl SigningKey for Lent<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// Every configured key; signs each message by every key of its From domain.
#[derive(Debug, Clone)]
pub struct DkimSigner {
    keys: Arc<[DkimKey]>,
}

impl DkimSigner {
    /// A signer with these keys (several per domain sign with each).
    pub fn new(keys: Vec<DkimKey>) -> Self {
        Self { keys: keys.into() }
    }

    /// Whether no key is configured (nothing is ever signed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The message with a DKIM-Signature header for every key of its From domain prepended (domain
    /// compared case-insensitively, exact domain match), or None when no key matches / no From header.
    /// Errors only when signing itself fails.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(domain) = from_domain(message) else {
            return Ok(None);
        };
        let keys: Vec<&DkimKey> = self
            .keys
            .iter()
            .filter(|key| key.domain.eq_ignore_ascii_case(&domain))
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let headers = present_headers(message);
        let mut signed = Vec::with_capacity(message.len() + 512 * keys.len());
        for key in keys {
            signed.extend_from_slice(key.signature(&headers, message)?.as_bytes());
        }
        signed.extend_from_slice(message);
        Ok(Some(signed))
    }
}

/// A fresh key: the private key as PEM (PKCS#8) and the DNS TXT record value for its selector.
pub struct GeneratedKey {
    /// `-----BEGIN PRIVATE KEY-----` ...
    pub private_pem: String,
    /// What to publish at `SELECTOR._domainkey.DOMAIN`: `v=DKIM1; k=rsa; p=...`. An RSA key's is
    /// longer than 255 characters; DNS providers split it into strings themselves, or ask for it split.
    pub dns_txt: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("private_pem", &"[redacted]")
            .field("dns_txt", &self.dns_txt)
            .finish()
    }
}

/// A fresh key for `algorithm`: RSA of 2048 bits, or Ed25519.
pub fn generate(algorithm: DkimAlgorithm) -> Result<GeneratedKey, DkimError> {
    match algorithm {
        DkimAlgorithm::RsaSha256 => generate_rsa(),
        DkimAlgorithm::Ed25519Sha256 => generate_ed25519(),
    }
}

fn generate_rsa() -> Result<GeneratedKey, DkimError> {
    let failed = |error: &dyn fmt::Display| DkimError::Generate(format!("RSA: {error}"));
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
        .map_err(|error| failed(&error))?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| failed(&error))?;
    // The SubjectPublicKeyInfo, as `openssl rsa -pubout` writes it and every verifier reads it.
    let public = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|error| failed(&error))?;
    Ok(GeneratedKey {
        private_pem: private_pem.as_str().to_owned(),
        dns_txt: format!("v=DKIM1; k=rsa; p={}", BASE64.encode(public.as_bytes())),
    })
}

fn generate_ed25519() -> Result<GeneratedKey, DkimError> {
    let failed = |error: &dyn fmt::Display| DkimError::Generate(format!("Ed25519: {error}"));
    let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|error| failed(&error))?;
    // RFC 8463: `p=` is the raw 32-byte public key, not a SubjectPublicKeyInfo.
    let public = Ed25519Key::from_pkcs8_der(&pkcs8)
        .map_err(|error| failed(&error))?
        .public_key();
    let private_pem = rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &pkcs8)
        .map_err(|error| failed(&error))?;
    Ok(GeneratedKey {
        private_pem,
        dns_txt: format!("v=DKIM1; k=ed25519; p={}", BASE64.encode(public)),
    })
}

/// The signing key in `pem`, or why it cannot sign with `algorithm`.
fn read_key(algorithm: DkimAlgorithm, pem: &[u8]) -> Result<crypto::DkimKey, String> {
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|error| format!("no private key in the PEM: {error}"))?;
    match algorithm {
        DkimAlgorithm::RsaSha256 => RsaKey::<Sha256>::from_key_der(der)
            .map(crypto::DkimKey::Rsa)
            .map_err(|error| format!("not an RSA key of 2048 to 4096 bits: {error}")),
        DkimAlgorithm::Ed25519Sha256 => match der {
            // "Maybe unchecked": OpenSSL writes PKCS#8 v1, without the public key that ring's
            // own documents carry.
            PrivateKeyDer::Pkcs8(der) => {
                Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                    .map(crypto::DkimKey::Ed25519)
                    .map_err(|error| format!("not an Ed25519 key: {error}"))
            }
            _ => Err("an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)".to_owned()),
        },
    }
}

/// Dot-separated labels of ASCII letters, digits, hyphens and underscores: nothing that could end a
/// DKIM tag or a header line.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

/// The domain of the From header's first address.
fn from_domain(message: &[u8]) -> Option<String> {
    let headers = MessageParser::default().parse_headers(message)?;
    let address = headers.from()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.to_owned())
}

/// The [`SIGNED_HEADERS`] `message` has, each once. A name is found as mail-auth finds it (the bytes
/// before the colon, in any case), so `h=` lists exactly these.
fn present_headers(message: &[u8]) -> Vec<&'static str> {
    let mut present = Vec::new();
    for line in message.split_inclusive(|byte| *byte == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line
            .first()
            .is_some_and(|byte| *byte == b' ' || *byte == b'\t')
        {
            continue;
        }
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let name = &line[..colon];
        if let Some(known) = SIGNED_HEADERS
            .iter()
            .find(|known| name.eq_ignore_ascii_case(known.as_bytes()))
            && !present.contains(known)
        {
            present.push(*known);
        }
    }
    present
}

#[cfg(test)]
mod tests;
