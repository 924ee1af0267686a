//! Builds the application from its configuration and runs it until a shutdown signal.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::accept::Acceptor;
use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::bounces::Reports;
use crate::bounces::sns::SnsVerifier;
use crate::config::{Profile, Settings, TokenSecret};
use crate::delivery::{Delivery, DeliverySettings, Outbox, Provider, Providers, Transport};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::store::{self, SharedStore, StoreError};
use crate::submission::{Services, Submission};
use crate::webhooks::{WebhookSettings, Webhooks};

/// How often migrations are retried while the database is unreachable at start.
const MIGRATION_RETRY: Duration = Duration::from_secs(2);

/// How often expired idempotency keys are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A built application: bound to its port, connected to its store, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    store: SharedStore,
    settings: Settings,
    metrics: Metrics,
    transport: Option<Transport>,
    submission: Option<Submission>,
    migrated: bool,
    shutdown: CancellationToken,
    queue_history: Arc<crate::queue_history::QueueHistory>,
}

impl Application {
    /// Connects the store, applies migrations and binds the listener (`POSTHORN_LISTEN`; port 0 picks a
    /// free port, which tests use).
    ///
    /// A database that cannot be reached yet does not stop the start: the API serves (`/readyz` says
    /// 503) while migrations are retried in the background, and workers start once they are applied.
    ///
    /// In the development profile, a missing token key is taken from (or generated into) the data
    /// directory, and a missing database URL means the embedded database there.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        match settings.resolve_token_key()? {
            TokenSecret::Configured => {}
            TokenSecret::FromDataDir(path) => {
                tracing::info!(path = %path.display(), "using the token secret in the data directory");
            }
            TokenSecret::Generated(path) => tracing::info!(
                path = %path.display(),
                "generated a token secret (mode 0600); `posthorn token` run from this directory signs with it"
            ),
        }
        let store = open_store(&settings)?;
        let mut app = Self::build_with_store(settings, store)?;
        match app.store.migrate().await {
            Ok(()) => {}
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(
                    error = %error,
                    "the database is not reachable yet; serving and retrying the migrations until it is"
                );
                app.migrated = false;
            }
            Err(error) => return Err(error).context("applying database migrations"),
        }
        Ok(app)
    }

    /// Builds around an existing store (already migrated).
    pub fn build_with_store(settings: Settings, store: SharedStore) -> anyhow::Result<Self> {
        for name in &settings.ignored_env {
            tracing::warn!(variable = %name, "ignoring an environment variable that names no setting");
        }
        if settings.auth.keys.is_empty() {
            anyhow::bail!(
                "invalid configuration: POSTHORN_JWT_SECRET: no token key is configured (set a secret of at least 32 bytes)"
            );
        }
        let metrics = Metrics::new().context("registering metrics")?;
        let http_metrics = http_metrics(&metrics)?;
        let providers = settings
            .delivery
            .upstreams
            .iter()
            .map(|upstream| {
                Delivery::provider(upstream.clone(), &store, &metrics).map_err(|error| {
                    anyhow::anyhow!("invalid configuration: upstream {}: {error}", upstream.name)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let transport = choose_transport(&settings, &providers)?;
        let acceptor = Arc::new(Acceptor::new(
            store.clone(),
            settings.limits.clone(),
            settings.delivery.routes.clone(),
            metrics.clone(),
        ));
        let authenticator = Arc::new(Authenticator::new(settings.auth.clone()));
        let reports = Arc::new(Reports::new(
            store.clone(),
            settings.verp.clone(),
            settings.delivery.suppress_hard_bounces,
            metrics.clone(),
        ));
        let rate_limiter = Arc::new(RateLimiter::new(settings.rate_limits.clone()));
        let submission = settings
            .submission
            .enabled()
            .then(|| {
                Submission::start(
                    settings.submission.clone(),
                    Services {
                        acceptor: acceptor.clone(),
                        authenticator: authenticator.clone(),
                        rate_limiter: rate_limiter.clone(),
                        metrics: metrics.clone(),
                        reports: reports.clone(),
                    },
                )
            })
            .transpose()?;
        let queue_history = Arc::new(crate::queue_history::QueueHistory::default());
        let state = web::Data::new(AppState {
            queue_history: queue_history.clone(),
            store: store.clone(),
            acceptor,
            authenticator,
            http: settings.http.clone(),
            metrics: metrics.clone(),
            rate_limiter,
            providers: providers.clone(),
            transport: transport.clone(),
            webhook_guard: settings.webhooks.guard,
            reports,
            sns: Arc::new(
                SnsVerifier::new(settings.inbound.sns_cert_urls.clone())
                    .context("building the SNS certificate client")?,
            ),
            postmark_secret: settings.inbound.postmark_secret.clone(),
            forms: settings
                .forms
                .iter()
                .map(|form| (form.id.clone(), form.clone()))
                .collect(),
            captcha_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("building the captcha client")?,
        });
        let listen = settings.http.listen;
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("binding POSTHORN_LISTEN={listen}"))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(ErrorHandlers::new().default_handler_server(api::server_error_as_problem))
                .wrap(http_metrics.clone())
                .wrap(from_fn(api::bound_method))
                .app_data(state.clone())
                .configure(api::configure)
                .default_service(web::to(api::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(settings.shutdown_grace.as_secs().max(1))
        .run();
        Ok(Self {
            port,
            server,
            store,
            settings,
            metrics,
            transport,
            submission,
            migrated: true,
            shutdown: CancellationToken::new(),
            queue_history,
        })
    }

    /// The SMTP submission ports: the STARTTLS listener's and the implicit TLS listener's.
    pub fn submission_ports(&self) -> (Option<u16>, Option<u16>) {
        self.submission
            .as_ref()
            .map_or((None, None), Submission::ports)
    }

    /// The port of the bounce listener.
    pub fn bounce_port(&self) -> Option<u16> {
        self.submission.as_ref().and_then(Submission::bounce_port)
    }

    /// The port the API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A token that stops the application when cancelled, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, SIGINT or the shutdown token; then stops accepting and drains in-flight
    /// requests within the grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let purge = tokio::spawn(purge_idempotency_keys(
            self.store.clone(),
            self.settings.store.idempotency_retention,
            self.shutdown.clone(),
        ));
        let sampler = tokio::spawn(crate::queue_history::sample(
            self.queue_history.clone(),
            self.store.clone(),
            self.shutdown.clone(),
        ));
        let retention = tokio::spawn(crate::retention::run(
            self.store.clone(),
            self.settings.retention.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        let grace = self.settings.shutdown_grace;
        let delivery = tokio::spawn(run_workers(
            self.store.clone(),
            self.transport.clone(),
            self.settings.delivery.clone(),
            self.settings.webhooks.clone(),
            self.metrics.clone(),
            !self.migrated,
            self.shutdown.clone(),
            grace,
        ));
        tracing::info!(listen = %self.settings.http.listen, port = self.port, "posthorn is serving");
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutdown signal received"),
            () = self.shutdown.cancelled() => {}
        }
        self.shutdown.cancel();
        // Stop accepting (HTTP and SMTP) and stop claiming together; workers finish or release what
        // they hold.
        let submission = async {
            if let Some(submission) = self.submission {
                submission.shutdown(grace).await;
            }
        };
        let (_, delivered, ()) = tokio::join!(stop(handle), delivery, submission);
        if let Err(error) = delivered {
            tracing::error!(error = %error, "delivery task failed");
        }
        purge.abort();
        sampler.abort();
        retention.abort();
        server.await.context("HTTP server task")??;
        tracing::info!("posthorn stopped");
        Ok(())
    }
}

/// Applies migrations if they are still pending, then runs the mail workers and the webhook
/// dispatcher until `stop`.
#[allow(clippy::too_many_arguments)]
async fn run_workers(
    store: SharedStore,
    transport: Option<Transport>,
    settings: DeliverySettings,
    webhooks: WebhookSettings,
    metrics: Metrics,
    needs_migration: bool,
    stop: CancellationToken,
    grace: Duration,
) {
    if needs_migration {
        loop {
            tokio::select! {
                () = tokio::time::sleep(MIGRATION_RETRY) => {}
                () = stop.cancelled() => return,
            }
            match store.migrate().await {
                Ok(()) => {
                    tracing::info!("database reachable; migrations applied");
                    break;
                }
                Err(error) => tracing::warn!(
                    error = %crate::telemetry::error_chain(&error),
                    "waiting for the database"
                ),
            }
        }
    }
    let webhooks = match Webhooks::start(store.clone(), webhooks, metrics.clone()) {
        Ok(webhooks) => Some(webhooks),
        Err(error) => {
            tracing::error!(error = %error, "the webhook dispatcher could not start");
            None
        }
    };
    let delivery = transport.map(|transport| Delivery::start(store, transport, settings, metrics));
    stop.cancelled().await;
    let webhooks = async {
        if let Some(webhooks) = webhooks {
            webhooks.shutdown(grace).await;
        }
    };
    let delivery = async {
        if let Some(delivery) = delivery {
            delivery.shutdown(grace).await;
        }
    };
    tokio::join!(webhooks, delivery);
}

async fn stop(handle: ServerHandle) {
    handle.stop(true).await;
}

/// Opens the store the settings name: PostgreSQL for `postgres://`, SQLite for `sqlite:`, and without a
/// URL the embedded database in the data directory.
pub fn open_store(settings: &Settings) -> anyhow::Result<SharedStore> {
    if settings.database_in_data_dir {
        settings.data_dir.create()?;
        tracing::info!(
            data_dir = %settings.data_dir.display_path().display(),
            "using the embedded database in the data directory (set POSTHORN_DATABASE_URL=postgres://... for PostgreSQL)"
        );
    }
    Ok(store::open(&settings.store)?)
}

/// The first configured upstream; without one, the outbox in development and nothing in production.
fn choose_transport(
    settings: &Settings,
    providers: &[Provider],
) -> anyhow::Result<Option<Transport>> {
    if !providers.is_empty() {
        let providers = Providers::new(providers.to_vec(), &settings.delivery.routes)
            .map_err(|error| anyhow::anyhow!("invalid configuration: routes: {error}"))?;
        return Ok(Some(Transport::Smtp(providers)));
    }
    match settings.profile {
        Profile::Development => {
            let outbox = settings.data_dir.outbox();
            tracing::warn!(
                outbox = %outbox.display(),
                "no SMTP upstream configured: messages are written to the outbox as .eml files; set \
                 POSTHORN_SMTP_URL (e.g. smtp://user:password@smtp.example.com:587?tls=required) to deliver them"
            );
            Ok(Some(Transport::Outbox(Outbox::new(outbox))))
        }
        Profile::Production => {
            tracing::warn!(
                "no SMTP upstream configured (POSTHORN_SMTP_URL): messages are accepted and wait in the queue"
            );
            Ok(None)
        }
    }
}

fn http_metrics(metrics: &Metrics) -> anyhow::Result<PrometheusMetrics> {
    PrometheusMetricsBuilder::new("posthorn")
        .registry(metrics.registry().clone())
        // Unknown paths share one label value so scanners cannot grow the series without bound.
        .mask_unmatched_patterns("UNMATCHED")
        .build()
        .map_err(|error| anyhow::anyhow!("registering HTTP metrics: {error}"))
}

async fn purge_idempotency_keys(store: SharedStore, retention: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        match store.purge_idempotency_keys(retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys purged"),
            Err(error) => tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                "purging idempotency keys failed"
            ),
        }
        // Budgets idle for a day are full again (the longest period is a day): their rows go.
        if let Err(error) = store.purge_schedules(SCHEDULE_IDLE).await {
            tracing::warn!(
                error = %crate::telemetry::error_chain(&error),
                "purging idle rate-limit schedules failed"
            );
        }
    }
}

/// How long a rate-limit schedule stays unused before it is forgotten.
const SCHEDULE_IDLE: Duration = Duration::from_secs(86_400);

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
