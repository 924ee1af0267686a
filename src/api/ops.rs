//! Operational endpoints: liveness, readiness, metrics and the API contract.

use actix_web::{HttpResponse, web};

use super::ApiError;
use super::state::AppState;

/// The OpenAPI document, compiled in so the server always serves the contract it was built with.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and its schema is current.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.readiness().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text format. Queue depth and pool sizes are read at scrape time.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.store.queue_depth().await {
        Ok(depths) => {
            for (status, count) in depths {
                state
                    .metrics
                    .queue_depth
                    .with_label_values(&[status])
                    .set(count);
            }
        }
        // A scrape during a database outage still reports everything else.
        Err(error) => tracing::warn!(error = %error, "queue depth unavailable for this scrape"),
    }
    match state.store.webhook_backlog().await {
        Ok(pending) => state.metrics.webhook_backlog.set(pending),
        Err(error) => tracing::warn!(error = %error, "webhook backlog unavailable for this scrape"),
    }
    for provider in &state.providers {
        let current = provider.breaker.view().state;
        for circuit in crate::delivery::CircuitState::ALL {
            state
                .metrics
                .provider_circuit_state
                .with_label_values(&[provider.name(), circuit.as_str()])
                .set(i64::from(circuit == current));
        }
    }
    for pool in crate::delivery::pool_status(&state.providers) {
        let gauge = &state.metrics.smtp_connections;
        gauge
            .with_label_values(&[pool.provider.as_str(), "open"])
            .set(pool.open as i64);
        gauge
            .with_label_values(&[pool.provider.as_str(), "in_use"])
            .set(pool.in_use as i64);
        gauge
            .with_label_values(&[pool.provider.as_str(), "max"])
            .set(pool.max as i64);
    }
    let text = state
        .metrics
        .render()
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// `GET /openapi.yaml`: the API contract.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(OPENAPI_YAML)
}
