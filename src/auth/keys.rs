//! The configured verification keys, each pinned to one algorithm.

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};

use crate::config::{Config, MIN_HMAC_SECRET_BYTES};

/// One key that verifies tokens, and signs them when it is a shared secret.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) decoding: DecodingKey,
    pub(crate) encoding: Option<EncodingKey>,
}

/// Every configured key. A token's `kid` selects among these and nothing else.
pub struct KeySet {
    pub(crate) keys: Vec<Key>,
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
    /// Builds the key set from `jwt_secret` and `jwt_keys`.
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            let bytes = secret.expose().as_bytes();
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(bytes),
                encoding: Some(EncodingKey::from_secret(bytes)),
            });
        }
        for (index, entry) in config.jwt_keys.iter().enumerate() {
            let label = entry
                .kid
                .clone()
                .unwrap_or_else(|| format!("#{}", index + 1));
            let algorithm: Algorithm = entry
                .algorithm
                .parse()
                .map_err(|_| KeyError::UnknownAlgorithm(entry.algorithm.clone()))?;
            let key = match algorithm.family() {
                AlgorithmFamily::Hmac => {
                    let secret = entry
                        .secret
                        .as_ref()
                        .filter(|secret| secret.expose().len() >= MIN_HMAC_SECRET_BYTES)
                        .ok_or_else(|| KeyError::WeakSecret(label.clone()))?;
                    let bytes = secret.expose().as_bytes();
                    Key {
                        kid: entry.kid.clone(),
                        algorithm,
                        decoding: DecodingKey::from_secret(bytes),
                        encoding: Some(EncodingKey::from_secret(bytes)),
                    }
                }
                family => {
                    let pem = entry
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
                        kid: entry.kid.clone(),
                        algorithm,
                        decoding,
                        encoding: None,
                    }
                }
            };
            if let Some(kid) = &key.kid
                && keys.iter().any(|other| other.kid.as_deref() == Some(kid))
            {
                return Err(KeyError::DuplicateKid(kid.clone()));
            }
            keys.push(key);
        }
        Ok(Self { keys })
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
