//! No webhook reaches inside the network posthorn runs in: a URL must be `https` (or `http` when
//! allowed), and its host must not be or resolve to a loopback, private, link-local, unique-local,
//! shared, multicast or unspecified address (or an IPv4 address mapped into IPv6), unless private
//! targets are allowed. Checked when an endpoint is created and again at every connection, through
//! the resolver the HTTP client uses, so a name that changes its address later is caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("url is not a valid URL: {0}")]
    Invalid(String),
    /// Not https (or http where allowed).
    #[error("url must be https{}", if *.0 { " or http" } else { "" })]
    Scheme(bool),
    /// No host.
    #[error("url has no host")]
    NoHost,
    /// The host is, or resolves to, an address inside the network.
    #[error(
        "url points to a private, loopback or link-local address ({0}), which webhooks may not reach"
    )]
    Private(IpAddr),
    /// The host does not resolve.
    #[error("url's host does not resolve: {0}")]
    Unresolved(String),
}

/// What webhook targets may be.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    /// `http` URLs are allowed (`https` always is).
    pub allow_http: bool,
    /// Private, loopback and link-local targets are allowed (internal deployments, tests).
    pub allow_private: bool,
}

impl Guard {
    /// Checks a URL's form, and its host if it is an address.
    pub fn check_form(&self, text: &str) -> Result<Url, UrlError> {
        let url = Url::parse(text).map_err(|error| UrlError::Invalid(error.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(UrlError::Scheme(self.allow_http)),
        }
        match url.host() {
            None => return Err(UrlError::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// Checks a URL completely: its form, and every address its host resolves to now.
    pub async fn check(&self, text: &str) -> Result<Url, UrlError> {
        let url = self.check_form(text)?;
        if let Some(url::Host::Domain(domain)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(443);
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|error| UrlError::Unresolved(error.to_string()))?
                .collect();
            if addresses.is_empty() {
                return Err(UrlError::Unresolved("no addresses".into()));
            }
            for address in addresses {
                self.check_address(address.ip())?;
            }
        }
        Ok(url)
    }

    /// Refuses an address inside the network, unless private targets are allowed.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), UrlError> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(UrlError::Private(ip))
        }
    }

    /// The resolver for the HTTP client: only addresses this guard allows are connected to.
    pub fn resolver(self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { guard: self })
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8, 100.64.0.0/10 (shared address space), 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // 64:ff9b::/96 (NAT64 of any IPv4 address), 2001:db8::/32 (documentation), fec0::/10 (site-local)
        || (first == 0x64 && ip.segments()[1] == 0xff9b)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first & 0xffc0) == 0xfec0)
}

/// Resolves names for the webhook client, dropping addresses the guard refuses (and failing when none
/// is left).
pub struct GuardedResolver {
    guard: Guard,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| guard.check_address(address.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let refused = found
                    .first()
                    .map_or_else(|| "no addresses".to_owned(), |a| a.ip().to_string());
                return Err(format!(
                    "{} resolves to an address webhooks may not reach ({refused})",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_refused() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn urls_are_checked_by_form() {
        let strict = Guard::default();
        assert!(strict.check_form("https://hooks.example.com/x").is_ok());
        assert_eq!(
            strict.check_form("http://hooks.example.com/x"),
            Err(UrlError::Scheme(false))
        );
        assert!(matches!(
            strict.check_form("https://127.0.0.1/x"),
            Err(UrlError::Private(_))
        ));
        assert!(matches!(
            strict.check_form("https://[::ffff:169.254.169.254]/x"),
            Err(UrlError::Private(_))
        ));
        assert!(matches!(
            strict.check_form("ftp://x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            strict.check_form("nonsense"),
            Err(UrlError::Invalid(_))
        ));
        let open = Guard {
            allow_http: true,
            allow_private: true,
        };
        assert!(open.check_form("http://127.0.0.1:9000/hook").is_ok());
    }
}
