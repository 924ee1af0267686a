//! Signing in with a token, and out.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::*;

pub(super) async fn page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if session(&req, &state).is_some() {
        return see_other("/console");
    }
    render(StatusCode::OK, "login.html", minijinja::context! {})
}

pub(super) async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
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

pub(super) async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
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
