//! The listener's certificate: read from PEM files, and read again when they change on disk (a
//! certificate manager replaces them before they expire), checked at every handshake.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate chain and its key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused the pair.
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

struct Loaded {
    modified: (Option<SystemTime>, Option<SystemTime>),
    acceptor: TlsAcceptor,
}

/// The current certificate, reloaded when its files change.
pub struct Certificate {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl Certificate {
    /// Reads the files; fails (at start) if they are not a usable certificate and key.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = Loaded {
            modified: modified(&files),
            acceptor: acceptor(&files)?,
        };
        Ok(Self {
            files,
            loaded: Mutex::new(loaded),
        })
    }

    /// The acceptor for the next handshake: the files are read again if they changed since the last
    /// time. A replacement that does not load is logged and the previous certificate kept.
    pub fn acceptor(&self) -> TlsAcceptor {
        let now = modified(&self.files);
        // A panic elsewhere while the lock was held leaves a usable value behind.
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now != loaded.modified {
            match acceptor(&self.files) {
                Ok(acceptor) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    loaded.acceptor = acceptor;
                }
                Err(error) => tracing::warn!(
                    error = %error,
                    "the changed TLS certificate does not load; keeping the previous one"
                ),
            }
            loaded.modified = now;
        }
        loaded.acceptor.clone()
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(&files.cert), time(&files.key))
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let file_error = |path: &PathBuf| {
        let path = path.clone();
        move |error: tokio_rustls::rustls::pki_types::pem::Error| TlsError::File {
            path,
            reason: error.to_string(),
        }
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(file_error(&files.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error(&files.cert))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: files.cert.clone(),
            reason: "holds no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(file_error(&files.key))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
