//! Reading a JSON request body: content type first, size limit before buffering, then parsing.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use super::ApiError;

/// Reads the body as a JSON value, refusing anything that is not JSON or is larger than `limit`.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| ApiError::MalformedJson(error.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|error| ApiError::MalformedJson(error.to_string()))
}

/// `application/json`, or any `application/*+json`, with any parameters.
fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Turns a serde error about the request's shape into a problem naming the field where possible.
pub fn shape_error(error: serde_json::Error) -> ApiError {
    let message = error.to_string();
    // serde names fields in backticks: "unknown field `foo`, expected ...", "missing field `from`".
    let field = (message.starts_with("unknown field") || message.starts_with("missing field"))
        .then(|| message.split('`').nth(1).map(str::to_owned))
        .flatten();
    ApiError::InvalidRequest { message, field }
}
