//! What every handler can reach.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::delivery::Provider;
use crate::domain::Limits;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::SharedStore;

/// Shared, read-only application state.
pub struct AppState {
    /// The queue.
    pub store: SharedStore,
    /// Verifies bearer tokens.
    pub authenticator: Arc<Authenticator>,
    /// Bounds on submitted messages.
    pub limits: Limits,
    /// Largest request body accepted, in bytes.
    pub max_body_size: usize,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Per-caller request limits.
    pub rate_limiter: RateLimiter,
    /// SMTP upstreams, for their connection gauges.
    pub providers: Vec<Provider>,
}
