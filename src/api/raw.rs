//! `POST /v1/send/raw`: a complete RFC 5322 message (`Content-Type: message/rfc822`), through the same
//! accept path as a JSON send. The envelope recipients are its `To`, `Cc` and `Bcc`, unless `?to=`
//! parameters name them.

use actix_web::{HttpRequest, HttpResponse, web};
use time::OffsetDateTime;

use actix_web::http::StatusCode;

use super::ApiError;
use super::auth::Sender;
use super::body::{Media, read_body};
use super::prepare::preview;
use super::send::{accepted_response, idempotency_key};
use super::state::AppState;
use super::views::json;
use crate::accept::Submission;
use crate::domain::{DomainError, EmailAddress, RawSubmission, RequestFingerprint, Source};

/// Accepts one message written by the caller.
pub async fn send_raw(
    caller: Sender,
    req: HttpRequest,
    query: web::Query<Vec<(String, String)>>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let dry_run = dry_run(&query)?;
    let recipients = recipients(&query)?;
    let key = idempotency_key(&req)?;
    let body = read_body(
        &req,
        payload,
        Media::Message,
        state.http.max_body_size,
        state.http.body_timeout,
    )
    .await?;
    let data = crlf(&body);
    let parsed = RawSubmission {
        data: &data,
        sender: None,
        recipients: recipients.clone(),
        source: Source::Raw,
    }
    .parse(state.acceptor.limits(), OffsetDateTime::now_utc())?;
    // The same message to other recipients is another request.
    let idempotency = key.map(|key| {
        let mut request = body.to_vec();
        for recipient in recipients.iter().flatten() {
            request.extend_from_slice(b"\0");
            request.extend_from_slice(recipient.as_str().as_bytes());
        }
        (key, RequestFingerprint::of_bytes(&request))
    });
    if dry_run {
        return json(
            StatusCode::OK,
            &preview(&state, caller.caller(), &parsed.message)?,
        );
    }
    let receipt = state
        .acceptor
        .accept(
            caller.caller(),
            Submission {
                message: parsed.message,
                idempotency,
            },
        )
        .await?;
    accepted_response(&receipt)
}

/// The `to` parameters, each an address; `None` when there are none.
fn recipients(query: &[(String, String)]) -> Result<Option<Vec<EmailAddress>>, ApiError> {
    let mut recipients = Vec::new();
    for (name, value) in query {
        match name.as_str() {
            "to" => {}
            "dry_run" => continue,
            _ => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown parameter `{name}` (only `to` and `dry_run` are accepted)"
                )));
            }
        }
        let address = EmailAddress::parse(value).map_err(|source| {
            ApiError::Validation(DomainError::Address {
                field: "to".into(),
                source,
            })
        })?;
        recipients.push(address);
    }
    Ok((!recipients.is_empty()).then_some(recipients))
}

/// `?dry_run=true`: validate and show, store nothing.
fn dry_run(query: &[(String, String)]) -> Result<bool, ApiError> {
    let mut dry = false;
    for (name, value) in query {
        if name == "dry_run" {
            dry = match value.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::InvalidQuery(
                        "dry_run must be `true` or `false`".into(),
                    ));
                }
            };
        }
    }
    Ok(dry)
}

/// A message whose lines all end in LF alone (a file saved on Unix) with CRLF line endings; any other
/// message as it is (a mix of endings is refused by the checks that follow).
fn crlf(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if body.contains(&b'\r') || !body.contains(&b'\n') {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    for byte in body {
        if *byte == b'\n' {
            out.push(b'\r');
        }
        out.push(*byte);
    }
    std::borrow::Cow::Owned(out)
}
