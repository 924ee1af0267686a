//! The authenticated caller as a request extractor.

use std::future::{Ready, ready};

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::ApiError;
use super::state::AppState;
use crate::auth::{AuthError, Caller, Scope};

/// The caller of this request, verified from its bearer token.
pub struct Authenticated(pub Caller);

impl Authenticated {
    /// Fails with 403 unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<&Caller, ApiError> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::InsufficientScope(scope))
        }
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authenticated, ApiError> {
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
    Ok(Authenticated(caller))
}
