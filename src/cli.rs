//! The command line: `serve`, `migrate`, `token` and `check-config`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::auth::{Authenticator, Scope};
use crate::config::{Config, Profile};
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
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => runtime()?.block_on(serve(config)),
        Command::Migrate => runtime()?.block_on(migrate(config)),
        Command::Token(args) => token(&config, args),
        Command::CheckConfig => check_config(&config),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped().await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    let store = app::open_store(&config)?;
    store.migrate().await.context("applying migrations")?;
    println!("migrations applied");
    Ok(())
}

fn token(config: &Config, args: TokenArgs) -> anyhow::Result<()> {
    // The same key `serve` uses: configured, or the data directory's (generated if needed).
    let mut config = config.clone();
    config.resolve_token_secret()?;
    let config = &config;
    let scopes = args
        .scope
        .iter()
        .map(|name| {
            Scope::parse(name.trim())
                .with_context(|| format!("unknown scope `{name}` (expected send, read or admin)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let authenticator = Authenticator::from_config(config)?;
    let domains = (!args.sender_domains.is_empty()).then_some(args.sender_domains);
    let token = authenticator.mint(&args.sub, &scopes, args.ttl, domains)?;
    println!("{token}");
    Ok(())
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let authenticator = Authenticator::from_config(config)?;
    let token_key = if authenticator.has_keys() {
        "configured".to_owned()
    } else if config.profile == Profile::Production {
        anyhow::bail!(
            "invalid configuration: POSTHORN_JWT_SECRET: the production profile needs an explicit token key"
        );
    } else {
        format!("from {}", config.data_dir().secret_path().display())
    };
    println!("configuration is valid");
    println!("  profile:         {:?}", config.profile);
    println!("  token key:       {token_key}");
    println!("  listen:          {}", config.listen);
    let database = if config.database_url.is_some() {
        "configured".to_owned()
    } else {
        format!(
            "embedded, in {}",
            config.data_dir().display_path().display()
        )
    };
    println!("  database:        {database}");
    println!(
        "  smtp upstream:   {}",
        if config.smtp_url.is_some() {
            "configured"
        } else {
            "not configured"
        }
    );
    println!("  max body size:   {} bytes", config.max_body_size);
    println!("  max recipients:  {} per field", config.max_recipients);
    Ok(())
}
