//! The suppression list: `GET /v1/suppressions` (`read`), `POST /v1/suppressions` and
//! `DELETE /v1/suppressions/{address}` (`admin`). Nothing is sent to an address on it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::auth::{Admin, Reader};
use super::body::{parse_object, read_json};
use super::state::AppState;
use super::views::json;
use crate::domain::{DomainError, EmailAddress, SuppressionReason};
use crate::store::{NewSuppression, SuppressionFilter, SuppressionRecord};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Query of the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    address: Option<String>,
    reason: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct PageView {
    items: Vec<SuppressionRecord>,
    next_cursor: Option<String>,
}

fn address(field: &str, text: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(text).map_err(|source| {
        ApiError::Validation(DomainError::Address {
            field: field.into(),
            source,
        })
    })
}

/// A page of the list, by address.
pub async fn list(
    _caller: Reader,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("limit must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let reason = query
        .reason
        .map(|text| text.parse::<SuppressionReason>())
        .transpose()
        .map_err(|error| ApiError::InvalidQuery(format!("reason: {error}")))?;
    for (name, value) in [("address", &query.address), ("cursor", &query.cursor)] {
        if value.as_deref().is_some_and(|text| text.contains('\0')) {
            return Err(ApiError::InvalidQuery(format!(
                "{name} contains a NUL character"
            )));
        }
    }
    let page = state
        .store
        .suppressions(&SuppressionFilter {
            address: query.address,
            reason,
            after: query.cursor,
            limit,
        })
        .await?;
    json(
        StatusCode::OK,
        &PageView {
            items: page.items,
            next_cursor: page.next_cursor,
        },
    )
}

/// `POST /v1/suppressions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    address: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Adds an address by hand: `201` with the entry, or `200` with the entry already there.
pub async fn add(
    caller: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, &state.http).await?;
    let request: AddRequest = parse_object(&body)?;
    let address = address("address", &request.address)?;
    if request
        .reason
        .as_deref()
        .is_some_and(|reason| reason != "manual")
    {
        return Err(ApiError::InvalidRequest {
            message: "reason must be `manual`: bounces and complaints add themselves".into(),
            field: Some("reason".into()),
        });
    }
    if request
        .detail
        .as_deref()
        .is_some_and(|detail| detail.contains('\0') || detail.chars().count() > 1000)
    {
        return Err(ApiError::InvalidRequest {
            message: "detail must be at most 1000 characters without NUL".into(),
            field: Some("detail".into()),
        });
    }
    let (entry, created) = state
        .store
        .add_suppression(&NewSuppression {
            address: address.as_str().to_owned(),
            reason: SuppressionReason::Manual,
            message_id: None,
            detail: request.detail,
        })
        .await?;
    if created {
        tracing::info!(by = %caller.sub, domain = %address.domain(), "address suppressed by hand");
    }
    json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &entry,
    )
}

/// Takes an address off the list.
pub async fn remove(
    caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let address = address("address", &path)?;
    if state.store.remove_suppression(address.as_str()).await? {
        tracing::info!(by = %caller.sub, domain = %address.domain(), "address taken off the suppression list");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}
