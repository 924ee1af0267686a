//! The console at `/console`: pages rendered on the server, for people.
//!
//! Signing in takes a `read` or `admin` token once (`POST /console/login`) and turns it into a signed,
//! stateless session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` unless on loopback), so any replica
//! serves it and no token ever appears in a URL or a page. Every action is a POST carrying the session's
//! CSRF token, from a page of the same origin. Pages run no script and send a strict
//! `Content-Security-Policy`; a message's HTML is previewed in a sandboxed frame of its own, without
//! remote images until asked. A session can do what its token's scopes allow.

mod admin;
mod messages;
mod outbox;
mod sign_in;

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::{AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::MessageStatus;

/// The session cookie.
const COOKIE: &str = "posthorn_session";

/// The longest a session lasts (a token that expires sooner ends it sooner).
const LONGEST_SESSION: Duration = Duration::from_secs(8 * 3600);

/// Pages: nothing from elsewhere, no script, no framing by others; the message preview is a frame of
/// this origin.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("messages.html", include_str!("templates/messages.html")),
        ("message.html", include_str!("templates/message.html")),
        (
            "suppressions.html",
            include_str!("templates/suppressions.html"),
        ),
        ("webhooks.html", include_str!("templates/webhooks.html")),
        ("providers.html", include_str!("templates/providers.html")),
        ("queue.html", include_str!("templates/queue.html")),
        ("outbox.html", include_str!("templates/outbox.html")),
        (
            "outbox_message.html",
            include_str!("templates/outbox_message.html"),
        ),
        ("error.html", include_str!("templates/error.html")),
    ] {
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(template = name, error = %error, "a console template does not parse");
        }
    }
    env
});

/// The signed-in user of a request.
pub(super) struct Session {
    caller: Caller,
    /// The cookie's value, to derive the CSRF token from.
    value: String,
}

#[derive(Serialize)]
struct UserView<'a> {
    sub: &'a str,
    scopes: String,
    admin: bool,
}

impl Session {
    fn user(&self) -> UserView<'_> {
        let scopes: Vec<&str> = if self.caller.is_admin() {
            vec![Scope::Admin.as_str()]
        } else {
            [Scope::Send, Scope::Read]
                .into_iter()
                .filter(|scope| self.caller.has(*scope))
                .map(Scope::as_str)
                .collect()
        };
        UserView {
            sub: &self.caller.sub,
            scopes: scopes.join(", "),
            admin: self.caller.is_admin(),
        }
    }

    /// Whose messages this session sees: an admin's reach every caller's.
    fn owner(&self) -> Option<&str> {
        (!self.caller.is_admin()).then_some(self.caller.sub.as_str())
    }
}

/// A template value of anything serializable.
fn value(value: impl Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The request's session, when its cookie is valid.
fn session(req: &HttpRequest, state: &AppState) -> Option<Session> {
    let value = req.cookie(COOKIE)?.value().to_owned();
    let caller = state.authenticator.resume(&value, now())?;
    Some(Session { caller, value })
}

/// Whether the request came to a loopback address over plain HTTP (a `Secure` cookie would not come
/// back there).
fn on_loopback(req: &HttpRequest) -> bool {
    let info = req.connection_info();
    let host = info.host().to_ascii_lowercase();
    let name = host
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| {
            host.rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name)
        });
    info.scheme() == "http" && matches!(name, "localhost" | "127.0.0.1" | "::1")
}

fn session_cookie(req: &HttpRequest, value: String) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(!on_loopback(req))
        .finish()
}

/// A POST must come from a page of this origin (besides carrying the CSRF token).
fn same_origin(req: &HttpRequest) -> bool {
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let claimed = super::origin::page_origin(req.headers());
    // A browser sends Origin with every cross-origin POST; one with neither header is not a browser
    // another site could drive.
    claimed.is_none_or(|origin| origin.eq_ignore_ascii_case(&own))
}

/// A rendered page with the console's headers.
fn render(status: StatusCode, template: &str, context: minijinja::Value) -> HttpResponse {
    match TEMPLATES
        .get_template(template)
        .and_then(|page| page.render(context))
    {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_POLICY))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::REFERRER_POLICY, "same-origin"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(error) => {
            tracing::error!(template, error = %error, "rendering a console page failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("internal error")
        }
    }
}

/// A page for a signed-in session: its user and CSRF token are in every page's context.
fn page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    template: &str,
    name: &str,
    context: minijinja::Value,
) -> HttpResponse {
    let csrf = state.authenticator.csrf(&session.value).unwrap_or_default();
    let context = minijinja::context! {
        user => value(session.user()),
        csrf => csrf,
        page => name,
        outbox => matches!(state.transport, Some(crate::delivery::Transport::Outbox(_))),
        ..context
    };
    render(status, template, context)
}

fn error_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    detail: &str,
) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    page(
        state,
        session,
        status,
        "error.html",
        "",
        minijinja::context! { title => title, detail => detail },
    )
}

/// To the sign-in page.
fn to_login() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/login"))
        .finish()
}

fn see_other(location: &str) -> HttpResponse {
    match HeaderValue::from_str(location) {
        Ok(value) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, value))
            .finish(),
        Err(_) => to_login(),
    }
}

/// The fields of a console form post (small: a CSRF token and a few values).
fn form_fields(body: &web::Bytes) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The session of a POST, checked: signed in, same origin, and the session's CSRF token.
fn checked_post(
    req: &HttpRequest,
    state: &AppState,
    fields: &[(String, String)],
) -> Result<Session, Box<HttpResponse>> {
    let Some(session) = session(req, state) else {
        return Err(Box::new(to_login()));
    };
    let token = field(fields, "csrf").unwrap_or_default();
    if !same_origin(req) || !state.authenticator.check_csrf(&session.value, token) {
        return Err(Box::new(error_page(
            state,
            &session,
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from this console. Go back, reload the page and try again.",
        )));
    }
    Ok(session)
}

/// `session` if its caller holds `scope` (an admin holds every scope), else a 403 page saying `why`.
fn holding(
    state: &AppState,
    session: Session,
    scope: Scope,
    why: &str,
) -> Result<Session, Box<HttpResponse>> {
    if session.caller.has(scope) {
        Ok(session)
    } else {
        Err(Box::new(error_page(
            state,
            &session,
            StatusCode::FORBIDDEN,
            why,
        )))
    }
}

/// The session of a page that takes `scope`: signed in (else to the sign-in page), holding it.
fn viewer(
    req: &HttpRequest,
    state: &AppState,
    scope: Scope,
    why: &str,
) -> Result<Session, Box<HttpResponse>> {
    let session = session(req, state).ok_or_else(|| Box::new(to_login()))?;
    holding(state, session, scope, why)
}

/// The session of an action that takes `scope`: a checked POST ([`checked_post`]), holding it.
fn actor(
    req: &HttpRequest,
    state: &AppState,
    fields: &[(String, String)],
    scope: Scope,
    why: &str,
) -> Result<Session, Box<HttpResponse>> {
    let session = checked_post(req, state, fields)?;
    holding(state, session, scope, why)
}

/// The console's style sheet.
async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("console.css"))
}

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(messages::list))
        .route("/console/", web::get().to(messages::list))
        .route("/console/login", web::get().to(sign_in::page))
        .route("/console/login", web::post().to(sign_in::login))
        .route("/console/logout", web::post().to(sign_in::logout))
        .route("/console/messages/{id}", web::get().to(messages::show))
        .route(
            "/console/messages/{id}/preview",
            web::get().to(messages::preview),
        )
        .route(
            "/console/messages/{id}/cancel",
            web::post().to(messages::cancel),
        )
        .route(
            "/console/messages/{id}/retry",
            web::post().to(messages::retry),
        )
        .route("/console/redrive", web::post().to(messages::redrive))
        .route("/console/suppressions", web::get().to(admin::suppressions))
        .route(
            "/console/suppressions/remove",
            web::post().to(admin::remove_suppression),
        )
        .route("/console/webhooks", web::get().to(admin::webhooks))
        .route("/console/providers", web::get().to(admin::providers))
        .route("/console/queue", web::get().to(admin::queue))
        .route("/console/outbox", web::get().to(outbox::list))
        .route("/console/outbox/{id}", web::get().to(outbox::show))
        .route("/console/static/console.css", web::get().to(stylesheet));
}

/// An RFC 3339 time, as pages show times.
fn time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn unavailable(state: &AppState, session: &Session, error: &dyn std::fmt::Display) -> HttpResponse {
    tracing::warn!(error = %error, "a console page could not read the database");
    error_page(
        state,
        session,
        StatusCode::SERVICE_UNAVAILABLE,
        "The database cannot be reached right now; try again in a moment.",
    )
}

/// The text of a notice: pages take a code (and numbers or a status) from their URL, never text, so
/// a link cannot put words of its own on a console page.
fn notice_text(code: Option<&str>, first: Option<&str>, second: Option<&str>) -> Option<String> {
    let number = |text: Option<&str>| text.and_then(|text| text.parse::<u64>().ok()).unwrap_or(0);
    Some(match code? {
        "cancelled" => "The message was cancelled.".to_owned(),
        "too-late" => match first.and_then(|status| status.parse::<MessageStatus>().ok()) {
            Some(status) => format!("The message is {status} and can no longer be cancelled."),
            None => "The message can no longer be cancelled.".to_owned(),
        },
        "requeued" => "The message is back in the queue.".to_owned(),
        "not-failed" => "Only a failed message can be retried.".to_owned(),
        "redriven" => format!(
            "{} failed message(s) put back in the queue ({} skipped).",
            number(first),
            number(second)
        ),
        "removed" => "The address was taken off the suppression list.".to_owned(),
        "absent" => "The address was not on the suppression list.".to_owned(),
        _ => return None,
    })
}

#[derive(Deserialize)]
pub(super) struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_the_sign_in_page_renders() {
        for name in [
            "base.html",
            "login.html",
            "messages.html",
            "message.html",
            "suppressions.html",
            "webhooks.html",
            "providers.html",
            "queue.html",
            "outbox.html",
            "outbox_message.html",
            "error.html",
        ] {
            if let Err(error) = TEMPLATES.get_template(name) {
                panic!("{name}: {error:#}");
            }
        }
        let html = TEMPLATES
            .get_template("login.html")
            .and_then(|page| page.render(minijinja::context! { error => "<b>no</b>" }))
            .unwrap_or_else(|error| panic!("{error:#}"));
        assert!(
            html.contains("&lt;b&gt;no") && !html.contains("<b>"),
            "escaped: {html}"
        );
        let queue = TEMPLATES
            .get_template("queue.html")
            .and_then(|page| {
                page.render(minijinja::context! {
                    now => value(vec![("queued", 3)]),
                    chart => value(admin::chart(&[])),
                })
            })
            .unwrap_or_else(|error| panic!("{error:#}"));
        assert!(
            queue.contains("<svg") && queue.contains("queued"),
            "{queue}"
        );
    }
}
