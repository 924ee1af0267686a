//! The forms side of the configuration: `[[forms]]` and the proxies whose `X-Forwarded-For` is
//! believed (`POSTHORN_TRUSTED_PROXIES`).

use serde::Deserialize;

use super::{Config, ConfigError};
use crate::domain::Mailbox;
use crate::forms::{Captcha, CaptchaProvider, Form};
use crate::rate_limit::RateLimit;
use crate::secret::Secret;

/// One `[[forms]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormConfig {
    /// The id in `POST /v1/forms/{id}`.
    pub id: String,
    /// The recipients of every post.
    pub to: Vec<String>,
    /// The author of every message, e.g. `Website <forms@example.com>`.
    pub from: String,
    /// Origins (`https://example.com`) whose pages may post.
    pub allowed_origins: Vec<String>,
    /// Where a browser goes after a plain HTML post.
    #[serde(default)]
    pub redirect: Option<String>,
    /// The subject's template over the fields, e.g. `Contact form: {{ name }}`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Posts per visitor address: `N/s`, `N/m`, `N/h` or `N/d`.
    #[serde(default)]
    pub rate_limit_per_ip: Option<String>,
    /// A field real visitors leave empty.
    #[serde(default)]
    pub honeypot: Option<String>,
    /// A captcha every post must pass.
    #[serde(default)]
    pub captcha: Option<CaptchaConfig>,
}

/// A form's `captcha` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptchaConfig {
    /// `turnstile` or `hcaptcha`.
    pub provider: String,
    /// The environment variable that holds the site's secret key.
    pub secret_env: String,
    /// The verify endpoint (default: the provider's).
    #[serde(default)]
    pub verify_url: Option<String>,
}

/// `scheme://host[:port]`, as a browser's `Origin` header gives it.
fn origin_of(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

fn http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
}

impl Config {
    /// Every form, checked: ids, addresses, origins, templates, limits and captcha secrets.
    pub(super) fn forms(&self) -> Result<Vec<Form>, ConfigError> {
        let mut forms: Vec<Form> = Vec::with_capacity(self.forms.len());
        for entry in &self.forms {
            let invalid =
                |reason: String| ConfigError::invalid("forms", format!("{}: {reason}", entry.id));
            let id_ok = !entry.id.is_empty()
                && entry.id.len() <= 64
                && entry
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !id_ok {
                return Err(ConfigError::invalid(
                    "forms",
                    format!(
                        "id `{}` must be 1-64 letters, digits, `-` or `_`",
                        entry.id.escape_debug()
                    ),
                ));
            }
            if forms.iter().any(|form| form.id == entry.id) {
                return Err(invalid("the id is configured twice".into()));
            }
            if entry.to.is_empty() || entry.to.len() > self.max_recipients {
                return Err(invalid(format!(
                    "to must list 1 to {} addresses",
                    self.max_recipients
                )));
            }
            let to = entry
                .to
                .iter()
                .map(|address| {
                    Mailbox::parse(address).map_err(|error| invalid(format!("to: {error}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let from =
                Mailbox::parse(&entry.from).map_err(|error| invalid(format!("from: {error}")))?;
            if entry.allowed_origins.is_empty() {
                return Err(invalid(
                    "allowed_origins must list the origins whose pages may post, e.g. \
                     \"https://example.com\""
                        .into(),
                ));
            }
            let allowed_origins = entry
                .allowed_origins
                .iter()
                .map(|origin| {
                    origin_of(origin).ok_or_else(|| {
                        invalid(format!(
                            "allowed_origins: `{origin}` is not an origin (scheme://host[:port])"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(redirect) = &entry.redirect
                && !http_url(redirect)
            {
                return Err(invalid("redirect must be an http(s) URL".into()));
            }
            if let Some(subject) = &entry.subject {
                crate::forms::check_subject(subject).map_err(invalid)?;
            }
            let rate_limit_per_ip = entry
                .rate_limit_per_ip
                .as_deref()
                .map(RateLimit::parse)
                .transpose()
                .map_err(|error| invalid(error.replace("rate_limit", "rate_limit_per_ip")))?;
            if entry.honeypot.as_deref().is_some_and(str::is_empty) {
                return Err(invalid("honeypot must name a field".into()));
            }
            let captcha = entry
                .captcha
                .as_ref()
                .map(|captcha| {
                    let provider = CaptchaProvider::parse(&captcha.provider).ok_or_else(|| {
                        invalid("captcha.provider must be turnstile or hcaptcha".into())
                    })?;
                    let secret = std::env::var(&captcha.secret_env)
                        .ok()
                        .filter(|secret| !secret.is_empty())
                        .ok_or_else(|| {
                            invalid(format!(
                                "captcha.secret_env: the variable {} is not set",
                                captcha.secret_env
                            ))
                        })?;
                    let verify_url = captcha
                        .verify_url
                        .clone()
                        .unwrap_or_else(|| provider.verify_url().to_owned());
                    if !http_url(&verify_url) {
                        return Err(invalid("captcha.verify_url must be an http(s) URL".into()));
                    }
                    Ok(Captcha {
                        provider,
                        secret: Secret::new(secret),
                        verify_url,
                    })
                })
                .transpose()?;
            forms.push(Form {
                id: entry.id.clone(),
                to,
                from,
                allowed_origins,
                redirect: entry.redirect.clone(),
                subject: entry.subject.clone(),
                rate_limit_per_ip,
                honeypot: entry.honeypot.clone(),
                captcha,
            });
        }
        Ok(forms)
    }

    /// The proxies (addresses or networks) whose `X-Forwarded-For` names the client.
    pub(super) fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .as_deref()
            .unwrap_or("")
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::invalid(
                            "POSTHORN_TRUSTED_PROXIES",
                            format!("`{entry}` is not an IP address or network (10.0.0.0/8)"),
                        )
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> FormConfig {
        FormConfig {
            id: "contact".into(),
            to: vec!["owner@example.com".into()],
            from: "Website <forms@example.com>".into(),
            allowed_origins: vec!["https://example.com".into()],
            redirect: Some("https://example.com/thanks".into()),
            subject: Some("Contact form: {{ name }}".into()),
            rate_limit_per_ip: Some("5/m".into()),
            honeypot: Some("_gotcha".into()),
            captcha: None,
        }
    }

    fn refusal(config: &Config) -> String {
        config
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_form_is_checked_by_id_and_key() {
        let mut config = Config {
            forms: vec![contact()],
            ..Config::default()
        };
        let settings = config.validate().unwrap();
        assert_eq!(settings.forms[0].allowed_origins, ["https://example.com"]);
        for (change, named) in [
            (
                (|form: &mut FormConfig| {
                    form.allowed_origins = vec!["https://example.com/page".into()]
                }) as fn(&mut FormConfig),
                "allowed_origins",
            ),
            (|form| form.to.clear(), "to must list"),
            (
                |form| form.rate_limit_per_ip = Some("5 a minute".into()),
                "rate_limit_per_ip",
            ),
            (|form| form.subject = Some("{{ name".into()), "subject"),
            (|form| form.redirect = Some("/thanks".into()), "redirect"),
            (|form| form.id = "a/b".into(), "id `a/b`"),
        ] {
            let mut form = contact();
            change(&mut form);
            config.forms = vec![form];
            let error = refusal(&config);
            assert!(error.contains(named), "{named}: {error}");
        }
        config.forms = vec![contact(), contact()];
        assert!(refusal(&config).contains("twice"));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config = Config {
            trusted_proxies: Some("10.0.0.0/8, 192.168.1.1 ::1".into()),
            ..Config::default()
        };
        let proxies = config.trusted_proxies().unwrap();
        assert_eq!(proxies.len(), 3);
        assert!(proxies[1].contains(&"192.168.1.1".parse::<std::net::IpAddr>().unwrap()));
        let bad = Config {
            trusted_proxies: Some("proxy.internal".into()),
            ..Config::default()
        };
        assert!(bad.trusted_proxies().is_err());
    }
}
