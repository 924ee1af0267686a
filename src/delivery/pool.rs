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

use super::connection::{Reuse, SmtpConnection};
use super::outcome::Reply;
use super::upstream::{TlsMode, Upstream};

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
    tls: Option<TlsParameters>,
    hello: ClientId,
}

impl SmtpManager {
    /// Prepares TLS parameters once; a bad CA file fails here, at start.
    pub fn new(upstream: Arc<Upstream>) -> Result<Self, String> {
        let tls = match upstream.tls {
            TlsMode::None => None,
            _ => {
                let mut builder = TlsParameters::builder(upstream.host.clone());
                if let Some(path) = &upstream.ca_file {
                    let pem = std::fs::read(path)
                        .map_err(|error| format!("reading {}: {error}", path.display()))?;
                    let certificate = Certificate::from_pem(&pem)
                        .map_err(|_| format!("{} is not a PEM certificate", path.display()))?;
                    builder = builder.add_root_certificate(certificate);
                }
                Some(
                    builder
                        .build()
                        .map_err(|error| format!("TLS setup: {error}"))?,
                )
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
            hello,
        })
    }

    async fn open(&self) -> Result<SmtpConnection, ConnectError> {
        let upstream = &self.upstream;
        let implicit = (upstream.tls == TlsMode::Implicit)
            .then(|| self.tls.clone())
            .flatten();
        let mut inner = AsyncSmtpConnection::connect_tokio1(
            (upstream.host.as_str(), upstream.port),
            Some(upstream.timeout),
            &self.hello,
            implicit,
            None,
        )
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
        Ok(SmtpConnection::new(inner, pipelining))
    }

    /// RSET after an aborted transaction, else NOOP after sitting idle.
    async fn check(
        &self,
        connection: &mut SmtpConnection,
        reuse: Reuse,
    ) -> RecycleResult<ConnectError> {
        let timeout = self.upstream.timeout;
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
        // share this deadline.
        let deadline = self.upstream.timeout * 2;
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
