//! Configuration: defaults in code < optional TOML file < `POSTHORN_*` environment variables.
//!
//! Everything is validated once at start so that a bad setting fails fast with a message naming its key.

mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

pub use secret::Secret;

use crate::data_dir::DataDir;
use crate::delivery::{RetryPolicy, Upstream};
use crate::rate_limit::{Quota, RateLimiter};

/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

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
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// Per-caller settings keyed by the token's `sub` (TOML only).
    pub callers: Vec<CallerConfig>,

    /// The SMTP upstream in lettre's URL form, e.g. `smtp://user:pass@host:587?tls=required`.
    pub smtp_url: Option<Secret>,
    /// Most SMTP connections open at once to the upstream, per process.
    pub smtp_max_connections: usize,
    /// Deadline of every SMTP exchange (connect, each command, the data transfer).
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
    /// Extra PEM root certificate(s) to trust for the upstream's TLS certificate.
    pub smtp_tls_ca_file: Option<PathBuf>,
    /// Further named upstreams (TOML only); routing among them is by configuration order.
    pub providers: BTreeMap<String, ProviderConfig>,

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

    /// Largest accepted request body, in bytes.
    pub max_body_size: usize,
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

    /// Log output: `auto` (JSON unless stderr is a terminal), `json` or `pretty`.
    pub log_format: LogFormat,
    /// How long in-flight work may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `POSTHORN_*` variables that name no setting; logged at start.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

/// A key that verifies caller tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id; a token whose header names a `kid` is verified with this key only.
    pub kid: Option<String>,
    /// Signature algorithm accepted for this key, e.g. `HS256`, `RS256`, `ES256`, `EdDSA`.
    pub algorithm: String,
    /// Shared secret for HMAC algorithms.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PEM public key for asymmetric algorithms.
    pub public_key_pem: Option<String>,
}

/// A named SMTP upstream declared in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The upstream in lettre's URL form.
    pub url: Secret,
    /// Most connections open at once (default: `smtp_max_connections`).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Deadline of every exchange (default: `smtp_timeout`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Extra PEM root certificate(s) to trust.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// Settings for one caller, matched by the token's `sub`.
#[derive(Debug, Clone, Deserialize)]
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
}

/// Where the token key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSecret {
    /// `POSTHORN_JWT_SECRET` or `jwt_keys`.
    Configured,
    /// Read from this file in the data directory.
    FromDataDir(PathBuf),
    /// Generated into this file just now.
    Generated(PathBuf),
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, readable text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Pretty,
}

impl Default for Config {
    fn default() -> Self {
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
            smtp_timeout: Duration::from_secs(30),
            smtp_tls_ca_file: None,
            providers: BTreeMap::new(),
            workers: 8,
            claim_batch_size: 200,
            lease_duration: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            retry_initial_delay: Duration::from_secs(30),
            retry_max_delay: Duration::from_secs(3600),
            retry_max_attempts: 10,
            retry_max_age: Duration::from_secs(3 * 24 * 3600),
            max_body_size: 25 * 1024 * 1024,
            max_recipients: 50,
            max_attachments: 20,
            max_attachment_size: 10 * 1024 * 1024,
            max_headers: 50,
            max_schedule_ahead: Duration::from_secs(30 * 24 * 3600),
            idempotency_retention: Duration::from_secs(24 * 3600),
            rate_limit: 100.0,
            rate_limit_burst: 200,
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
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `POSTHORN_*` variables from the process environment.
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
                    ignored.retain(|key| !NOT_CONFIG_KEYS.contains(&key.as_str()));
                    config.ignored_env = ignored
                        .into_iter()
                        .map(|key| format!("POSTHORN_{}", key.to_ascii_uppercase()))
                        .collect();
                    config.validate()?;
                    return Ok(config);
                }
                Err(error) => match unknown_env_key(&error) {
                    Some(key) if !ignored.contains(&key) => ignored.push(key),
                    _ => return Err(ConfigError::Load(Box::new(error))),
                },
            }
        }
    }

    /// Checks every value that has a rule beyond its type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(ConfigError::invalid(
                    "POSTHORN_DATABASE_URL",
                    "must be a postgres:// or sqlite:// URL",
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::invalid(
                "POSTHORN_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.expose().len() < MIN_HMAC_SECRET_BYTES
        {
            return Err(ConfigError::invalid(
                "POSTHORN_JWT_SECRET",
                format!("must be at least {MIN_HMAC_SECRET_BYTES} bytes long"),
            ));
        }
        crate::auth::KeySet::from_config(self)
            .map_err(|error| ConfigError::invalid("jwt_keys", error.to_string()))?;
        self.upstreams()?;
        for (key, value) in [
            ("POSTHORN_SMTP_MAX_CONNECTIONS", self.smtp_max_connections),
            ("POSTHORN_WORKERS", self.workers),
            ("POSTHORN_CLAIM_BATCH_SIZE", self.claim_batch_size as usize),
            (
                "POSTHORN_RETRY_MAX_ATTEMPTS",
                self.retry_max_attempts as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.smtp_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "POSTHORN_SMTP_TIMEOUT",
                "must be longer than 0s",
            ));
        }
        // A send (connect, commands, data) must fit in a lease, or a second worker could take the job
        // over while the first still talks to the upstream.
        if self.lease_duration < self.smtp_timeout * 6 {
            return Err(ConfigError::invalid(
                "POSTHORN_LEASE_DURATION",
                format!(
                    "must be at least 6 x POSTHORN_SMTP_TIMEOUT ({})",
                    humantime::format_duration(self.smtp_timeout * 6)
                ),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                "POSTHORN_POLL_INTERVAL",
                "must be longer than 0s",
            ));
        }
        for (key, value) in [
            ("POSTHORN_MAX_BODY_SIZE", self.max_body_size),
            ("POSTHORN_MAX_RECIPIENTS", self.max_recipients),
            ("POSTHORN_MAX_ATTACHMENT_SIZE", self.max_attachment_size),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(self.rate_limit.is_finite() && self.rate_limit >= 0.0) {
            return Err(ConfigError::invalid(
                "POSTHORN_RATE_LIMIT",
                "must be a number of requests per second, 0 or more (0 turns limiting off)",
            ));
        }
        if self.idempotency_retention < Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "POSTHORN_IDEMPOTENCY_RETENTION",
                "must be at least 1h",
            ));
        }
        Ok(())
    }

    /// The database URL: the configured one, or the embedded database in the data directory.
    pub fn database_url_or_embedded(&self) -> Secret {
        self.database_url
            .clone()
            .unwrap_or_else(|| Secret::new(self.data_dir().database_url()))
    }

    /// Makes sure a token key is configured. Without an explicit one, the development profile uses the
    /// secret in the data directory (generated on first use); the production profile refuses.
    pub fn resolve_token_secret(&mut self) -> Result<TokenSecret, ConfigError> {
        if self.jwt_secret.is_some() || !self.jwt_keys.is_empty() {
            return Ok(TokenSecret::Configured);
        }
        if self.profile == Profile::Production {
            return Err(ConfigError::invalid(
                "POSTHORN_JWT_SECRET",
                "the production profile needs an explicit token key (POSTHORN_JWT_SECRET or jwt_keys)",
            ));
        }
        let data_dir = self.data_dir();
        let (secret, generated) = data_dir
            .token_secret(true)
            .map_err(|error| ConfigError::invalid("POSTHORN_DATA_DIR", error.to_string()))?
            .ok_or_else(|| ConfigError::invalid("POSTHORN_DATA_DIR", "no token secret"))?;
        self.jwt_secret = Some(secret);
        let path = data_dir.secret_path();
        Ok(if generated {
            TokenSecret::Generated(path)
        } else {
            TokenSecret::FromDataDir(path)
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }
}

impl Config {
    /// Every configured upstream, `POSTHORN_SMTP_URL` first (named `default`), then the TOML providers.
    pub fn upstreams(&self) -> Result<Vec<Upstream>, ConfigError> {
        let mut upstreams = Vec::new();
        if let Some(url) = &self.smtp_url {
            let mut upstream = Upstream::parse(
                "default",
                url.expose(),
                self.smtp_max_connections,
                self.smtp_timeout,
            )
            .map_err(|error| ConfigError::invalid("POSTHORN_SMTP_URL", error.to_string()))?;
            upstream.ca_file = self.smtp_tls_ca_file.clone();
            upstreams.push(upstream);
        }
        for (name, provider) in &self.providers {
            let mut upstream = Upstream::parse(
                name,
                provider.url.expose(),
                provider
                    .max_connections
                    .unwrap_or(self.smtp_max_connections),
                provider.timeout.unwrap_or(self.smtp_timeout),
            )
            .map_err(|error| ConfigError::Invalid {
                key: "providers",
                reason: format!("{name}: {error}"),
            })?;
            upstream.ca_file = provider
                .tls_ca_file
                .clone()
                .or_else(|| self.smtp_tls_ca_file.clone());
            upstreams.push(upstream);
        }
        Ok(upstreams)
    }

    /// The per-caller rate limiter the configuration describes.
    pub fn rate_limiter(&self) -> RateLimiter {
        let default = Quota::new(self.rate_limit, self.rate_limit_burst);
        let overrides = self
            .callers
            .iter()
            .filter(|caller| caller.rate_limit.is_some() || caller.rate_limit_burst.is_some())
            .map(|caller| {
                (
                    caller.sub.clone(),
                    Quota::new(
                        caller.rate_limit.unwrap_or(default.per_second),
                        caller.rate_limit_burst.unwrap_or(default.burst),
                    ),
                )
            })
            .collect();
        RateLimiter::new(default, overrides)
    }

    /// The retry schedule.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_delay: self.retry_initial_delay,
            max_delay: self.retry_max_delay.max(self.retry_initial_delay),
            max_attempts: self.retry_max_attempts,
            max_age: self.retry_max_age,
            ..RetryPolicy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn short_jwt_secret_is_refused_naming_the_key() {
        let config = Config {
            jwt_secret: Some(Secret::new("short")),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("POSTHORN_JWT_SECRET"), "{error}");
    }

    #[test]
    fn smtp_url_errors_do_not_echo_credentials() {
        let config = Config {
            smtp_url: Some(Secret::new("ftp://user:topsecretpw@host")),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("POSTHORN_SMTP_URL"), "{error}");
        assert!(!error.contains("topsecretpw"), "{error}");
    }
}
