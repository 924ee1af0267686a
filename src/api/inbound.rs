//! Providers' notifications of bounces and complaints: `POST /v1/inbound/ses` (Amazon SNS, its
//! signature verified) and `POST /v1/inbound/postmark` (its webhook, with the configured secret as
//! its basic-auth password). Each names a message by its `Message-ID`; what it reports becomes the
//! message's events and suppressions. Answered `200` once recorded (or kept, when unreadable), so a
//! provider does not send the same notification again and again.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde::Serialize;

use super::ApiError;
use super::body::{Media, read_body};
use super::state::AppState;
use super::views::json;
use crate::bounces::providers::{self, Notification};
use crate::bounces::sns::SnsMessage;
use crate::bounces::{Finding, Ingested};

#[derive(Serialize)]
struct Answer {
    status: &'static str,
}

fn answer(status: &'static str) -> Result<HttpResponse, ApiError> {
    json(StatusCode::OK, &Answer { status })
}

async fn record(
    state: &AppState,
    source: &'static str,
    raw: &[u8],
    notification: Result<Notification, String>,
) -> Result<HttpResponse, ApiError> {
    let (message_id, findings): (String, Vec<Finding>) = match notification {
        Ok(Some(found)) => found,
        Ok(None) => return answer("ignored"),
        Err(error) => {
            state.reports.keep(source, raw, &error).await?;
            return answer("kept");
        }
    };
    match state
        .reports
        .ingest_notification(source, &message_id, findings)
        .await?
    {
        Ingested::Recorded => answer("recorded"),
        Ingested::Unmatched => answer("unmatched"),
        Ingested::Kept => answer("kept"),
    }
}

/// `POST /v1/inbound/ses`: an SNS message (a subscription to confirm, or an SES notification).
pub async fn ses(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(
        &req,
        payload,
        Media::Any,
        state.http.max_body_size,
        state.http.body_timeout,
    )
    .await?;
    let message: SnsMessage = serde_json::from_slice(&body).map_err(|error| {
        if error.is_data() {
            ApiError::InvalidRequest {
                message: format!("not an SNS message: {error}"),
                field: None,
            }
        } else {
            ApiError::MalformedJson(error.to_string())
        }
    })?;
    state
        .sns
        .verify(&message)
        .await
        .map_err(|error| ApiError::InvalidSignature(error.to_string()))?;
    match message.kind.as_str() {
        "SubscriptionConfirmation" => {
            state
                .sns
                .confirm(&message)
                .await
                .map_err(|error| ApiError::InvalidSignature(error.to_string()))?;
            tracing::info!(topic = %message.topic_arn, "SNS subscription confirmed");
            answer("confirmed")
        }
        "Notification" => {
            let notification = serde_json::from_str(&message.message)
                .map_err(|error| error.to_string())
                .and_then(|value| providers::ses(&value));
            record(&state, "ses", message.message.as_bytes(), notification).await
        }
        _ => answer("ignored"),
    }
}

/// `POST /v1/inbound/postmark`: a Postmark bounce or spam-complaint webhook.
pub async fn postmark(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = &state.postmark_secret else {
        return Err(ApiError::NotFound);
    };
    if !authorized(&req, secret.expose()) {
        return Err(ApiError::InvalidSignature(
            "the webhook's credentials do not match POSTHORN_POSTMARK_WEBHOOK_SECRET".into(),
        ));
    }
    let body = read_body(
        &req,
        payload,
        Media::Json,
        state.http.max_body_size,
        state.http.body_timeout,
    )
    .await?;
    let notification = serde_json::from_slice(&body)
        .map_err(|error| error.to_string())
        .and_then(|value| providers::postmark(&value));
    record(&state, "postmark", &body, notification).await
}

/// Whether the request carries the secret: as the basic-auth password (any user name), or a bearer
/// token. Compared in constant time.
fn authorized(req: &HttpRequest, secret: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let given = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|decoded| String::from_utf8(decoded).ok())
                .and_then(|pair| {
                    pair.split_once(':')
                        .map(|(_, password)| password.to_owned())
                })
        }
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(rest.trim().to_owned())
        }
        _ => None,
    };
    given.is_some_and(|given| {
        given.len() == secret.len()
            && given
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}
