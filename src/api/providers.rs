//! `GET /v1/providers` (`admin`): each provider as this process sees it — its circuit, its connections
//! and its last connection-level failure.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::ApiError;
use super::auth::Admin;
use super::state::AppState;

#[derive(Serialize)]
pub(super) struct ProviderView {
    name: String,
    /// `smtp[s]://host:port`, without credentials.
    upstream: String,
    state: &'static str,
    /// `N/s`, `N/m`, `N/h` or `N/d` for the whole deployment; `null`: none.
    rate_limit: Option<String>,
    consecutive_failures: u32,
    connections: ConnectionsView,
    last_error: Option<LastErrorView>,
}

#[derive(Serialize)]
struct ConnectionsView {
    open: usize,
    in_use: usize,
    max: usize,
}

#[derive(Serialize)]
struct LastErrorView {
    message: String,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

#[derive(Serialize)]
struct ListView {
    items: Vec<ProviderView>,
}

/// Every provider, in the order configured.
pub async fn list(_caller: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ListView {
        items: views(&state),
    }))
}

/// Each provider as this process sees it (also the console's page).
pub(super) fn views(state: &AppState) -> Vec<ProviderView> {
    let pools = crate::delivery::pool_status(&state.providers);
    state
        .providers
        .iter()
        .zip(pools)
        .map(|(provider, pool)| {
            let breaker = provider.breaker.view();
            let upstream = &provider.upstream;
            ProviderView {
                name: provider.name().to_owned(),
                upstream: upstream.address(),
                state: breaker.state.as_str(),
                rate_limit: upstream.rate.map(|limit| limit.to_string()),
                consecutive_failures: breaker.consecutive_failures,
                connections: ConnectionsView {
                    open: pool.open,
                    in_use: pool.in_use,
                    max: pool.max,
                },
                last_error: breaker
                    .last_error
                    .map(|(message, at)| LastErrorView { message, at }),
            }
        })
        .collect()
}
