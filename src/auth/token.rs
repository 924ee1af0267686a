//! The claims posthorn reads from a token, and minting tokens for operators.

use std::time::Duration;

use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Header, encode, get_current_timestamp};
use serde::{Deserialize, Serialize};

use super::Scope;
use super::keys::KeySet;

/// The claims of a caller token beyond the registered ones jsonwebtoken checks itself.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The caller.
    pub sub: String,
    /// Space- or comma-separated scope names, or a list of them.
    #[serde(default)]
    pub scope: ScopeClaim,
    /// Optional restriction of the sender domains this token may use.
    #[serde(default)]
    pub sender_domains: Option<Vec<String>>,
    /// The token's id, by which one token can be revoked (`[[callers]] revoked_tokens`).
    #[serde(default)]
    pub jti: Option<String>,
    /// When it expires (Unix seconds; required, checked by the decoder).
    #[serde(default)]
    pub exp: Option<u64>,
}

/// The `scope` claim in either of its common shapes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum ScopeClaim {
    /// `"send read"` (RFC 8693) or `"send,read"`.
    Text(String),
    /// `["send", "read"]`.
    List(Vec<String>),
    /// No scope at all.
    #[default]
    None,
}

impl ScopeClaim {
    /// The known scopes named by the claim; unknown names grant nothing.
    pub fn scopes(&self) -> Vec<Scope> {
        let names: Vec<&str> = match self {
            ScopeClaim::Text(text) => text
                .split([' ', ','])
                .filter(|name| !name.is_empty())
                .collect(),
            ScopeClaim::List(list) => list.iter().map(String::as_str).collect(),
            ScopeClaim::None => Vec::new(),
        };
        names.into_iter().filter_map(Scope::parse).collect()
    }
}

/// A short reason for a refused token, safe to show to the caller.
pub(super) fn describe(error: &Error) -> &'static str {
    match error.kind() {
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "token has the wrong issuer",
        ErrorKind::InvalidAudience => "token has the wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp, sub, iss or aud)",
        ErrorKind::InvalidClaimFormat(_) => "a registered claim has the wrong type",
        ErrorKind::InvalidSignature => "token signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "token algorithm is not allowed for this key"
        }
        ErrorKind::Json(_) => "token claims are not valid (sub must be a string)",
        _ => "token is not valid",
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Only shared-secret keys can sign; public keys only verify.
    #[error("no signing key: set POSTHORN_JWT_SECRET (or a jwt_keys entry with a secret)")]
    NoSigningKey,
    /// The subject is not one the API would accept.
    #[error("--sub must be 1-255 printable characters")]
    InvalidSub,
    /// The signing library failed.
    #[error("could not sign the token")]
    Sign(#[source] Error),
}

pub(super) struct MintRequest<'a> {
    pub sub: &'a str,
    pub scopes: &'a [Scope],
    pub ttl: Duration,
    pub sender_domains: Option<Vec<String>>,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_domains: Option<Vec<String>>,
    jti: String,
}

pub(super) fn mint(keys: &KeySet, request: MintRequest<'_>) -> Result<String, MintError> {
    if !super::valid_sub(request.sub) {
        return Err(MintError::InvalidSub);
    }
    let key = keys.signing_key().ok_or(MintError::NoSigningKey)?;
    let encoding = key.encoding.as_ref().ok_or(MintError::NoSigningKey)?;
    let now = get_current_timestamp();
    let claims = MintedClaims {
        sub: request.sub,
        iat: now,
        exp: now + request.ttl.as_secs(),
        scope: request
            .scopes
            .iter()
            .map(|scope| scope.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        iss: request.issuer,
        aud: request.audience,
        sender_domains: request.sender_domains,
        jti: uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut header = Header::new(key.algorithm);
    header.kid = key.kid.clone();
    encode(&header, &claims, encoding).map_err(MintError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_claim_shapes() {
        let text: ScopeClaim = serde_json::from_str(r#""send read""#).unwrap();
        assert_eq!(text.scopes(), vec![Scope::Send, Scope::Read]);
        let comma: ScopeClaim = serde_json::from_str(r#""send,bogus""#).unwrap();
        assert_eq!(comma.scopes(), vec![Scope::Send]);
        let list: ScopeClaim = serde_json::from_str(r#"["read"]"#).unwrap();
        assert_eq!(list.scopes(), vec![Scope::Read]);
    }
}
