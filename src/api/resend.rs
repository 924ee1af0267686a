//! The Resend dialect: Resend's routes and shapes beside posthorn's own, so code written against
//! Resend's SDKs runs unchanged. Every request is translated into posthorn's JSON shape and goes the one
//! accept path; only the answers differ: `200 {"id"}`, and errors as Resend writes them,
//! `{"statusCode", "name", "message"}` (always JSON, always with its status, as the SDKs expect).
//!
//! `POST /emails`, `POST /emails/batch`, `GET /emails/{id}`, `PATCH /emails/{id}`,
//! `POST /emails/{id}/cancel`. The caller's token is the API key.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, dev::Payload, web};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::ApiError;
use super::auth::{Reader, Sender};
use super::batch::{ItemOutcome, accept_drafts, batch_fingerprint};
use super::body::{parse_object, read_json};
use super::draft::MessageDraft;
use super::messages::parse_id;
use super::prepare::Preparer;
use super::send::idempotency_key;
use super::state::AppState;
use super::views::json;
use crate::accept::{BatchMode, Submission};
use crate::auth::AuthError;
use crate::domain::{Mailbox, MessageStatus, RequestFingerprint, fields};
use crate::store::{CancelOutcome, MessageRecord, RescheduleOutcome};

/// An error answered in Resend's shape.
#[derive(Debug)]
pub struct ResendError(pub ApiError);

impl From<ApiError> for ResendError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<crate::store::StoreError> for ResendError {
    fn from(error: crate::store::StoreError) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Display for ResendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status_code: u16,
    name: &'a str,
    message: String,
}

impl ResendError {
    /// Resend's status and error name for posthorn's error.
    fn kind(&self) -> (StatusCode, &'static str) {
        match &self.0 {
            ApiError::Unauthenticated(AuthError::Missing) => {
                (StatusCode::UNAUTHORIZED, "missing_api_key")
            }
            ApiError::Unauthenticated(_) => (StatusCode::FORBIDDEN, "invalid_api_key"),
            ApiError::InsufficientScope(_) => (StatusCode::FORBIDDEN, "restricted_api_key"),
            ApiError::SenderNotAllowed(_) => (StatusCode::FORBIDDEN, "invalid_from_address"),
            ApiError::NoRoute => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "validation_error"),
            ApiError::InvalidRequest { message, .. } if message.starts_with("missing field") => {
                (StatusCode::UNPROCESSABLE_ENTITY, "missing_required_field")
            }
            ApiError::Validation(crate::domain::DomainError::Attachment { .. })
            | ApiError::Validation(crate::domain::DomainError::TooManyAttachments { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_attachment")
            }
            ApiError::Validation(crate::domain::DomainError::Address { field, .. })
                if field == "from" =>
            {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_from_address")
            }
            ApiError::InvalidIdempotencyKey(_) => {
                (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
            }
            ApiError::IdempotencyKeyReused => (StatusCode::CONFLICT, "invalid_idempotent_request"),
            ApiError::InvalidQuery(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "validation_error"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "validation_error")
            }
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "application_error"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "application_error"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_server_error"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        }
    }
}

impl ResponseError for ResendError {
    fn status_code(&self) -> StatusCode {
        self.kind().0
    }

    fn error_response(&self) -> HttpResponse {
        // Headers (Retry-After, WWW-Authenticate, Allow) and logging as posthorn's own answer has them.
        let mut response = self.0.error_response();
        let (status, name) = self.kind();
        let message = match &self.0 {
            ApiError::InvalidBatch { errors, .. } => errors
                .iter()
                .map(|error| format!("emails[{}]: {}", error.index, error.detail))
                .collect::<Vec<_>>()
                .join("; "),
            error => error.to_string(),
        };
        let body = serde_json::to_string(&ErrorBody {
            status_code: status.as_u16(),
            name,
            message,
        })
        .unwrap_or_default();
        *response.status_mut() = status;
        response.headers_mut().insert(
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        );
        response.set_body(actix_web::body::BoxBody::new(body))
    }
}

/// An extractor whose refusal is answered in Resend's shape.
pub struct InResend<T>(pub T);

impl<T> FromRequest for InResend<T>
where
    T: FromRequest<Error = ApiError> + 'static,
    T::Future: 'static,
{
    type Error = ResendError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ResendError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let extract = T::from_request(req, payload);
        Box::pin(async move { extract.await.map(InResend).map_err(ResendError) })
    }
}

/// The answer to any method a Resend route does not serve.
pub async fn not_allowed(allow: &'static str) -> Result<HttpResponse, ResendError> {
    Err(ApiError::MethodNotAllowed(allow).into())
}

/// Resend's email fields, in posthorn's shape: every field known to Resend's API either maps or is
/// refused by name.
fn translate(value: &Value) -> Result<Value, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidRequest {
            message: "each email must be a JSON object".into(),
            field: None,
        });
    };
    let mut out = Map::new();
    for (key, value) in fields {
        match key.as_str() {
            "from" | "to" | "cc" | "bcc" | "reply_to" | "subject" | "html" | "text" | "headers" => {
                if !value.is_null() {
                    out.insert(key.clone(), value.clone());
                }
            }
            "attachments" => {
                if !value.is_null() {
                    out.insert(key.clone(), attachments(value)?);
                }
            }
            "tags" => {
                if !value.is_null() {
                    out.insert(key.clone(), tags(value)?);
                }
            }
            "scheduled_at" => match value {
                Value::Null => {}
                Value::String(text) => {
                    out.insert("send_at".into(), Value::String(scheduled_at(text)?));
                }
                _ => return Err(invalid("scheduled_at", "must be a string")),
            },
            "react" => {
                return Err(invalid(
                    "react",
                    "is rendered by the SDK; send html instead (render the component first)",
                ));
            }
            "template" | "topic_id" => {
                return Err(invalid(
                    key,
                    "is not supported on this server; use POST /v1/send with a posthorn template",
                ));
            }
            other => {
                return Err(ApiError::InvalidRequest {
                    message: format!("unknown field `{other}`"),
                    field: Some(other.to_owned()),
                });
            }
        }
    }
    Ok(Value::Object(out))
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::InvalidRequest {
        message: format!("{field} {reason}"),
        field: Some(field.to_owned()),
    }
}

/// Attachments: `content` (base64, or an array of byte values as Resend's Python SDK documents),
/// `filename`, `content_type`. Remote `path`s and inline `content_id`s are refused by name.
fn attachments(value: &Value) -> Result<Value, ApiError> {
    let Value::Array(items) = value else {
        return Err(invalid("attachments", "must be an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = format!("attachments[{index}]");
        let Value::Object(item) = item else {
            return Err(invalid(&field, "must be an object"));
        };
        let mut attachment = Map::new();
        for (key, value) in item {
            match (key.as_str(), value) {
                (_, Value::Null) => {}
                ("filename" | "content_type", Value::String(_)) => {
                    attachment.insert(key.clone(), value.clone());
                }
                ("content", Value::String(_)) => {
                    attachment.insert(key.clone(), value.clone());
                }
                ("content", Value::Array(bytes)) => {
                    let bytes = bytes
                        .iter()
                        .map(|byte| byte.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect::<Option<Vec<u8>>>()
                        .ok_or_else(|| {
                            invalid(
                                &format!("{field}.content"),
                                "must be base64 or an array of bytes",
                            )
                        })?;
                    attachment.insert(
                        "content".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
                    );
                }
                ("path", _) => {
                    return Err(invalid(
                        &format!("{field}.path"),
                        "(a URL to fetch) is not supported: give the file's content",
                    ));
                }
                ("content_id" | "inline_content_id", _) => {
                    return Err(invalid(
                        &format!("{field}.{key}"),
                        "(inline images) is not supported",
                    ));
                }
                (other, _) => {
                    return Err(invalid(
                        &format!("{field}.{other}"),
                        "is not a known attachment field",
                    ));
                }
            }
        }
        out.push(Value::Object(attachment));
    }
    Ok(Value::Array(out))
}

/// Resend's tags `[{name, value}]` as posthorn's `name=value`.
fn tags(value: &Value) -> Result<Value, ApiError> {
    let Value::Array(items) = value else {
        return Err(invalid("tags", "must be an array of {name, value}"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let name = item.get("name").and_then(Value::as_str);
        let value = item.get("value").and_then(Value::as_str);
        match (name, value) {
            (Some(name), value) if !name.is_empty() => out.push(Value::String(match value {
                Some(value) => format!("{name}={value}"),
                None => name.to_owned(),
            })),
            _ => {
                return Err(invalid(
                    &format!("tags[{index}]"),
                    "must be {name, value} with a name",
                ));
            }
        }
    }
    Ok(Value::Array(out))
}

/// `scheduled_at`: an ISO 8601 time, or `in N minutes|hours|days` from now, as RFC 3339.
fn scheduled_at(text: &str) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if let Ok(at) = OffsetDateTime::parse(trimmed, &Rfc3339) {
        return at.format(&Rfc3339).map_err(|_| scheduled_error());
    }
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let [first, count, unit] = words.as_slice() else {
        return Err(scheduled_error());
    };
    if !first.eq_ignore_ascii_case("in") {
        return Err(scheduled_error());
    }
    let count: i64 = count.parse().map_err(|_| scheduled_error())?;
    let unit = unit.to_ascii_lowercase();
    let seconds = match unit.trim_end_matches('s') {
        "min" | "minute" => 60,
        "hour" | "hr" => 3600,
        "day" => 86_400,
        _ => return Err(scheduled_error()),
    };
    let at = OffsetDateTime::now_utc()
        + time::Duration::seconds(count.checked_mul(seconds).ok_or_else(scheduled_error)?);
    at.format(&Rfc3339).map_err(|_| scheduled_error())
}

fn scheduled_error() -> ApiError {
    invalid(
        "scheduled_at",
        "must be an ISO 8601 date-time (2026-01-31T09:00:00Z) or `in N minutes|hours|days`",
    )
}

/// One Resend email as a posthorn draft, with the JSON its own key is fingerprinted with.
fn draft(value: &Value) -> Result<(MessageDraft, Value), ApiError> {
    let translated = translate(value)?;
    let text =
        serde_json::to_vec(&translated).map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok((parse_object(&text)?, translated))
}

#[derive(Serialize)]
struct IdView {
    id: Uuid,
}

/// `POST /emails`.
pub async fn send(
    caller: InResend<Sender>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ResendError> {
    let key = idempotency_key(&req)?;
    let body = read_json(&req, payload, &state.http).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let (draft, translated) = draft(&value)?;
    let message = Preparer::new(&state).message(draft).await?;
    let receipt = state
        .acceptor
        .accept(
            caller.0.caller(),
            Submission {
                message,
                idempotency: key.map(|key| (key, RequestFingerprint::of(&translated))),
            },
        )
        .await
        .map_err(ApiError::from)?;
    Ok(json(StatusCode::OK, &IdView { id: receipt.id })?)
}

#[derive(Serialize)]
struct BatchView {
    data: Vec<IdView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ItemError>,
}

#[derive(Serialize)]
struct ItemError {
    index: usize,
    message: String,
}

/// `POST /emails/batch`: `x-batch-validation: strict` (the default) or `permissive`.
pub async fn send_batch(
    caller: InResend<Sender>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ResendError> {
    let mode = match req
        .headers()
        .get("x-batch-validation")
        .map(|value| value.to_str().unwrap_or(""))
    {
        None | Some("strict") => BatchMode::Strict,
        Some("permissive") => BatchMode::Permissive,
        Some(_) => {
            return Err(ApiError::InvalidQuery(
                "x-batch-validation must be `strict` or `permissive`".into(),
            )
            .into());
        }
    };
    let key = idempotency_key(&req)?;
    let body = read_json(&req, payload, &state.http).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let Value::Array(items) = &value else {
        return Err(ApiError::InvalidRequest {
            message: "the body must be a JSON array of emails".into(),
            field: None,
        }
        .into());
    };
    if items.is_empty() {
        return Err(ApiError::EmptyBatch.into());
    }
    if items.len() > state.http.max_batch {
        return Err(ApiError::BatchTooLarge {
            count: items.len(),
            max: state.http.max_batch,
        }
        .into());
    }
    let drafts = items.iter().map(draft).collect();
    let answer = accept_drafts(
        &state,
        caller.0.caller(),
        drafts,
        mode,
        false,
        key.map(|key| (key, batch_fingerprint(&value, mode))),
    )
    .await?;
    let mut view = BatchView {
        data: Vec::new(),
        errors: Vec::new(),
    };
    for (index, item) in answer.items.into_iter().enumerate() {
        match item {
            Ok(ItemOutcome::Queued(id)) => view.data.push(IdView { id }),
            Ok(ItemOutcome::Preview(_)) => {}
            Err(error) => view.errors.push(ItemError {
                index,
                message: error.to_string(),
            }),
        }
    }
    Ok(json(StatusCode::OK, &view)?)
}

/// Resend's view of an email.
#[derive(Serialize)]
struct EmailView {
    object: &'static str,
    id: Uuid,
    message_id: String,
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    html: Option<String>,
    text: Option<String>,
    created_at: String,
    scheduled_at: Option<String>,
    last_event: &'static str,
    tags: Vec<TagView>,
}

#[derive(Serialize)]
struct TagView {
    name: String,
    value: String,
}

fn mailboxes(list: &[Mailbox]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Resend's `last_event` for a posthorn status.
fn last_event(record: &MessageRecord) -> &'static str {
    let summary = &record.summary;
    match summary.status {
        MessageStatus::Queued
            if summary
                .send_at
                .is_some_and(|at| at > OffsetDateTime::now_utc()) =>
        {
            "scheduled"
        }
        MessageStatus::Queued if summary.attempt_count > 0 => "delivery_delayed",
        MessageStatus::Queued | MessageStatus::Sending => "queued",
        MessageStatus::Sent => "sent",
        MessageStatus::Failed => "failed",
        MessageStatus::Cancelled => "canceled",
    }
}

/// `GET /emails/{id}`.
pub async fn get(
    caller: InResend<Reader>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ResendError> {
    let id = parse_id(&path)?;
    let owner = caller.0.owner();
    let record = state
        .store
        .get_message(owner, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (html, text) = state
        .store
        .message_body(owner, id)
        .await?
        .map(|body| (body.html, body.text))
        .unwrap_or_default();
    let summary = &record.summary;
    let envelope = &summary.envelope;
    let view = EmailView {
        object: "email",
        id,
        message_id: summary.message_id.clone(),
        from: envelope.from.to_string(),
        to: mailboxes(&envelope.to),
        cc: mailboxes(&envelope.cc),
        bcc: mailboxes(&envelope.bcc),
        reply_to: mailboxes(&envelope.reply_to),
        subject: envelope.subject.clone(),
        html,
        text,
        created_at: rfc3339(summary.created_at),
        scheduled_at: summary.send_at.map(rfc3339),
        last_event: last_event(&record),
        tags: summary
            .tags
            .iter()
            .map(|tag| match tag.split_once('=') {
                Some((name, value)) => TagView {
                    name: name.to_owned(),
                    value: value.to_owned(),
                },
                None => TagView {
                    name: tag.clone(),
                    value: String::new(),
                },
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &view)?)
}

#[derive(Serialize)]
struct EmailRef {
    object: &'static str,
    id: Uuid,
}

/// `PATCH /emails/{id}`: `{"scheduled_at"}` (Resend's Python SDK sends the `id` along).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    #[serde(default)]
    id: Option<String>,
    scheduled_at: Option<String>,
}

/// `PATCH /emails/{id}`: reschedules an email that has not started sending.
pub async fn update(
    caller: InResend<Sender>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ResendError> {
    let id = parse_id(&path)?;
    let body = read_json(&req, payload, &state.http).await?;
    let update: Update = parse_object(&body)?;
    if update
        .id
        .as_deref()
        .is_some_and(|given| parse_id(given).ok() != Some(id))
    {
        return Err(invalid("id", "differs from the id in the path").into());
    }
    let now = OffsetDateTime::now_utc();
    let send_at = match update.scheduled_at {
        Some(text) => fields::send_at(
            &scheduled_at(&text)?,
            now,
            state.acceptor.limits().max_schedule_ahead,
        )
        .map_err(ApiError::from)?,
        None => now,
    };
    match state
        .store
        .reschedule(caller.0.owner(), id, send_at)
        .await?
    {
        RescheduleOutcome::Rescheduled => Ok(json(
            StatusCode::OK,
            &EmailRef {
                object: "email",
                id,
            },
        )?),
        RescheduleOutcome::NotFound => Err(ApiError::NotFound.into()),
        RescheduleOutcome::TooLate(status) => Err(ApiError::Conflict(format!(
            "the email is {status} and can no longer be rescheduled"
        ))
        .into()),
    }
}

/// `POST /emails/{id}/cancel` (the body, if any, is ignored).
pub async fn cancel(
    caller: InResend<Sender>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ResendError> {
    let id = parse_id(&path)?;
    match state.store.cancel_message(caller.0.owner(), id).await? {
        CancelOutcome::Cancelled => Ok(json(
            StatusCode::OK,
            &EmailRef {
                object: "email",
                id,
            },
        )?),
        CancelOutcome::NotFound => Err(ApiError::NotFound.into()),
        CancelOutcome::TooLate(status) => Err(ApiError::Conflict(format!(
            "the email is {status} and can no longer be cancelled"
        ))
        .into()),
    }
}

/// Routes of the dialect.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/emails")
            .route(web::post().to(send))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/emails/batch")
            .route(web::post().to(send_batch))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/emails/{id}/cancel")
            .route(web::post().to(cancel))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/emails/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .default_service(web::to(|| not_allowed("GET, PATCH"))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_fields_map_and_unknown_ones_are_named() {
        let translated = translate(&serde_json::json!({
            "from": "Acme <a@example.com>",
            "to": ["b@example.org"],
            "reply_to": "c@example.org",
            "tags": [{"name": "category", "value": "welcome"}],
            "attachments": [{"filename": "a.txt", "content": [104, 105], "content_type": "text/plain"}],
            "scheduled_at": "in 2 hours",
            "bcc": null
        }))
        .unwrap();
        assert_eq!(translated["tags"], serde_json::json!(["category=welcome"]));
        assert_eq!(translated["attachments"][0]["content"], "aGk=");
        assert!(translated.get("bcc").is_none());
        let at = OffsetDateTime::parse(translated["send_at"].as_str().unwrap(), &Rfc3339).unwrap();
        let ahead = at - OffsetDateTime::now_utc();
        assert!(ahead > time::Duration::minutes(119) && ahead <= time::Duration::hours(2));
        for (field, value) in [
            ("topic_id", serde_json::json!("t")),
            ("colour", serde_json::json!("red")),
            ("scheduled_at", serde_json::json!("next tuesday")),
            (
                "attachments",
                serde_json::json!([{"path": "https://example.com/a.pdf"}]),
            ),
        ] {
            let error = translate(&serde_json::json!({ field: value })).unwrap_err();
            assert!(
                matches!(error, ApiError::InvalidRequest { .. }),
                "{field}: {error}"
            );
        }
        assert!(scheduled_at("in 1 min").is_ok());
        assert!(scheduled_at("in 3 days").is_ok());
        assert!(scheduled_at("2026-12-24T18:00:00.000Z").is_ok());
    }
}
