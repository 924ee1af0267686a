//! What every handler can reach.

use std::sync::Arc;

use super::HttpSettings;
use crate::accept::Acceptor;
use crate::auth::Authenticator;
use crate::delivery::{Provider, Transport};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::SharedStore;

/// Shared, read-only application state.
pub struct AppState {
    /// The queue, for reading and cancelling messages.
    pub store: SharedStore,
    /// The accept path every ingress shares.
    pub acceptor: Arc<Acceptor>,
    /// Verifies bearer tokens.
    pub authenticator: Arc<Authenticator>,
    /// What the listener reads: body size and time limits.
    pub http: HttpSettings,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Per-caller request limits (shared with SMTP submission).
    pub rate_limiter: Arc<RateLimiter>,
    /// SMTP upstreams, for their connection gauges.
    pub providers: Vec<Provider>,
    /// Where messages go, for dry runs; `None` when they wait in the queue.
    pub transport: Option<Transport>,
    /// What webhook URLs may be.
    pub webhook_guard: crate::webhooks::Guard,
    /// Bounces and complaints from providers' notifications.
    pub reports: Arc<crate::bounces::Reports>,
    /// Checks SNS signatures (SES notifications).
    pub sns: Arc<crate::bounces::sns::SnsVerifier>,
    /// The secret Postmark's webhook must carry; without one, its route is off.
    pub postmark_secret: Option<crate::secret::Secret>,
    /// Public contact forms by id.
    pub forms: std::collections::HashMap<String, crate::forms::Form>,
    /// Asks captcha providers whether a post's captcha was solved.
    pub captcha_client: reqwest::Client,
    /// The queue's depth over the last hour, for the console.
    pub queue_history: Arc<crate::queue_history::QueueHistory>,
}

impl AppState {
    /// Puts the failed messages `filter` matches back in the queue (with `dry_run`, only counts them),
    /// and counts those requeued in `posthorn_messages_requeued_total`: the API's retry and redrive and
    /// the console's share this.
    pub async fn requeue_failed(
        &self,
        filter: &crate::store::RequeueFilter,
        dry_run: bool,
    ) -> Result<crate::store::Requeued, crate::store::StoreError> {
        let requeued = self.store.requeue_failed(filter, dry_run).await?;
        if !dry_run {
            self.metrics.messages_requeued.inc_by(requeued.requeued);
        }
        Ok(requeued)
    }
}
