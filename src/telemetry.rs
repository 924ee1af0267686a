//! Structured logs through `tracing`: JSON in production, readable text in a terminal.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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
///
/// The HTTP server logs every request it cannot parse at ERROR, so an unauthenticated client could
/// fill the logs: those events are counted (`posthorn_http_malformed_requests_total`) and written at
/// debug instead, under the target `posthorn::http`.
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
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let output = if json {
        output.json().flatten_event(true).boxed()
    } else {
        output.boxed()
    };
    let output = output.with_filter(filter.and(filter_fn(|meta| !is_client_error(meta))));
    let client_errors = ClientErrors.with_filter(filter_fn(is_client_error));
    let result = tracing_subscriber::registry()
        .with(client_errors)
        .with(output)
        .try_init();
    // An already-installed subscriber is fine; there is nothing else that can fail here.
    drop(result);
}

/// An error the HTTP server logs about what a client sent.
fn is_client_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target().starts_with("actix_http::h1")
}

/// Counts the HTTP server's errors about malformed requests and writes them again at debug.
struct ClientErrors;

impl<S: Subscriber> Layer<S> for ClientErrors {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.starts_with("stream error") {
            crate::metrics::count_malformed_request();
        }
        tracing::debug!(target: "posthorn::http", error = %message.0, "request refused by the HTTP server");
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
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
