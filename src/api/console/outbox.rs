//! The development profile's outbox, browsable like a local mail catcher.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::*;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

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

/// Why a session without `admin` cannot see the outbox.
const ADMIN_ONLY: &str = "The outbox holds every caller's messages: it takes an `admin` session.";

pub(super) async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let session = match viewer(&req, &state, Scope::Admin, ADMIN_ONLY) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
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

pub(super) async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let session = match viewer(&req, &state, Scope::Admin, ADMIN_ONLY) {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
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
