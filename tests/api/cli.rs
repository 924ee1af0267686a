//! The `posthorn` binary: `token`, `check-config`, `migrate` and `serve`, driven as an operator would.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::Value;

use crate::support::peers::free_port;
use crate::support::{JWT_SECRET, TestDatabase, toml_file, valid_message};

/// The binary, with every inherited `POSTHORN_*` variable removed.
fn posthorn() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_posthorn"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("POSTHORN_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    // A data directory of its own, so the development profile never writes into the repository; and
    // no SMTP listener on the development profile's fixed port (tests run side by side).
    command.env("POSTHORN_DATA_DIR", fresh_data_dir());
    command.env("POSTHORN_SUBMISSION_LISTEN", "off");
    command.stdin(Stdio::null());
    command
}

/// A path for a data directory that does not exist yet.
fn fresh_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "posthorn-test-data-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn assert_failure_naming(&self, name: &str) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(name),
            "stderr names `{name}`: {}",
            self.stderr
        );
        self
    }
}

fn run(command: &mut Command) -> Outcome {
    let output = command.output().expect("posthorn runs");
    Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What `posthorn check-config` says (stdout and stderr) of the file at `path`, with the minimum
/// configured around it.
pub fn check_config_with(path: &std::path::Path) -> String {
    let path = path.to_str().expect("a UTF-8 path");
    run(configured(&mut posthorn()).args(["--config", path, "check-config"])).all()
}

/// The minimum for `check-config` to pass.
fn configured(command: &mut Command) -> &mut Command {
    command.env("POSTHORN_JWT_SECRET", JWT_SECRET).env(
        "POSTHORN_DATABASE_URL",
        "postgres://posthorn:dbs3cretpw@db.internal:5432/posthorn",
    )
}

#[test]
fn token_refuses_a_secret_shorter_than_32_bytes() {
    let outcome = run(posthorn()
        .env("POSTHORN_JWT_SECRET", "0123456789abcdef0123456789abcde") // 31 bytes
        .args(["token", "--sub", "x"]));
    outcome.assert_failure_naming("POSTHORN_JWT_SECRET");
    assert!(outcome.stdout.is_empty(), "no token is printed");
    assert!(!outcome.all().contains("0123456789abcdef0123456789abcde"));
}

#[test]
fn token_without_any_secret_fails_naming_the_variable_in_production() {
    let outcome = run(posthorn()
        .env("POSTHORN_PROFILE", "production")
        .args(["token", "--sub", "x"]));
    outcome.assert_failure_naming("POSTHORN_JWT_SECRET");
    assert!(outcome.stdout.is_empty());
}

#[test]
fn token_without_a_secret_uses_the_data_directory_secret() {
    let data_dir = fresh_data_dir();
    let mint = || {
        run(posthorn()
            .env("POSTHORN_DATA_DIR", &data_dir)
            .args(["token", "--sub", "local", "--scope", "send"]))
    };
    let first = mint();
    first.assert_success();
    let secret = std::fs::read_to_string(data_dir.join("jwt-secret")).expect("secret generated");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secret is private");
    }
    let second = mint();
    second.assert_success();
    for outcome in [&first, &second] {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let claims = decode::<Value>(
            outcome.stdout.trim(),
            &DecodingKey::from_secret(secret.trim().as_bytes()),
            &validation,
        )
        .expect("signed with the data directory's secret");
        assert_eq!(claims.claims["sub"], "local");
    }
    assert!(
        !first.all().contains(secret.trim()),
        "the secret is never printed"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn token_prints_a_jwt_with_the_requested_claims() {
    let outcome = run(posthorn().env("POSTHORN_JWT_SECRET", JWT_SECRET).args([
        "token",
        "--sub",
        "x",
        "--scope",
        "send,read",
        "--ttl",
        "1h",
    ]));
    outcome.assert_success();
    let token = outcome.stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(
        outcome.stdout.lines().count(),
        1,
        "only the token on stdout"
    );

    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = decode::<Value>(
        token,
        &DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("the token verifies with the configured secret")
    .claims;
    assert_eq!(claims["sub"], "x");
    assert_eq!(claims["scope"], "send read");
    let exp = claims["exp"].as_u64().unwrap();
    let expected = now() + 3600;
    assert!(
        exp.abs_diff(expected) <= 60,
        "exp {exp} is about an hour ahead ({expected})"
    );
    assert!(claims.get("sender_domains").is_none());

    // Signed with another secret, it does not verify.
    assert!(
        decode::<Value>(
            token,
            &DecodingKey::from_secret(b"another-secret-another-secret-000000"),
            &validation,
        )
        .is_err()
    );
}

#[test]
fn token_defaults_and_sender_domains() {
    let outcome = run(posthorn().env("POSTHORN_JWT_SECRET", JWT_SECRET).args([
        "token",
        "--sub",
        "shop",
        "--ttl",
        "30d",
        "--sender-domain",
        "example.com,mail.example.com",
    ]));
    outcome.assert_success();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let claims = decode::<Value>(
        outcome.stdout.trim(),
        &DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["scope"], "send", "the default scope");
    assert_eq!(
        claims["sender_domains"],
        serde_json::json!(["example.com", "mail.example.com"])
    );
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(now() + 30 * 86400) <= 60);
}

#[test]
fn token_refuses_an_unknown_scope() {
    let outcome = run(posthorn().env("POSTHORN_JWT_SECRET", JWT_SECRET).args([
        "token",
        "--sub",
        "x",
        "--scope",
        "send,superuser",
    ]));
    outcome.assert_failure_naming("superuser");
    assert!(outcome.stdout.is_empty(), "no token is printed");
}

#[test]
fn token_refuses_a_sub_the_api_would_refuse() {
    for sub in ["", "tab\tsub"] {
        let outcome = run(posthorn()
            .env("POSTHORN_JWT_SECRET", JWT_SECRET)
            .args(["token", "--sub", sub]));
        assert_eq!(
            outcome.status.code(),
            Some(1),
            "--sub {sub:?}: {}",
            outcome.all()
        );
        assert!(outcome.stdout.is_empty());
    }
}

#[test]
fn token_refuses_a_bad_ttl() {
    let outcome = run(posthorn()
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .args(["token", "--sub", "x", "--ttl", "forever"]));
    assert!(!outcome.status.success());
    assert!(outcome.stderr.contains("--ttl"), "{}", outcome.stderr);
    assert!(outcome.stdout.is_empty());
}

#[test]
fn check_config_refuses_a_bad_smtp_url_without_printing_its_password() {
    for url in [
        "ftp://user:s3cretpass@host",
        "smtp://user:s3cretpass@host:99999",
        "smtp://user:s3cretpass@host?tls=bogus",
        "user:s3cretpass@host",
    ] {
        let outcome = run(configured(&mut posthorn())
            .env("POSTHORN_SMTP_URL", url)
            .arg("check-config"));
        outcome.assert_failure_naming("POSTHORN_SMTP_URL");
        assert!(
            !outcome.all().contains("s3cretpass"),
            "{url}: the password leaked: {}",
            outcome.all()
        );
    }
}

#[test]
fn check_config_reports_a_valid_configuration_without_secrets() {
    let outcome = run(configured(&mut posthorn())
        .env(
            "POSTHORN_SMTP_URL",
            "smtp://user:s3cretpass@mail.example.com:587?tls=required",
        )
        .env("POSTHORN_LISTEN", "127.0.0.1:9025")
        .arg("check-config"));
    outcome.assert_success();
    let all = outcome.all();
    assert!(outcome.stdout.contains("configuration is valid"), "{all}");
    assert!(outcome.stdout.contains("127.0.0.1:9025"), "{all}");
    assert!(
        outcome.stdout.contains("smtp upstream:   configured"),
        "{all}"
    );
    for secret in ["s3cretpass", "dbs3cretpw", JWT_SECRET] {
        assert!(!all.contains(secret), "`{secret}` was printed: {all}");
    }
}

#[test]
fn check_config_refuses_a_non_postgres_database_url_without_printing_it() {
    let outcome = run(posthorn()
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .env(
            "POSTHORN_DATABASE_URL",
            "mysql://root:dbs3cretpw@db/posthorn",
        )
        .arg("check-config"));
    outcome.assert_failure_naming("POSTHORN_DATABASE_URL");
    assert!(!outcome.all().contains("dbs3cretpw"));
}

#[test]
fn check_config_reads_a_toml_file_and_the_environment_overrides_it() {
    let file = toml_file(&format!(
        "max_recipients = 2\njwt_secret = \"{JWT_SECRET}\"\ndatabase_url = \"postgres://localhost/posthorn\"\n"
    ));
    let path = file.path().to_str().unwrap();
    let outcome = run(posthorn().args(["--config", path, "check-config"]));
    outcome.assert_success();
    assert!(
        outcome.stdout.contains("max recipients:  2 per field"),
        "{}",
        outcome.stdout
    );

    let outcome = run(posthorn().env("POSTHORN_MAX_RECIPIENTS", "7").args([
        "--config",
        path,
        "check-config",
    ]));
    outcome.assert_success();
    assert!(
        outcome.stdout.contains("max recipients:  7 per field"),
        "the environment wins: {}",
        outcome.stdout
    );

    // `--config` is global: it may follow the subcommand too.
    let outcome = run(posthorn().args(["check-config", "--config", path]));
    outcome.assert_success();
    assert!(outcome.stdout.contains("max recipients:  2 per field"));
}

#[test]
fn check_config_refuses_an_unknown_key_in_the_file_by_name() {
    let file = toml_file(&format!(
        "jwt_secret = \"{JWT_SECRET}\"\ndatabase_url = \"postgres://localhost/posthorn\"\nmax_recipient = 2\n"
    ));
    let outcome = run(posthorn().args(["--config", file.path().to_str().unwrap(), "check-config"]));
    outcome.assert_failure_naming("`max_recipient`");
}

/// The lease is renewed while its job is in hand, so a provider whose final reply may take longer
/// than the lease is fine; `check-config` shows each provider's deadlines and refuses a lease too short
/// to renew, and a zero deadline by provider and phase (as `serve` does).
#[tokio::test]
async fn phase_deadlines_are_shown_and_a_lease_too_short_to_renew_is_refused() {
    let file = toml_file(
        "[providers.slow-relay]\nurl = \"smtp://relay.internal:25\"\ntimeout = \"2m\"\n\
         timeouts = { connect = \"10s\", done = \"15m\" }\n",
    );
    let path = file.path().to_str().unwrap();
    let outcome = run(configured(&mut posthorn()).args(["--config", path, "check-config"]));
    outcome.assert_success();
    assert!(
        outcome.stdout.contains(
            "slow-relay: connect 10s, greeting 2m, mail 2m, rcpt 2m, data 2m, block 2m, done 15m"
        ),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome
            .stdout
            .contains("lease:           5m, renewed every 1m 40s"),
        "{}",
        outcome.stdout
    );
    let short = run(configured(&mut posthorn())
        .env("POSTHORN_LEASE_DURATION", "2s")
        .args(["--config", path, "check-config"]));
    short.assert_failure_naming("POSTHORN_LEASE_DURATION");

    let zero = toml_file(
        "[providers.slow-relay]\nurl = \"smtp://relay.internal:25\"\ntimeouts = { rcpt = \"0s\" }\n",
    );
    let zero_path = zero.path().to_str().unwrap();
    let outcome = run(configured(&mut posthorn()).args(["--config", zero_path, "check-config"]));
    outcome
        .assert_failure_naming("slow-relay")
        .assert_failure_naming("timeouts.rcpt");
    let database = TestDatabase::create_empty().await;
    let serve = run(posthorn()
        .env("POSTHORN_PROFILE", "production")
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .env("POSTHORN_DATABASE_URL", database.url())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .args(["--config", zero_path, "serve"]));
    serve.assert_failure_naming("timeouts.rcpt");
}

#[test]
fn check_config_refuses_a_missing_file() {
    let outcome = run(configured(&mut posthorn()).args([
        "--config",
        "/nonexistent/posthorn.toml",
        "check-config",
    ]));
    outcome.assert_failure_naming("/nonexistent/posthorn.toml");
}

#[test]
fn check_config_refuses_a_listen_value_that_is_not_an_address() {
    let outcome = run(configured(&mut posthorn())
        .env("POSTHORN_LISTEN", "not-an-address")
        .arg("check-config"));
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.to_lowercase().contains("listen"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn check_config_defaults_to_the_embedded_database() {
    let outcome = run(posthorn()
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .arg("check-config"));
    outcome.assert_success();
    assert!(outcome.stdout.contains("embedded"), "{}", outcome.stdout);
}

#[test]
fn the_config_file_can_be_named_by_posthorn_config() {
    let file = toml_file(&format!(
        "max_recipients = 2\njwt_secret = \"{JWT_SECRET}\"\ndatabase_url = \"postgres://localhost/posthorn\"\n"
    ));
    let outcome = run(posthorn()
        .env("POSTHORN_CONFIG", file.path())
        .arg("check-config"));
    outcome.assert_success();
    assert!(outcome.stdout.contains("max recipients:  2 per field"));
}

#[test]
fn posthorn_log_sets_the_log_level_without_breaking_the_configuration() {
    let outcome = run(configured(&mut posthorn())
        .env("POSTHORN_LOG", "debug")
        .arg("check-config"));
    outcome.assert_success();
}

#[test]
fn unrelated_posthorn_variables_do_not_break_the_configuration() {
    let outcome = run(configured(&mut posthorn())
        .env(
            "POSTHORN_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .arg("check-config"));
    outcome.assert_success();
}

#[tokio::test]
async fn migrate_creates_the_schema_on_an_empty_database() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    let migrate = || {
        run(posthorn()
            .env("POSTHORN_DATABASE_URL", database.url())
            .arg("migrate"))
    };
    let outcome = migrate();
    outcome.assert_success();
    assert!(
        outcome.stdout.contains("migrations applied"),
        "{}",
        outcome.stdout
    );

    let mut connection = database.connect().await;
    for table in [
        "messages",
        "delivery_attempts",
        "idempotency_keys",
        "_sqlx_migrations",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{table}"))
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert!(exists, "table {table} exists after migrate");
    }
    // Running it again is harmless.
    migrate().assert_success();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(applied, files as i64);
}

#[test]
fn migrate_without_a_database_url_migrates_the_embedded_database() {
    let data_dir = fresh_data_dir();
    let outcome = run(posthorn()
        .env("POSTHORN_DATA_DIR", &data_dir)
        .arg("migrate"));
    outcome.assert_success();
    assert!(data_dir.join("posthorn.db").exists(), "{}", outcome.all());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn migrate_against_a_database_that_does_not_exist_fails() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    let mut url = url::Url::parse(&database.url()).unwrap();
    url.set_path(&format!(
        "/posthorn_test_missing_{}",
        uuid::Uuid::new_v4().simple()
    ));
    let outcome = run(posthorn()
        .env("POSTHORN_DATABASE_URL", url.to_string())
        .env("POSTHORN_DATABASE_ACQUIRE_TIMEOUT", "2s")
        .arg("migrate"));
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.all());
    assert!(outcome.stderr.contains("migrations"), "{}", outcome.stderr);
}

/// A `posthorn serve` child process, killed if the test ends before it stops.
struct Server {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn serve_end_to_end_and_a_clean_stop_on_sigterm() {
    // An empty database: `serve` applies the migrations itself.
    let database = TestDatabase::create_empty().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = posthorn()
        .env("POSTHORN_DATABASE_URL", database.url())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .env("POSTHORN_SHUTDOWN_GRACE", "2s")
        .env("POSTHORN_LOG_FORMAT", "json")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut server = Server { child, log };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("serve exited early with {status}: {}", server.log());
        }
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready within 30 s: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let minted = run(posthorn().env("POSTHORN_JWT_SECRET", JWT_SECRET).args([
        "token",
        "--sub",
        "e2e",
        "--scope",
        "send,read",
        "--ttl",
        "10m",
    ]));
    minted.assert_success();
    let token = minted.stdout.trim().to_owned();

    let response = client
        .post(format!("{base}/send"))
        .bearer_auth(&token)
        .json(&valid_message())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", server.log());
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["id"], id);
    assert_eq!(message["subject"], "Your order");
    // Without an upstream the development profile delivers to the outbox; it may already be done.
    assert!(
        matches!(
            message["status"].as_str(),
            Some("queued" | "sending" | "sent")
        ),
        "{message}"
    );

    let pid = server.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let stopped_by = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < stopped_by,
            "serve still running 10 s after SIGTERM: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("posthorn stopped"), "{log}");
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "the port is closed"
    );

    // What it accepted is in the database.
    let count = database
        .scalar(&format!("SELECT count(*) FROM messages WHERE id = '{id}'"))
        .await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn serve_fails_naming_posthorn_listen_when_the_port_is_taken() {
    let database = TestDatabase::create_empty().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let outcome = run(posthorn()
        .env("POSTHORN_DATABASE_URL", database.url())
        .env("POSTHORN_LISTEN", &address)
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .env("POSTHORN_LOG_FORMAT", "json")
        .arg("serve"));
    outcome.assert_failure_naming("POSTHORN_LISTEN");
    assert!(outcome.stderr.contains(&address), "{}", outcome.stderr);
}

#[tokio::test]
async fn serve_stays_up_and_not_ready_while_the_database_is_unreachable() {
    crate::postgres_only!();
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = posthorn()
        // Nothing listens on port 1.
        .env(
            "POSTHORN_DATABASE_URL",
            "postgres://posthorn:dbs3cretpw@127.0.0.1:1/posthorn",
        )
        .env("POSTHORN_DATABASE_ACQUIRE_TIMEOUT", "1s")
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_JWT_SECRET", JWT_SECRET)
        .env("POSTHORN_PROFILE", "production")
        .env("POSTHORN_LOG_FORMAT", "json")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let server = Server { child, log };
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            healthy = response.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        healthy,
        "alive while the database is away: {}",
        server.log()
    );
    let started = Instant::now();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not ready, promptly"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = server.log();
    assert!(
        log.contains("not reachable yet") || log.contains("waiting for the database"),
        "{log}"
    );
    assert!(!log.contains("dbs3cretpw"), "{log}");
}

#[tokio::test]
async fn serve_without_a_token_key_refuses_to_start_in_production() {
    let database = TestDatabase::create_empty().await;
    let outcome = run(posthorn()
        .env("POSTHORN_PROFILE", "production")
        .env("POSTHORN_DATABASE_URL", database.url())
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("POSTHORN_LOG_FORMAT", "json")
        .arg("serve"));
    outcome.assert_failure_naming("POSTHORN_JWT_SECRET");
}

#[test]
fn providers_keep_the_file_s_order_and_take_their_urls_from_the_environment() {
    let file = toml_file(
        "[providers.zeta]\nmax_connections = 2\n\n\
         [providers.alpha]\nurl = \"smtp://alpha.internal:25\"\nbreaker_cooldown = \"1m\"\n\n\
         [[routes]]\nmatch = { tag = \"reset\", sender_domain = [\"example.com\", \"example.org\"] }\n\
         providers = [\"alpha\"]\n\n\
         [[routes]]\nproviders = [\"zeta\", \"alpha\"]\n",
    );
    let path = file.path().to_str().unwrap();
    let outcome = run(configured(&mut posthorn())
        .env(
            "POSTHORN_PROVIDERS__ZETA__URL",
            "smtp://user:zetas3cret@zeta.internal:587?tls=required",
        )
        .args(["--config", path, "check-config"]));
    outcome.assert_success();
    let all = outcome.all();
    assert!(
        outcome.stdout.contains("providers:       zeta, alpha"),
        "{all}"
    );
    assert!(outcome.stdout.contains("routes:          2"), "{all}");
    assert!(!all.contains("zetas3cret"), "{all}");

    // A route naming a provider that is not configured names it.
    let file = toml_file(
        "[providers.alpha]\nurl = \"smtp://alpha.internal\"\n\n\
         [[routes]]\nproviders = [\"alpha\", \"beta\"]\n",
    );
    let outcome = run(configured(&mut posthorn()).args([
        "--config",
        file.path().to_str().unwrap(),
        "check-config",
    ]));
    outcome.assert_failure_naming("routes");
    assert!(outcome.all().contains("`beta`"), "{}", outcome.all());
}

#[test]
fn dkim_keygen_writes_a_private_key_prints_its_record_and_check_config_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dkim");
    let keygen = |algorithm: &str, selector: &str| {
        run(posthorn().args([
            "dkim-keygen",
            "--domain",
            "Example.com",
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let outcome = keygen("ed25519-sha256", "s2");
    outcome.assert_success();
    let key = out.join("example.com.s2.pem");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        outcome
            .stdout
            .contains("s2._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; p="),
        "{}",
        outcome.stdout
    );
    assert!(
        !outcome.all().contains(pem.lines().nth(1).unwrap()),
        "the key is not printed"
    );

    // Never overwritten.
    let again = keygen("ed25519-sha256", "s2");
    assert!(!again.status.success());
    assert!(again.all().contains("never overwritten"), "{}", again.all());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
    let unknown = keygen("rsa-sha1", "s3");
    assert!(!unknown.status.success());
    assert!(unknown.all().contains("rsa-sha1"), "{}", unknown.all());

    // The configuration it prints is one check-config takes; a broken key is refused by name.
    let config = outcome.stdout[outcome.stdout.find("[[dkim]]").unwrap()..].to_owned();
    let file = toml_file(&config);
    let path = file.path().to_str().unwrap();
    run(configured(&mut posthorn()).args(["--config", path, "check-config"])).assert_success();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let broken = run(configured(&mut posthorn()).args(["--config", path, "check-config"]));
    broken.assert_failure_naming("dkim");
    assert!(broken.all().contains("example.com"), "{}", broken.all());
}
