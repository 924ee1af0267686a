//! The data directory of a single-node installation: the embedded database, the generated token
//! secret and the local outbox live here, so one directory is all a small deployment needs to keep.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::auth::MIN_HMAC_SECRET_BYTES;
use crate::secret::Secret;

/// The file holding the generated HS256 secret.
const SECRET_FILE: &str = "jwt-secret";
/// The embedded database file.
const DATABASE_FILE: &str = "posthorn.db";
/// Where messages go when no SMTP upstream is configured.
const OUTBOX_DIR: &str = "outbox";

/// A data directory (not necessarily created yet).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Creating or reading something in it failed.
    #[error("data directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The secret file exists but is not usable.
    #[error(
        "{0} holds no usable secret (at least {MIN_HMAC_SECRET_BYTES} bytes); remove it to generate a new one"
    )]
    BadSecret(PathBuf),
}

impl DataDir {
    /// The data directory at `root` (relative paths are relative to the working directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself, made absolute for messages a user reads.
    pub fn display_path(&self) -> PathBuf {
        std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone())
    }

    /// The `sqlite://` URL of the embedded database.
    pub fn database_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.display_path().join(DATABASE_FILE).display()
        )
    }

    /// The outbox directory.
    pub fn outbox(&self) -> PathBuf {
        self.display_path().join(OUTBOX_DIR)
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
        move |source| DataDirError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Creates the directory if needed.
    pub fn create(&self) -> Result<(), DataDirError> {
        let path = self.display_path();
        std::fs::create_dir_all(&path).map_err(Self::io(&path))
    }

    /// The secret in the data directory, generating it (mode 0600) when `generate` and it does not exist.
    /// Returns the secret and whether it was generated now.
    pub fn token_secret(&self, generate: bool) -> Result<Option<(Secret, bool)>, DataDirError> {
        let path = self.display_path().join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = text.trim();
                if secret.len() < MIN_HMAC_SECRET_BYTES {
                    return Err(DataDirError::BadSecret(path));
                }
                Ok(Some((Secret::new(secret), false)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !generate {
                    return Ok(None);
                }
                self.create()?;
                let secret = random_hex(32);
                match write_private(&path, secret.as_bytes()) {
                    Ok(()) => Ok(Some((Secret::new(secret), true))),
                    // Another process (`serve` and `token` started together) wrote it first.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.token_secret(false)
                    }
                    Err(error) => Err(Self::io(&path)(error)),
                }
            }
            Err(error) => Err(Self::io(&path)(error)),
        }
    }

    /// Where the secret lives, for messages.
    pub fn secret_path(&self) -> PathBuf {
        self.display_path().join(SECRET_FILE)
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Creates `path` readable by its owner only, failing if it already exists (another process won).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        assert!(data.token_secret(false).unwrap().is_none());
        let (first, generated) = data.token_secret(true).unwrap().unwrap();
        assert!(generated);
        let (again, generated) = data.token_secret(true).unwrap().unwrap();
        assert!(!generated);
        assert_eq!(first.expose(), again.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.secret_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
