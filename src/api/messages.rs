//! Messages: reading them (`GET /v1/messages/{id}`, `GET /v1/messages`) and changing one's mind about
//! them: cancel, reschedule, retry, and (`admin`) redrive.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use actix_web::http::StatusCode;

use super::ApiError;
use super::auth::{Admin, Reader, Sender};
use super::body::{parse_object, read_json};
use super::state::AppState;
use super::views::{MessageView, PageView, json};
use crate::domain::{MessageStatus, fields};
use crate::store::{CancelOutcome, MessageFilter, RequeueFilter, RescheduleOutcome};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// Parses a message id from the path; an id that is not a UUID names no message.
pub fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

/// One message with its delivery attempts.
pub async fn get_message(
    caller: Reader,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let record = state
        .store
        .get_message(caller.owner(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &MessageView::from(record))
}

/// Query parameters of the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    tag: Option<String>,
    recipient: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

impl ListQuery {
    fn into_filter(self) -> Result<MessageFilter, ApiError> {
        let status = self
            .status
            .map(|text| text.parse::<MessageStatus>())
            .transpose()
            .map_err(|error| ApiError::InvalidQuery(error.to_string()))?;
        let limit = match self.limit {
            None => DEFAULT_PAGE,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_PAGE).contains(limit))
                .ok_or_else(|| {
                    ApiError::InvalidQuery(format!("limit must be an integer from 1 to {MAX_PAGE}"))
                })?,
        };
        let after = self
            .cursor
            .map(|text| Uuid::parse_str(&text))
            .transpose()
            .map_err(|_| ApiError::InvalidQuery("cursor is not one this API returned".into()))?;
        if self.tag.as_deref().is_some_and(|tag| tag.contains('\0')) {
            return Err(ApiError::InvalidQuery(
                "tag contains a NUL character".into(),
            ));
        }
        if self
            .recipient
            .as_deref()
            .is_some_and(|address| address.contains('\0') || address.len() > 320)
        {
            return Err(ApiError::InvalidQuery(
                "recipient must be an address of at most 320 characters".into(),
            ));
        }
        Ok(MessageFilter {
            status,
            tag: self.tag,
            recipient: self.recipient.map(|address| address.trim().to_owned()),
            created_after: time_param("created_after", self.created_after)?,
            created_before: time_param("created_before", self.created_before)?,
            after,
            limit,
        })
    }
}

fn time_param(name: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| OffsetDateTime::parse(&text, &Rfc3339))
        .transpose()
        .map_err(|_| ApiError::InvalidQuery(format!("{name} must be an RFC 3339 date-time")))
}

/// A page of messages, newest first.
pub async fn list_messages(
    caller: Reader,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.into_inner().into_filter()?;
    let page = state.store.list_messages(caller.owner(), &filter).await?;
    json(StatusCode::OK, &PageView::from(page))
}

/// Cancels a message that has not started sending.
pub async fn cancel_message(
    caller: Sender,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    match state.store.cancel_message(caller.owner(), id).await? {
        CancelOutcome::Cancelled => {
            let record = state
                .store
                .get_message(caller.owner(), id)
                .await?
                .ok_or(ApiError::NotFound)?;
            json(StatusCode::OK, &MessageView::from(record))
        }
        CancelOutcome::NotFound => Err(ApiError::NotFound),
        CancelOutcome::TooLate(status) => Err(ApiError::Conflict(format!(
            "the message is {status} and can no longer be cancelled"
        ))),
    }
}

/// `PATCH /v1/messages/{id}`: a new time to send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    /// RFC 3339; `null` sends it now.
    send_at: Option<String>,
}

/// Moves a message that has not started sending to a new time.
pub async fn reschedule_message(
    caller: Sender,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let body = read_json(&req, payload, &state.http).await?;
    let request: Reschedule = parse_object(&body)?;
    let now = OffsetDateTime::now_utc();
    let send_at = match request.send_at {
        Some(text) => fields::send_at(&text, now, state.acceptor.limits().max_schedule_ahead)?,
        None => now,
    };
    match state.store.reschedule(caller.owner(), id, send_at).await? {
        RescheduleOutcome::Rescheduled => {
            let record = state
                .store
                .get_message(caller.owner(), id)
                .await?
                .ok_or(ApiError::NotFound)?;
            json(StatusCode::OK, &MessageView::from(record))
        }
        RescheduleOutcome::NotFound => Err(ApiError::NotFound),
        RescheduleOutcome::TooLate(status) => Err(ApiError::Conflict(format!(
            "the message is {status}{} and can no longer be rescheduled",
            if status == MessageStatus::Queued {
                " after a first attempt"
            } else {
                ""
            }
        ))),
    }
}

/// Puts one failed message back in the queue.
pub async fn retry_message(
    caller: Sender,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let message = state
        .store
        .find_message(caller.owner(), id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if message.status != MessageStatus::Failed {
        return Err(ApiError::Conflict(format!(
            "the message is {}; only a failed message can be retried",
            message.status
        )));
    }
    let requeued = state
        .requeue_failed(
            &RequeueFilter {
                id: Some(id),
                owner: caller.owner().map(str::to_owned),
                ..RequeueFilter::default()
            },
            false,
        )
        .await?;
    json(StatusCode::OK, &requeued)
}

/// `POST /v1/messages/redrive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    status: String,
    #[serde(default)]
    created_after: Option<String>,
    #[serde(default)]
    created_before: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize)]
struct RedriveView {
    requeued: u64,
    skipped: u64,
    dry_run: bool,
}

fn request_time(field: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| OffsetDateTime::parse(&text, &Rfc3339))
        .transpose()
        .map_err(|_| ApiError::InvalidRequest {
            message: format!("{field} must be an RFC 3339 date-time"),
            field: Some(field.to_owned()),
        })
}

/// Puts every failed message matching the filter back in the queue (every caller's: `admin`).
pub async fn redrive(
    _caller: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, &state.http).await?;
    let request: Redrive = parse_object(&body)?;
    if request.status != MessageStatus::Failed.as_str() {
        return Err(ApiError::InvalidRequest {
            message: "status must be `failed`: only failed messages can be put back in the queue"
                .into(),
            field: Some("status".into()),
        });
    }
    for (field, value) in [("tag", &request.tag), ("provider", &request.provider)] {
        if value.as_deref().is_some_and(|text| text.contains('\0')) {
            return Err(ApiError::InvalidRequest {
                message: format!("{field} contains a NUL character"),
                field: Some(field.to_owned()),
            });
        }
    }
    let filter = RequeueFilter {
        created_after: request_time("created_after", request.created_after)?,
        created_before: request_time("created_before", request.created_before)?,
        tag: request.tag,
        provider: request.provider,
        ..RequeueFilter::default()
    };
    let requeued = state.requeue_failed(&filter, request.dry_run).await?;
    if !request.dry_run {
        tracing::info!(
            requeued = requeued.requeued,
            skipped = requeued.skipped,
            "failed messages redriven"
        );
    }
    json(
        StatusCode::OK,
        &RedriveView {
            requeued: requeued.requeued,
            skipped: requeued.skipped,
            dry_run: request.dry_run,
        },
    )
}
