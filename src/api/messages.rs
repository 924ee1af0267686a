//! Reading messages: `GET /v1/messages/{id}` and `GET /v1/messages`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use actix_web::http::StatusCode;

use super::ApiError;
use super::auth::{Reader, Sender};
use super::state::AppState;
use super::views::{MessageView, PageView, json};
use crate::domain::MessageStatus;
use crate::store::{CancelOutcome, MessageFilter};

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
        Ok(MessageFilter {
            status,
            tag: self.tag,
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
