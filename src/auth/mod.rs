//! Caller authentication: verifying bearer tokens and minting them for operators.
//!
//! Tokens are JWTs. Each configured key is pinned to one algorithm, `exp` is required, `iss` and `aud` are
//! checked when configured, and a `kid` only ever selects among configured keys.

mod keys;
pub mod session;
mod token;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Validation, decode, decode_header};

pub use keys::{KeyError, KeySet, KeySpec};
pub use token::{Claims, MintError};

/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// What the authenticator checks tokens against.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// The verification (and signing) keys.
    pub keys: KeySet,
    /// When set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    /// What applies to particular callers, keyed by their `sub`.
    pub callers: HashMap<String, CallerPolicy>,
}

/// Rules for one caller beyond what its token says.
#[derive(Debug, Clone, Default)]
pub struct CallerPolicy {
    /// A disabled caller's tokens are refused even before they expire.
    pub disabled: bool,
    /// When not empty, the only domains this caller may send from (a token may narrow them further).
    pub sender_domains: Vec<String>,
    /// Ids (`jti`) of this caller's tokens that are refused although they have not expired.
    pub revoked_tokens: Vec<String>,
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Submit messages.
    Send,
    /// Read messages and their delivery attempts.
    Read,
    /// Read and cancel every caller's messages.
    Admin,
}

impl Scope {
    /// The name used in tokens and `WWW-Authenticate` challenges.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name; unknown names are ignored by callers of this function.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "send" => Some(Scope::Send),
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub`; every message and idempotency key belongs to one caller.
    pub sub: String,
    scopes: Vec<Scope>,
    /// When set, the domains this caller may send from (lower case).
    pub sender_domains: Option<Vec<String>>,
}

impl Caller {
    /// Whether the caller holds `scope` (admin holds every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether the caller may read every caller's messages.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the caller may send from an address in `domain`.
    pub fn may_send_from(&self, domain: &str) -> bool {
        match &self.sender_domains {
            None => true,
            Some(allowed) => allowed.iter().any(|d| d.eq_ignore_ascii_case(domain)),
        }
    }
}

/// Why a request was not authenticated. The text is safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    Missing,
    /// The token does not verify or its claims are not acceptable.
    #[error("{0}")]
    Invalid(&'static str),
    /// The token verified, but its caller is disabled in the configuration.
    #[error("this caller is disabled")]
    CallerDisabled,
    /// The token verified, but it has been revoked in the configuration.
    #[error("this token has been revoked")]
    Revoked,
}

/// Why a console sign-in was refused. The text is safe to show.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The token does not verify, has expired, or its caller is disabled.
    #[error("{0}")]
    Token(AuthError),
    /// The token holds neither `read` nor `admin`.
    #[error("this token holds neither the `read` nor the `admin` scope")]
    NotReader,
    /// No shared secret is configured to sign sessions with.
    #[error("the console needs POSTHORN_CONSOLE_SECRET (or POSTHORN_JWT_SECRET) to sign sessions")]
    NoSessionKey,
}

/// Verifies bearer tokens against the configured keys and caller settings.
pub struct Authenticator {
    keys: KeySet,
    /// Signs console sessions; `None` without a shared secret (the console cannot sign anyone in).
    sessions: Option<session::SessionKey>,
    issuer: Option<String>,
    audience: Option<String>,
    callers: HashMap<String, CallerPolicy>,
}

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

impl Authenticator {
    /// An authenticator over validated settings.
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            sessions: settings
                .keys
                .session_secret
                .as_ref()
                .map(session::SessionKey::derive),
            keys: settings.keys,
            issuer: settings.issuer,
            audience: settings.audience,
            callers: settings.callers,
        }
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies `token` and returns its caller.
    pub fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify(token).map(|(caller, _)| caller)
    }

    /// Signs in to the console with `token`, which must hold `read` (or `admin`): the signed
    /// session value, ending when the token does or after `longest`, whichever is sooner.
    pub fn sign_in(
        &self,
        token: &str,
        now: i64,
        longest: Duration,
    ) -> Result<(String, Caller), SignInError> {
        let key = self.sessions.as_ref().ok_or(SignInError::NoSessionKey)?;
        let (caller, claims) = self.verify(token).map_err(SignInError::Token)?;
        if !caller.has(Scope::Read) {
            return Err(SignInError::NotReader);
        }
        let longest = i64::try_from(longest.as_secs()).unwrap_or(i64::MAX);
        let expires = claims
            .exp
            .and_then(|exp| i64::try_from(exp).ok())
            .map_or(now + longest, |exp| exp.min(now + longest));
        let session = session::Session {
            sub: caller.sub.clone(),
            scopes: caller
                .scopes
                .iter()
                .map(|scope| scope.as_str().to_owned())
                .collect(),
            expires,
            jti: claims.jti,
        };
        Ok((key.seal(&session), caller))
    }

    /// The caller of a console session value, if it is valid at `now` and its caller is neither
    /// disabled nor its token revoked since.
    pub fn resume(&self, value: &str, now: i64) -> Option<Caller> {
        let session = self.sessions.as_ref()?.open(value, now)?;
        let scopes = session
            .scopes
            .iter()
            .filter_map(|name| Scope::parse(name))
            .collect();
        self.with_policy(session.sub, scopes, session.jti.as_deref(), None)
            .ok()
    }

    /// The CSRF token of a session value.
    pub fn csrf(&self, value: &str) -> Option<String> {
        self.sessions.as_ref().map(|key| key.csrf(value))
    }

    /// Whether `token` is the CSRF token of the session value.
    pub fn check_csrf(&self, value: &str, token: &str) -> bool {
        self.sessions
            .as_ref()
            .is_some_and(|key| key.check_csrf(value, token))
    }

    /// Verifies `token`: its caller and claims.
    fn verify(&self, token: &str) -> Result<(Caller, Claims), AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid("malformed token"))?;
        let mut last_error =
            AuthError::Invalid("no configured key matches the token's kid and alg");
        for key in self.keys.candidates(header.kid.as_deref(), header.alg) {
            let validation = self.validation(key.algorithm);
            match decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let caller = self.caller_from(claims.clone())?;
                    return Ok((caller, claims));
                }
                Err(error) => last_error = AuthError::Invalid(token::describe(&error)),
            }
        }
        Err(last_error)
    }

    fn validation(&self, algorithm: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation
    }

    fn caller_from(&self, claims: Claims) -> Result<Caller, AuthError> {
        if claims.sub.is_empty()
            || claims.sub.len() > 255
            || claims.sub.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid("sub must be 1-255 printable characters"));
        }
        let scopes = claims.scope.scopes();
        self.with_policy(
            claims.sub,
            scopes,
            claims.jti.as_deref(),
            claims.sender_domains,
        )
    }

    /// The caller `sub` with `scopes`, under what `[[callers]]` says of it: refused when it is disabled
    /// or the token `jti` is revoked; its sender domains are the token's (`from_token`) narrowed to the
    /// configured ones, or the configured ones.
    fn with_policy(
        &self,
        sub: String,
        scopes: Vec<Scope>,
        jti: Option<&str>,
        from_token: Option<Vec<String>>,
    ) -> Result<Caller, AuthError> {
        let configured = self.callers.get(&sub);
        if configured.is_some_and(|caller| caller.disabled) {
            return Err(AuthError::CallerDisabled);
        }
        if let (Some(caller), Some(jti)) = (configured, jti)
            && caller.revoked_tokens.iter().any(|revoked| revoked == jti)
        {
            return Err(AuthError::Revoked);
        }
        let mut sender_domains = from_token.map(lowercase_all);
        if let Some(configured) = configured.filter(|c| !c.sender_domains.is_empty()) {
            let allowed = lowercase_all(configured.sender_domains.clone());
            sender_domains = Some(match sender_domains {
                Some(from_token) => from_token
                    .into_iter()
                    .filter(|domain| allowed.contains(domain))
                    .collect(),
                None => allowed,
            });
        }
        Ok(Caller {
            sub,
            scopes,
            sender_domains,
        })
    }

    /// The caller of a public form, `form:ID`: it may send, within the rules `[[callers]]` gives that
    /// name (a disabled one is refused; its sender domains hold).
    pub fn form_caller(&self, sub: String) -> Result<Caller, AuthError> {
        self.with_policy(sub, vec![Scope::Send], None, None)
    }

    /// Signs a token for `sub` with the first shared-secret key.
    pub fn mint(
        &self,
        sub: &str,
        scopes: &[Scope],
        ttl: Duration,
        sender_domains: Option<Vec<String>>,
    ) -> Result<String, MintError> {
        token::mint(
            &self.keys,
            token::MintRequest {
                sub,
                scopes,
                ttl,
                sender_domains,
                issuer: self.issuer.as_deref(),
                audience: self.audience.as_deref(),
            },
        )
    }
}

/// A caller name: 1-255 characters, none of them control characters.
fn valid_sub(sub: &str) -> bool {
    !sub.trim().is_empty() && sub.len() <= 255 && !sub.chars().any(char::is_control)
}

fn lowercase_all(domains: Vec<String>) -> Vec<String> {
    domains
        .into_iter()
        .map(|domain| domain.to_ascii_lowercase())
        .collect()
}
