//! What every request goes through: a method the metrics can name, and a problem for every server
//! error, whatever produced it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::{ErrorHandlerResponse, Next};

use super::ApiError;

/// The methods HTTP defines; any other is `other` from here on. The method is a label of
/// `posthorn_http_requests_total`, and a client could otherwise add series without bound by inventing
/// methods (no route answers an invented method, so this changes no answer: 405 or 404 as before).
const KNOWN_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// Replaces a method outside [`KNOWN_METHODS`] with `other`.
pub async fn bound_method(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !KNOWN_METHODS.contains(req.method())
        && let Ok(other) = Method::from_bytes(b"other")
    {
        req.head_mut().method = other;
    }
    next.call(req).await
}

/// Turns a server error that is not a problem already (the framework's own, a serializer's) into a
/// problem+json answer, and logs its cause.
pub fn server_error_as_problem<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let cause = response
        .response()
        .error()
        .map_or_else(|| "no cause given".to_owned(), ToString::to_string);
    tracing::error!(status = status.as_u16(), error = %cause, "request failed");
    let (request, _) = response.into_parts();
    let problem = ApiError::server_error(status);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, problem).map_into_right_body(),
    ))
}
