//! The origin of the page a browser request comes from: its `Origin` header, or, when the browser sent
//! none (some do not on a same-origin form post), the origin of its `Referer`.

use actix_web::http::header::{self, HeaderMap};

/// `scheme://host[:port]` of the page the request says it comes from; `None` without either header
/// (or with a `Referer` that is not an http(s) URL).
pub(super) fn page_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().ok().map(str::to_owned);
    }
    headers
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok())
        .and_then(|referer| url::Url::parse(referer).ok())
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .map(|url| url.origin().ascii_serialization())
}
