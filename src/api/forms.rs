//! `POST /v1/forms/{id}`: a public contact form, posted from a visitor's browser without a token.
//!
//! What stands in for a token: the page's origin must be one the form allows (`Origin`, or `Referer`
//! when a browser sends no `Origin`), each visitor address has a budget of posts, a honeypot field and
//! an optional captcha catch bots, and nothing in a post chooses a recipient or the sender. A plain HTML
//! form post is answered as a browser expects (`303` to the form's page of thanks, or a short HTML page
//! saying what went wrong, with the same status); a script asking for JSON gets `{"ok": true}` or a
//! problem document.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;

use super::body::{Media, essence, read_body};
use super::{ApiError, AppState};
use crate::accept::Submission;
use crate::domain::{Attachment, DomainError};
use crate::forms::{CaptchaError, Form, FormError, Post, escape};
use crate::rate_limit::Limited;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The largest post without files (fields only): 50 fields of 20,000 characters fit, far more does
/// not. A multipart post may be as large as the listener allows, for its files.
const MAX_FIELDS_BODY: usize = 1024 * 1024;

/// `OPTIONS /v1/forms/{id}`: CORS preflight, answered for the form's allowed origins only.
pub async fn preflight(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let Some(form) = state.forms.get(id.as_str()) else {
        return ApiError::NotFound.error_response();
    };
    let Some(origin) = header_str(req.headers(), header::ORIGIN) else {
        return ApiError::OriginNotAllowed.error_response();
    };
    if !form.allows_origin(origin) {
        return ApiError::OriginNotAllowed.error_response();
    }
    let mut response = HttpResponse::NoContent();
    allow_origin(&mut response, origin);
    response
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type, Accept"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE));
    response.finish()
}

/// How the poster wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A plain HTML form post: a redirect, or a short HTML page.
    Browser,
    /// A script: JSON, or a problem document.
    Json,
}

/// `POST /v1/forms/{id}`.
pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let answer = answer_of(&req);
    let origin = header_str(req.headers(), header::ORIGIN).map(str::to_owned);
    let Some(form) = state.forms.get(id.as_str()) else {
        return refuse(answer, None, ApiError::NotFound);
    };
    // Only an allowed origin is told anything beyond the refusal itself.
    let allowed = origin
        .as_deref()
        .filter(|origin| form.allows_origin(origin));
    let outcome = submit(&state, &req, form, payload, answer).await;
    let label = match &outcome {
        Ok(Posted::Accepted) => "accepted",
        Ok(Posted::Trapped) => "trapped",
        Err(ApiError::OriginNotAllowed) => "origin_refused",
        Err(ApiError::RateLimited(_)) => "rate_limited",
        Err(ApiError::CaptchaFailed(_)) => "captcha_failed",
        Err(_) => "refused",
    };
    state
        .metrics
        .form_posts
        .with_label_values(&[form.id.as_str(), label])
        .inc();
    match outcome {
        Ok(_) => succeed(answer, allowed, form),
        Err(error) => refuse(answer, allowed, error),
    }
}

/// What became of an accepted post.
enum Posted {
    /// Committed to the queue.
    Accepted,
    /// The honeypot was filled: answered as a success, and dropped.
    Trapped,
}

async fn submit(
    state: &AppState,
    req: &HttpRequest,
    form: &Form,
    payload: web::Payload,
    answer: Answer,
) -> Result<Posted, ApiError> {
    // The page posting must be of an allowed origin; a post that names none is refused.
    if !super::origin::page_origin(req.headers()).is_some_and(|origin| form.allows_origin(&origin))
    {
        return Err(ApiError::OriginNotAllowed);
    }
    let visitor = visitor_address(req, &state.http.trusted_proxies);
    if let Some(limit) = form.rate_limit_per_ip {
        // A visitor whose address cannot be told (no peer address) shares one budget with the others.
        let key = format!(
            "{}:{}",
            form.caller(),
            visitor.map_or_else(|| "unknown".to_owned(), budget_key)
        );
        // One post per interval, bursts up to the limit's count.
        let taken = state
            .store
            .take_slot(&key, limit.interval(), limit.per)
            .await?;
        if let Err(wait) = taken {
            return Err(ApiError::RateLimited(Limited {
                limit: limit.count,
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }));
        }
    }
    let limit = if essence(req) == "multipart/form-data" {
        state.http.max_body_size
    } else {
        MAX_FIELDS_BODY.min(state.http.max_body_size)
    };
    let body = read_body(req, payload, Media::Form, limit, state.http.body_timeout).await?;
    let post = read_post(req, body, state.acceptor.limits()).await?;
    if form.is_trapped(&post) {
        tracing::info!(form = %form.id, "a form post filled the honeypot; dropped");
        return Ok(Posted::Trapped);
    }
    if let Some(captcha) = &form.captcha {
        let token = post
            .fields
            .iter()
            .find(|(name, _)| name == captcha.provider.field())
            .map(|(_, value)| value.as_str());
        captcha
            .verify(&state.captcha_client, token, visitor)
            .await
            .map_err(|error| match error {
                CaptchaError::Unavailable => ApiError::CaptchaUnavailable(error.to_string()),
                CaptchaError::Missing | CaptchaError::Failed => {
                    ApiError::CaptchaFailed(error.to_string())
                }
            })?;
    }
    let message = form.message(post).map_err(|error| match error {
        FormError::Message(error) => ApiError::Validation(error),
        other => ApiError::InvalidForm(other.to_string()),
    })?;
    let caller = state
        .authenticator
        .form_caller(form.caller())
        .map_err(|_| ApiError::FormDisabled)?;
    let receipt = state
        .acceptor
        .accept(
            &caller,
            Submission {
                message,
                idempotency: None,
            },
        )
        .await?;
    tracing::info!(form = %form.id, id = %receipt.id, json = answer == Answer::Json, "form post accepted");
    Ok(Posted::Accepted)
}

/// JSON when the poster asks for it (`Accept`) or posted JSON; a browser's plain form post otherwise.
fn answer_of(req: &HttpRequest) -> Answer {
    let accepts_json = header_str(req.headers(), header::ACCEPT).is_some_and(|accept| {
        accept.split(',').any(|kind| {
            let kind = kind.split(';').next().unwrap_or("").trim();
            kind.eq_ignore_ascii_case("application/json")
                || kind.eq_ignore_ascii_case("application/problem+json")
        })
    });
    let posted_json = essence(req).ends_with("json");
    if accepts_json || posted_json {
        Answer::Json
    } else {
        Answer::Browser
    }
}

/// The visitor's address: the peer's, or, when the peer is a trusted proxy, the nearest address in
/// `X-Forwarded-For` that is not a trusted proxy (those to its left could have been written by anyone).
/// An entry that does not read as an address (`unknown`, or one a proxy wrote in a form not read here)
/// ends the walk: the last trusted hop stands for the visitor then, rather than anything further left.
fn visitor_address(req: &HttpRequest, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = forwarded_ip(entry) else {
            break;
        };
        nearest = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(nearest)
}

/// An `X-Forwarded-For` entry as an address: `203.0.113.9`, `2001:db8::1`, `203.0.113.9:4711` or
/// `[2001:db8::1]:4711`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let ip = entry.parse::<IpAddr>().ok().or_else(|| {
        entry
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|socket| socket.ip())
    })?;
    Some(ip.to_canonical())
}

/// What a visitor's budget is keyed by: an IPv4 address, or an IPv6 address's /64 (one subscriber
/// typically holds a whole /64, and would otherwise have a fresh budget per address).
fn budget_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            format!(
                "{:x}:{:x}:{:x}:{:x}::/64",
                segments[0], segments[1], segments[2], segments[3]
            )
        }
    }
}

/// Reads a post's fields (and files) from its body: url-encoded, multipart or a JSON object.
async fn read_post(
    req: &HttpRequest,
    body: Bytes,
    limits: &crate::domain::Limits,
) -> Result<Post, ApiError> {
    let essence = essence(req);
    let invalid = |detail: String| ApiError::InvalidForm(detail);
    match essence.as_str() {
        "application/x-www-form-urlencoded" => {
            // Counted as they are read: a body of a million empty fields stops at the limit.
            let fields: Vec<(String, String)> = form_urlencoded::parse(&body)
                .take(crate::forms::MAX_FIELDS + 1)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
            Ok(Post {
                fields,
                files: Vec::new(),
            })
        }
        "multipart/form-data" => read_multipart(req.headers(), body, limits).await,
        _ => {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
                .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
            if object.len() > crate::forms::MAX_FIELDS {
                return Err(invalid(format!(
                    "the form has more than {} fields",
                    crate::forms::MAX_FIELDS
                )));
            }
            let fields = object
                .into_iter()
                .map(|(name, value)| {
                    let value = match value {
                        serde_json::Value::String(text) => text,
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                            value.to_string()
                        }
                        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                            return Err(invalid(format!(
                                "the field `{name}` must be a string, a number or a boolean"
                            )));
                        }
                    };
                    Ok((name, value))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Post {
                fields,
                files: Vec::new(),
            })
        }
    }
}

async fn read_multipart(
    headers: &HeaderMap,
    body: Bytes,
    limits: &crate::domain::Limits,
) -> Result<Post, ApiError> {
    let invalid = |detail: String| ApiError::InvalidForm(detail);
    let stream =
        futures_util::stream::once(async move { Ok::<_, actix_web::error::PayloadError>(body) });
    let mut multipart = actix_multipart::Multipart::new(headers, stream);
    let mut post = Post::default();
    while let Some(part) = multipart.next().await {
        if post.fields.len() > crate::forms::MAX_FIELDS {
            return Err(invalid(format!(
                "the form has more than {} fields",
                crate::forms::MAX_FIELDS
            )));
        }
        let mut part =
            part.map_err(|error| invalid(format!("the multipart body does not parse: {error}")))?;
        let disposition = part.content_disposition().cloned();
        let name = disposition
            .as_ref()
            .and_then(|d| d.get_name())
            .unwrap_or_default()
            .to_owned();
        let filename = disposition
            .as_ref()
            .and_then(|d| d.get_filename())
            .map(str::to_owned);
        let content_type = part
            .content_type()
            .map(|mime| mime.essence_str().to_owned());
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk
                .map_err(|error| invalid(format!("the multipart body does not parse: {error}")))?;
            bytes.extend_from_slice(&chunk);
        }
        match filename {
            // A file input left empty posts a part with an empty name and no bytes.
            Some(filename) if filename.is_empty() && bytes.is_empty() => {}
            Some(filename) => {
                if post.files.len() >= limits.max_attachments {
                    return Err(ApiError::Validation(DomainError::TooManyAttachments {
                        max: limits.max_attachments,
                    }));
                }
                if bytes.len() > limits.max_attachment_size {
                    return Err(ApiError::Validation(DomainError::Attachment {
                        field: format!("files[{}]", post.files.len()),
                        source: crate::domain::AttachmentError::TooLarge {
                            max: limits.max_attachment_size,
                        },
                    }));
                }
                let encoded = STANDARD.encode(&bytes);
                // A media type the browser made up that posthorn would refuse becomes the default.
                let content_type =
                    content_type.filter(|value| Attachment::accepts_media_type(value));
                let attachment = Attachment::parse(
                    &filename,
                    encoded,
                    content_type.as_deref(),
                    limits.max_attachment_size,
                )
                .map_err(|source| {
                    ApiError::Validation(DomainError::Attachment {
                        field: format!("files[{}]", post.files.len()),
                        source,
                    })
                })?;
                post.files.push(attachment);
            }
            None => {
                let value = String::from_utf8(bytes)
                    .map_err(|_| invalid(format!("the field `{name}` is not UTF-8 text")))?;
                post.fields.push((name, value));
            }
        }
    }
    Ok(post)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn allow_origin(response: &mut actix_web::HttpResponseBuilder, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        response.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
    }
    response.insert_header((header::VARY, "Origin"));
}

fn succeed(answer: Answer, origin: Option<&str>, form: &Form) -> HttpResponse {
    match (answer, &form.redirect) {
        (Answer::Json, _) => {
            let mut response = HttpResponse::Ok();
            if let Some(origin) = origin {
                allow_origin(&mut response, origin);
            }
            response.json(serde_json::json!({"ok": true}))
        }
        (Answer::Browser, Some(redirect)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, redirect.as_str()))
            .finish(),
        (Answer::Browser, None) => page(StatusCode::OK, "Thank you", "Your message was sent."),
    }
}

fn refuse(answer: Answer, origin: Option<&str>, error: ApiError) -> HttpResponse {
    match answer {
        Answer::Json => {
            let mut response = error.error_response();
            if let Some(origin) = origin {
                if let Ok(value) = HeaderValue::from_str(origin) {
                    response
                        .headers_mut()
                        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                }
                response
                    .headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            response
        }
        Answer::Browser => {
            // The problem answer carries the headers that matter (Retry-After), and is logged.
            let problem = error.error_response();
            let mut response = page(
                problem.status(),
                "Your message was not sent",
                &error.to_string(),
            );
            if let Some(retry) = problem.headers().get(header::RETRY_AFTER) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry.clone());
            }
            response
        }
    }
}

/// A short HTML page, for a visitor who posted a plain HTML form.
fn page(status: StatusCode, title: &str, text: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p>\
         </body></html>\n",
        title = escape(title),
        text = escape(text),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .body(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn visitor(peer: &str, forwarded: Option<&str>, trusted: &str) -> Option<IpAddr> {
        let mut request = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(forwarded) = forwarded {
            request = request.insert_header(("X-Forwarded-For", forwarded));
        }
        let trusted: Vec<ipnet::IpNet> = trusted
            .split(',')
            .filter(|net| !net.is_empty())
            .map(|net| net.trim().parse().unwrap())
            .collect();
        visitor_address(&request.to_http_request(), &trusted)
    }

    #[test]
    fn the_visitor_is_the_nearest_untrusted_address_and_an_unreadable_entry_ends_the_walk() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        // Not behind a trusted proxy: the header is ignored.
        assert_eq!(
            visitor("198.51.100.7:1", Some("203.0.113.1"), ""),
            ip("198.51.100.7")
        );
        // Behind one: the nearest untrusted entry, whatever the client wrote to its left.
        assert_eq!(
            visitor(
                "10.0.0.2:1",
                Some("1.2.3.4, 203.0.113.9, 10.0.0.1"),
                "10.0.0.0/8"
            ),
            ip("203.0.113.9")
        );
        // A proxy that writes ports, and IPv4-mapped IPv6 peers.
        assert_eq!(
            visitor(
                "[::ffff:10.0.0.2]:1",
                Some("203.0.113.9:4711"),
                "10.0.0.0/8"
            ),
            ip("203.0.113.9")
        );
        // `unknown` where the client's address should be: the last trusted hop, not the forged
        // entry to its left.
        assert_eq!(
            visitor(
                "10.0.0.2:1",
                Some("6.6.6.6, unknown, 10.0.0.1"),
                "10.0.0.0/8"
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_visitors_share_a_budget_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(budget_key(a), budget_key(b));
        assert_ne!(budget_key(a), budget_key(other));
        assert_eq!(budget_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
    }
}
