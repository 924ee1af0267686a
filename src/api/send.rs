//! `POST /send` and `POST /v1/send`: validate, commit, then answer 202.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::ApiError;
use super::auth::Authenticated;
use super::body::{read_json, shape_error};
use super::state::AppState;
use crate::auth::Scope;
use crate::domain::{IdempotencyKey, MessageDraft, MessageStatus, NewMessage, RequestFingerprint};
use crate::store::{Accepted, EnqueueOutcome, EnqueueRequest};

/// The header carrying the caller's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on a response replayed from an earlier request with the same key.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

#[derive(Serialize)]
struct AcceptedBody {
    id: Uuid,
    status: MessageStatus,
}

/// Accepts one message.
#[tracing::instrument(skip_all, fields(caller, message_id))]
pub async fn send(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.require(Scope::Send)?;
    tracing::Span::current().record("caller", caller.sub.as_str());
    let key = idempotency_key(&req)?;
    let body = read_json(&req, payload, state.max_body_size).await?;
    if !body.is_object() {
        return Err(ApiError::InvalidRequest {
            message: "the body must be a JSON object".into(),
            field: None,
        });
    }
    let idempotency = key.map(|key| (key, RequestFingerprint::of(&body)));
    let draft: MessageDraft = serde_json::from_value(body).map_err(shape_error)?;
    let message = NewMessage::parse(draft, &state.limits, OffsetDateTime::now_utc())?;
    let domain = message.content.from.address.domain();
    if !caller.may_send_from(domain) {
        return Err(ApiError::SenderNotAllowed(domain.to_owned()));
    }
    tracing::Span::current().record("message_id", tracing::field::display(message.id));

    let outcome = state
        .store
        .enqueue(EnqueueRequest {
            caller: caller.sub.clone(),
            message,
            idempotency,
        })
        .await?;
    match outcome {
        EnqueueOutcome::Created(accepted) => {
            state.metrics.messages_accepted.inc();
            tracing::info!(id = %accepted.id, "message accepted");
            Ok(accepted_response(accepted, false))
        }
        EnqueueOutcome::Replayed(accepted) => {
            state.metrics.idempotent_replays.inc();
            Ok(accepted_response(accepted, true))
        }
        EnqueueOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::InvalidIdempotencyKey(crate::domain::IdempotencyKeyError::NotPrintable)
    })?;
    Ok(Some(IdempotencyKey::parse(text)?))
}

fn accepted_response(accepted: Accepted, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::Accepted();
    response.insert_header(("Location", format!("/v1/messages/{}", accepted.id)));
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.json(AcceptedBody {
        id: accepted.id,
        status: accepted.status,
    })
}
