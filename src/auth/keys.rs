//! The configured verification keys, each pinned to one algorithm.

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use serde::Deserialize;

use super::MIN_HMAC_SECRET_BYTES;
use crate::secret::Secret;

/// A verification key as configured (a `[[jwt_keys]]` entry of the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Key id; a token whose header names a `kid` is verified with this key only.
    pub kid: Option<String>,
    /// Signature algorithm accepted for this key, e.g. `HS256`, `RS256`, `ES256`, `EdDSA`.
    pub algorithm: String,
    /// Shared secret for HMAC algorithms.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PEM public key for asymmetric algorithms.
    pub public_key_pem: Option<String>,
}

/// One key that verifies tokens, and signs them when it is a shared secret.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
    pub(crate) encoding: Option<EncodingKey>,
}

/// Every configured key. A token's `kid` selects among these and nothing else.
#[derive(Clone, Default)]
pub struct KeySet {
    pub(crate) keys: Vec<Key>,
    /// What console sessions are signed with: `POSTHORN_CONSOLE_SECRET`, else the first shared
    /// secret (`POSTHORN_JWT_SECRET`, or the development profile's generated one).
    pub(crate) session_secret: Option<Secret>,
}

/// Why a configured key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The `algorithm` is not a JWS algorithm name.
    #[error("unknown algorithm `{0}`")]
    UnknownAlgorithm(String),
    /// An HMAC key without a secret, or with one that is too short.
    #[error(
        "key {0}: an HMAC algorithm needs a `secret` of at least {MIN_HMAC_SECRET_BYTES} bytes"
    )]
    WeakSecret(String),
    /// An asymmetric key without `public_key_pem`, or one that does not parse.
    #[error("key {0}: `public_key_pem` is missing or not a valid PEM public key for its algorithm")]
    BadPublicKey(String),
    /// Two keys with the same `kid`.
    #[error("key id `{0}` is configured twice")]
    DuplicateKid(String),
}

impl KeySet {
    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Signs console sessions with `secret` (instead of the token secret).
    pub fn set_session_secret(&mut self, secret: Secret) {
        self.session_secret = Some(secret);
    }

    /// Adds the HS256 key `secret` without a key id (`POSTHORN_JWT_SECRET`, or the development
    /// profile's generated secret).
    pub fn add_secret(&mut self, secret: &Secret) -> Result<(), KeyError> {
        if self.session_secret.is_none() {
            self.session_secret = Some(secret.clone());
        }
        self.add(
            &KeySpec {
                kid: None,
                algorithm: "HS256".to_owned(),
                secret: Some(secret.clone()),
                public_key_pem: None,
            },
            "POSTHORN_JWT_SECRET",
        )
    }

    /// Checks a configured key and adds it; `label` names it in errors when it has no `kid`.
    pub fn add(&mut self, spec: &KeySpec, label: &str) -> Result<(), KeyError> {
        let label = spec.kid.clone().unwrap_or_else(|| label.to_owned());
        let algorithm: Algorithm = spec
            .algorithm
            .parse()
            .map_err(|_| KeyError::UnknownAlgorithm(spec.algorithm.clone()))?;
        let key = match algorithm.family() {
            AlgorithmFamily::Hmac => {
                let secret = spec
                    .secret
                    .as_ref()
                    .filter(|secret| secret.expose().len() >= MIN_HMAC_SECRET_BYTES)
                    .ok_or_else(|| KeyError::WeakSecret(label.clone()))?;
                let bytes = secret.expose().as_bytes();
                Key {
                    kid: spec.kid.clone(),
                    algorithm,
                    decoding: DecodingKey::from_secret(bytes),
                    encoding: Some(EncodingKey::from_secret(bytes)),
                }
            }
            family => {
                let pem = spec
                    .public_key_pem
                    .as_deref()
                    .ok_or_else(|| KeyError::BadPublicKey(label.clone()))?
                    .as_bytes();
                let decoding = match family {
                    AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                    AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
                    _ => DecodingKey::from_ed_pem(pem),
                }
                .map_err(|_| KeyError::BadPublicKey(label.clone()))?;
                Key {
                    kid: spec.kid.clone(),
                    algorithm,
                    decoding,
                    encoding: None,
                }
            }
        };
        if let Some(kid) = &key.kid
            && self
                .keys
                .iter()
                .any(|other| other.kid.as_deref() == Some(kid))
        {
            return Err(KeyError::DuplicateKid(kid.clone()));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Whether no key is configured at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token with this header may be verified with: the one its `kid` names, or, without a
    /// `kid`, the keys without one that use its algorithm.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        algorithm: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |key| {
            key.algorithm == algorithm
                && match kid {
                    Some(kid) => key.kid.as_deref() == Some(kid),
                    None => key.kid.is_none(),
                }
        })
    }

    /// The first key that can sign tokens (a shared secret).
    pub(crate) fn signing_key(&self) -> Option<&Key> {
        self.keys.iter().find(|key| key.encoding.is_some())
    }
}
