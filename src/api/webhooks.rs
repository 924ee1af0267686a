//! Webhook endpoints (`admin`): `POST /v1/webhooks`, `GET /v1/webhooks`, `GET|PATCH|DELETE
//! /v1/webhooks/{id}`, `POST /v1/webhooks/{id}/rotate-secret`, `GET /v1/webhooks/{id}/deliveries`
//! and `POST /v1/webhooks/{id}/replay`. The secret is shown once, when it is made.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::ApiError;
use super::auth::Admin;
use super::body::{parse_object, read_json};
use super::state::AppState;
use super::views::{created, json};
use crate::domain::EventType;
use crate::store::{DeliveryRecord, EndpointChange, EndpointRecord, NewEndpoint, Replay};
use crate::webhooks::new_secret;

/// How long a rotated-out secret still signs deliveries.
const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

/// Longest description.
const MAX_DESCRIPTION: usize = 1000;

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    callers: Option<Vec<String>>,
}

/// `PATCH /v1/webhooks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    callers: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `POST /v1/webhooks/{id}/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    types: Option<Vec<String>>,
}

/// An endpoint with its secret: the answer to its creation.
#[derive(Serialize)]
struct WithSecret {
    #[serde(flatten)]
    endpoint: EndpointRecord,
    secret: String,
}

#[derive(Serialize)]
struct Rotated {
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    previous_secret_valid_until: OffsetDateTime,
}

#[derive(Serialize)]
struct EndpointList {
    items: Vec<EndpointRecord>,
}

#[derive(Serialize)]
struct DeliveryPage {
    items: Vec<DeliveryRecord>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Replayed {
    queued: u64,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest {
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

fn event_types(field: &str, names: Vec<String>) -> Result<Vec<EventType>, ApiError> {
    names
        .iter()
        .map(|name| {
            name.parse::<EventType>()
                .map_err(|error| invalid(field, format!("{field}: {error}")))
        })
        .collect()
}

fn callers(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names
        .iter()
        .any(|name| name.is_empty() || name.len() > 255 || name.chars().any(char::is_control))
    {
        return Err(invalid(
            "callers",
            "callers must be 1-255 characters without control characters",
        ));
    }
    Ok(names)
}

fn description(text: Option<String>) -> Result<Option<String>, ApiError> {
    if text
        .as_deref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION || text.contains('\0'))
    {
        return Err(invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION} characters without NUL"),
        ));
    }
    Ok(text)
}

async fn url(state: &AppState, text: &str) -> Result<String, ApiError> {
    let url = state
        .webhook_guard
        .check(text)
        .await
        .map_err(|error| invalid("url", error.to_string()))?;
    Ok(url.to_string())
}

fn endpoint_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound)
}

fn time_field(field: &str, value: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|text| OffsetDateTime::parse(&text, &Rfc3339))
        .transpose()
        .map_err(|_| invalid(field, format!("{field} must be an RFC 3339 date-time")))
}

/// Creates an endpoint; the answer carries its secret, which is not shown again.
pub async fn create(
    caller: Admin,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, &state.http).await?;
    let request: CreateEndpoint = parse_object(&body)?;
    let new = NewEndpoint {
        id: Uuid::now_v7(),
        url: url(&state, &request.url).await?,
        description: description(request.description)?.unwrap_or_default(),
        events: event_types("events", request.events.unwrap_or_default())?,
        callers: callers(request.callers.unwrap_or_default())?,
        secret: new_secret(),
    };
    let endpoint = state.store.create_endpoint(&new).await?;
    tracing::info!(by = %caller.sub, endpoint = %endpoint.id, "webhook endpoint created");
    created(
        &format!("/v1/webhooks/{}", new.id),
        &WithSecret {
            endpoint,
            secret: new.secret,
        },
    )
}

/// Every endpoint.
pub async fn list(_caller: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.store.endpoints().await?;
    json(StatusCode::OK, &EndpointList { items })
}

/// One endpoint.
pub async fn get(
    _caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = state
        .store
        .endpoint(endpoint_id(&path)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &endpoint)
}

/// Changes an endpoint; `{"enabled": true}` turns a disabled one back on.
pub async fn update(
    caller: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&path)?;
    let body = read_json(&req, payload, &state.http).await?;
    let request: ChangeEndpoint = parse_object(&body)?;
    let change = EndpointChange {
        url: match request.url {
            Some(text) => Some(url(&state, &text).await?),
            None => None,
        },
        description: description(request.description)?,
        events: request
            .events
            .map(|names| event_types("events", names))
            .transpose()?,
        callers: request.callers.map(callers).transpose()?,
        enabled: request.enabled,
    };
    let endpoint = state
        .store
        .update_endpoint(id, &change)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(by = %caller.sub, endpoint = %id, enabled = endpoint.enabled, "webhook endpoint changed");
    json(StatusCode::OK, &endpoint)
}

/// Deletes an endpoint and its deliveries.
pub async fn delete(
    caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&path)?;
    if state.store.delete_endpoint(id).await? {
        tracing::info!(by = %caller.sub, endpoint = %id, "webhook endpoint deleted");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// A new secret; deliveries carry a signature with the old one too for 24 hours.
pub async fn rotate_secret(
    caller: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&path)?;
    let secret = new_secret();
    let until = OffsetDateTime::now_utc() + ROTATION_OVERLAP;
    if !state
        .store
        .rotate_endpoint_secret(id, &secret, until)
        .await?
    {
        return Err(ApiError::NotFound);
    }
    tracing::info!(by = %caller.sub, endpoint = %id, "webhook secret rotated");
    json(
        StatusCode::OK,
        &Rotated {
            secret,
            previous_secret_valid_until: until,
        },
    )
}

/// `?cursor=&limit=` of the deliveries listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// An endpoint's deliveries, newest first, with every attempt.
pub async fn deliveries(
    _caller: Admin,
    path: web::Path<String>,
    query: web::Query<DeliveryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&path)?;
    if state.store.endpoint(id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let limit = match &query.limit {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| {
                ApiError::InvalidQuery(format!("limit must be an integer from 1 to {MAX_PAGE}"))
            })?,
    };
    let before = query
        .cursor
        .as_deref()
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("cursor is not one this API returned".into()))?;
    let mut items = state.store.deliveries(id, before, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| last.id.to_string())
    } else {
        None
    };
    json(StatusCode::OK, &DeliveryPage { items, next_cursor })
}

/// Sends the endpoint's events of a window again.
pub async fn replay(
    caller: Admin,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = endpoint_id(&path)?;
    let body = read_json(&req, payload, &state.http).await?;
    let request: ReplayRequest = parse_object(&body)?;
    let replay = Replay {
        since: time_field("since", request.since)?,
        until: time_field("until", request.until)?,
        types: event_types("types", request.types.unwrap_or_default())?,
    };
    if state.store.endpoint(id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let queued = state.store.replay(id, &replay).await?;
    tracing::info!(by = %caller.sub, endpoint = %id, queued, "webhook events replayed");
    json(StatusCode::OK, &Replayed { queued })
}
