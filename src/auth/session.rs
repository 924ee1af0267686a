//! Console sessions: a signed, stateless value (any replica can read it) that says who signed in with
//! which scopes until when, and the CSRF token that goes with it. No token is kept in it: the bearer
//! token is checked once, at sign-in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The key sessions are signed with, derived from a configured secret.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A signed-in console user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The token's `sub`.
    pub sub: String,
    /// Its scopes, by name.
    pub scopes: Vec<String>,
    /// When the session ends (Unix seconds): the token's own expiry, or sooner.
    pub expires: i64,
    /// The token's `jti`, so that revoking the token ends the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl SessionKey {
    /// The session key of `secret` (a purpose of its own: it is never a token key).
    pub fn derive(secret: &Secret) -> Self {
        Self(mac(
            secret.expose().as_bytes(),
            &[b"posthorn console session v1"],
        ))
    }

    /// The signed value of `session`: `payload.signature`, both base64url.
    pub fn seal(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let signature = URL_SAFE_NO_PAD.encode(mac(&self.0, &[b"session:", payload.as_bytes()]));
        format!("{payload}.{signature}")
    }

    /// The session of a signed value, if the signature holds and it has not ended at `now`.
    pub fn open(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, signature) = value.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        verify(&self.0, &[b"session:", payload.as_bytes()], &signature)?;
        let session: Session =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.expires > now).then_some(session)
    }

    /// The CSRF token of a signed session value: every form of that session carries it.
    pub fn csrf(&self, value: &str) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.0, &[b"csrf:", value.as_bytes()]))
    }

    /// Whether `token` is the CSRF token of the session value `value`.
    pub fn check_csrf(&self, value: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|token| verify(&self.0, &[b"csrf:", value.as_bytes()], &token))
            .is_some()
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a MAC.
fn verify(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> Option<()> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires: i64) -> Session {
        Session {
            sub: "ops".into(),
            scopes: vec!["read".into()],
            expires,
            jti: Some("t1".into()),
        }
    }

    #[test]
    fn a_sealed_session_opens_with_its_key_only_and_until_it_ends() {
        let key = SessionKey::derive(&Secret::new("a".repeat(32)));
        let other = SessionKey::derive(&Secret::new("b".repeat(32)));
        let value = key.seal(&session(1000));
        assert_eq!(key.open(&value, 999), Some(session(1000)));
        assert_eq!(key.open(&value, 1000), None, "ended");
        assert_eq!(other.open(&value, 0), None, "another key");
        let (payload, signature) = value.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Session {
                scopes: vec!["admin".into()],
                ..session(1000)
            })
            .unwrap(),
        );
        assert_eq!(key.open(&format!("{forged}.{signature}"), 0), None);
        assert!(key.open(payload, 0).is_none());
        let csrf = key.csrf(&value);
        assert!(key.check_csrf(&value, &csrf));
        assert!(
            !key.check_csrf(&key.seal(&session(2000)), &csrf),
            "another session"
        );
        assert!(!key.check_csrf(&value, "x"));
    }
}
