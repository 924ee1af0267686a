//! Permissions as request extractors: a handler states the scope it needs in its signature
//! ([`Sender`], [`Reader`]), so a new handler cannot forget to check it.

use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::ops::Deref;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::ApiError;
use super::state::AppState;
use crate::auth::{AuthError, Caller, Scope};

/// A scope a handler requires.
pub trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}

/// The `send` scope.
pub struct SendScope;
/// The `read` scope.
pub struct ReadScope;
/// The `admin` scope.
pub struct AdminScope;

impl RequiredScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

impl RequiredScope for SendScope {
    const SCOPE: Scope = Scope::Send;
}

impl RequiredScope for ReadScope {
    const SCOPE: Scope = Scope::Read;
}

/// The caller of this request, verified from its bearer token and holding scope `S` (admin holds
/// every scope): 401 without a valid token, 429 over its rate, 403 without the scope.
pub struct Authorized<S> {
    caller: Caller,
    scope: PhantomData<S>,
}

/// A caller that may send.
pub type Sender = Authorized<SendScope>;
/// A caller that may read messages.
pub type Reader = Authorized<ReadScope>;
/// A caller that may administer the deployment (templates, redrives, erasure).
pub type Admin = Authorized<AdminScope>;

impl<S> Authorized<S> {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whose messages this caller sees and changes: an admin's reach every caller's.
    pub fn owner(&self) -> Option<&str> {
        (!self.caller.is_admin()).then_some(self.caller.sub.as_str())
    }
}

impl<S> Deref for Authorized<S> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<S: RequiredScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            if caller.has(S::SCOPE) {
                Ok(Self {
                    caller,
                    scope: PhantomData,
                })
            } else {
                Err(ApiError::InsufficientScope(S::SCOPE))
            }
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state is missing".into()))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid(
        "expected `Authorization: Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing.into());
    }
    let caller = state.authenticator.authenticate(token.trim())?;
    // Limited per caller, after authentication: an unauthenticated flood cannot drain a caller's bucket.
    if let Err(limited) = state.rate_limiter.check(&caller.sub) {
        state.metrics.rate_limited.inc();
        return Err(ApiError::RateLimited(limited));
    }
    Ok(caller)
}
