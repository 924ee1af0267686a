//! A pool of SMTP connections per upstream: deadpool's max size is the real cap on concurrency.
//!
//! Connections are reused across messages. A connection is reset only when a transaction was
//! aborted, checked with NOOP only after sitting idle, and dropped when broken or idle too long.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Ehlo, Noop, Rset};
use lettre::transport::smtp::extension::ClientId;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::connection::{Reuse, SmtpConnection};
use super::outcome::Reply;
use super::upstream::{TlsMode, Upstream};
use super::wire;

/// Idle connections older than this are closed rather than reused; providers drop them anyway.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// A connection idle for longer than this is checked with NOOP before reuse.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Why a connection could not be opened. Carries no credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub Reply);

/// Creates and recycles connections to one upstream.
pub struct SmtpManager {
    upstream: Arc<Upstream>,
    /// For STARTTLS, which lettre negotiates.
    tls: Option<TlsParameters>,
    /// For implicit TLS (`smtps://`), negotiated before lettre sees the stream.
    implicit: Option<TlsConnector>,
    hello: ClientId,
}

impl SmtpManager {
    /// Prepares TLS parameters once; a bad CA file fails here, at start.
    pub fn new(upstream: Arc<Upstream>) -> Result<Self, String> {
        let ca = upstream
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|error| format!("reading {}: {error}", path.display()))
            })
            .transpose()?;
        let not_pem = || {
            let path = upstream
                .ca_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            format!("{} is not a PEM certificate", path.display())
        };
        let (tls, implicit) = match upstream.tls {
            TlsMode::None => (None, None),
            TlsMode::Implicit => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                if let Some(pem) = &ca {
                    let certificates = CertificateDer::pem_slice_iter(pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| not_pem())?;
                    if certificates.is_empty() {
                        return Err(not_pem());
                    }
                    for certificate in certificates {
                        roots
                            .add(certificate)
                            .map_err(|error| format!("TLS setup: {error}"))?;
                    }
                }
                let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| format!("TLS setup: {error}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                (None, Some(TlsConnector::from(Arc::new(config))))
            }
            TlsMode::Required | TlsMode::Opportunistic => {
                let mut builder = TlsParameters::builder(upstream.host.clone());
                if let Some(pem) = &ca {
                    let certificate = Certificate::from_pem(pem).map_err(|_| not_pem())?;
                    builder = builder.add_root_certificate(certificate);
                }
                let parameters = builder
                    .build()
                    .map_err(|error| format!("TLS setup: {error}"))?;
                (Some(parameters), None)
            }
        };
        let hello = match &upstream.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            // The host name per RFC 5321 §4.1.4; an upstream that insists on another can get `?ehlo=`.
            None => ClientId::default(),
        };
        Ok(Self {
            upstream,
            tls,
            implicit,
            hello,
        })
    }

    async fn open(&self) -> Result<SmtpConnection, ConnectError> {
        let upstream = &self.upstream;
        let (stream, activity) = wire::connect(
            &upstream.host,
            upstream.port,
            upstream.timeouts.connect,
            self.implicit.as_ref(),
        )
        .await
        .map_err(ConnectError)?;
        let mut inner = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|error| ConnectError(Reply::from_error(&error)))?;
        match (upstream.tls, &self.tls) {
            (TlsMode::Required, Some(tls)) => {
                if !inner.can_starttls() {
                    return Err(ConnectError(Reply::none(
                        "the upstream does not offer STARTTLS, which tls=required demands",
                    )));
                }
                inner
                    .starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|error| ConnectError(Reply::from_error(&error)))?;
            }
            (TlsMode::Opportunistic, Some(tls)) if inner.can_starttls() => {
                inner
                    .starttls(tls.clone(), &self.hello)
                    .await
                    .map_err(|error| ConnectError(Reply::from_error(&error)))?;
            }
            _ => {}
        }
        // lettre keeps only the extensions it uses itself, so ask again to learn about PIPELINING
        // (before AUTH: a later EHLO may reset the authenticated state on some servers).
        let pipelining = upstream.pipelining && offers_pipelining(&mut inner, &self.hello).await?;
        if let Some(credentials) = upstream.lettre_credentials() {
            inner
                .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|error| ConnectError(Reply::from_error(&error)))?;
        }
        Ok(SmtpConnection::new(inner, pipelining, activity))
    }

    /// RSET after an aborted transaction, else NOOP after sitting idle.
    async fn check(
        &self,
        connection: &mut SmtpConnection,
        reuse: Reuse,
    ) -> RecycleResult<ConnectError> {
        let timeout = self.upstream.timeouts.mail;
        if reuse == Reuse::AfterReset {
            match tokio::time::timeout(timeout, connection.inner.command(Rset)).await {
                Ok(Ok(_)) => connection.reset(),
                _ => return Err(RecycleError::message("RSET failed")),
            }
        } else {
            match tokio::time::timeout(timeout, connection.inner.command(Noop)).await {
                Ok(Ok(_)) => {}
                _ => return Err(RecycleError::message("NOOP failed")),
            }
        }
        Ok(())
    }
}

/// Sends EHLO and reads whether the server offers PIPELINING. A server that refuses the second EHLO is
/// used without it; one that drops the session (no reply, or 421) fails the connection.
async fn offers_pipelining(
    connection: &mut AsyncSmtpConnection,
    hello: &ClientId,
) -> Result<bool, ConnectError> {
    let response = match connection.command(Ehlo::new(hello.clone())).await {
        Ok(response) => response,
        Err(error) => {
            let reply = Reply::from_error(&error);
            return match reply.code {
                Some(code) if code != 421 => Ok(false),
                _ => Err(ConnectError(reply)),
            };
        }
    };
    Ok(response.message().skip(1).any(|line| {
        line.split_whitespace()
            .next()
            .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
    }))
}

impl managed::Manager for SmtpManager {
    type Type = SmtpConnection;
    type Error = ConnectError;

    async fn create(&self) -> Result<SmtpConnection, ConnectError> {
        // lettre's own timeout covers the TCP connect only; the greeting, EHLO, STARTTLS and AUTH
        // share one more deadline after it.
        let deadline = self.upstream.timeouts.open();
        // Boxed: opening a session (a TLS handshake included) is a future of some 16 KiB, and inline it
        // would be part of every `pool.get()`, and so copied, with the futures around it, for every
        // message sent (10 % of the CPU of a drain went to those copies).
        match tokio::time::timeout(deadline, Box::pin(self.open())).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError(Reply::none(
                "timed out opening the SMTP session",
            ))),
        }
    }

    async fn recycle(
        &self,
        connection: &mut SmtpConnection,
        _: &Metrics,
    ) -> RecycleResult<ConnectError> {
        if connection.inner.has_broken() {
            return Err(RecycleError::message("the connection is broken"));
        }
        let reuse = connection.state().reuse();
        if let Reuse::Never(reason) = reuse {
            return Err(RecycleError::message(reason));
        }
        let idle = connection.idle();
        if idle > MAX_IDLE {
            return Err(RecycleError::message("connection idle too long"));
        }
        if reuse == Reuse::AfterReset || idle > CHECK_AFTER_IDLE {
            // Boxed, as `create` is: the commands' futures would otherwise be part of every
            // `pool.get()`, though most reuses send nothing.
            Box::pin(self.check(connection, reuse)).await?;
        }
        Ok(())
    }
}

/// A pool of connections to one upstream.
pub type SmtpPool = managed::Pool<SmtpManager>;

/// Builds the pool for an upstream.
pub fn build_pool(upstream: Arc<Upstream>) -> Result<SmtpPool, String> {
    let max = upstream.max_connections;
    let manager = SmtpManager::new(upstream)?;
    managed::Pool::builder(manager)
        .max_size(max)
        .build()
        .map_err(|error| format!("building the SMTP pool: {error}"))
}
