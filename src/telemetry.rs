//! Structured logs through `tracing`: JSON in production, readable text in a terminal.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, readable text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Pretty,
}

/// Installs the global subscriber. The level comes from `POSTHORN_LOG` (or `RUST_LOG`), default `info`.
/// Calling it twice is harmless (tests build several applications in one process).
pub fn init(format: LogFormat) {
    let filter = std::env::var("POSTHORN_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // An already-installed subscriber is fine; there is nothing else that can fail here.
    drop(result);
}

/// An error with all its sources, `outer: inner: innermost`, for log lines.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
