//! SMTP submission (RFC 6409, RFC 8314): any program that speaks SMTP sends through posthorn on 587
//! (STARTTLS) or 465 (TLS from the first byte), authenticated with a caller token, into the same accept
//! path as the JSON API.

mod data;
mod session;
mod stream;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use tls::{Certificate, TlsError, TlsFiles};

use crate::accept::Acceptor;
use crate::auth::Authenticator;
use crate::bounces::Reports;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use stream::{Connection, Transport};

/// How the submission listeners run.
#[derive(Debug, Clone)]
pub struct SubmissionSettings {
    /// The listener offering STARTTLS (when a certificate is configured), e.g. `0.0.0.0:587`.
    pub listen: Option<SocketAddr>,
    /// The listener speaking TLS from the first byte, e.g. `0.0.0.0:465`.
    pub tls_listen: Option<SocketAddr>,
    /// The certificate and key, read again when they change.
    pub tls: Option<TlsFiles>,
    /// Most sessions open at once; beyond, a connection is answered `421` and closed.
    pub max_connections: usize,
    /// How long a command (and each line of a message) may take to arrive.
    pub command_timeout: Duration,
    /// How long a whole session may last.
    pub session_timeout: Duration,
    /// The largest message, in octets (`SIZE`).
    pub max_message_size: usize,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// A listener for the bounce domain's mail, e.g. `0.0.0.0:25`: it takes mail for VERP addresses
    /// only, without AUTH (so do the other listeners).
    pub bounce_listen: Option<SocketAddr>,
}

impl SubmissionSettings {
    /// Whether any listener is configured.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.tls_listen.is_some() || self.bounce_listen.is_some()
    }
}

/// What sessions use: the accept path and the caller rules of the HTTP API.
#[derive(Clone)]
pub struct Services {
    /// The one accept path.
    pub acceptor: Arc<Acceptor>,
    /// Verifies caller tokens given as passwords.
    pub authenticator: Arc<Authenticator>,
    /// Per-caller request limits, shared with the HTTP API.
    pub rate_limiter: Arc<RateLimiter>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Bounces and complaints sent to VERP addresses.
    pub reports: Arc<Reports>,
}

/// Why the listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    /// The certificate did not load.
    #[error("invalid configuration: POSTHORN_SUBMISSION_TLS_CERT/POSTHORN_SUBMISSION_TLS_KEY: {0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error("binding {key}={address}: {source}")]
    Bind {
        /// The setting.
        key: &'static str,
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How a session ended, as `posthorn_submission_sessions_total{result}` counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionEnd {
    /// The client said QUIT.
    Quit,
    /// The client closed the connection (or it failed).
    Closed,
    /// A command did not come in time, or the session lasted too long.
    Timeout,
    /// Too many bad commands in a row.
    TooManyErrors,
    /// The TLS handshake failed.
    TlsFailed,
    /// posthorn is shutting down.
    Shutdown,
    /// Refused at once: too many sessions.
    Refused,
}

impl SessionEnd {
    fn label(self) -> &'static str {
        match self {
            SessionEnd::Quit => "quit",
            SessionEnd::Closed => "closed",
            SessionEnd::Timeout => "timeout",
            SessionEnd::TooManyErrors => "too_many_errors",
            SessionEnd::TlsFailed => "tls_failed",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::Refused => "refused",
        }
    }
}

/// What every session of a process shares.
pub(crate) struct Context {
    settings: SubmissionSettings,
    services: Services,
    certificate: Option<Arc<Certificate>>,
    sessions: Arc<Semaphore>,
    /// A test hook (`POSTHORN_TEST_HOLD_SMTP_REPLY=FILE`): after a commit, the message's id is written to
    /// FILE and the `250` held back, so that a test can kill the process in that window.
    hold_reply: Option<std::path::PathBuf>,
}

/// The running listeners.
pub struct Submission {
    ports: (Option<u16>, Option<u16>),
    bounce_port: Option<u16>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Submission {
    /// Loads the certificate and binds the listeners (port 0 picks a free port); serving starts at once,
    /// in the current runtime.
    pub fn start(
        settings: SubmissionSettings,
        services: Services,
    ) -> Result<Self, SubmissionError> {
        let certificate = settings
            .tls
            .clone()
            .map(Certificate::load)
            .transpose()?
            .map(Arc::new);
        let bind = |key: &'static str, address: Option<SocketAddr>| {
            let Some(address) = address else {
                return Ok(None);
            };
            let error = |source| SubmissionError::Bind {
                key,
                address,
                source,
            };
            let listener = std::net::TcpListener::bind(address).map_err(error)?;
            listener.set_nonblocking(true).map_err(error)?;
            TcpListener::from_std(listener).map(Some).map_err(error)
        };
        let plain = bind("POSTHORN_SUBMISSION_LISTEN", settings.listen)?;
        let implicit = bind("POSTHORN_SUBMISSION_TLS_LISTEN", settings.tls_listen)?;
        let bounce = bind("POSTHORN_BOUNCE_LISTEN", settings.bounce_listen)?;
        let port = |listener: &Option<TcpListener>| {
            listener
                .as_ref()
                .and_then(|listener| listener.local_addr().ok())
                .map(|address| address.port())
        };
        let ports = (port(&plain), port(&implicit));
        let bounce_port = port(&bounce);
        let context = Arc::new(Context {
            sessions: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            settings,
            services,
            certificate,
            hold_reply: std::env::var_os("POSTHORN_TEST_HOLD_SMTP_REPLY").map(Into::into),
        });
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (listener, tls) in [(plain, false), (implicit, true), (bounce, false)] {
            if let Some(listener) = listener {
                if let Ok(address) = listener.local_addr() {
                    tracing::info!(%address, tls, "SMTP submission is listening");
                }
                tracker.spawn(serve(
                    listener,
                    tls,
                    context.clone(),
                    stop.clone(),
                    tracker.clone(),
                ));
            }
        }
        Ok(Self {
            ports,
            bounce_port,
            stop,
            tracker,
        })
    }

    /// The bound ports: the STARTTLS listener's and the implicit TLS listener's.
    pub fn ports(&self) -> (Option<u16>, Option<u16>) {
        self.ports
    }

    /// The bound port of the bounce listener.
    pub fn bounce_port(&self) -> Option<u16> {
        self.bounce_port
    }

    /// Stops accepting; open sessions are told `421 4.3.2` at their next command (a message being
    /// received is finished first), within `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining SMTP sessions");
        }
    }
}

async fn serve(
    listener: TcpListener,
    implicit_tls: bool,
    context: Arc<Context>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %error, "accepting an SMTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let context = context.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let end = session_on(stream, peer, implicit_tls, &context, stop).await;
            context
                .services
                .metrics
                .submission_sessions
                .with_label_values(&[end.label()])
                .inc();
        });
    }
}

async fn session_on(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    context: &Arc<Context>,
    stop: CancellationToken,
) -> SessionEnd {
    let Ok(_permit) = context.sessions.clone().try_acquire_owned() else {
        let mut connection = Connection::new(Transport::Plain(stream));
        connection.reply("421 4.7.0 Too many connections, try again later");
        connection.close().await;
        return SessionEnd::Refused;
    };
    let transport = match (implicit_tls, &context.certificate) {
        (false, _) => Transport::Plain(stream),
        (true, Some(certificate)) => {
            let handshake = tokio::time::timeout(
                context.settings.command_timeout,
                certificate.acceptor().accept(stream),
            )
            .await;
            match handshake {
                Ok(Ok(stream)) => Transport::Tls(Box::new(stream)),
                _ => return SessionEnd::TlsFailed,
            }
        }
        (true, None) => return SessionEnd::TlsFailed,
    };
    session::run(context.clone(), transport, peer, implicit_tls, stop).await
}
