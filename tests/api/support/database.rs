//! A fresh PostgreSQL database per test, cloned from a migrated template and dropped afterwards.

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// Where the tests find a PostgreSQL server they may create databases on.
pub fn admin_url() -> String {
    std::env::var("POSTHORN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Replaces the database name in a URL.
fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("POSTHORN_TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// The template's name changes whenever a migration changes, so a stale template is never used.
fn template_name() -> String {
    let mut digest = 0u64;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("migrations directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        for byte in std::fs::read(&path).expect("migration file") {
            digest = digest
                .wrapping_mul(0x100000001b3)
                .wrapping_add(u64::from(byte));
        }
    }
    format!("posthorn_test_template_{digest:016x}")
}

async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url).await.unwrap_or_else(|error| {
        panic!("cannot reach the test PostgreSQL server ({error}); run ./scripts/test.sh, which starts one")
    })
}

async fn ensure_template(admin: &mut PgConnection) -> String {
    let template = template_name();
    // One process builds the template; the others wait on the lock and then find it.
    admin
        .execute("SELECT pg_advisory_lock(7270001)")
        .await
        .expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut *admin)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{template}_building");
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#).as_str())
            .await
            .expect("drop stale template");
        admin
            .execute(format!(r#"CREATE DATABASE "{building}""#).as_str())
            .await
            .expect("create template");
        let url = with_database(&admin_url(), &building);
        {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect template");
            sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .expect("migrate template");
            pool.close().await;
        }
        admin
            .execute(format!(r#"ALTER DATABASE "{building}" RENAME TO "{template}""#).as_str())
            .await
            .expect("rename template");
    }
    admin
        .execute("SELECT pg_advisory_unlock(7270001)")
        .await
        .expect("advisory unlock");
    template
}

/// Which store the black-box tests run against: `POSTHORN_TEST_BACKEND=sqlite` selects the embedded
/// store; anything else (the default) PostgreSQL.
pub fn is_postgres() -> bool {
    !matches!(
        std::env::var("POSTHORN_TEST_BACKEND").as_deref(),
        Ok("sqlite")
    )
}

/// A database that exists for one test: a PostgreSQL database cloned from the migrated template, or
/// an SQLite file in a temporary directory.
pub struct TestDatabase {
    name: Option<String>,
    sqlite: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates a migrated database on the selected backend.
    pub async fn create() -> Self {
        if !is_postgres() {
            let database = Self::create_sqlite();
            let store = posthorn::store::sqlite::SqliteStore::connect(&super::store_settings(
                &database.url(),
                std::time::Duration::from_secs(3600),
            ))
            .expect("open SQLite");
            posthorn::store::MessageStore::migrate(&store)
                .await
                .expect("migrate SQLite");
            return database;
        }
        Self::create_postgres().await
    }

    /// Creates a migrated PostgreSQL database, whatever backend is selected.
    pub async fn create_postgres() -> Self {
        let mut admin = admin().await;
        let template = ensure_template(&mut admin).await;
        Self::create_from(&mut admin, Some(&template)).await
    }

    /// Creates an empty database (no schema) on the selected backend.
    pub async fn create_empty() -> Self {
        if !is_postgres() {
            return Self::create_sqlite();
        }
        let mut admin = admin().await;
        Self::create_from(&mut admin, None).await
    }

    fn create_sqlite() -> Self {
        Self {
            name: None,
            sqlite: Some(tempfile::tempdir().expect("temp dir")),
        }
    }

    async fn create_from(admin: &mut PgConnection, template: Option<&str>) -> Self {
        let name = format!("posthorn_test_{}", Uuid::new_v4().simple());
        let statement = match template {
            Some(template) => format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#),
            None => format!(r#"CREATE DATABASE "{name}""#),
        };
        // Cloning a template fails while another session is connected to it; retry briefly.
        let mut attempts = 0;
        loop {
            match admin.execute(statement.as_str()).await {
                Ok(_) => break,
                Err(_) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("creating test database: {error}"),
            }
        }
        Self {
            name: Some(name),
            sqlite: None,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        match &self.sqlite {
            Some(dir) => format!("sqlite://{}", dir.path().join("posthorn.db").display()),
            None => with_database(&admin_url(), self.name.as_deref().unwrap_or("postgres")),
        }
    }

    /// Moves the database out, so it outlives this handle.
    pub fn take(&mut self) -> TestDatabase {
        TestDatabase {
            name: self.name.take(),
            sqlite: self.sqlite.take(),
        }
    }

    /// A direct PostgreSQL connection, for tests of PostgreSQL itself (see [`crate::postgres_only`]).
    pub async fn connect(&self) -> PgConnection {
        assert!(
            self.sqlite.is_none(),
            "a PostgreSQL-only test ran on SQLite"
        );
        PgConnection::connect(&self.url())
            .await
            .expect("connect test database")
    }

    /// How many messages a worker holds (status `sending`), on either backend: SQLite keeps the status
    /// on the message, PostgreSQL reads it off the job's lease. `id` narrows it to one message.
    pub async fn sending(&self, id: Option<&str>) -> i64 {
        let only = |column: &str| id.map_or(String::new(), |id| format!(" AND {column} = '{id}'"));
        let sql = match &self.sqlite {
            Some(_) => format!(
                "SELECT count(*) FROM messages WHERE status = 'sending'{}",
                only("id")
            ),
            None => format!(
                "SELECT count(*) FROM jobs WHERE lease_token IS NOT NULL{}",
                only("message_id")
            ),
        };
        self.scalar(&sql).await
    }

    /// How many messages match `condition` (SQL over their current `status`, `caller`, `sent_at` ...), on
    /// either backend: SQLite keeps the state on the message, PostgreSQL puts it together from the job
    /// and the last attempt (the view `message_states`).
    pub async fn count_messages(&self, condition: &str) -> i64 {
        let from = if self.sqlite.is_some() {
            "messages"
        } else {
            "message_states"
        };
        self.scalar(&format!("SELECT count(*) FROM {from} WHERE {condition}"))
            .await
    }

    /// The first column of the first row of `sql`, on either backend. Use portable SQL (no parameters).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match &self.sqlite {
            Some(_) => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url())
                    .await
                    .expect("connect SQLite");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut connection)
                    .await
                    .expect("query")
            }
            None => sqlx::query_scalar(sql)
                .fetch_one(&mut self.connect().await)
                .await
                .expect("query"),
        }
    }

    /// Runs a portable statement (no parameters) on either backend.
    pub async fn execute(&self, sql: &str) {
        match &self.sqlite {
            Some(_) => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url())
                    .await
                    .expect("connect SQLite");
                connection.execute(sql).await.expect("statement");
            }
            None => {
                self.connect().await.execute(sql).await.expect("statement");
            }
        }
    }
}

/// Ends a test early on the SQLite pass: it checks something only PostgreSQL has.
#[macro_export]
macro_rules! postgres_only {
    () => {
        if !$crate::support::database::is_postgres() {
            eprintln!("checks PostgreSQL itself: not run on the SQLite pass");
            return;
        }
    };
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        // Drop runs outside async context guarantees; a short-lived thread with its own runtime does the
        // cleanup. Leftovers (a crashed test) are removed by the test command.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = admin
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}
