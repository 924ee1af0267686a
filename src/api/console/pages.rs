//! The console's pages and actions.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{
    LONGEST_SESSION, Session, checked_post, error_page, field, form_fields, now, page, render,
    see_other, session, session_cookie, stylesheet, to_login,
};
use crate::api::AppState;
use crate::auth::Scope;
use crate::domain::{Mailbox, MessageStatus};
use crate::store::{MessageFilter, RequeueFilter, SuppressionFilter};

/// Messages on one page of the list.
const PAGE_SIZE: u32 = 50;

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(messages))
        .route("/console/", web::get().to(messages))
        .route("/console/login", web::get().to(login_page))
        .route("/console/login", web::post().to(login))
        .route("/console/logout", web::post().to(logout))
        .route("/console/messages/{id}", web::get().to(message))
        .route("/console/messages/{id}/preview", web::get().to(preview))
        .route("/console/messages/{id}/cancel", web::post().to(cancel))
        .route("/console/messages/{id}/retry", web::post().to(retry))
        .route("/console/redrive", web::post().to(redrive))
        .route("/console/suppressions", web::get().to(suppressions))
        .route(
            "/console/suppressions/remove",
            web::post().to(remove_suppression),
        )
        .route("/console/webhooks", web::get().to(webhooks))
        .route("/console/providers", web::get().to(providers))
        .route("/console/queue", web::get().to(queue))
        .route("/console/outbox", web::get().to(outbox))
        .route("/console/outbox/{id}", web::get().to(outbox_message))
        .route("/console/static/console.css", web::get().to(stylesheet));
}

fn time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn mailboxes(list: &[Mailbox]) -> String {
    list.iter()
        .map(|mailbox| match &mailbox.name {
            Some(name) => format!("{name} <{}>", mailbox.address.as_str()),
            None => mailbox.address.as_str().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// --- signing in and out ------------------------------------------------------------------------

async fn login_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if session(&req, &state).is_some() {
        return see_other("/console");
    }
    render(StatusCode::OK, "login.html", minijinja::context! {})
}

async fn login(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let fields = form_fields(&body);
    let token = field(&fields, "token").unwrap_or_default().trim();
    if !super::same_origin(&req) {
        return render(
            StatusCode::FORBIDDEN,
            "login.html",
            minijinja::context! { error => "Sign in from this console's own page." },
        );
    }
    match state.authenticator.sign_in(token, now(), LONGEST_SESSION) {
        Ok((value, caller)) => {
            tracing::info!(sub = %caller.sub, "signed in to the console");
            let mut response = see_other("/console");
            if let Err(error) = response.add_cookie(&session_cookie(&req, value)) {
                tracing::error!(error = %error, "setting the session cookie failed");
            }
            response
        }
        Err(error) => render(
            StatusCode::UNAUTHORIZED,
            "login.html",
            minijinja::context! { error => error.to_string() },
        ),
    }
}

async fn logout(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let fields = form_fields(&body);
    if let Err(refused) = checked_post(&req, &state, &fields) {
        return *refused;
    }
    let mut response = to_login();
    let mut gone = session_cookie(&req, String::new());
    gone.make_removal();
    if let Err(error) = response.add_cookie(&gone) {
        tracing::error!(error = %error, "clearing the session cookie failed");
    }
    response
}

// --- messages ------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    recipient: Option<String>,
    /// `datetime-local` (UTC).
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    before: Option<String>,
    /// What an action before this page did: a code, never text (see [`notice_text`]).
    #[serde(default, skip_serializing)]
    notice: Option<String>,
    #[serde(default, skip_serializing)]
    count: Option<String>,
    #[serde(default, skip_serializing)]
    skipped: Option<String>,
}

/// A `datetime-local` value (`2026-12-06T07:30`, taken as UTC) or RFC 3339.
fn local_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let with_seconds = if text.len() == 16 {
            format!("{text}:00Z")
        } else {
            format!("{text}Z")
        };
        OffsetDateTime::parse(&with_seconds, &Rfc3339).ok()
    })
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

#[derive(Serialize)]
struct Row {
    id: String,
    created_at: String,
    status: &'static str,
    to: String,
    subject: String,
    tags: String,
}

async fn messages(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let query = query.into_inner();
    let status = non_empty(&query.status).and_then(|status| status.parse::<MessageStatus>().ok());
    let filter = MessageFilter {
        status,
        tag: non_empty(&query.tag).filter(|tag| !tag.contains('\0')),
        recipient: non_empty(&query.recipient).filter(|address| !address.contains('\0')),
        created_after: query.since.as_deref().and_then(local_time),
        created_before: query.until.as_deref().and_then(local_time),
        after: query
            .before
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok()),
        limit: PAGE_SIZE,
    };
    let listed = match state.store.list_messages(session.owner(), &filter).await {
        Ok(page) => page,
        Err(error) => return unavailable(&state, &session, &error),
    };
    let rows: Vec<Row> = listed
        .items
        .iter()
        .map(|message| Row {
            id: message.id.to_string(),
            created_at: time(message.created_at),
            status: message.status.as_str(),
            to: mailboxes(&message.envelope.to),
            subject: message.envelope.subject.clone(),
            tags: message.tags.join(", "),
        })
        .collect();
    let next = listed.next_cursor.map(|cursor| {
        let mut next = ListQuery {
            before: Some(cursor.to_string()),
            notice: None,
            ..query_clone(&query)
        };
        next.notice = None;
        format!(
            "/console?{}",
            serde_urlencoded::to_string(&next).unwrap_or_default()
        )
    });
    let statuses: Vec<&str> = MessageStatus::ALL
        .iter()
        .map(|status| status.as_str())
        .collect();
    page(
        &state,
        &session,
        StatusCode::OK,
        "messages.html",
        "messages",
        minijinja::context! {
            messages => super::value(&rows),
            statuses => statuses,
            filter => super::value(&query),
            next => next,
            notice => notice_text(query.notice.as_deref(), query.count.as_deref(), query.skipped.as_deref()),
        },
    )
}

fn query_clone(query: &ListQuery) -> ListQuery {
    ListQuery {
        status: query.status.clone(),
        tag: query.tag.clone(),
        recipient: query.recipient.clone(),
        since: query.since.clone(),
        until: query.until.clone(),
        before: query.before.clone(),
        notice: None,
        count: None,
        skipped: None,
    }
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

#[derive(Deserialize)]
struct MessageQuery {
    #[serde(default)]
    images: Option<String>,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    status: Option<String>,
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

async fn message(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<MessageQuery>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let Ok(id) = Uuid::parse_str(&path) else {
        return error_page(&state, &session, StatusCode::NOT_FOUND, "No such message.");
    };
    let record = match state.store.get_message(session.owner(), id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return error_page(&state, &session, StatusCode::NOT_FOUND, "No such message.");
        }
        Err(error) => return unavailable(&state, &session, &error),
    };
    let summary = &record.summary;
    let envelope = &summary.envelope;
    let view = minijinja::context! {
        id => summary.id.to_string(),
        status => summary.status.as_str(),
        subject => envelope.subject.clone(),
        from => mailboxes(std::slice::from_ref(&envelope.from)),
        to => mailboxes(&envelope.to),
        cc => mailboxes(&envelope.cc),
        bcc => mailboxes(&envelope.bcc),
        reply_to => mailboxes(&envelope.reply_to),
        message_id => summary.message_id.clone(),
        created_at => time(summary.created_at),
        next_attempt_at => summary.next_attempt_at.map(time),
        last_error => summary.last_error.clone(),
        source => summary.source.as_str(),
        stream => summary.stream.as_str(),
        tags => summary.tags.join(", "),
    };
    page(
        &state,
        &session,
        StatusCode::OK,
        "message.html",
        "messages",
        minijinja::context! {
            m => view,
            attempts => super::value(&record.attempts),
            events => super::value(&record.events),
            may_change => session.caller.has(Scope::Send),
            images => query.images.is_some(),
            notice => notice_text(query.notice.as_deref(), query.status.as_deref(), None),
        },
    )
}

/// The message's HTML (or text) alone, for the sandboxed frame: no script, no form, nothing remote
/// unless `?images=1`, and only this console may frame it.
async fn preview(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<MessageQuery>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return HttpResponse::Unauthorized().finish();
    };
    let Ok(id) = Uuid::parse_str(&path) else {
        return HttpResponse::NotFound().finish();
    };
    let body = match state.store.message_body(session.owner(), id).await {
        Ok(Some(body)) => body,
        Ok(None) => return HttpResponse::NotFound().finish(),
        Err(error) => {
            tracing::warn!(error = %error, "a message preview could not read the database");
            return HttpResponse::ServiceUnavailable().finish();
        }
    };
    let html = match (&body.html, &body.text) {
        (Some(html), _) => html.clone(),
        (None, Some(text)) => format!(
            "<!doctype html><meta charset=\"utf-8\"><pre style=\"white-space: pre-wrap\">{}</pre>",
            crate::forms::escape(text)
        ),
        (None, None) => {
            "<!doctype html><meta charset=\"utf-8\"><p>No body to show: the message was \
                         sent as the caller wrote it, or its body was dropped by retention.</p>"
                .to_owned()
        }
    };
    let images = if query.images.is_some() {
        "img-src * data:"
    } else {
        "img-src data:"
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'unsafe-inline'; {images}; font-src data:; \
                 form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox"
            ),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

/// The session and message of an action on one message (cancel, retry): a checked POST, from a session
/// that may change messages (`send`: its own; `admin`: all), about a message id.
fn message_action(
    req: &HttpRequest,
    state: &AppState,
    path: &str,
    body: &web::Bytes,
) -> Result<(Session, Uuid), Box<HttpResponse>> {
    let session = checked_post(req, state, &form_fields(body))?;
    if !session.caller.has(Scope::Send) {
        return Err(Box::new(error_page(
            state,
            &session,
            StatusCode::FORBIDDEN,
            "This session may look, not change: sign in with a token that holds `send` (its own messages) or `admin`.",
        )));
    }
    let Ok(id) = Uuid::parse_str(path) else {
        return Err(Box::new(error_page(
            state,
            &session,
            StatusCode::NOT_FOUND,
            "No such message.",
        )));
    };
    Ok((session, id))
}

async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (session, id) = match message_action(&req, &state, &path, &body) {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let notice = match state.store.cancel_message(session.owner(), id).await {
        Ok(crate::store::CancelOutcome::Cancelled) => "notice=cancelled".to_owned(),
        Ok(crate::store::CancelOutcome::NotFound) => {
            return error_page(&state, &session, StatusCode::NOT_FOUND, "No such message.");
        }
        Ok(crate::store::CancelOutcome::TooLate(status)) => {
            format!("notice=too-late&status={}", status.as_str())
        }
        Err(error) => return unavailable(&state, &session, &error),
    };
    tracing::info!(sub = %session.caller.sub, %id, "cancel from the console");
    see_other(&format!("/console/messages/{id}?{notice}"))
}

async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (session, id) = match message_action(&req, &state, &path, &body) {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let filter = RequeueFilter {
        id: Some(id),
        owner: session.owner().map(str::to_owned),
        ..RequeueFilter::default()
    };
    let notice = match state.store.requeue_failed(&filter, false).await {
        Ok(requeued) if requeued.requeued > 0 => {
            state.metrics.messages_requeued.inc_by(requeued.requeued);
            "requeued"
        }
        Ok(_) => "not-failed",
        Err(error) => return unavailable(&state, &session, &error),
    };
    see_other(&format!("/console/messages/{id}?notice={notice}"))
}

async fn redrive(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let fields = form_fields(&body);
    let session = match checked_post(&req, &state, &fields) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "Redriving every caller's failed messages takes an `admin` session.",
        );
    }
    let tag = field(&fields, "tag")
        .map(str::trim)
        .filter(|tag| !tag.is_empty() && !tag.contains('\0'))
        .map(str::to_owned);
    let filter = RequeueFilter {
        tag: tag.clone(),
        ..RequeueFilter::default()
    };
    match state.store.requeue_failed(&filter, false).await {
        Ok(requeued) => {
            state.metrics.messages_requeued.inc_by(requeued.requeued);
            tracing::info!(sub = %session.caller.sub, requeued = requeued.requeued, "redrive from the console");
            let mut query = vec![
                ("notice", "redriven".to_owned()),
                ("count", requeued.requeued.to_string()),
                ("skipped", requeued.skipped.to_string()),
            ];
            if let Some(tag) = tag {
                query.push(("tag", tag));
            }
            see_other(&format!(
                "/console?{}",
                serde_urlencoded::to_string(query).unwrap_or_default()
            ))
        }
        Err(error) => unavailable(&state, &session, &error),
    }
}

// --- suppressions, webhooks, providers, queue ----------------------------------------------------

#[derive(Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

async fn suppressions(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<NoticeQuery>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let filter = SuppressionFilter {
        limit: 200,
        ..SuppressionFilter::default()
    };
    match state.store.suppressions(&filter).await {
        Ok(listed) => page(
            &state,
            &session,
            StatusCode::OK,
            "suppressions.html",
            "suppressions",
            minijinja::context! {
                suppressions => super::value(&listed.items),
                notice => notice_text(query.notice.as_deref(), None, None),
            },
        ),
        Err(error) => unavailable(&state, &session, &error),
    }
}

async fn remove_suppression(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let fields = form_fields(&body);
    let session = match checked_post(&req, &state, &fields) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "Changing the suppression list takes an `admin` session.",
        );
    }
    let address = field(&fields, "address").unwrap_or_default();
    match state.store.remove_suppression(address).await {
        Ok(removed) => {
            let notice = if removed { "removed" } else { "absent" };
            see_other(&format!("/console/suppressions?notice={notice}"))
        }
        Err(error) => unavailable(&state, &session, &error),
    }
}

async fn webhooks(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "Webhooks take an `admin` session.",
        );
    }
    let endpoints = match state.store.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(error) => return unavailable(&state, &session, &error),
    };
    #[derive(Serialize)]
    struct EndpointView {
        endpoint: crate::store::EndpointRecord,
        deliveries: Vec<crate::store::DeliveryRecord>,
    }
    let mut views = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let deliveries = match state.store.deliveries(endpoint.id, None, 20).await {
            Ok(deliveries) => deliveries,
            Err(error) => return unavailable(&state, &session, &error),
        };
        views.push(EndpointView {
            endpoint,
            deliveries,
        });
    }
    page(
        &state,
        &session,
        StatusCode::OK,
        "webhooks.html",
        "webhooks",
        minijinja::context! { endpoints => super::value(&views) },
    )
}

async fn providers(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "Providers take an `admin` session.",
        );
    }
    let views = crate::api::providers::views(&state);
    page(
        &state,
        &session,
        StatusCode::OK,
        "providers.html",
        "providers",
        minijinja::context! { providers => super::value(&views) },
    )
}

#[derive(Serialize)]
struct Line {
    name: &'static str,
    points: String,
}

#[derive(Serialize)]
pub(super) struct Chart {
    width: u32,
    height: u32,
    samples: usize,
    max: i64,
    lines: Vec<Line>,
}

/// The samples as one polyline per state, scaled to the chart (the newest at the right edge, an
/// hour wide).
pub(super) fn chart(samples: &[crate::queue_history::Sample]) -> Chart {
    const WIDTH: u32 = 720;
    const HEIGHT: u32 = 200;
    let max = samples
        .iter()
        .flat_map(|sample| sample.depth.iter().map(|(_, count)| *count))
        .max()
        .unwrap_or(0)
        .max(1);
    let newest = samples.last().map(|sample| sample.at);
    let lines = ["queued", "scheduled", "sending"]
        .into_iter()
        .map(|name| {
            let points = samples
                .iter()
                .filter_map(|sample| {
                    let age = (newest? - sample.at).as_seconds_f64();
                    let x = f64::from(WIDTH) * (1.0 - age / 3600.0);
                    let count = sample
                        .depth
                        .iter()
                        .find(|(state, _)| *state == name)
                        .map_or(0, |(_, count)| *count);
                    let y = f64::from(HEIGHT) * (1.0 - count as f64 / max as f64);
                    Some(format!("{x:.1},{y:.1}"))
                })
                .collect::<Vec<_>>()
                .join(" ");
            Line { name, points }
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        samples: samples.len(),
        max,
        lines,
    }
}

async fn queue(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    let now = match state.store.queue_depth().await {
        Ok(depth) => depth,
        Err(error) => return unavailable(&state, &session, &error),
    };
    // The current depth is the chart's last point even before the first sample.
    let mut samples = state.queue_history.samples();
    samples.push(crate::queue_history::Sample {
        at: OffsetDateTime::now_utc(),
        depth: now.clone(),
    });
    page(
        &state,
        &session,
        StatusCode::OK,
        "queue.html",
        "queue",
        minijinja::context! {
            now => super::value(&now),
            chart => super::value(chart(&samples)),
        },
    )
}

// --- the development outbox -----------------------------------------------------------------------

#[derive(Serialize)]
struct OutboxRow {
    id: String,
    written: String,
    from: String,
    to: String,
    subject: String,
}

fn outbox_dir(state: &AppState) -> Option<std::path::PathBuf> {
    match &state.transport {
        Some(crate::delivery::Transport::Outbox(outbox)) => Some(outbox.dir().to_path_buf()),
        _ => None,
    }
}

/// The headers a listing shows, read from a written message.
fn outbox_headers(raw: &[u8]) -> (String, String, String, Option<String>) {
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let address = |value: Option<&mail_parser::Address<'_>>| {
        value
            .map(|address| {
                address
                    .iter()
                    .filter_map(|addr| addr.address())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match parsed {
        Some(message) => (
            address(message.from()),
            address(message.to()),
            message.subject().unwrap_or_default().to_owned(),
            message.body_text(0).map(|text| text.into_owned()),
        ),
        None => Default::default(),
    }
}

async fn outbox(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "The outbox holds every caller's messages: it takes an `admin` session.",
        );
    }
    let Some(dir) = outbox_dir(&state) else {
        return error_page(
            &state,
            &session,
            StatusCode::NOT_FOUND,
            "There is no outbox: messages go to SMTP providers.",
        );
    };
    let mut entries: Vec<(std::time::SystemTime, String)> = Vec::new();
    if let Ok(mut read) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(entry)) = read.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".eml") else {
                continue;
            };
            if Uuid::parse_str(id).is_err() {
                continue;
            }
            let modified = entry
                .metadata()
                .await
                .and_then(|metadata| metadata.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            entries.push((modified, id.to_owned()));
        }
    }
    entries.sort_by(|a, b| b.cmp(a));
    entries.truncate(100);
    let mut rows = Vec::with_capacity(entries.len());
    for (modified, id) in entries {
        let raw = tokio::fs::read(dir.join(format!("{id}.eml")))
            .await
            .unwrap_or_default();
        let (from, to, subject, _) = outbox_headers(&raw);
        rows.push(OutboxRow {
            written: time(OffsetDateTime::from(modified)),
            id,
            from,
            to,
            subject,
        });
    }
    page(
        &state,
        &session,
        StatusCode::OK,
        "outbox.html",
        "outbox",
        minijinja::context! { messages => super::value(&rows), dir => dir.display().to_string() },
    )
}

async fn outbox_message(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let Some(session) = session(&req, &state) else {
        return to_login();
    };
    if !session.caller.is_admin() {
        return error_page(
            &state,
            &session,
            StatusCode::FORBIDDEN,
            "The outbox holds every caller's messages: it takes an `admin` session.",
        );
    }
    let (Some(dir), Ok(id)) = (outbox_dir(&state), Uuid::parse_str(&path)) else {
        return error_page(
            &state,
            &session,
            StatusCode::NOT_FOUND,
            "No such message in the outbox.",
        );
    };
    let Ok(raw) = tokio::fs::read(dir.join(format!("{id}.eml"))).await else {
        return error_page(
            &state,
            &session,
            StatusCode::NOT_FOUND,
            "No such message in the outbox.",
        );
    };
    let (from, to, subject, text) = outbox_headers(&raw);
    page(
        &state,
        &session,
        StatusCode::OK,
        "outbox_message.html",
        "outbox",
        minijinja::context! {
            from => from, to => to, subject => subject, text => text,
            source => String::from_utf8_lossy(&raw).into_owned(),
        },
    )
}
