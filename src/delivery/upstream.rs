//! An SMTP upstream as configured: where it is, how to secure the connection, how to log in.

use std::fmt;
use std::path::PathBuf;

use lettre::transport::smtp::authentication::Credentials;

use crate::secret::Secret;

/// How the connection to the upstream is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS: only for a relay on a trusted network (`smtp://host:25`).
    None,
    /// STARTTLS when the server offers it, plain text otherwise (`?tls=opportunistic`).
    Opportunistic,
    /// STARTTLS, and refuse to send if it is not offered or the certificate does not verify
    /// (`?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
}

/// A configured upstream. `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct Upstream {
    /// The provider's name in metrics and attempt records.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// Username and password for AUTH PLAIN/LOGIN.
    pub credentials: Option<(String, Secret)>,
    /// The name posthorn gives in EHLO.
    pub hello_name: Option<String>,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Deadlines of the session's phases.
    pub timeouts: super::Timeouts,
    /// Extra PEM root certificates to trust (private CAs, tests).
    pub ca_file: Option<PathBuf>,
    /// Send MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920);
    /// `?pipelining=off` sends one command per round trip.
    pub pipelining: bool,
    /// When its circuit opens and for how long.
    pub breaker: super::BreakerSettings,
    /// Most messages per period for the whole deployment; `None`: as fast as it takes them.
    pub rate: Option<super::RateLimit>,
}

/// Why an upstream URL was refused. Never contains the URL itself (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Not a URL at all.
    #[error("not a URL")]
    NotUrl,
    /// Scheme other than smtp or smtps.
    #[error("scheme must be smtp or smtps")]
    Scheme,
    /// No host.
    #[error("a host is required")]
    Host,
    /// An unknown or contradictory query parameter.
    #[error(
        "unsupported parameter: {0} (supported: tls=required|opportunistic, ehlo=NAME, pipelining=off)"
    )]
    Parameter(String),
    /// The user name or password is not valid percent-encoding.
    #[error("user name or password is not valid percent-encoded UTF-8")]
    Credentials,
}

impl Upstream {
    /// Parses `smtp[s]://[user:pass@]host[:port][?tls=required|opportunistic][&ehlo=name][&pipelining=off]`.
    pub fn parse(
        name: &str,
        url: &str,
        max_connections: usize,
        timeouts: super::Timeouts,
    ) -> Result<Self, UpstreamError> {
        let parsed = url::Url::parse(url).map_err(|_| UpstreamError::NotUrl)?;
        let implicit = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            _ => return Err(UpstreamError::Scheme),
        };
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or(UpstreamError::Host)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut tls = if implicit {
            TlsMode::Implicit
        } else {
            TlsMode::None
        };
        let mut hello_name = None;
        let mut pipelining = true;
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref(), implicit) {
                ("tls", "required", false) => tls = TlsMode::Required,
                ("tls", "opportunistic", false) => tls = TlsMode::Opportunistic,
                ("tls", "none", false) => tls = TlsMode::None,
                ("ehlo", name, _) if !name.is_empty() => hello_name = Some(name.to_owned()),
                ("pipelining", "off", _) => pipelining = false,
                ("pipelining", "auto", _) => pipelining = true,
                (key, _, _) => return Err(UpstreamError::Parameter(key.to_owned())),
            }
        }
        let port = parsed.port().unwrap_or(match tls {
            TlsMode::Implicit => 465,
            TlsMode::Required => 587,
            TlsMode::None | TlsMode::Opportunistic => 25,
        });
        let credentials = if parsed.username().is_empty() {
            None
        } else {
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8()
                    .map(|decoded| decoded.into_owned())
                    .map_err(|_| UpstreamError::Credentials)
            };
            let user = decode(parsed.username())?;
            let password = decode(parsed.password().unwrap_or(""))?;
            Some((user, Secret::new(password)))
        };
        Ok(Self {
            name: name.to_owned(),
            host,
            port,
            tls,
            credentials,
            hello_name,
            max_connections: max_connections.max(1),
            timeouts,
            ca_file: None,
            pipelining,
            breaker: super::BreakerSettings::default(),
            rate: None,
        })
    }

    /// lettre credentials for AUTH.
    pub fn lettre_credentials(&self) -> Option<Credentials> {
        self.credentials
            .as_ref()
            .map(|(user, password)| Credentials::new(user.clone(), password.expose().to_owned()))
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("max_connections", &self.max_connections)
            .field("timeouts", &self.timeouts)
            .field("pipelining", &self.pipelining)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Where it is, `smtp[s]://host:port`, without credentials.
    pub fn address(&self) -> String {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?} TLS", self.address(), self.tls)?;
        if let Some((user, _)) = &self.credentials {
            write!(f, ", AUTH as {user}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Upstream, UpstreamError> {
        Upstream::parse("default", url, 4, super::super::Timeouts::default())
    }

    #[test]
    fn tls_modes_and_default_ports() {
        let relay = parse("smtp://relay.internal").unwrap();
        assert_eq!((relay.tls, relay.port), (TlsMode::None, 25));
        let submission =
            parse("smtp://u:p@email-smtp.eu-west-1.amazonaws.com?tls=required").unwrap();
        assert_eq!((submission.tls, submission.port), (TlsMode::Required, 587));
        let implicit = parse("smtps://smtp.gmail.com").unwrap();
        assert_eq!((implicit.tls, implicit.port), (TlsMode::Implicit, 465));
        assert!(parse("smtps://h?tls=required").is_err());
        assert!(parse("smtp://h?tls=sometimes").is_err());
        assert!(parse("http://h").is_err());
    }

    #[test]
    fn pipelining_is_used_when_offered_unless_turned_off() {
        assert!(parse("smtp://h").unwrap().pipelining);
        assert!(parse("smtp://h?pipelining=auto").unwrap().pipelining);
        assert!(!parse("smtp://h?ehlo=me&pipelining=off").unwrap().pipelining);
        assert_eq!(
            parse("smtp://h?pipelining=maybe").unwrap_err(),
            UpstreamError::Parameter("pipelining".into())
        );
    }

    #[test]
    fn credentials_are_decoded_and_never_displayed() {
        let upstream = parse("smtp://user%40example.com:p%40ss%2Fw0rd@h:587?tls=required").unwrap();
        let (user, password) = upstream.credentials.clone().unwrap();
        assert_eq!(user, "user@example.com");
        assert_eq!(password.expose(), "p@ss/w0rd");
        for text in [format!("{upstream}"), format!("{upstream:?}")] {
            assert!(!text.contains("p@ss") && !text.contains("w0rd"), "{text}");
        }
    }
}
