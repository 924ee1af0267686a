//! The command line: `serve`, `migrate`, `token` and `check-config`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::auth::{Authenticator, Scope};
use crate::config::{Config, Profile, Settings};
use crate::telemetry;

/// posthorn: a transactional email HTTP gateway.
#[derive(Debug, Parser)]
#[command(name = "posthorn", version, about)]
pub struct Cli {
    /// TOML configuration file; `POSTHORN_*` environment variables override it.
    #[arg(long, global = true, env = "POSTHORN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a signed caller token.
    Token(TokenArgs),
    /// Validate the configuration and exit.
    CheckConfig,
}

/// Arguments of `posthorn token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The caller's name (the token's `sub`).
    #[arg(long)]
    pub sub: String,
    /// Comma-separated scopes: send, read, admin.
    #[arg(long, value_delimiter = ',', default_value = "send")]
    pub scope: Vec<String>,
    /// Lifetime, e.g. `1h`, `30d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Restrict the token to sending from these domains (repeatable or comma-separated).
    #[arg(long = "sender-domain", value_delimiter = ',')]
    pub sender_domains: Vec<String>,
}

/// Runs one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Config::load(cli.config.as_deref())?.validate()?;
    match cli.command {
        Command::Serve => runtime()?.block_on(serve(settings)),
        Command::Migrate => runtime()?.block_on(migrate(settings)),
        Command::Token(args) => token(settings, args),
        Command::CheckConfig => check_config(&settings),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    app.run_until_stopped().await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(settings.log_format);
    let store = app::open_store(&settings)?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(())
}

fn token(mut settings: Settings, args: TokenArgs) -> anyhow::Result<()> {
    // The same key `serve` uses: configured, or the data directory's (generated if needed).
    settings.resolve_token_key()?;
    let scopes = args
        .scope
        .iter()
        .map(|name| {
            Scope::parse(name.trim())
                .with_context(|| format!("unknown scope `{name}` (expected send, read or admin)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let authenticator = Authenticator::new(settings.auth);
    let domains = (!args.sender_domains.is_empty()).then_some(args.sender_domains);
    let token = authenticator.mint(&args.sub, &scopes, args.ttl, domains)?;
    println!("{token}");
    Ok(())
}

fn check_config(settings: &Settings) -> anyhow::Result<()> {
    let token_key = if !settings.auth.keys.is_empty() {
        "configured".to_owned()
    } else if settings.profile == Profile::Production {
        anyhow::bail!(
            "invalid configuration: POSTHORN_JWT_SECRET: the production profile needs an explicit token key"
        );
    } else {
        format!("from {}", settings.data_dir.secret_path().display())
    };
    println!("configuration is valid");
    println!("  profile:         {:?}", settings.profile);
    println!("  token key:       {token_key}");
    println!("  listen:          {}", settings.http.listen);
    let database = if settings.database_in_data_dir {
        format!(
            "embedded, in {}",
            settings.data_dir.display_path().display()
        )
    } else {
        "configured".to_owned()
    };
    println!("  database:        {database}");
    println!(
        "  smtp upstream:   {}",
        if settings.delivery.upstreams.is_empty() {
            "not configured"
        } else {
            "configured"
        }
    );
    println!("  max body size:   {} bytes", settings.http.max_body_size);
    println!(
        "  max recipients:  {} per field",
        settings.limits.max_recipients
    );
    Ok(())
}
