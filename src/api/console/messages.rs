//! Messages: the list with its filters, one message with its attempts, events and preview, and
//! the actions on messages (cancel, retry, redrive).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::*;
use actix_web::http::header;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::domain::{Mailbox, MessageStatus};
use crate::store::{MessageFilter, RequeueFilter};

/// Messages on one page of the list.
const PAGE_SIZE: u32 = 50;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(super) struct ListQuery {
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

pub(super) async fn list(
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
        // The notice's fields are not serialized: the next page carries only the filter.
        let next = ListQuery {
            before: Some(cursor.to_string()),
            ..query.clone()
        };
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

#[derive(Deserialize)]
pub(super) struct MessageQuery {
    #[serde(default)]
    images: Option<String>,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

pub(super) async fn show(
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
pub(super) async fn preview(
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
            minijinja::HtmlEscape(text)
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
    let session = actor(
        req,
        state,
        &form_fields(body),
        Scope::Send,
        "This session may look, not change: sign in with a token that holds `send` (its own messages) or `admin`.",
    )?;
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

pub(super) async fn cancel(
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

pub(super) async fn retry(
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
    let notice = match state.requeue_failed(&filter, false).await {
        Ok(requeued) if requeued.requeued > 0 => "requeued",
        Ok(_) => "not-failed",
        Err(error) => return unavailable(&state, &session, &error),
    };
    see_other(&format!("/console/messages/{id}?notice={notice}"))
}

pub(super) async fn redrive(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let fields = form_fields(&body);
    let session = match actor(
        &req,
        &state,
        &fields,
        Scope::Admin,
        "Redriving every caller's failed messages takes an `admin` session.",
    ) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    let tag = field(&fields, "tag")
        .map(str::trim)
        .filter(|tag| !tag.is_empty() && !tag.contains('\0'))
        .map(str::to_owned);
    let filter = RequeueFilter {
        tag: tag.clone(),
        ..RequeueFilter::default()
    };
    match state.requeue_failed(&filter, false).await {
        Ok(requeued) => {
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

fn mailboxes(list: &[Mailbox]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
