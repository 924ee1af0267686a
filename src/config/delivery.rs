//! The delivery side of the configuration: the providers (`POSTHORN_SMTP_URL` and `[providers.NAME]`,
//! in the file's order) with their session deadlines, the routes over them, the DKIM keys, and the
//! lease of a claimed job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::delivery::dkim::{DkimAlgorithm, DkimKey, DkimSigner};
use crate::delivery::{RateLimit, Timeouts, Upstream};
use crate::domain::{Route, RouteMatch, Routes};
use crate::secret::Secret;

/// The shortest lease: it is renewed every third of it while its job is in hand, and renewing more
/// than once a second would be database load for nothing.
const MIN_LEASE: Duration = Duration::from_secs(3);

/// Deadlines of the session phases (RFC 5321 §4.5.3.2), each optional: `timeouts = { connect = "10s",
/// done = "15m" }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// The TCP connection.
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    /// The exchanges that open a session: greeting, EHLO, STARTTLS, AUTH.
    #[serde(default, with = "humantime_serde")]
    pub greeting: Option<Duration>,
    /// The reply to MAIL.
    #[serde(default, with = "humantime_serde")]
    pub mail: Option<Duration>,
    /// The reply to each RCPT.
    #[serde(default, with = "humantime_serde")]
    pub rcpt: Option<Duration>,
    /// The reply to DATA.
    #[serde(default, with = "humantime_serde")]
    pub data: Option<Duration>,
    /// Each write of the message's data.
    #[serde(default, with = "humantime_serde")]
    pub block: Option<Duration>,
    /// The reply to the final `.`.
    #[serde(default, with = "humantime_serde")]
    pub done: Option<Duration>,
}

impl TimeoutsConfig {
    /// `base` with the phases set here replaced; a zero deadline is refused by phase name.
    fn over(&self, base: Timeouts) -> Result<Timeouts, String> {
        let pick = |phase: &str, set: Option<Duration>, base: Duration| match set {
            Some(timeout) if timeout.is_zero() => {
                Err(format!("timeouts.{phase} must be longer than 0s"))
            }
            Some(timeout) => Ok(timeout),
            None => Ok(base),
        };
        Ok(Timeouts {
            connect: pick("connect", self.connect, base.connect)?,
            greeting: pick("greeting", self.greeting, base.greeting)?,
            mail: pick("mail", self.mail, base.mail)?,
            rcpt: pick("rcpt", self.rcpt, base.rcpt)?,
            data: pick("data", self.data, base.data)?,
            block: pick("block", self.block, base.block)?,
            done: pick("done", self.done, base.done)?,
        })
    }
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
    /// One deadline for every phase of its sessions (default: `smtp_timeout`, else each phase's).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Deadlines per phase, over `timeout` (default: `smtp_timeouts`, else RFC 5321's).
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Extra PEM root certificate(s) to trust.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Connection-level failures in a row that open the provider's circuit (default 5).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// How long an open circuit stays open before one probe connection (default 30s).
    #[serde(default, with = "humantime_serde")]
    pub breaker_cooldown: Option<Duration>,
    /// Most messages for the whole deployment: `N/s`, `N/m`, `N/h` or `N/d` (default: unlimited).
    #[serde(default)]
    pub rate_limit: Option<String>,
}

impl ProviderConfig {
    /// A provider at `url` with every other key at its default.
    pub fn new(url: Secret) -> Self {
        Self {
            url,
            max_connections: None,
            timeout: None,
            timeouts: TimeoutsConfig::default(),
            tls_ca_file: None,
            breaker_failures: None,
            breaker_cooldown: None,
            rate_limit: None,
        }
    }
}

/// One `[[dkim]]` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`): messages whose `From` address is in exactly this domain.
    pub domain: String,
    /// The selector (`s=`); the public key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// PEM file of the private key (PKCS#8, or PKCS#1 for RSA), e.g. from `posthorn dkim-keygen`.
    pub private_key_file: PathBuf,
    /// `rsa-sha256` (the default) or `ed25519-sha256`.
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The conditions (each a value or a list of values, any of which matches); none: the default.
    #[serde(default, rename = "match")]
    pub conditions: RouteMatchConfig,
    /// Provider names, in the order they are tried.
    pub providers: Vec<String>,
}

/// The `match` of a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatchConfig {
    /// `transactional` or `broadcast`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub stream: Vec<String>,
    /// The author's domain.
    #[serde(default, deserialize_with = "one_or_many")]
    pub sender_domain: Vec<String>,
    /// Any of the message's tags.
    #[serde(default, deserialize_with = "one_or_many")]
    pub tag: Vec<String>,
    /// The first recipient's domain.
    #[serde(default, deserialize_with = "one_or_many")]
    pub recipient_domain: Vec<String>,
    /// The caller (the token's `sub`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub caller: Vec<String>,
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(value) => vec![value],
        OneOrMany::Many(values) => values,
    })
}

/// The provider names in the order the TOML file lists them (empty if it cannot be read again; the
/// file was read once already, so any error was reported then).
pub(super) fn provider_order(path: &Path) -> Vec<String> {
    #[derive(Deserialize)]
    struct Providers {
        #[serde(default)]
        providers: BTreeMap<String, toml::Spanned<toml::Value>>,
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(parsed) = toml::from_str::<Providers>(&text) else {
        return Vec::new();
    };
    let mut names: Vec<(usize, String)> = parsed
        .providers
        .into_iter()
        .map(|(name, value)| (value.span().start, name))
        .collect();
    names.sort();
    names.into_iter().map(|(_, name)| name).collect()
}

impl Config {
    /// The deadlines every provider starts from: `smtp_timeout` for every phase, or each phase's
    /// default, then `smtp_timeouts`.
    fn base_timeouts(&self) -> Result<Timeouts, ConfigError> {
        let base = self
            .smtp_timeout
            .map_or_else(Timeouts::default, Timeouts::uniform);
        self.smtp_timeouts
            .over(base)
            .map_err(|reason| ConfigError::invalid("POSTHORN_SMTP_TIMEOUTS", reason))
    }

    /// Every configured upstream: `POSTHORN_SMTP_URL` first (named `default`), then the TOML providers
    /// in the order the file lists them (those set only in the environment after them, by name).
    pub(super) fn upstreams(&self) -> Result<Vec<Upstream>, ConfigError> {
        let mut upstreams = Vec::new();
        let base = self.base_timeouts()?;
        if let Some(url) = &self.smtp_url {
            if self.providers.contains_key("default") {
                return Err(ConfigError::invalid(
                    "POSTHORN_SMTP_URL",
                    "is the provider named `default`, and [providers.default] is configured too; \
                     keep one of them",
                ));
            }
            let mut upstream =
                Upstream::parse("default", url.expose(), self.smtp_max_connections, base).map_err(
                    |error| ConfigError::invalid("POSTHORN_SMTP_URL", error.to_string()),
                )?;
            upstream.ca_file = self.smtp_tls_ca_file.clone();
            upstreams.push(upstream);
        }
        let mut names: Vec<&String> = self.providers.keys().collect();
        names.sort_by_key(|name| {
            self.provider_order
                .iter()
                .position(|listed| listed == *name)
                .unwrap_or(usize::MAX)
        });
        for name in names {
            let provider = &self.providers[name];
            let invalid =
                |reason: String| ConfigError::invalid("providers", format!("{name}: {reason}"));
            if provider.timeout.is_some_and(|timeout| timeout.is_zero()) {
                return Err(invalid("timeout must be longer than 0s".into()));
            }
            if provider.breaker_failures == Some(0) {
                return Err(invalid("breaker_failures must be at least 1".into()));
            }
            if provider
                .breaker_cooldown
                .is_some_and(|cooldown| cooldown.is_zero())
            {
                return Err(invalid("breaker_cooldown must be longer than 0s".into()));
            }
            let timeouts = provider
                .timeouts
                .over(provider.timeout.map_or(base, Timeouts::uniform))
                .map_err(invalid)?;
            let mut upstream = Upstream::parse(
                name,
                provider.url.expose(),
                provider
                    .max_connections
                    .unwrap_or(self.smtp_max_connections),
                timeouts,
            )
            .map_err(|error| invalid(error.to_string()))?;
            upstream.ca_file = provider
                .tls_ca_file
                .clone()
                .or_else(|| self.smtp_tls_ca_file.clone());
            if let Some(failures) = provider.breaker_failures {
                upstream.breaker.failures = failures;
            }
            if let Some(cooldown) = provider.breaker_cooldown {
                upstream.breaker.cooldown = cooldown;
            }
            upstream.rate = provider
                .rate_limit
                .as_deref()
                .map(RateLimit::parse)
                .transpose()
                .map_err(invalid)?;
            upstreams.push(upstream);
        }
        Ok(upstreams)
    }

    /// The routes, each naming configured providers; a route after one without `match` could never
    /// be reached and is refused.
    pub(super) fn routes(&self, upstreams: &[Upstream]) -> Result<Routes, ConfigError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        let mut default_at = None;
        for (index, route) in self.routes.iter().enumerate() {
            let invalid = |reason: String| {
                ConfigError::invalid("routes", format!("route {} ({index}): {reason}", index + 1))
            };
            if let Some(default) = default_at {
                return Err(invalid(format!(
                    "comes after route {default}, which has no `match` and takes every message: \
                     it would never be used"
                )));
            }
            if route.providers.is_empty() {
                return Err(invalid(
                    "`providers` must name at least one provider".into(),
                ));
            }
            for name in &route.providers {
                if !upstreams.iter().any(|upstream| &upstream.name == name) {
                    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(invalid(format!(
                        "names the provider `{name}`, which is not configured (configured: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
            let given = &route.conditions;
            if let Some(stream) = given
                .stream
                .iter()
                .find(|stream| !["transactional", "broadcast"].contains(&stream.as_str()))
            {
                return Err(invalid(format!(
                    "unknown stream `{stream}` (streams: transactional, broadcast)"
                )));
            }
            let conditions = RouteMatch {
                sender_domain: given.sender_domain.clone(),
                stream: given.stream.clone(),
                caller: given.caller.clone(),
                tag: given.tag.clone(),
                recipient_domain: given.recipient_domain.clone(),
            };
            if conditions.is_empty() {
                default_at = Some(index + 1);
            }
            routes.push(Route {
                conditions,
                providers: route.providers.clone(),
            });
        }
        Ok(Routes::new(routes))
    }

    /// The DKIM keys, each read and checked now.
    pub(super) fn dkim(&self) -> Result<DkimSigner, ConfigError> {
        let mut keys = Vec::with_capacity(self.dkim.len());
        for entry in &self.dkim {
            let invalid = |reason: String| {
                ConfigError::invalid(
                    "dkim",
                    format!("{} (selector {}): {reason}", entry.domain, entry.selector),
                )
            };
            let algorithm = match &entry.algorithm {
                None => DkimAlgorithm::RsaSha256,
                Some(name) => DkimAlgorithm::parse(name).ok_or_else(|| {
                    invalid(format!(
                        "unknown algorithm `{name}` (expected rsa-sha256 or ed25519-sha256)"
                    ))
                })?,
            };
            let pem = std::fs::read(&entry.private_key_file).map_err(|error| {
                invalid(format!(
                    "reading {}: {error}",
                    entry.private_key_file.display()
                ))
            })?;
            let key = DkimKey::from_pem(&entry.domain, &entry.selector, algorithm, &pem)
                .map_err(|error| invalid(error.to_string()))?;
            if keys.iter().any(|known: &DkimKey| {
                known.domain() == key.domain() && known.selector() == key.selector()
            }) {
                return Err(invalid(
                    "the same domain and selector are configured twice".into(),
                ));
            }
            keys.push(key);
        }
        Ok(DkimSigner::new(keys))
    }

    /// The lease of a claimed job is renewed every third of it while the job is in hand, so it only
    /// has to outlive one renewal (not a whole session, whose final reply alone may take 10 minutes).
    pub(super) fn check_lease(&self) -> Result<(), ConfigError> {
        if self.lease_duration < MIN_LEASE {
            return Err(ConfigError::invalid(
                "POSTHORN_LEASE_DURATION",
                format!(
                    "must be at least {} (it is renewed every third of it while its job is in hand)",
                    humantime::format_duration(MIN_LEASE)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_deadlines_come_from_the_provider_then_the_global_keys_then_the_rfc() {
        let mut config = Config {
            smtp_url: Some(Secret::new("smtp://relay.internal")),
            smtp_timeouts: TimeoutsConfig {
                done: Some(Duration::from_secs(900)),
                ..TimeoutsConfig::default()
            },
            ..Config::default()
        };
        config.providers.insert(
            "ses".into(),
            ProviderConfig {
                timeout: Some(Duration::from_secs(20)),
                timeouts: TimeoutsConfig {
                    done: Some(Duration::from_secs(120)),
                    ..TimeoutsConfig::default()
                },
                ..provider("smtp://email-smtp.internal")
            },
        );
        config
            .providers
            .insert("backup".into(), provider("smtp://backup.internal"));
        config.provider_order = vec!["ses".into(), "backup".into()];
        let settings = config.validate().unwrap();
        let timeouts = |name: &str| {
            settings
                .delivery
                .upstreams
                .iter()
                .find(|upstream| upstream.name == name)
                .map(|upstream| upstream.timeouts)
                .unwrap()
        };
        let rfc = Timeouts::default();
        assert_eq!(
            timeouts("default"),
            Timeouts {
                done: Duration::from_secs(900),
                ..rfc
            }
        );
        assert_eq!(
            timeouts("ses"),
            Timeouts {
                done: Duration::from_secs(120),
                ..Timeouts::uniform(Duration::from_secs(20))
            }
        );
        assert_eq!(timeouts("backup").done, Duration::from_secs(900));
        assert_eq!(timeouts("backup").mail, rfc.mail);

        config.smtp_timeout = Some(Duration::from_secs(7));
        let settings = config.validate().unwrap();
        let backup = settings.delivery.upstreams.last().unwrap().timeouts;
        assert_eq!(
            (backup.connect, backup.done),
            (Duration::from_secs(7), Duration::from_secs(900))
        );
    }

    #[test]
    fn a_zero_phase_deadline_is_refused_by_provider_and_phase() {
        let mut config = Config::default();
        config.providers.insert(
            "relay".into(),
            ProviderConfig {
                timeouts: TimeoutsConfig {
                    rcpt: Some(Duration::ZERO),
                    ..TimeoutsConfig::default()
                },
                ..provider("smtp://relay.internal")
            },
        );
        let error = refusal(&config);
        assert!(
            error.contains("relay") && error.contains("timeouts.rcpt"),
            "{error}"
        );
    }

    #[test]
    fn a_lease_needs_only_to_outlive_a_renewal_not_the_longest_session() {
        let mut config = Config::default();
        config.providers.insert(
            "slow-relay".into(),
            ProviderConfig {
                timeouts: TimeoutsConfig {
                    done: Some(Duration::from_secs(3600)),
                    ..TimeoutsConfig::default()
                },
                ..provider("smtp://relay.internal")
            },
        );
        config.lease_duration = Duration::from_secs(30);
        assert!(config.validate().is_ok(), "{}", refusal(&config));
        config.lease_duration = Duration::from_secs(2);
        assert!(refusal(&config).contains("POSTHORN_LEASE_DURATION"));
    }

    fn provider(url: &str) -> ProviderConfig {
        ProviderConfig::new(Secret::new(url))
    }

    fn refusal(config: &Config) -> String {
        config
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn providers_keep_the_file_s_order_and_routes_name_only_configured_ones() {
        let mut config = Config::default();
        for name in ["zeta", "alpha", "mid"] {
            config
                .providers
                .insert(name.into(), provider(&format!("smtp://{name}.internal")));
        }
        config.provider_order = vec!["zeta".into(), "alpha".into()];
        let settings = config.validate().unwrap();
        let names: Vec<&str> = settings
            .delivery
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["zeta", "alpha", "mid"],
            "listed first, then the rest"
        );

        config.routes = vec![RouteConfig {
            conditions: RouteMatchConfig::default(),
            providers: vec!["alpha".into(), "nowhere".into()],
        }];
        let error = refusal(&config);
        assert!(
            error.contains("routes") && error.contains("`nowhere`"),
            "{error}"
        );
        assert!(error.contains("zeta, alpha, mid"), "{error}");
    }

    #[test]
    fn a_route_after_the_default_one_and_an_unknown_stream_are_refused() {
        let mut config = Config::default();
        config
            .providers
            .insert("relay".into(), provider("smtp://relay.internal"));
        let default = RouteConfig {
            conditions: RouteMatchConfig::default(),
            providers: vec!["relay".into()],
        };
        let tagged = RouteConfig {
            conditions: RouteMatchConfig {
                tag: vec!["reset".into()],
                ..RouteMatchConfig::default()
            },
            providers: vec!["relay".into()],
        };
        config.routes = vec![default.clone(), tagged.clone()];
        assert!(
            refusal(&config).contains("never be used"),
            "{}",
            refusal(&config)
        );
        config.routes = vec![tagged.clone(), default];
        assert!(config.validate().is_ok());
        let mut bulk = tagged;
        bulk.conditions.stream = vec!["bulk".into()];
        config.routes = vec![bulk];
        assert!(refusal(&config).contains("unknown stream `bulk`"));
        config.routes = vec![RouteConfig {
            conditions: RouteMatchConfig::default(),
            providers: Vec::new(),
        }];
        assert!(refusal(&config).contains("at least one provider"));
    }

    #[test]
    fn smtp_url_is_the_provider_named_default_and_cannot_be_given_twice() {
        let mut config = Config {
            smtp_url: Some(Secret::new("smtp://one.internal")),
            ..Config::default()
        };
        config
            .providers
            .insert("default".into(), provider("smtp://two.internal"));
        let error = refusal(&config);
        assert!(error.contains("POSTHORN_SMTP_URL") && error.contains("[providers.default]"));
        config.providers.clear();
        let settings = config.validate().unwrap();
        assert_eq!(settings.delivery.upstreams[0].name, "default");
    }

    #[test]
    fn breaker_settings_are_checked_and_applied() {
        let mut config = Config::default();
        let mut relay = provider("smtp://relay.internal");
        relay.breaker_failures = Some(0);
        config.providers.insert("relay".into(), relay.clone());
        assert!(refusal(&config).contains("breaker_failures"));
        relay.breaker_failures = Some(2);
        relay.breaker_cooldown = Some(Duration::from_secs(90));
        config.providers.insert("relay".into(), relay);
        let upstream = &config.validate().unwrap().delivery.upstreams[0];
        assert_eq!(upstream.breaker.failures, 2);
        assert_eq!(upstream.breaker.cooldown, Duration::from_secs(90));
    }
}
