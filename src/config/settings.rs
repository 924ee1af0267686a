//! Validation: every value checked once, then handed to the component it belongs to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, ConfigError, Profile};
use crate::api::HttpSettings;
use crate::auth::{AuthSettings, CallerPolicy, KeySet};
use crate::bounces::InboundSettings;
use crate::data_dir::DataDir;
use crate::delivery::{DeliverySettings, RetryPolicy, WorkerSettings};
use crate::domain::{EmailAddress, Limits, Verp};
use crate::rate_limit::{Quota, RateLimitSettings};
use crate::retention::RetentionSettings;
use crate::secret::Secret;
use crate::store::StoreSettings;
use crate::submission::{SubmissionSettings, TlsFiles};
use crate::telemetry::LogFormat;
use crate::webhooks::{Guard, WebhookSettings};

/// A validated configuration, as the settings of each component.
#[derive(Clone)]
pub struct Settings {
    /// How strict the defaults are.
    pub profile: Profile,
    /// Where the embedded database, a generated token secret and the outbox live.
    pub data_dir: DataDir,
    /// The HTTP listener and what it reads.
    pub http: HttpSettings,
    /// Token keys and caller rules.
    pub auth: AuthSettings,
    /// Per-caller request quotas.
    pub rate_limits: RateLimitSettings,
    /// Bounds on a submitted message.
    pub limits: Limits,
    /// The queue's database.
    pub store: StoreSettings,
    /// The database is the embedded one in the data directory (no URL was configured).
    pub database_in_data_dir: bool,
    /// Upstreams, workers and the retry schedule.
    pub delivery: DeliverySettings,
    /// The SMTP submission listeners.
    pub submission: SubmissionSettings,
    /// How long finished messages keep their bodies and their rows.
    pub retention: RetentionSettings,
    /// How webhooks are delivered.
    pub webhooks: WebhookSettings,
    /// VERP return paths, when a bounce domain is configured: bounces to them are reports.
    pub verp: Option<Verp>,
    /// Providers' notifications of bounces and complaints.
    pub inbound: InboundSettings,
    /// Log output.
    pub log_format: LogFormat,
    /// How long in-flight work may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Public contact forms.
    pub forms: Vec<crate::forms::Form>,
    /// `POSTHORN_*` variables that name no setting; logged at start.
    pub ignored_env: Vec<String>,
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

impl Config {
    /// Checks every value that has a rule beyond its type, and builds each component's settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let data_dir = DataDir::new(&self.data_dir);
        let store = self.store(&data_dir)?;
        let auth = self.auth()?;
        for (key, value) in [
            ("POSTHORN_SMTP_MAX_CONNECTIONS", self.smtp_max_connections),
            ("POSTHORN_WORKERS", self.workers),
            ("POSTHORN_CLAIM_BATCH_SIZE", self.claim_batch_size as usize),
            (
                "POSTHORN_RETRY_MAX_ATTEMPTS",
                self.retry_max_attempts as usize,
            ),
            ("POSTHORN_MAX_BODY_SIZE", self.max_body_size),
            ("POSTHORN_MAX_BATCH", self.max_batch),
            ("POSTHORN_MAX_RECIPIENTS", self.max_recipients),
            ("POSTHORN_MAX_ATTACHMENT_SIZE", self.max_attachment_size),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.smtp_timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(ConfigError::invalid(
                "POSTHORN_SMTP_TIMEOUT",
                "must be longer than 0s",
            ));
        }
        for (key, value) in [
            ("POSTHORN_POLL_INTERVAL", self.poll_interval),
            ("POSTHORN_HTTP_BODY_TIMEOUT", self.http_body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than 0s"));
            }
        }
        let upstreams = self.upstreams()?;
        let routes = self.routes(&upstreams)?;
        let dkim = self.dkim()?;
        let submission = self.submission()?;
        self.check_lease()?;
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
        let verp = self.verp()?;
        Ok(Settings {
            profile: self.profile,
            http: HttpSettings {
                listen: self.listen,
                max_body_size: self.max_body_size,
                body_timeout: self.http_body_timeout,
                max_batch: self.max_batch,
                trusted_proxies: self.trusted_proxies()?,
            },
            forms: self.forms()?,
            webhooks: self.webhooks()?,
            verp: verp.clone(),
            inbound: InboundSettings {
                sns_cert_urls: self
                    .sns_cert_urls
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|prefix| !prefix.is_empty())
                    .map(str::to_owned)
                    .collect(),
                postmark_secret: match &self.postmark_webhook_secret {
                    Some(secret) if secret.expose().len() < 16 => {
                        return Err(ConfigError::invalid(
                            "POSTHORN_POSTMARK_WEBHOOK_SECRET",
                            "must be at least 16 characters",
                        ));
                    }
                    other => other.clone(),
                },
            },
            retention: RetentionSettings {
                bodies: Some(self.retention_bodies).filter(|after| !after.is_zero()),
                messages: Some(self.retention_messages).filter(|after| !after.is_zero()),
                interval: self.retention_interval.max(Duration::from_millis(100)),
            },
            auth,
            rate_limits: self.rate_limits(),
            limits: Limits {
                max_recipients: self.max_recipients,
                max_attachments: self.max_attachments,
                max_attachment_size: self.max_attachment_size,
                max_headers: self.max_headers,
                max_schedule_ahead: self.max_schedule_ahead,
            },
            store,
            database_in_data_dir: self.database_url.is_none(),
            delivery: DeliverySettings {
                upstreams,
                routes,
                dkim,
                workers: self.workers,
                worker: WorkerSettings {
                    batch_size: self.claim_batch_size,
                    lease: self.lease_duration,
                    poll_interval: self.poll_interval,
                },
                suppress_hard_bounces: self.suppress_hard_bounces,
                verp: verp.clone(),
                retry: RetryPolicy {
                    initial_delay: self.retry_initial_delay,
                    max_delay: self.retry_max_delay.max(self.retry_initial_delay),
                    max_attempts: self.retry_max_attempts,
                    max_age: self.retry_max_age,
                    ..RetryPolicy::default()
                },
            },
            submission,
            data_dir,
            log_format: self.log_format,
            shutdown_grace: self.shutdown_grace,
            ignored_env: self.ignored_env.clone(),
        })
    }

    /// The database URL (the configured one, or the embedded database in the data directory) and its
    /// pool.
    fn store(&self, data_dir: &DataDir) -> Result<StoreSettings, ConfigError> {
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
        Ok(StoreSettings {
            url: self
                .database_url
                .clone()
                .unwrap_or_else(|| Secret::new(data_dir.database_url())),
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_acquire_timeout,
            idempotency_retention: self.idempotency_retention,
        })
    }

    /// The key set built from `jwt_secret` and `jwt_keys`, and the callers' rules.
    fn auth(&self) -> Result<AuthSettings, ConfigError> {
        let mut keys = KeySet::new();
        if let Some(secret) = &self.jwt_secret {
            keys.add_secret(secret).map_err(|_| {
                ConfigError::invalid(
                    "POSTHORN_JWT_SECRET",
                    format!(
                        "must be at least {} bytes long",
                        crate::auth::MIN_HMAC_SECRET_BYTES
                    ),
                )
            })?;
        }
        if let Some(secret) = &self.console_secret {
            if secret.expose().len() < crate::auth::MIN_HMAC_SECRET_BYTES {
                return Err(ConfigError::invalid(
                    "POSTHORN_CONSOLE_SECRET",
                    format!(
                        "must be at least {} bytes long",
                        crate::auth::MIN_HMAC_SECRET_BYTES
                    ),
                ));
            }
            keys.set_session_secret(secret.clone());
        }
        for (index, spec) in self.jwt_keys.iter().enumerate() {
            keys.add(spec, &format!("#{}", index + 1))
                .map_err(|error| ConfigError::invalid("jwt_keys", error.to_string()))?;
        }
        let callers = self
            .callers
            .iter()
            .map(|caller| {
                (
                    caller.sub.clone(),
                    CallerPolicy {
                        disabled: caller.disabled,
                        sender_domains: caller
                            .sender_domains
                            .iter()
                            .map(|domain| domain.to_ascii_lowercase())
                            .collect(),
                        revoked_tokens: caller.revoked_tokens.clone(),
                    },
                )
            })
            .collect();
        Ok(AuthSettings {
            keys,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            callers,
        })
    }

    /// The submission listeners: off, an address, or the profile's default.
    fn submission(&self) -> Result<SubmissionSettings, ConfigError> {
        let development = (self.profile == Profile::Development)
            .then(|| SocketAddr::from(([127, 0, 0, 1], 2525)));
        let listen = listen_address(
            "POSTHORN_SUBMISSION_LISTEN",
            self.submission_listen.as_deref(),
            development,
        )?;
        let tls_listen = listen_address(
            "POSTHORN_SUBMISSION_TLS_LISTEN",
            self.submission_tls_listen.as_deref(),
            None,
        )?;
        let tls = match (&self.submission_tls_cert, &self.submission_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "POSTHORN_SUBMISSION_TLS_KEY",
                    "is required with POSTHORN_SUBMISSION_TLS_CERT",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "POSTHORN_SUBMISSION_TLS_CERT",
                    "is required with POSTHORN_SUBMISSION_TLS_KEY",
                ));
            }
        };
        if tls_listen.is_some() && tls.is_none() {
            return Err(ConfigError::invalid(
                "POSTHORN_SUBMISSION_TLS_CERT",
                "is required with POSTHORN_SUBMISSION_TLS_LISTEN (TLS from the first byte needs a certificate)",
            ));
        }
        if self.submission_max_connections == 0 {
            return Err(ConfigError::invalid(
                "POSTHORN_SUBMISSION_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("POSTHORN_SUBMISSION_TIMEOUT", self.submission_timeout),
            (
                "POSTHORN_SUBMISSION_SESSION_TIMEOUT",
                self.submission_session_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than 0s"));
            }
        }
        let hostname = match &self.submission_hostname {
            Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) => {
                name.clone()
            }
            Some(_) => {
                return Err(ConfigError::invalid(
                    "POSTHORN_SUBMISSION_HOSTNAME",
                    "must be a host name",
                ));
            }
            None => hostname::get()
                .ok()
                .and_then(|name| name.into_string().ok())
                .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or_else(|| "localhost".to_owned()),
        };
        Ok(SubmissionSettings {
            listen,
            tls_listen,
            tls,
            max_connections: self.submission_max_connections,
            command_timeout: self.submission_timeout,
            session_timeout: self.submission_session_timeout,
            max_message_size: self.max_body_size,
            max_recipients: self.max_recipients,
            hostname,
            bounce_listen: match self.bounce_domain.as_deref() {
                Some(domain) if !domain.is_empty() => listen_address(
                    "POSTHORN_BOUNCE_LISTEN",
                    self.bounce_listen.as_deref(),
                    None,
                )?,
                _ => None,
            },
        })
    }

    /// VERP return paths on the bounce domain, with their key.
    fn verp(&self) -> Result<Option<Verp>, ConfigError> {
        let Some(domain) = self.bounce_domain.as_deref().filter(|d| !d.is_empty()) else {
            if self
                .bounce_listen
                .as_deref()
                .is_some_and(|l| !l.eq_ignore_ascii_case("off"))
            {
                return Err(ConfigError::invalid(
                    "POSTHORN_BOUNCE_LISTEN",
                    "needs POSTHORN_BOUNCE_DOMAIN (the domain whose mail it takes)",
                ));
            }
            return Ok(None);
        };
        if EmailAddress::parse(&format!("postmaster@{domain}")).is_err() || domain.starts_with('[')
        {
            return Err(ConfigError::invalid(
                "POSTHORN_BOUNCE_DOMAIN",
                "must be a domain name such as bounces.example.com",
            ));
        }
        let key: Vec<u8> = match (&self.bounce_secret, &self.jwt_secret) {
            (Some(secret), _) if secret.expose().len() >= 16 => secret.expose().as_bytes().to_vec(),
            (Some(_), _) => {
                return Err(ConfigError::invalid(
                    "POSTHORN_BOUNCE_SECRET",
                    "must be at least 16 bytes",
                ));
            }
            (None, Some(jwt)) => {
                use sha2::Digest;
                sha2::Sha256::new()
                    .chain_update(b"posthorn verp key\0")
                    .chain_update(jwt.expose().as_bytes())
                    .finalize()
                    .to_vec()
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "POSTHORN_BOUNCE_SECRET",
                    "is required with POSTHORN_BOUNCE_DOMAIN when there is no POSTHORN_JWT_SECRET",
                ));
            }
        };
        Ok(Some(Verp::new(domain, &key)))
    }

    /// Webhook delivery: the guard, the retry schedule and the deadlines.
    fn webhooks(&self) -> Result<WebhookSettings, ConfigError> {
        let schedule = self
            .webhook_retry_schedule
            .split(',')
            .map(str::trim)
            .filter(|delay| !delay.is_empty())
            .map(|delay| {
                humantime::parse_duration(delay).map_err(|error| {
                    ConfigError::invalid(
                        "POSTHORN_WEBHOOK_RETRY_SCHEDULE",
                        format!("`{delay}` is not a duration ({error})"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.webhook_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "POSTHORN_WEBHOOK_TIMEOUT",
                "must be more than 0s",
            ));
        }
        Ok(WebhookSettings {
            guard: Guard {
                allow_http: self.webhook_allow_http,
                allow_private: self.webhook_allow_private,
            },
            schedule,
            timeout: self.webhook_timeout,
            disable_after: self.webhook_disable_after,
            ..WebhookSettings::default()
        })
    }

    /// The default quota and the callers' own.
    fn rate_limits(&self) -> RateLimitSettings {
        let default = Quota::new(self.rate_limit, self.rate_limit_burst);
        let callers: HashMap<String, Quota> = self
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
        RateLimitSettings { default, callers }
    }
}

/// A listener address setting: `off`, an address, or (unset) `default`.
fn listen_address(
    key: &'static str,
    value: Option<&str>,
    default: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(off) if off.eq_ignore_ascii_case("off") => Ok(None),
        Some(address) => address.parse().map(Some).map_err(|_| {
            ConfigError::invalid(key, "must be an address such as 0.0.0.0:587, or off")
        }),
    }
}

impl Settings {
    /// Makes sure a token key is there. Without an explicit one, the development profile uses the
    /// secret in the data directory (generated on first use); the production profile refuses.
    pub fn resolve_token_key(&mut self) -> Result<TokenSecret, ConfigError> {
        if !self.auth.keys.is_empty() {
            return Ok(TokenSecret::Configured);
        }
        if self.profile == Profile::Production {
            return Err(ConfigError::invalid(
                "POSTHORN_JWT_SECRET",
                "the production profile needs an explicit token key (POSTHORN_JWT_SECRET or jwt_keys)",
            ));
        }
        let (secret, generated) = self
            .data_dir
            .token_secret(true)
            .map_err(|error| ConfigError::invalid("POSTHORN_DATA_DIR", error.to_string()))?
            .ok_or_else(|| ConfigError::invalid("POSTHORN_DATA_DIR", "no token secret"))?;
        self.auth
            .keys
            .add_secret(&secret)
            .map_err(|error| ConfigError::invalid("POSTHORN_DATA_DIR", error.to_string()))?;
        let path = self.data_dir.secret_path();
        Ok(if generated {
            TokenSecret::Generated(path)
        } else {
            TokenSecret::FromDataDir(path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn short_jwt_secret_is_refused_naming_the_key() {
        let config = Config {
            jwt_secret: Some(Secret::new("short")),
            ..Config::default()
        };
        let error = config
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("POSTHORN_JWT_SECRET"), "{error}");
    }

    #[test]
    fn smtp_url_errors_do_not_echo_credentials() {
        let config = Config {
            smtp_url: Some(Secret::new("ftp://user:topsecretpw@host")),
            ..Config::default()
        };
        let error = config
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("POSTHORN_SMTP_URL"), "{error}");
        assert!(!error.contains("topsecretpw"), "{error}");
    }
}
