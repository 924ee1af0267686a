//! A private PostgreSQL server for one test, which the test may stop, start and restart: `initdb` into a
//! temporary directory, `pg_ctl` on a free port of 127.0.0.1. Dropping it stops the server at once and
//! removes the directory.
//!
//! As root, `initdb` and `postgres` run as the `postgres` system user, which owns the directory. The
//! server binaries are Debian's (the highest `/usr/lib/postgresql/*/bin`), else `initdb` on `PATH`, or
//! `POSTHORN_TEST_PG_BINDIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::peers::free_port;

/// Prefix of the temporary directories, so servers left by a killed test run can be found and removed.
const DIR_PREFIX: &str = "posthorn-fault-pg.";

/// Runs `pg_ctl` and friends; cheap to clone into a blocking task.
#[derive(Clone)]
struct PgCtl {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// A private PostgreSQL server, stopped and deleted on drop.
pub struct PrivatePg {
    ctl: PgCtl,
    password: Option<String>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("POSTHORN_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("pg_ctl").exists().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return bin;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    match which {
        Some(path) if !path.is_empty() => Path::new(&path)
            .parent()
            .expect("pg_ctl has a directory")
            .to_path_buf(),
        _ => panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package or set POSTHORN_TEST_PG_BINDIR"
        ),
    }
}

impl PgCtl {
    fn command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        };
        // The server must not inherit the test's working directory (it may not be readable by postgres).
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .env_remove("PGDATA");
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("running {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
        output
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn options(&self) -> String {
        format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
             -c max_connections=60 -c shared_buffers=16MB",
            self.port,
            self.dir.display()
        )
    }

    /// `pg_ctl start`, or `pg_ctl restart -m fast` with `restart`.
    fn start(&self, restart: bool) {
        let options = self.options();
        let data = self.data();
        let log = self.dir.join("server.log").display().to_string();
        let mut args = vec!["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30"];
        if restart {
            args.extend(["-m", "fast", "restart"]);
        } else {
            args.push("start");
        }
        self.run("pg_ctl", &args);
    }

    fn stop(&self, mode: &str) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", mode, "-w", "-t", "30", "stop"],
        );
    }
}

/// Removes servers of earlier runs that were killed before their cleanup ran (their owner is gone).
fn reap_stale(bindir: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap_or_default();
        let owner = owner.trim();
        if !owner.is_empty() && Path::new("/proc").join(owner).exists() {
            continue;
        }
        let ctl = PgCtl {
            bindir: bindir.to_path_buf(),
            dir: dir.clone(),
            port: 0,
            as_postgres,
        };
        if dir.join("data/postmaster.pid").exists() {
            let data = ctl.data();
            let _ = ctl
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl PrivatePg {
    /// Initialises a server (not started) whose `postgres` role logs in without a password.
    pub fn init() -> Self {
        Self::init_inner(None)
    }

    /// Initialises a server (not started) whose `postgres` role must log in over TCP with `password`
    /// (SCRAM-SHA-256).
    pub fn init_with_password(password: &str) -> Self {
        Self::init_inner(Some(password.to_owned()))
    }

    fn init_inner(password: Option<String>) -> Self {
        let bindir = find_bindir();
        let as_postgres = is_root();
        reap_stale(&bindir, as_postgres);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("temp dir")
            .keep();
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).expect("owner.pid");
        let ctl = PgCtl {
            bindir,
            dir: dir.clone(),
            port: free_port(),
            as_postgres,
        };
        if let Some(password) = &password {
            std::fs::write(dir.join("pwfile"), password).expect("password file");
        }
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the server directory to postgres");
        }
        let data = ctl.data();
        let pwfile = format!("--pwfile={}", dir.join("pwfile").display());
        let mut args = vec![
            "-D",
            &data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--auth-local=trust",
        ];
        if password.is_some() {
            args.extend(["--auth-host=scram-sha-256", &pwfile]);
        } else {
            args.push("--auth-host=trust");
        }
        ctl.run("initdb", &args);
        Self { ctl, password }
    }

    /// Initialises and starts a passwordless server.
    pub async fn start_new() -> Self {
        let server = Self::init();
        server.start().await;
        server
    }

    /// The URL of its `postgres` database (with the password, if one is set).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "postgres://postgres:{password}@127.0.0.1:{}/postgres",
                self.ctl.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.ctl.port),
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) {
        let ctl = self.ctl.clone();
        tokio::task::spawn_blocking(move || ctl.start(false))
            .await
            .expect("pg_ctl start");
    }

    /// Stops the server with `pg_ctl stop -m mode`: `fast` (sessions are terminated, clean shutdown) or
    /// `immediate` (the postmaster quits at once, as in a crash; the next start runs crash recovery).
    pub async fn stop(&self, mode: &'static str) {
        let ctl = self.ctl.clone();
        tokio::task::spawn_blocking(move || ctl.stop(mode))
            .await
            .expect("pg_ctl stop");
    }

    /// `pg_ctl restart -m fast`: sessions are terminated, the server stops and starts again at once.
    pub async fn restart(&self) {
        let ctl = self.ctl.clone();
        tokio::task::spawn_blocking(move || ctl.start(true))
            .await
            .expect("pg_ctl restart");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.ctl.dir.join("data/postmaster.pid").exists() {
            let data = self.ctl.data();
            let _ = self
                .ctl
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.ctl.dir);
    }
}
