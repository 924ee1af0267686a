//! VERP return paths (variable envelope return path): each message goes out with an envelope sender
//! of its own on the bounce domain, `b-<token>@bounces.example.com`, so a bounce sent to it says which
//! message it is about. The token is the message's id and a MAC of it under a secret key: it cannot be
//! guessed or made for a message, and needs no lookup.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// Bytes of the MAC kept in the token (80 bits).
const MAC_BYTES: usize = 10;

/// The local part's prefix.
const PREFIX: &str = "b-";

/// Makes and reads VERP addresses on one domain.
#[derive(Clone)]
pub struct Verp {
    domain: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verp")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Verp {
    /// VERP addresses on `domain`, authenticated with `key`.
    pub fn new(domain: &str, key: &[u8]) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            key: key.to_vec(),
        }
    }

    /// The bounce domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn mac(&self, message: Uuid) -> Vec<u8> {
        // A key of any length is accepted by HMAC.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(message.as_bytes());
        mac.finalize().into_bytes()[..MAC_BYTES].to_vec()
    }

    /// The envelope sender of `message`.
    pub fn address(&self, message: Uuid) -> String {
        let mut token = String::with_capacity(2 * (16 + MAC_BYTES));
        for byte in message.as_bytes().iter().chain(self.mac(message).iter()) {
            token.push_str(&format!("{byte:02x}"));
        }
        format!("{PREFIX}{token}@{}", self.domain)
    }

    /// The message a VERP address of this domain names, if it is one (case does not matter: some
    /// servers change it).
    pub fn message(&self, address: &str) -> Option<Uuid> {
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let token = local
            .get(..PREFIX.len())?
            .eq_ignore_ascii_case(PREFIX)
            .then(|| &local[PREFIX.len()..])?;
        if token.len() != 2 * (16 + MAC_BYTES) || !token.is_ascii() {
            return None;
        }
        let bytes: Vec<u8> = (0..token.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&token[at..at + 2], 16).ok())
            .collect::<Option<_>>()?;
        let message = Uuid::from_slice(&bytes[..16]).ok()?;
        let expected = self.mac(message);
        // Compared in constant time.
        let same = bytes[16..]
            .iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        (same && expected.len() == MAC_BYTES).then_some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_their_message_and_cannot_be_made() {
        let verp = Verp::new("Bounces.Example.com", b"secret key");
        let id = Uuid::now_v7();
        let address = verp.address(id);
        assert!(address.starts_with("b-") && address.ends_with("@bounces.example.com"));
        assert!(address.split('@').next().unwrap().len() <= 64);
        assert_eq!(verp.message(&address), Some(id));
        assert_eq!(verp.message(&address.to_uppercase()), Some(id));
        // Another key, another domain, a changed id or MAC: not ours.
        assert_eq!(
            Verp::new("bounces.example.com", b"other").message(&address),
            None
        );
        assert_eq!(
            verp.message(&address.replace("bounces.example.com", "example.com")),
            None
        );
        let mut forged = address.clone().into_bytes();
        forged[3] = if forged[3] == b'0' { b'1' } else { b'0' };
        assert_eq!(verp.message(&String::from_utf8(forged).unwrap()), None);
        assert_eq!(verp.message("postmaster@bounces.example.com"), None);
        assert_eq!(verp.message("b-zz@bounces.example.com"), None);
    }
}
