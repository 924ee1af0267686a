//! The HTTP API. Only this layer knows about HTTP; handlers parse into domain types and call the store.

mod auth;
mod batch;
mod body;
mod console;
mod draft;
mod events;
mod forms;
mod inbound;
mod messages;
mod middleware;
mod ops;
mod origin;
mod prepare;
mod problem;
mod providers;
mod raw;
mod recipients;
mod resend;
mod send;
mod state;
mod suppressions;
mod templates;
mod views;
mod webhooks;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{HttpResponse, guard, web};

pub use draft::{AttachmentDraft, MessageDraft, OneOrMany};
pub use middleware::{bound_method, server_error_as_problem};
pub use problem::{ApiError, ItemProblem, PROBLEM_TYPE_PREFIX, Problem};
pub use send::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use state::AppState;

/// The HTTP listener and what it reads.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address the API listens on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_size: usize,
    /// How long a request body may take to arrive, once its headers have.
    pub body_timeout: Duration,
    /// Most messages in one batch.
    pub max_batch: usize,
    /// Proxies whose `X-Forwarded-For` names the client (forms' per-address limits).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Registers every route. Each resource answers other methods with 405 and an `Allow` header; every
/// GET resource answers HEAD too.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
    .service(readable("/healthz").to(ops::healthz))
    .service(readable("/readyz").to(ops::readyz))
    .service(readable("/metrics").to(ops::metrics))
    .service(readable("/openapi.yaml").to(ops::openapi))
    .service(
        web::resource(["/send", "/v1/send"])
            .route(web::post().to(send::send))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/send/batch")
            .route(web::post().to(batch::send_batch))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/send/raw")
            .route(web::post().to(raw::send_raw))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/templates")
            .route(web::post().to(templates::create))
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(templates::list),
            )
            .default_service(web::to(|| not_allowed("GET, HEAD, POST"))),
    )
    .service(
        web::resource("/v1/templates/{name}/render")
            .route(web::post().to(templates::render))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/templates/{name}")
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(templates::get),
            )
            .route(web::put().to(templates::update))
            .route(web::delete().to(templates::delete))
            .default_service(web::to(|| not_allowed("GET, HEAD, PUT, DELETE"))),
    )
    .service(readable("/v1/messages").to(messages::list_messages))
    .service(readable("/v1/events").to(events::list_events))
    .service(readable("/v1/providers").to(providers::list))
    .service(
        web::resource("/v1/suppressions")
            .route(web::post().to(suppressions::add))
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(suppressions::list),
            )
            .default_service(web::to(|| not_allowed("GET, HEAD, POST"))),
    )
    .service(
        web::resource("/v1/suppressions/{address}")
            .route(web::delete().to(suppressions::remove))
            .default_service(web::to(|| not_allowed("DELETE"))),
    )
    .service(
        web::resource("/v1/messages/{id}/cancel")
            .route(web::post().to(messages::cancel_message))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/messages/redrive")
            .route(web::post().to(messages::redrive))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/messages/{id}/retry")
            .route(web::post().to(messages::retry_message))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/messages/{id}")
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(messages::get_message),
            )
            .route(web::patch().to(messages::reschedule_message))
            .default_service(web::to(|| not_allowed("GET, HEAD, PATCH"))),
    )
    .service(
        web::resource("/v1/webhooks")
            .route(web::post().to(webhooks::create))
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(webhooks::list),
            )
            .default_service(web::to(|| not_allowed("GET, HEAD, POST"))),
    )
    .service(
        web::resource("/v1/webhooks/{id}/rotate-secret")
            .route(web::post().to(webhooks::rotate_secret))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/webhooks/{id}/replay")
            .route(web::post().to(webhooks::replay))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(readable("/v1/webhooks/{id}/deliveries").to(webhooks::deliveries))
    .service(
        web::resource("/v1/webhooks/{id}")
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(webhooks::get),
            )
            .route(web::patch().to(webhooks::update))
            .route(web::delete().to(webhooks::delete))
            .default_service(web::to(|| not_allowed("GET, HEAD, PATCH, DELETE"))),
    )
    .service(
        web::resource("/v1/inbound/ses")
            .route(web::post().to(inbound::ses))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/inbound/postmark")
            .route(web::post().to(inbound::postmark))
            .default_service(web::to(|| not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/forms/{id}")
            .route(web::post().to(forms::post))
            .route(web::method(actix_web::http::Method::OPTIONS).to(forms::preflight))
            .default_service(web::to(|| not_allowed("POST, OPTIONS"))),
    )
    .configure(console::configure)
    .configure(resend::configure)
    .service(
        web::resource("/v1/recipients/{address}")
            .route(web::delete().to(recipients::erase))
            .default_service(web::to(|| not_allowed("DELETE"))),
    );
}

/// A resource served by GET and HEAD; the handler is attached with `.to(...)`.
fn readable(path: &str) -> ReadableResource {
    ReadableResource(path.to_owned())
}

struct ReadableResource(String);

impl ReadableResource {
    fn to<F, Args>(self, handler: F) -> actix_web::Resource
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        web::resource(self.0)
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(handler),
            )
            .default_service(web::to(|| not_allowed("GET, HEAD")))
    }
}

async fn not_allowed(allow: &'static str) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(allow))
}

/// The answer for any path that matches no route.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
