//! Store failures, split by what the caller of the store can do about them.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (connection refused, pool exhausted, shutting down).
    /// Worth retrying later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A stored value could not be read back into its type.
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("applying migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The schema is older than this build expects.
    #[error("database schema is not migrated (run `posthorn migrate`)")]
    NotMigrated,
    /// Concurrent writes kept getting in each other's way; the caller may try again.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// An error of the same kind, for each request of a batch that failed as a whole.
    pub fn replicate(&self) -> StoreError {
        let text = || self.to_string();
        match self {
            StoreError::Unavailable(error) => {
                StoreError::Unavailable(sqlx::Error::Protocol(error.to_string()))
            }
            StoreError::Database(error) => {
                StoreError::Database(sqlx::Error::Protocol(error.to_string()))
            }
            StoreError::NotMigrated => StoreError::NotMigrated,
            StoreError::Corrupt(reason) => StoreError::Corrupt(reason.clone()),
            StoreError::Conflict(reason) => StoreError::Conflict(reason.clone()),
            StoreError::Migrate(_) => StoreError::Corrupt(text()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| {
                    // 57P01-03: admin shutdown, crash shutdown, cannot connect now; 08xxx: connection
                    // exceptions; 3D000: no such database; 28xxx: authentication; 53xxx: out of resources
                    // (too many connections); 42P01: a table is missing (not migrated yet).
                    code.starts_with("57P")
                        || code.starts_with("08")
                        || code.starts_with("28")
                        || code.starts_with("53")
                        || code == "3D000"
                        || code == "42P01"
                }) =>
            {
                StoreError::Unavailable(error)
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            // A database that cannot be reached is not a broken migration: the caller may wait for it.
            sqlx::migrate::MigrateError::Execute(inner) => match StoreError::from(inner) {
                StoreError::Unavailable(inner) => StoreError::Unavailable(inner),
                StoreError::Database(inner) => {
                    StoreError::Migrate(sqlx::migrate::MigrateError::Execute(inner))
                }
                other => other,
            },
            other => StoreError::Migrate(other),
        }
    }
}

impl From<crate::domain::UnknownStatusError> for StoreError {
    fn from(error: crate::domain::UnknownStatusError) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}
