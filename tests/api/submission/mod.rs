//! SMTP submission: real clients, the protocol's edge cases, smuggling, and the raw route.

mod clients;
mod crash;
mod postfix;
mod protocol;
mod raw;
mod smuggling;

use posthorn::auth::Scope;

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, spawn_delivering_app};

/// An app delivering to `upstream`, with SMTP submission on a free loopback port.
pub(crate) async fn spawn(
    upstream: &SmtpServer,
    adjust: impl FnOnce(&mut posthorn::config::Config),
) -> TestApp {
    spawn_delivering_app(upstream, |config| {
        config.submission_listen = Some("127.0.0.1:0".into());
        adjust(config);
    })
    .await
}

/// The submission port of `app`.
pub(crate) fn port(app: &TestApp) -> u16 {
    app.submission.0.expect("a submission listener")
}

/// A token for caller `tester` (the default token's) that may send (its SMTP password).
pub(crate) fn password(app: &TestApp) -> String {
    app.token("tester", &[Scope::Send])
}

/// A small message from shop@example.com to ann@example.org.
pub(crate) const MESSAGE: &str = "From: Shop <shop@example.com>\r\nTo: Ann <ann@example.org>\r\nSubject: Your order\r\n\r\nThank you.\r\n";
