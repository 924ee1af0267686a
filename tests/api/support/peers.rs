//! Real SMTP servers that posthorn must interoperate with: Postfix's smtp-sink and Python's aiosmtpd.
//! The test command installs both; a test that cannot find them fails and says how to get them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A child process killed when dropped.
pub struct Peer {
    child: Child,
    /// Where the peer writes what it receives.
    pub dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Files in the output directory with this extension, sorted by name.
    pub fn files(&self, extension: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|e| e == extension))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits until `count` files with `extension` exist.
    pub async fn wait_for_files(
        &self,
        extension: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<PathBuf> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let files = self.files(extension);
            if files.len() >= count {
                return files;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} .{extension} files, found {}",
                files.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("peer did not listen on port {port}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts Postfix's smtp-sink, writing each message it receives to a file.
pub async fn smtp_sink() -> Peer {
    let binary =
        std::env::var("POSTHORN_TEST_SMTP_SINK").unwrap_or_else(|_| "/usr/sbin/smtp-sink".into());
    assert!(
        Path::new(&binary).exists(),
        "{binary} not found: run ./scripts/test.sh (it installs Debian's postfix package) or set POSTHORN_TEST_SMTP_SINK"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut command = Command::new(&binary);
    if is_root() {
        // smtp-sink drops privileges to this user and must be able to write its dumps.
        command.args(["-u", "postfix"]);
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
    }
    let template = format!("{}/%M.", dir.path().display());
    let child = command
        .args(["-c", "-d", &template, &format!("127.0.0.1:{port}"), "256"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start smtp-sink");
    wait_for_port(port).await;
    Peer { child, dir, port }
}

/// TLS material for a server on 127.0.0.1: a private CA and a certificate it signed.
pub struct TestCertificates {
    /// Holds the files.
    pub dir: tempfile::TempDir,
}

impl TestCertificates {
    /// Generates a CA and a server certificate for 127.0.0.1 and localhost with openssl.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=posthorn test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        Self { dir }
    }

    /// The CA certificate to trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// How an aiosmtpd peer secures connections.
pub enum AiosmtpdMode<'a> {
    /// No TLS offered.
    Plain,
    /// STARTTLS offered and required.
    StartTls(&'a TestCertificates),
    /// TLS from the first byte.
    Implicit(&'a TestCertificates),
}

fn python() -> String {
    if let Ok(python) = std::env::var("POSTHORN_TEST_PYTHON") {
        return python;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/python");
    assert!(
        venv.exists(),
        "aiosmtpd's Python environment is missing: run ./scripts/test.sh (it creates target/tools/venv) or set POSTHORN_TEST_PYTHON"
    );
    venv.display().to_string()
}

/// Starts aiosmtpd; with `auth`, AUTH with that `user:password` is required.
pub async fn aiosmtpd(mode: AiosmtpdMode<'_>, auth: Option<&str>) -> Peer {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiosmtpd_server.py");
    let mut command = Command::new(python());
    command
        .arg(script)
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir.path());
    match mode {
        AiosmtpdMode::Plain => {
            command.args(["--mode", "plain"]);
        }
        AiosmtpdMode::StartTls(certs) | AiosmtpdMode::Implicit(certs) => {
            let name = if matches!(mode, AiosmtpdMode::StartTls(_)) {
                "starttls"
            } else {
                "implicit"
            };
            command
                .args(["--mode", name, "--cert"])
                .arg(certs.dir.path().join("server.pem"))
                .arg("--key")
                .arg(certs.dir.path().join("server.key"));
        }
    }
    if let Some(auth) = auth {
        command.args(["--auth", auth]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    let stdout = child.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .expect("aiosmtpd starts in time")
        .expect("join")
        .expect("read");
    assert_eq!(line.trim(), "READY", "aiosmtpd did not start");
    Peer { child, dir, port }
}
