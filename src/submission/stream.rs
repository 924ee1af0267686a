//! A client connection, plain or TLS, read a line at a time with a bound on every line, and written
//! through a buffer that is flushed before each read that would wait (so pipelined replies go out
//! together, RFC 2920).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The transport under a session.
pub enum Transport {
    /// Plain TCP (port 587 before STARTTLS, or a loopback client).
    Plain(TcpStream),
    /// TLS, after STARTTLS or from the first byte (port 465).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One line as read: its bytes (the line ending included), and whether more followed that did not fit.
pub struct Line {
    /// The bytes kept, at most the limit.
    pub bytes: Vec<u8>,
    /// The line was longer than the limit: the rest, up to its LF, was read and dropped.
    pub overlong: bool,
    /// How many bytes the line had, those dropped included.
    pub length: usize,
    /// The line ended with CRLF (also when its end was dropped).
    pub ends_crlf: bool,
}

impl Line {
    /// Whether the line ends with CRLF and holds no other CR or LF.
    pub fn is_crlf(&self) -> bool {
        let Some(content) = self.bytes.strip_suffix(b"\r\n") else {
            return false;
        };
        !content.iter().any(|byte| *byte == b'\r' || *byte == b'\n')
    }

    /// The line without its ending (a bare CR or LF in it stays).
    pub fn content(&self) -> &[u8] {
        self.bytes
            .strip_suffix(b"\r\n")
            .or_else(|| self.bytes.strip_suffix(b"\n"))
            .unwrap_or(&self.bytes)
    }
}

/// A connection: the transport behind a read buffer, with replies buffered until the next read.
pub struct Connection {
    reader: BufReader<Transport>,
    pending: Vec<u8>,
}

impl Connection {
    /// Wraps a transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            reader: BufReader::new(transport),
            pending: Vec::with_capacity(512),
        }
    }

    /// Queues a reply; it is written before the next read that has to wait, or by [`Self::flush`].
    pub fn reply(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
        self.pending.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let transport = self.reader.get_mut();
        transport.write_all(&self.pending).await?;
        transport.flush().await?;
        self.pending.clear();
        Ok(())
    }

    /// Reads one line (up to and with its LF), keeping at most `limit` bytes of it. `None` at the end of
    /// the stream. Queued replies are written first when the read has to wait for the client.
    pub async fn read_line(&mut self, limit: usize) -> io::Result<Option<Line>> {
        let mut line = Line {
            bytes: Vec::new(),
            overlong: false,
            length: 0,
            ends_crlf: false,
        };
        // The byte before the chunk being read, for a CR that ended the previous chunk.
        let mut previous = None;
        loop {
            if self.reader.buffer().is_empty() {
                self.flush().await?;
            }
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok((!line.bytes.is_empty()).then_some(line));
            }
            let (taken, done) = match available.iter().position(|byte| *byte == b'\n') {
                Some(end) => (end + 1, true),
                None => (available.len(), false),
            };
            let room = limit.saturating_sub(line.bytes.len());
            if taken > room {
                line.overlong = true;
            }
            line.bytes.extend_from_slice(&available[..taken.min(room)]);
            line.length += taken;
            if done {
                let before_lf = taken
                    .checked_sub(2)
                    .map(|index| available[index])
                    .or(previous);
                line.ends_crlf = before_lf == Some(b'\r');
            }
            previous = available[..taken].last().copied();
            self.reader.consume(taken);
            if done {
                return Ok(Some(line));
            }
        }
    }

    /// Drops whatever the client sent that was not read yet, and hands back the transport (for the TLS
    /// handshake after STARTTLS: bytes sent before it must not count as commands, CVE-2011-0411).
    pub fn into_transport(self) -> Transport {
        self.reader.into_inner()
    }

    /// The transport, for writing a last reply and closing.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.reader.get_mut().shutdown().await;
    }
}
