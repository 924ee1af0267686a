//! The JSON shapes of messages in responses: a stored message as it serializes (times in RFC 3339),
//! with its attempts when one message is shown, and pages of them.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Serialize;

use super::ApiError;
use crate::store::{AttemptRecord, EventRecord, MessageRecord, MessageSummary, Page};

/// A message as shown: its summary, and its attempts when it is shown alone.
#[derive(Serialize)]
pub struct MessageView {
    #[serde(flatten)]
    message: MessageSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventRecord>>,
}

/// A page of messages.
#[derive(Serialize)]
pub struct PageView {
    items: Vec<MessageView>,
    next_cursor: Option<String>,
}

impl From<MessageRecord> for MessageView {
    fn from(record: MessageRecord) -> Self {
        Self {
            message: record.summary,
            attempts: Some(record.attempts),
            events: Some(record.events),
        }
    }
}

impl From<Page> for PageView {
    fn from(page: Page) -> Self {
        Self {
            items: page
                .items
                .into_iter()
                .map(|message| MessageView {
                    message,
                    attempts: None,
                    events: None,
                })
                .collect(),
            next_cursor: page.next_cursor.map(|id| id.simple().to_string()),
        }
    }
}

/// `201 Created` with `value` as JSON and `Location: location`.
pub fn created(location: &str, value: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let mut response = json(StatusCode::CREATED, value)?;
    if let Ok(location) = location.parse() {
        response
            .headers_mut()
            .insert(actix_web::http::header::LOCATION, location);
    }
    Ok(response)
}

/// A JSON response. A value that cannot be serialized is a 500 problem, logged with its cause, rather
/// than the framework's plain-text error.
pub fn json(status: StatusCode, value: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(value).map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body))
}
