//! The command line: `serve`, `migrate`, `token`, `check-config` and `dkim-keygen`.

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
    /// Make a DKIM key: write its private key file and print the DNS TXT record to publish.
    DkimKeygen(DkimKeygenArgs),
}

/// Arguments of `posthorn dkim-keygen`.
#[derive(Debug, clap::Args)]
pub struct DkimKeygenArgs {
    /// The signing domain (`d=`), e.g. `example.com`.
    #[arg(long)]
    pub domain: String,
    /// The selector (`s=`), e.g. `s1`; the record goes at `SELECTOR._domainkey.DOMAIN`.
    #[arg(long)]
    pub selector: String,
    /// The directory the private key file is written to (`DOMAIN.SELECTOR.pem`, mode 0600).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `rsa-sha256` (2048 bits; what every receiver verifies) or `ed25519-sha256`.
    #[arg(long, default_value = "rsa-sha256")]
    pub algorithm: String,
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
    // Making a key needs no configuration.
    if let Command::DkimKeygen(args) = &cli.command {
        return dkim_keygen(args);
    }
    let settings = Config::load(cli.config.as_deref())?.validate()?;
    match cli.command {
        Command::Serve => runtime()?.block_on(serve(settings)),
        Command::Migrate => runtime()?.block_on(migrate(settings)),
        Command::Token(args) => token(settings, args),
        Command::CheckConfig => check_config(&settings),
        Command::DkimKeygen(ref args) => dkim_keygen(args),
    }
}

fn dkim_keygen(args: &DkimKeygenArgs) -> anyhow::Result<()> {
    use crate::delivery::dkim::{DkimAlgorithm, generate};
    let algorithm = DkimAlgorithm::parse(&args.algorithm).with_context(|| {
        format!(
            "unknown algorithm `{}` (expected rsa-sha256 or ed25519-sha256)",
            args.algorithm
        )
    })?;
    let domain = args
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let selector = args.selector.trim();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !domain.split('.').all(label_ok) || !domain.contains('.') {
        anyhow::bail!("--domain: `{}` is not a domain name", args.domain);
    }
    if !selector.split('.').all(label_ok) {
        anyhow::bail!("--selector: `{}` is not a DNS label", args.selector);
    }
    let key = generate(algorithm).context("making the key")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join(format!("{domain}.{selector}.pem"));
    write_private(&path, key.private_pem.as_bytes())?;
    println!("wrote {} ({})", path.display(), algorithm.as_str());
    println!();
    println!("publish this DNS TXT record:");
    // A TXT string holds at most 255 bytes; an RSA record is longer, and is given in pieces.
    let pieces: Vec<String> = key
        .dns_txt
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect();
    println!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        pieces.join(" ")
    );
    println!();
    println!("and add to the configuration file:");
    println!("[[dkim]]");
    println!("domain = \"{domain}\"");
    println!("selector = \"{selector}\"");
    println!("private_key_file = \"{}\"", path.display());
    println!("algorithm = \"{}\"", algorithm.as_str());
    Ok(())
}

/// Writes a new file readable by its owner only; an existing file is never overwritten.
fn write_private(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "writing {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
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
    if !settings.delivery.upstreams.is_empty() {
        let names: Vec<&str> = settings
            .delivery
            .upstreams
            .iter()
            .map(|upstream| upstream.name.as_str())
            .collect();
        println!("  providers:       {}", names.join(", "));
        for upstream in &settings.delivery.upstreams {
            let phases: Vec<String> = upstream
                .timeouts
                .named()
                .iter()
                .map(|(phase, timeout)| format!("{phase} {}", humantime::format_duration(*timeout)))
                .collect();
            println!(
                "  timeouts:        {}: {}",
                upstream.name,
                phases.join(", ")
            );
        }
        let routes = settings.delivery.routes.iter().count();
        if routes == 0 {
            println!("  routes:          none (every message through the providers in this order)");
        } else {
            println!("  routes:          {routes}");
        }
    }
    let lease = settings.delivery.worker.lease;
    println!(
        "  lease:           {}, renewed every {} while its job is in hand",
        humantime::format_duration(lease),
        humantime::format_duration(crate::delivery::renewal_interval(lease))
    );
    println!("  max body size:   {} bytes", settings.http.max_body_size);
    println!(
        "  max recipients:  {} per field",
        settings.limits.max_recipients
    );
    Ok(())
}
