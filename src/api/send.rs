//! `POST /send` and `POST /v1/send`: read the JSON shape, hand it to the accept path, answer 202.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use super::ApiError;
use super::auth::Sender;
use super::body::{parse_object, read_json};
use super::draft::MessageDraft;
use super::prepare::{DryRun, Preparer, own_key, preview};
use super::state::AppState;
use super::views::json;
use crate::accept::{Receipt, Submission};
use crate::domain::{IdempotencyKey, IdempotencyKeyError, MessageStatus, RequestFingerprint};

/// The header carrying the caller's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on a response replayed from an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

#[derive(Serialize)]
struct AcceptedBody {
    id: Uuid,
    status: MessageStatus,
}

/// Accepts one message (or, dry, shows what it would become).
pub async fn send(
    caller: Sender,
    req: HttpRequest,
    query: web::Query<DryRun>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let header_key = idempotency_key(&req)?;
    let body = read_json(&req, payload, &state.http).await?;
    let draft: MessageDraft = parse_object(&body)?;
    let idempotency = idempotency(header_key, &draft, &body)?;
    // The request's bytes are not needed past here: a message with attachments is not held twice
    // while it is prepared and stored.
    drop(body);
    let message = Preparer::new(&state).message(draft).await?;
    if query.dry_run {
        return json(StatusCode::OK, &preview(&state, caller.caller(), &message)?);
    }
    let receipt = state
        .acceptor
        .accept(
            caller.caller(),
            Submission {
                message,
                idempotency,
            },
        )
        .await?;
    accepted_response(&receipt)
}

/// The request's idempotency key (the header's or the body's; both must agree) with the fingerprint of
/// the body. The body is parsed a second time, as a JSON value, only when there is a key to fingerprint.
fn idempotency(
    header_key: Option<IdempotencyKey>,
    draft: &MessageDraft,
    body: &[u8],
) -> Result<Option<(IdempotencyKey, RequestFingerprint)>, ApiError> {
    if header_key.is_none() && draft.idempotency_key.is_none() {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let body_key = own_key(draft.idempotency_key.as_deref(), &value)?;
    Ok(match (header_key, body_key) {
        (Some(header), Some((body, _))) if header != body => {
            return Err(ApiError::InvalidRequest {
                message: "idempotency_key differs from the Idempotency-Key header; give one".into(),
                field: Some("idempotency_key".into()),
            });
        }
        (Some(key), _) => Some((key, RequestFingerprint::of(&value))),
        (None, body_key) => body_key,
    })
}

pub(super) fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey(IdempotencyKeyError::NotPrintable))?;
    Ok(Some(IdempotencyKey::parse(text)?))
}

pub(super) fn accepted_response(receipt: &Receipt) -> Result<HttpResponse, ApiError> {
    let mut response = json(
        StatusCode::ACCEPTED,
        &AcceptedBody {
            id: receipt.id,
            status: receipt.status,
        },
    )?;
    let headers = response.headers_mut();
    let location = format!("/v1/messages/{}", receipt.id);
    if let Ok(value) = location.parse() {
        headers.insert(actix_web::http::header::LOCATION, value);
    }
    if receipt.replayed {
        headers.insert(
            actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
            actix_web::http::header::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}
