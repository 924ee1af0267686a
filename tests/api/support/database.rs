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

/// A database that exists for one test.
pub struct TestDatabase {
    name: Option<String>,
}

impl TestDatabase {
    /// Creates a migrated database.
    pub async fn create() -> Self {
        let mut admin = admin().await;
        let template = ensure_template(&mut admin).await;
        Self::create_from(&mut admin, Some(&template)).await
    }

    /// Creates an empty database (no schema).
    pub async fn create_empty() -> Self {
        let mut admin = admin().await;
        Self::create_from(&mut admin, None).await
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
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("creating test database: {error}"),
            }
        }
        Self { name: Some(name) }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        with_database(&admin_url(), self.name.as_deref().unwrap_or("postgres"))
    }

    /// Moves the database out, so it outlives this handle.
    pub fn take(&mut self) -> TestDatabase {
        TestDatabase {
            name: self.name.take(),
        }
    }

    /// A direct connection, for assertions about what is stored.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("connect test database")
    }
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
