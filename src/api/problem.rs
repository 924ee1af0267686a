//! The one place where errors become HTTP responses: RFC 9457 `application/problem+json`, each kind with
//! a stable `type` URI that clients can match on.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use super::body::Media;
use crate::accept::AcceptError;
use crate::auth::{AuthError, Scope};
use crate::domain::{DomainError, IdempotencyKeyError, TemplateError};
use crate::store::StoreError;

/// Prefix of every problem `type`; the slug after it never changes once published.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:posthorn:problem:";

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The token is valid but lacks a scope.
    #[error("this token lacks the `{0}` scope")]
    InsufficientScope(Scope),
    /// The caller may not send from this domain.
    #[error("this caller may not send from the domain `{0}`")]
    SenderNotAllowed(String),
    /// Routes are configured and none takes the message.
    #[error(
        "no route takes this message: no [[routes]] entry matches it and there is no default route"
    )]
    NoRoute,
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the shape of the request (unknown, missing or mistyped field).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, as serde reports it.
        message: String,
        /// The field, when it can be named.
        field: Option<String>,
    },
    /// The body is not of the media type the route reads.
    #[error("{}", match .0 {
        Media::Json => "the body must be application/json",
        Media::Message => "the body must be message/rfc822 (a complete RFC 5322 message)",
        Media::Any => "the body's media type is not accepted",
        Media::Form => "the body must be application/x-www-form-urlencoded, multipart/form-data or application/json",
    })]
    UnsupportedMediaType(Media),
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    RequestTimeout(std::time::Duration),
    /// The body is larger than the configured limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The message breaks a rule.
    #[error(transparent)]
    Validation(#[from] DomainError),
    /// The `Idempotency-Key` header is not acceptable.
    #[error(transparent)]
    InvalidIdempotencyKey(#[from] IdempotencyKeyError),
    /// The key was used before with a different body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// Query parameters do not parse.
    #[error("{0}")]
    InvalidQuery(String),
    /// No such resource (or not this caller's).
    #[error("no such resource")]
    NotFound,
    /// No such method on this resource; carries the methods it does allow.
    #[error("method not allowed; this resource allows {0}")]
    MethodNotAllowed(&'static str),
    /// The message is past the point where it could be changed.
    #[error("{0}")]
    Conflict(String),
    /// A provider's notification whose signature or secret does not verify.
    #[error("{0}")]
    InvalidSignature(String),
    /// A send names a template that does not exist (or not in that version).
    #[error("there is no template `{0}`")]
    TemplateNotFound(String),
    /// A template to store is not valid.
    #[error(transparent)]
    InvalidTemplate(crate::domain::TemplateError),
    /// A template of that name exists already.
    #[error("a template named `{0}` exists already; change it with PUT /v1/templates/{0}")]
    TemplateExists(String),
    /// A batch has no items.
    #[error("the batch is empty: give an array of at least one message")]
    EmptyBatch,
    /// A batch has more items than allowed.
    #[error("the batch has {count} messages; at most {max} are allowed in one batch")]
    BatchTooLarge {
        /// Items given.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// Strict mode: items of a batch cannot be accepted, so none was.
    #[error("{} of the batch's {total} messages cannot be accepted; nothing was queued", .errors.len())]
    InvalidBatch {
        /// Items in the batch.
        total: usize,
        /// Every failing item.
        errors: Vec<ItemProblem>,
    },
    /// A form's post from a page whose origin the form does not allow (or with neither `Origin` nor
    /// `Referer`).
    #[error("this form does not take posts from this page's origin")]
    OriginNotAllowed,
    /// A form's captcha was not solved.
    #[error("{0}")]
    CaptchaFailed(String),
    /// A form's captcha could not be checked.
    #[error("{0}")]
    CaptchaUnavailable(String),
    /// A form's post breaks a rule of forms.
    #[error("{0}")]
    InvalidForm(String),
    /// The form is disabled in `[[callers]]`.
    #[error("this form is disabled")]
    FormDisabled,
    /// The caller made too many requests; carries when to retry.
    #[error("too many requests from this caller; retry after {} s", .0.retry_after)]
    RateLimited(crate::rate_limit::Limited),
    /// The database cannot be reached right now.
    #[error("the queue is temporarily unavailable; retry shortly")]
    Unavailable(#[source] StoreError),
    /// Anything else: logged in full, shown to the caller as a bare 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<AcceptError> for ApiError {
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::NotPermitted => ApiError::InsufficientScope(Scope::Send),
            AcceptError::SenderNotAllowed(domain) => ApiError::SenderNotAllowed(domain),
            AcceptError::NoRoute => ApiError::NoRoute,
            AcceptError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            AcceptError::RefusedBefore => ApiError::Conflict(error.to_string()),
            AcceptError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) | StoreError::NotMigrated => ApiError::Unavailable(error),
            StoreError::Conflict(reason) => ApiError::Conflict(reason),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl ApiError {
    /// The stable slug of the problem type.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::InsufficientScope(_) => "insufficient-scope",
            ApiError::SenderNotAllowed(_) => "sender-not-allowed",
            ApiError::NoRoute => "no-route",
            ApiError::MalformedJson(_) => "malformed-json",
            ApiError::InvalidRequest { .. } => "invalid-request",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::Validation(error) => match error {
                DomainError::Address { .. } => "invalid-address",
                DomainError::TooManyRecipients { .. } => "too-many-recipients",
                DomainError::NoRecipients => "no-recipients",
                DomainError::MissingBody => "missing-body",
                DomainError::Header(crate::domain::HeaderError::Forbidden(_)) => "forbidden-header",
                DomainError::Header(_) => "invalid-header",
                DomainError::TooManyHeaders { .. } => "too-many-headers",
                DomainError::Attachment { source, .. } => match source {
                    crate::domain::AttachmentError::InvalidBase64 => "invalid-base64",
                    crate::domain::AttachmentError::TooLarge { .. } => "attachment-too-large",
                    _ => "invalid-attachment",
                },
                DomainError::TooManyAttachments { .. } => "too-many-attachments",
                DomainError::InvalidSendAt | DomainError::SendAtOutOfRange => "invalid-send-at",
                DomainError::SendAtTooFar { .. } => "send-at-too-far",
                DomainError::InvalidField { .. } => "invalid-field",
                DomainError::Template(error) => match error {
                    TemplateError::MissingVariables { .. } => "template-variable-missing",
                    TemplateError::HeaderBreak { .. } | TemplateError::SubjectBreak => {
                        "template-header-injection"
                    }
                    TemplateError::TooExpensive { .. } => "template-too-expensive",
                    _ => "template-error",
                },
            },
            ApiError::InvalidIdempotencyKey(_) => "invalid-idempotency-key",
            ApiError::IdempotencyKeyReused => "idempotency-key-reused",
            ApiError::InvalidQuery(_) => "invalid-query",
            ApiError::NotFound => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TemplateNotFound(_) => "template-not-found",
            ApiError::InvalidSignature(_) => "invalid-signature",
            ApiError::InvalidTemplate(_) => "invalid-template",
            ApiError::TemplateExists(_) => "template-exists",
            ApiError::EmptyBatch => "empty-batch",
            ApiError::BatchTooLarge { .. } => "batch-too-large",
            ApiError::InvalidBatch { .. } => "invalid-batch",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::OriginNotAllowed => "origin-not-allowed",
            ApiError::CaptchaFailed(_) => "captcha-failed",
            ApiError::CaptchaUnavailable(_) => "captcha-unavailable",
            ApiError::InvalidForm(_) => "invalid-form",
            ApiError::FormDisabled => "form-disabled",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Unauthenticated",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Payload too large",
            StatusCode::REQUEST_TIMEOUT => "Request timeout",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable request",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal error",
        }
    }

    /// The request field the problem is about, when one can be named.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Validation(error) => error.field(),
            ApiError::InvalidRequest { field, .. } => field.as_deref(),
            ApiError::SenderNotAllowed(_) => Some("from"),
            ApiError::TemplateNotFound(_) => Some("template.name"),
            ApiError::InvalidTemplate(error) => Some(error.field()),
            _ => None,
        }
    }
}

impl ApiError {
    /// The problem document of this error (also what a permissive batch answers for a refused item).
    pub fn problem(&self) -> Problem<'_> {
        Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}{}", self.slug()),
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            field: self.field(),
            errors: match self {
                ApiError::InvalidBatch { errors, .. } => Some(errors),
                _ => None,
            },
        }
    }

    /// The problem answer of a server error that carries no `ApiError` (the cause was logged where
    /// it was seen).
    pub(super) fn server_error(status: StatusCode) -> HttpResponse {
        let status = if status.is_server_error() {
            status
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}internal"),
            title: "Internal error",
            status: status.as_u16(),
            detail: "internal error".to_owned(),
            field: None,
            errors: None,
        }
        .respond(HttpResponse::build(status))
    }
}

/// An RFC 9457 problem document.
#[derive(Serialize)]
pub struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// Every failing item of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [ItemProblem]>,
}

/// Why one item of a batch cannot be accepted.
#[derive(Debug, Clone, Serialize)]
pub struct ItemProblem {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// The problem type, as a whole problem would give it.
    #[serde(rename = "type")]
    pub kind: String,
    /// What is wrong.
    pub detail: String,
    /// The field, when one can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ItemProblem {
    /// The item at `index` and its error.
    pub fn new(index: usize, error: &ApiError) -> Self {
        Self {
            index,
            kind: format!("{PROBLEM_TYPE_PREFIX}{}", error.slug()),
            detail: error.to_string(),
            field: error.field().map(str::to_owned),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_)
            | ApiError::SenderNotAllowed(_)
            | ApiError::InvalidSignature(_)
            | ApiError::OriginNotAllowed
            | ApiError::CaptchaFailed(_)
            | ApiError::FormDisabled => StatusCode::FORBIDDEN,
            ApiError::MalformedJson(_)
            | ApiError::InvalidIdempotencyKey(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest { .. }
            | ApiError::NoRoute
            | ApiError::Validation(_)
            | ApiError::IdempotencyKeyReused
            | ApiError::TemplateNotFound(_)
            | ApiError::InvalidTemplate(_)
            | ApiError::EmptyBatch
            | ApiError::BatchTooLarge { .. }
            | ApiError::InvalidBatch { .. }
            | ApiError::InvalidForm(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::TemplateExists(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::CaptchaUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Expected during a database outage; the client is told to retry.
            tracing::warn!(
                error = %crate::telemetry::error_chain(self),
                problem = self.slug(),
                "request refused while the database is unavailable"
            );
        } else if status.is_server_error() {
            tracing::error!(
                error = %crate::telemetry::error_chain(self),
                problem = self.slug(),
                "request failed"
            );
        }
        let problem = self.problem();
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Unauthenticated(AuthError::Missing) => {
                response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="posthorn""#));
            }
            ApiError::Unauthenticated(error) => {
                let challenge = format!(
                    r#"Bearer realm="posthorn", error="invalid_token", error_description="{}""#,
                    error.to_string().replace('"', "'")
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            ApiError::InsufficientScope(scope) => {
                let challenge = format!(
                    r#"Bearer realm="posthorn", error="insufficient_scope", scope="{scope}""#
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            ApiError::Unavailable(_) | ApiError::CaptchaUnavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::RateLimited(limited) => {
                // RFC 9110 Retry-After, and the IETF httpapi RateLimit header fields.
                response.insert_header((header::RETRY_AFTER, limited.retry_after.to_string()));
                response.insert_header(("RateLimit-Limit", limited.limit.to_string()));
                response.insert_header(("RateLimit-Remaining", "0"));
                response.insert_header(("RateLimit-Reset", limited.retry_after.to_string()));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may never come: the connection is not kept.
                response.force_close();
            }
            _ => {}
        }
        problem.respond(response)
    }
}

impl Problem<'_> {
    fn respond(&self, mut response: actix_web::HttpResponseBuilder) -> HttpResponse {
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        // Serializing a struct of strings and numbers cannot fail.
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}
