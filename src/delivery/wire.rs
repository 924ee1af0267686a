//! The socket under an SMTP session, watched: whether the session is writing or waiting for a reply,
//! and since when. lettre writes a message's data and reads the final reply in one call; watching the
//! socket is what lets the data's writes have one deadline (RFC 5321's data block) and the wait for
//! the final reply another (the data termination).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::outcome::Reply;

/// What a session's socket did last, in microseconds since the session opened.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// When a write last made progress.
    wrote: AtomicU64,
    /// Since when a read has been waiting for the server, plus one; zero while none waits.
    waiting: AtomicU64,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the data: each write must make progress within the block deadline.
    Writing,
    /// The data is out; waiting for the reply.
    Waiting,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            wrote: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, micros: u64) -> Instant {
        self.opened + Duration::from_micros(micros)
    }

    fn wrote(&self) {
        self.wrote.store(self.now(), Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
    }

    fn read_pending(&self) {
        let since = self.now() + 1;
        let _ = self
            .waiting
            .compare_exchange(0, since, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn read_some(&self) {
        self.waiting.store(0, Ordering::Relaxed);
    }

    /// For a transfer that began at `began`: whether it is writing or waiting, and by when its next
    /// step is due (`block` after the last write's progress, or `done` after the wait began).
    pub fn deadline(&self, began: Instant, block: Duration, done: Duration) -> (Phase, Instant) {
        match self.waiting.load(Ordering::Relaxed) {
            0 => {
                let wrote = self.at(self.wrote.load(Ordering::Relaxed)).max(began);
                (Phase::Writing, wrote + block)
            }
            since => (Phase::Waiting, self.at(since - 1).max(began) + done),
        }
    }
}

/// A stream whose reads and writes are recorded in an [`Activity`].
pub struct Watched<S> {
    inner: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<S> fmt::Debug for Watched<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Pending => self.activity.read_pending(),
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.activity.read_some(),
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> AsyncTokioStream for Watched<S>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin,
{
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// Connects to `host:port` (each address it resolves to in turn, each within `connect`), and with
/// `implicit_tls` completes the TLS handshake before anything else: the stream a session starts on,
/// and its activity.
pub async fn connect(
    host: &str,
    port: u16,
    connect: Duration,
    implicit_tls: Option<&TlsConnector>,
) -> Result<(Box<dyn AsyncTokioStream>, Arc<Activity>), Reply> {
    let connection_error =
        |error: &dyn fmt::Display| Reply::none(format!("Connection error: {error}"));
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| connection_error(&error))?;
    let mut last = None;
    let mut tcp = None;
    for address in addresses {
        match tokio::time::timeout(connect, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                tcp = Some((stream, address));
                break;
            }
            Ok(Err(error)) => last = Some(connection_error(&error)),
            Err(_) => last = Some(Reply::none("Connection error: connection timed out")),
        }
    }
    let Some((tcp, peer)) = tcp else {
        return Err(
            last.unwrap_or_else(|| connection_error(&"could not resolve to any supported address"))
        );
    };
    let activity = Arc::new(Activity::new());
    let stream: Box<dyn AsyncTokioStream> = match implicit_tls {
        None => Box::new(Watched {
            inner: tcp,
            peer,
            activity: activity.clone(),
        }),
        Some(connector) => {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|error| Reply::none(format!("TLS failure: {error}")))?;
            let tls = tokio::time::timeout(connect, connector.connect(name, tcp))
                .await
                .map_err(|_| Reply::none("TLS failure: the handshake timed out"))?
                .map_err(|error| Reply::none(format!("TLS failure: {error}")))?;
            Box::new(Watched {
                inner: tls,
                peer,
                activity: activity.clone(),
            })
        }
    };
    Ok((stream, activity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_is_writing_until_a_read_waits_and_then_has_the_done_deadline() {
        let activity = Activity::new();
        let began = Instant::now();
        let block = Duration::from_secs(3);
        let done = Duration::from_secs(600);
        let (phase, due) = activity.deadline(began, block, done);
        assert_eq!((phase, due), (Phase::Writing, began + block));
        activity.wrote();
        activity.read_pending();
        let (phase, due) = activity.deadline(began, block, done);
        assert_eq!(phase, Phase::Waiting);
        assert!(due >= began + done);
        // A later pending read keeps the wait's start.
        let first = due;
        std::thread::sleep(Duration::from_millis(2));
        activity.read_pending();
        assert_eq!(activity.deadline(began, block, done).1, first);
        activity.read_some();
        assert_eq!(activity.deadline(began, block, done).0, Phase::Writing);
    }
}
