//! Configuration: defaults in code < optional TOML file < `POSTHORN_*` environment variables.
//!
//! [`Config`] is what was read; [`Config::validate`] checks every value once and turns the whole into
//! [`Settings`], the settings of each component, so that a bad setting fails fast with a message naming
//! its key and nothing downstream builds or checks a value again. Components never read this module.

mod delivery;
mod forms;
mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use delivery::{DkimConfig, ProviderConfig, RouteConfig, RouteMatchConfig, TimeoutsConfig};
pub use forms::{CaptchaConfig, FormConfig};
pub use settings::{Settings, TokenSecret};

use crate::auth::KeySpec;
use crate::delivery::RetryPolicy;
use crate::domain::Limits;
use crate::secret::Secret;
use crate::telemetry::LogFormat;

/// The whole configuration of a posthorn process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// `development` (the default: generated secret, embedded database, local outbox) or `production`
    /// (every secret must be given explicitly).
    pub profile: Profile,
    /// Where the embedded database, a generated token secret and the local outbox live.
    pub data_dir: PathBuf,
    /// The queue database: `postgres://...` for PostgreSQL, `sqlite://path` for the embedded engine;
    /// unset means the embedded database in the data directory.
    pub database_url: Option<Secret>,
    /// Connections in the database pool of this process.
    pub database_max_connections: u32,
    /// How long a request waits for a database connection before answering 503.
    #[serde(with = "humantime_serde")]
    pub database_acquire_timeout: Duration,

    /// HS256 secret for caller tokens (at least 32 bytes). Shorthand for one entry of `jwt_keys`.
    pub jwt_secret: Option<Secret>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// Further verification keys, selected by `kid` (TOML only).
    pub jwt_keys: Vec<KeySpec>,
    /// Per-caller settings keyed by the token's `sub` (TOML only).
    pub callers: Vec<CallerConfig>,

    /// The SMTP upstream in lettre's URL form, e.g. `smtp://user:pass@host:587?tls=required`.
    pub smtp_url: Option<Secret>,
    /// Most SMTP connections open at once to the upstream, per process.
    pub smtp_max_connections: usize,
    /// One deadline for every phase of every provider's sessions (unset: each phase its own, see
    /// `smtp_timeouts`).
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Option<Duration>,
    /// Deadlines of the session phases for every provider (`[smtp_timeouts]`, or
    /// `POSTHORN_SMTP_TIMEOUTS__DONE=15m`); a provider's own `timeout` and `timeouts` come first.
    pub smtp_timeouts: TimeoutsConfig,
    /// Extra PEM root certificate(s) to trust for the upstream's TLS certificate.
    pub smtp_tls_ca_file: Option<PathBuf>,
    /// Named upstreams (TOML only), tried in the order the file lists them unless routes say otherwise.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The order of `providers` in the file (a map read from TOML forgets it).
    #[serde(skip)]
    pub provider_order: Vec<String>,
    /// Which providers take which messages (TOML only): the first route that matches a message
    /// takes it; a route without `match` takes every message that reaches it.
    pub routes: Vec<RouteConfig>,
    /// DKIM keys (TOML only): messages whose `From` domain has keys are signed by each of them.
    pub dkim: Vec<DkimConfig>,

    /// Delivery workers (concurrent senders) per process.
    pub workers: usize,
    /// Jobs claimed in one statement; also the most claimed jobs waiting for a sender.
    pub claim_batch_size: u32,
    /// How long a claimed job is reserved for its worker before another may take it over.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How often idle workers look for due jobs when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Delay after the first failed attempt; it doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub retry_initial_delay: Duration,
    /// Largest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Attempts after which a message fails.
    pub retry_max_attempts: u32,
    /// Age after which a message fails instead of being retried.
    #[serde(with = "humantime_serde")]
    pub retry_max_age: Duration,
    /// Add addresses that hard-bounce (enhanced status 5.1.x or 5.2.1) to the suppression list.
    pub suppress_hard_bounces: bool,

    /// Largest accepted request body, in bytes.
    pub max_body_size: usize,
    /// How long a request body may take to arrive once its headers have (then 408).
    #[serde(with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// Most addresses accepted in each of `to`, `cc`, `bcc` and `reply_to`.
    pub max_recipients: usize,
    /// Most attachments accepted on one message.
    pub max_attachments: usize,
    /// Largest accepted attachment, in bytes after base64 decoding.
    pub max_attachment_size: usize,
    /// Most custom headers accepted on one message.
    pub max_headers: usize,
    /// How far ahead `send_at` may lie.
    #[serde(with = "humantime_serde")]
    pub max_schedule_ahead: Duration,
    /// Requests per second each caller may make on average (per process); 0 turns limiting off.
    pub rate_limit: f64,
    /// Requests a caller may make at once before the average applies.
    pub rate_limit_burst: u32,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
    /// Most messages in one `POST /v1/send/batch`.
    pub max_batch: usize,
    /// Webhook URLs may be `http` (they must be `https` otherwise).
    pub webhook_allow_http: bool,
    /// Webhooks may target private, loopback and link-local addresses.
    pub webhook_allow_private: bool,
    /// The delays before each retry of a failed webhook delivery, comma-separated.
    pub webhook_retry_schedule: String,
    /// Deadline of one webhook delivery.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// An endpoint whose deliveries have failed this long is disabled when a delivery gives up.
    #[serde(with = "humantime_serde")]
    pub webhook_disable_after: Duration,
    /// How long after a message finished its body and attachments are kept; `0s` keeps them.
    #[serde(with = "humantime_serde")]
    pub retention_bodies: Duration,
    /// How long after a message finished its row (with its attempts) is kept; `0s` keeps it.
    #[serde(with = "humantime_serde")]
    pub retention_messages: Duration,
    /// How often the retention passes look for what is due.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,

    /// The SMTP submission listener (STARTTLS when a certificate is configured): an address, or `off`.
    /// Unset: `127.0.0.1:2525` in the development profile, off in production.
    pub submission_listen: Option<String>,
    /// The SMTP submission listener speaking TLS from the first byte (port 465): an address, or `off`.
    pub submission_tls_listen: Option<String>,
    /// PEM certificate chain of the submission listeners; read again when it changes.
    pub submission_tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub submission_tls_key: Option<PathBuf>,
    /// Most SMTP sessions open at once (per process).
    pub submission_max_connections: usize,
    /// How long each SMTP command (and each line of a message) may take to arrive.
    #[serde(with = "humantime_serde")]
    pub submission_timeout: Duration,
    /// How long one SMTP session may last in all.
    #[serde(with = "humantime_serde")]
    pub submission_session_timeout: Duration,
    /// The name in the SMTP greeting; unset: this host's name.
    pub submission_hostname: Option<String>,

    /// The domain of VERP return paths (`b-<token>@DOMAIN`): bounces to them become events and
    /// suppressions. Unset: messages keep their own envelope sender.
    pub bounce_domain: Option<String>,
    /// An SMTP listener for the bounce domain's mail (where its MX points), e.g. `0.0.0.0:25`, or off.
    pub bounce_listen: Option<String>,
    /// The key that authenticates VERP tokens (default: derived from the JWT secret).
    pub bounce_secret: Option<Secret>,
    /// URL prefixes SNS signing certificates may come from, comma-separated (default: SNS's hosts).
    pub sns_cert_urls: Option<String>,
    /// Signs console sessions (default: derived from `POSTHORN_JWT_SECRET`); set it when tokens are
    /// verified with public keys only, or to sign everyone out by changing it.
    pub console_secret: Option<Secret>,
    /// Public contact forms (TOML only).
    pub forms: Vec<FormConfig>,
    /// Proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Option<String>,
    /// The secret Postmark's bounce webhook carries as its basic-auth password.
    pub postmark_webhook_secret: Option<Secret>,

    /// Log output: `auto` (JSON unless stderr is a terminal), `json` or `pretty`.
    pub log_format: LogFormat,
    /// How long in-flight work may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `POSTHORN_*` variables that name no setting; logged at start.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// Settings for one caller, matched by the token's `sub`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// The caller's `sub`.
    pub sub: String,
    /// A disabled caller's tokens are refused even before they expire.
    #[serde(default)]
    pub disabled: bool,
    /// When set, this caller may only send from addresses in these domains.
    #[serde(default)]
    pub sender_domains: Vec<String>,
    /// This caller's requests per second (overrides `rate_limit`; 0: unlimited).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// This caller's burst (overrides `rate_limit_burst`).
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// Ids (`jti`) of this caller's tokens to refuse before they expire, e.g. one SMTP password.
    #[serde(default)]
    pub revoked_tokens: Vec<String>,
}

/// How strict the defaults are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Friendly defaults: a token secret is generated, mail goes to a local outbox without an upstream.
    Development,
    /// Nothing is generated or assumed: a token key must be configured, and without an upstream
    /// messages wait in the queue.
    Production,
}

impl Default for Config {
    /// Each component's own defaults where it has them, so that no default is written twice.
    fn default() -> Self {
        let limits = Limits::default();
        let retry = RetryPolicy::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            profile: Profile::Development,
            data_dir: PathBuf::from("posthorn-data"),
            database_url: None,
            database_max_connections: 10,
            database_acquire_timeout: Duration::from_secs(5),
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_keys: Vec::new(),
            callers: Vec::new(),
            smtp_url: None,
            smtp_max_connections: 4,
            smtp_timeout: None,
            smtp_timeouts: TimeoutsConfig::default(),
            smtp_tls_ca_file: None,
            providers: BTreeMap::new(),
            provider_order: Vec::new(),
            routes: Vec::new(),
            dkim: Vec::new(),
            workers: 8,
            claim_batch_size: 200,
            lease_duration: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            retry_initial_delay: retry.initial_delay,
            retry_max_delay: retry.max_delay,
            retry_max_attempts: retry.max_attempts,
            retry_max_age: retry.max_age,
            max_body_size: 25 * 1024 * 1024,
            http_body_timeout: Duration::from_secs(30),
            max_recipients: limits.max_recipients,
            max_attachments: limits.max_attachments,
            max_attachment_size: limits.max_attachment_size,
            max_headers: limits.max_headers,
            max_schedule_ahead: limits.max_schedule_ahead,
            idempotency_retention: Duration::from_secs(24 * 3600),
            max_batch: 100,
            webhook_allow_http: false,
            webhook_allow_private: false,
            webhook_retry_schedule: "5s,5m,30m,2h,5h,10h,14h,20h,24h".into(),
            webhook_timeout: Duration::from_secs(15),
            webhook_disable_after: Duration::from_secs(3 * 24 * 3600),
            suppress_hard_bounces: true,
            retention_bodies: Duration::from_secs(7 * 24 * 3600),
            retention_messages: Duration::from_secs(90 * 24 * 3600),
            retention_interval: Duration::from_secs(60),
            rate_limit: 100.0,
            rate_limit_burst: 200,
            submission_listen: None,
            bounce_domain: None,
            bounce_listen: None,
            bounce_secret: None,
            sns_cert_urls: None,
            console_secret: None,
            forms: Vec::new(),
            trusted_proxies: None,
            postmark_webhook_secret: None,
            submission_tls_listen: None,
            submission_tls_cert: None,
            submission_tls_key: None,
            submission_max_connections: 100,
            submission_timeout: Duration::from_secs(300),
            submission_session_timeout: Duration::from_secs(1800),
            submission_hostname: None,
            log_format: LogFormat::Auto,
            shutdown_grace: Duration::from_secs(20),
            ignored_env: Vec::new(),
        }
    }
}

/// `POSTHORN_*` variables that are read elsewhere, not by the configuration.
const NOT_CONFIG_KEYS: &[&str] = &["config", "log"];

/// The top-level key of an unknown field that came from the environment.
fn unknown_env_key(error: &figment::Error) -> Option<String> {
    let from_env = error
        .metadata
        .as_ref()
        .is_some_and(|metadata| metadata.name.contains("environment"));
    match &error.kind {
        figment::error::Kind::UnknownField(field, _) if from_env && error.path.len() <= 1 => {
            Some(field.to_ascii_lowercase())
        }
        _ => None,
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read into the typed configuration.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value was read but is not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The offending key, as the environment variable that sets it.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `POSTHORN_*` variables from the process environment;
    /// [`Config::validate`] checks what was loaded.
    ///
    /// Unknown keys in the file are errors (they are typos). Unknown `POSTHORN_*` variables are ignored
    /// and listed in [`Config::ignored_env`]: the environment also carries variables posthorn does not
    /// own, such as the `POSTHORN_PORT` that Kubernetes service links inject for a service of that name.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut base = Figment::new();
        if let Some(path) = file {
            base = base.merge(Toml::file_exact(path));
        }
        let mut ignored: Vec<String> = Vec::new();
        loop {
            let skip = ignored.clone();
            let env = Env::prefixed("POSTHORN_")
                .split("__")
                .filter(move |key| !skip.iter().any(|s| key.as_str().eq_ignore_ascii_case(s)));
            match base.clone().merge(env).extract::<Config>() {
                Ok(mut config) => {
                    if let Some(path) = file {
                        config.provider_order = delivery::provider_order(path);
                    }
                    ignored.retain(|key| !NOT_CONFIG_KEYS.contains(&key.as_str()));
                    config.ignored_env = ignored
                        .into_iter()
                        .map(|key| format!("POSTHORN_{}", key.to_ascii_uppercase()))
                        .collect();
                    return Ok(config);
                }
                Err(error) => match unknown_env_key(&error) {
                    Some(key) if !ignored.contains(&key) => ignored.push(key),
                    _ => return Err(ConfigError::Load(Box::new(error))),
                },
            }
        }
    }
}
