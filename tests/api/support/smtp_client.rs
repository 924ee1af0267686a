//! A hand-driven SMTP client, for what real clients never send: smuggling, pipelined bytes before a TLS
//! handshake, commands out of order.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// One reply: its code and the text of each line.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Each line's text after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines joined, for messages and `contains` checks.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to an SMTP server.
pub struct SmtpClient {
    stream: BufReader<Box<dyn Stream>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl SmtpClient {
    /// Connects to `address` (`host:port`); returns the client and the greeting.
    pub async fn connect(address: &str) -> (Self, Reply) {
        let tcp = TcpStream::connect(address).await.expect("connect");
        let mut client = Self {
            stream: BufReader::new(Box::new(tcp)),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Connects to 127.0.0.1:`port`.
    pub async fn local(port: u16) -> (Self, Reply) {
        Self::connect(&format!("127.0.0.1:{port}")).await
    }

    /// Connects with TLS from the first byte, trusting `ca`.
    pub async fn implicit_tls(port: u16, ca: &std::path::Path) -> (Self, Reply) {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let tls = connector(ca)
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let mut client = Self {
            stream: BufReader::new(Box::new(tls)),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    /// Reads one reply (all its lines); a closed connection reads as code 0.
    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(TIMEOUT, self.stream.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .unwrap_or(0);
            if read == 0 {
                return Reply { code: 0, lines };
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, lines };
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// EHLO, then AUTH PLAIN as `user` with `token`; panics unless both succeed.
    pub async fn login(&mut self, user: &str, token: &str) {
        let ehlo = self.command("EHLO client.example").await;
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        let auth = self
            .command(&format!("AUTH PLAIN {}", plain(user, token)))
            .await;
        assert_eq!(auth.code, 235, "{auth:?}");
    }

    /// MAIL, RCPT for each recipient, DATA and `message` (dot-stuffed here, terminated); the reply to
    /// the final dot.
    pub async fn send_message(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        let mail = self.command(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(mail.code, 250, "{mail:?}");
        for recipient in to {
            let rcpt = self.command(&format!("RCPT TO:<{recipient}>")).await;
            assert_eq!(rcpt.code, 250, "{rcpt:?}");
        }
        let data = self.command("DATA").await;
        assert_eq!(data.code, 354, "{data:?}");
        let mut stuffed = String::new();
        for line in message.split_inclusive("\r\n") {
            if line.starts_with('.') {
                stuffed.push('.');
            }
            stuffed.push_str(line);
        }
        if !stuffed.ends_with("\r\n") {
            stuffed.push_str("\r\n");
        }
        stuffed.push_str(".\r\n");
        self.send(stuffed.as_bytes()).await;
        self.reply().await
    }

    /// STARTTLS (already sent and answered 220 by the caller, or not): the TLS handshake, trusting `ca`.
    pub async fn start_tls(self, ca: &std::path::Path) -> Self {
        let stream = self.stream.into_inner();
        let tls = connector(ca)
            .connect(ServerName::try_from("localhost").expect("name"), stream)
            .await
            .expect("TLS handshake");
        Self {
            stream: BufReader::new(Box::new(tls)),
        }
    }
}

/// `AUTH PLAIN`'s argument: base64 of NUL user NUL password.
pub fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

fn connector(ca: &std::path::Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots
            .add(certificate.expect("a CA certificate"))
            .expect("the CA is usable");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}
