//! The HTTP API. Only this layer knows about HTTP; handlers parse into domain types and call the store.

mod auth;
mod body;
mod messages;
mod ops;
mod problem;
mod send;
mod state;
mod views;

use actix_web::{HttpResponse, web};

pub use problem::{ApiError, PROBLEM_TYPE_PREFIX};
pub use send::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use state::AppState;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/metrics", web::get().to(ops::metrics))
    .route("/openapi.yaml", web::get().to(ops::openapi))
    .service(
        web::resource(["/send", "/v1/send"])
            .route(web::post().to(send::send))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages")
            .route(web::get().to(messages::list_messages))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages/{id}/cancel")
            .route(web::post().to(messages::cancel_message))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages/{id}")
            .route(web::get().to(messages::get_message))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// The answer for any path that matches no route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
