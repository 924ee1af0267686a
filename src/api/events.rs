//! `GET /v1/events`: the event feed. A caller follows `next_cursor` and gets every event of its
//! messages exactly once (an admin, every caller's), as an alternative to receiving webhooks.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::ApiError;
use super::auth::Reader;
use super::messages::parse_id;
use super::state::AppState;
use super::views::json;
use crate::domain::EventType;
use crate::store::{EventCursor, EventFilter, EventRecord};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Serialize)]
struct EventPageView {
    items: Vec<EventRecord>,
    next_cursor: String,
}

/// Reads the query: `type` (repeatable), `message_id`, `cursor`, `limit`.
fn filter(query: &[(String, String)], owner: Option<&str>) -> Result<EventFilter, ApiError> {
    let mut filter = EventFilter {
        owner: owner.map(str::to_owned),
        limit: DEFAULT_PAGE,
        ..EventFilter::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in query {
        if name != "type" && !seen.insert(name.as_str()) {
            return Err(ApiError::InvalidQuery(format!("`{name}` is given twice")));
        }
        match name.as_str() {
            "type" => filter.types.push(
                value
                    .parse::<EventType>()
                    .map_err(|error| ApiError::InvalidQuery(format!("type: {error}")))?,
            ),
            "message_id" => {
                filter.message_id = Some(parse_id(value).map_err(|_| {
                    ApiError::InvalidQuery("message_id must be a message id".into())
                })?);
            }
            "cursor" => {
                filter.after = Some(
                    value
                        .parse::<EventCursor>()
                        .map_err(|error| ApiError::InvalidQuery(error.to_string()))?,
                );
            }
            "limit" => {
                filter.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=MAX_PAGE).contains(limit))
                    .ok_or_else(|| {
                        ApiError::InvalidQuery(format!(
                            "limit must be an integer from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown parameter `{other}` (type, message_id, cursor, limit)"
                )));
            }
        }
    }
    Ok(filter)
}

/// A page of events, oldest first.
pub async fn list_events(
    caller: Reader,
    query: web::Query<Vec<(String, String)>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter(&query, caller.owner())?;
    let page = state.store.events(&filter).await?;
    json(
        StatusCode::OK,
        &EventPageView {
            items: page.items,
            next_cursor: page.next_cursor.to_string(),
        },
    )
}
