//! The console at `/console`, driven over HTTP as a browser would: sign in with a token once, then a
//! signed session cookie; every action a POST with the session's CSRF token; a strict CSP; nothing of
//! the token in any page.

use std::time::Duration;

use posthorn::auth::Scope;
use reqwest::{Response, header};
use serde_json::json;

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, spawn_app, spawn_app_with, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(15);

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser: its session cookie.
struct Signed {
    cookie: String,
}

async fn sign_in(app: &TestApp, token: &str) -> Response {
    browser()
        .post(format!("{}/console/login", app.address))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn signed_in(app: &TestApp, scopes: &[Scope], sub: &str) -> Signed {
    let token = app.token(sub, scopes);
    let response = sign_in(app, &token).await;
    assert_eq!(response.status(), 303, "signed in");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    Signed { cookie }
}

impl Signed {
    async fn get(&self, app: &TestApp, path: &str) -> Response {
        browser()
            .get(format!("{}{path}", app.address))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, app: &TestApp, path: &str) -> String {
        let response = self.get(app, path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.unwrap()
    }

    async fn post(&self, app: &TestApp, path: &str, form: &[(&str, &str)]) -> Response {
        browser()
            .post(format!("{}{path}", app.address))
            .header(header::COOKIE, &self.cookie)
            .header(header::ORIGIN, &app.address)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}

fn csrf(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_sets_a_strict_session_cookie_and_the_pages_never_show_the_token() {
    let app = spawn_app().await;
    let id = app.accept(&valid_message()).await;
    let unsigned = browser()
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 303);
    assert_eq!(unsigned.headers()[header::LOCATION], "/console/login");

    let token = app.token("tester", &[Scope::Read]);
    let response = sign_in(&app, &token).await;
    assert_eq!(response.status(), 303);
    let set_cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP on loopback: {set_cookie}"
    );
    assert!(!set_cookie.contains(&token), "the cookie is not the token");
    let session = Signed {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
    };
    let list = session.get(&app, "/console").await;
    let policy = list.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script-src"),
        "{policy}"
    );
    assert_eq!(list.headers()["x-content-type-options"], "nosniff");
    let html = list.text().await.unwrap();
    assert!(html.contains("Your order") && html.contains(&id), "{html}");
    assert!(!html.contains(&token));
    let detail = session.page(&app, &format!("/console/messages/{id}")).await;
    assert!(detail.contains("customer@example.org") && !detail.contains(&token));
    assert!(detail.contains("<iframe") && detail.contains("sandbox"));

    // Behind TLS (as a proxy says), the cookie is Secure.
    let proxied = browser()
        .post(format!("{}/console/login", app.address))
        .header("X-Forwarded-Proto", "https")
        .header(header::HOST, "mail.example.com")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let set_cookie = proxied.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");

    let logout = session
        .post(&app, "/console/logout", &[("csrf", &csrf(&html))])
        .await;
    assert_eq!(logout.status(), 303);
    assert!(
        logout.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn sign_in_refuses_a_bad_token_a_send_only_token_and_a_forged_cookie() {
    let app = spawn_app().await;
    let bad = sign_in(&app, "not-a-token").await;
    assert_eq!(bad.status(), 401);
    assert!(bad.text().await.unwrap().contains("malformed token"));
    let sender = sign_in(&app, &app.token("tester", &[Scope::Send])).await;
    assert_eq!(sender.status(), 401);
    assert!(sender.text().await.unwrap().contains("read"));
    assert!(sender_cookie_absent(&app).await);
    let forged = browser()
        .get(format!("{}/console", app.address))
        .header(header::COOKIE, "posthorn_session=eyJzdWIiOiJ4In0.AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303, "back to the sign-in page");
}

async fn sender_cookie_absent(app: &TestApp) -> bool {
    let response = sign_in(app, &app.token("tester", &[Scope::Send])).await;
    response.headers().get(header::SET_COOKIE).is_none()
}

#[tokio::test]
async fn a_read_session_sees_but_cannot_cancel_and_an_admin_session_can() {
    let app = spawn_app().await;
    let mut later = valid_message();
    later["send_at"] = json!("2099-01-01T00:00:00Z");
    // Far beyond the schedule limit: queued for now instead.
    later.as_object_mut().unwrap().remove("send_at");
    let id = app.accept(&later).await;
    let reader = signed_in(&app, &[Scope::Read], "tester").await;
    let page = reader.page(&app, &format!("/console/messages/{id}")).await;
    assert!(
        !page.contains("/cancel"),
        "no cancel button for a read session"
    );
    let refused = reader
        .post(
            &app,
            &format!("/console/messages/{id}/cancel"),
            &[("csrf", &csrf(&page))],
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(app.message(&id).await["status"], "queued");

    let admin = signed_in(&app, &[Scope::Admin], "ops").await;
    let page = admin.page(&app, &format!("/console/messages/{id}")).await;
    assert!(page.contains(&format!("/console/messages/{id}/cancel")));
    // Without the session's CSRF token, or from another site, nothing happens.
    let no_token = admin
        .post(
            &app,
            &format!("/console/messages/{id}/cancel"),
            &[("csrf", "forged")],
        )
        .await;
    assert_eq!(no_token.status(), 403);
    let cross_site = browser()
        .post(format!("{}/console/messages/{id}/cancel", app.address))
        .header(header::COOKIE, &admin.cookie)
        .header(header::ORIGIN, "https://evil.example")
        .form(&[("csrf", csrf(&page).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert_eq!(app.message(&id).await["status"], "queued");
    // Another session's token does not fit this one.
    let other = reader.page(&app, "/console").await;
    let mismatched = admin
        .post(
            &app,
            &format!("/console/messages/{id}/cancel"),
            &[("csrf", &csrf(&other))],
        )
        .await;
    assert_eq!(mismatched.status(), 403);

    let cancelled = admin
        .post(
            &app,
            &format!("/console/messages/{id}/cancel"),
            &[("csrf", &csrf(&page))],
        )
        .await;
    assert_eq!(cancelled.status(), 303);
    let location = cancelled.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&format!("/console/messages/{id}")),
        "{location}"
    );
    assert_eq!(app.message(&id).await["status"], "cancelled");
    let after = admin.page(&app, &location).await;
    assert!(after.contains("was cancelled"), "{after}");
}

#[tokio::test]
async fn a_delivered_message_shows_its_attempts_and_a_sandboxed_preview_without_remote_images() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let mut message = valid_message();
    message["html"] =
        json!("<p>Hello <img src=\"https://tracker.example/p.gif\"></p><script>alert(1)</script>");
    let id = app.accept(&message).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let session = signed_in(&app, &[Scope::Read], "tester").await;
    let page = session.page(&app, &format!("/console/messages/{id}")).await;
    assert!(
        page.contains("250") && page.contains("sent"),
        "the attempt's reply: {page}"
    );
    let preview = session
        .get(&app, &format!("/console/messages/{id}/preview"))
        .await;
    assert_eq!(preview.status(), 200);
    let policy = preview.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("sandbox") && policy.contains("img-src data:"),
        "{policy}"
    );
    assert!(!policy.contains("script-src"), "{policy}");
    assert!(preview.text().await.unwrap().contains("Hello"));
    let with_images = session
        .get(&app, &format!("/console/messages/{id}/preview?images=1"))
        .await;
    assert!(
        with_images.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("img-src *")
    );
    // Another caller's session does not see it.
    let stranger = signed_in(&app, &[Scope::Read], "someone-else").await;
    assert_eq!(
        stranger
            .get(&app, &format!("/console/messages/{id}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        stranger
            .get(&app, &format!("/console/messages/{id}/preview"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn the_list_filters_by_recipient_status_and_tag_and_so_does_the_api() {
    let app = spawn_app().await;
    let mut first = valid_message();
    first["to"] = json!(["Alice@Example.org"]);
    first["tags"] = json!(["welcome"]);
    first["subject"] = json!("for alice");
    app.accept(&first).await;
    let mut second = valid_message();
    second["to"] = json!(["bob@example.org"]);
    second["subject"] = json!("for bob");
    app.accept(&second).await;
    let admin = app.token("ops", &[Scope::Admin]);
    let listed = app
        .get_json_as("/v1/messages?recipient=alice%40example.org", &admin)
        .await;
    let subjects: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["for alice"]);

    let session = signed_in(&app, &[Scope::Admin], "ops").await;
    let page = session
        .page(&app, "/console?recipient=bob%40example.org")
        .await;
    assert!(page.contains("for bob") && !page.contains("for alice"));
    let page = session
        .page(&app, "/console?tag=welcome&status=queued")
        .await;
    assert!(page.contains("for alice") && !page.contains("for bob"));
    let page = session.page(&app, "/console?status=failed").await;
    assert!(!page.contains("for alice") && page.contains("No messages match"));
}

#[tokio::test]
async fn the_queue_providers_webhooks_and_suppressions_pages_answer_by_scope() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let admin = app.token("ops", &[Scope::Admin]);
    let added = app
        .call(
            reqwest::Method::POST,
            "/v1/suppressions",
            &admin,
            Some(json!({"address": "gone@example.org"})),
        )
        .await;
    assert!(added.status().is_success());
    let session = signed_in(&app, &[Scope::Admin], "ops").await;
    let queue = session.page(&app, "/console/queue").await;
    assert!(
        queue.contains("<svg") && queue.contains("polyline"),
        "{queue}"
    );
    let providers = session.page(&app, "/console/providers").await;
    assert!(
        providers.contains("default") && providers.contains("closed"),
        "{providers}"
    );
    session.page(&app, "/console/webhooks").await;
    let suppressions = session.page(&app, "/console/suppressions").await;
    assert!(suppressions.contains("gone@example.org"));
    let removed = session
        .post(
            &app,
            "/console/suppressions/remove",
            &[
                ("csrf", &csrf(&suppressions)),
                ("address", "gone@example.org"),
            ],
        )
        .await;
    assert_eq!(removed.status(), 303);
    let location = removed.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let after = session.page(&app, &location).await;
    assert!(!after.contains("<td>gone@example.org</td>"), "{after}");
    assert!(after.contains("taken off the suppression list"), "{after}");
    // A notice is a code: text in the URL is never shown.
    let forged = session
        .page(&app, "/console/suppressions?notice=Your+account+is+locked")
        .await;
    assert!(!forged.contains("account is locked"));

    let reader = signed_in(&app, &[Scope::Read], "tester").await;
    assert_eq!(reader.get(&app, "/console/providers").await.status(), 403);
    assert_eq!(reader.get(&app, "/console/webhooks").await.status(), 403);
    assert_eq!(reader.get(&app, "/console/queue").await.status(), 200);
}

#[tokio::test]
async fn in_the_development_profile_the_outbox_is_browsable() {
    let app = spawn_app_with(|config| {
        config.profile = posthorn::config::Profile::Development;
        config.smtp_url = None;
        crate::support::fast_delivery(config);
        config.smtp_timeout = None;
    })
    .await;
    let mut message = valid_message();
    message["subject"] = json!("caught locally");
    let id = app.accept(&message).await;
    app.wait_for_status(&id, "sent", WAIT).await;
    let reader = signed_in(&app, &[Scope::Read], "tester").await;
    assert_eq!(
        reader.get(&app, "/console/outbox").await.status(),
        403,
        "every caller's mail"
    );
    let session = signed_in(&app, &[Scope::Admin], "ops").await;
    let list = session.page(&app, "/console").await;
    assert!(
        list.contains("/console/outbox"),
        "the outbox is in the menu"
    );
    let outbox = session.page(&app, "/console/outbox").await;
    assert!(outbox.contains("caught locally"), "{outbox}");
    let shown = session.page(&app, &format!("/console/outbox/{id}")).await;
    assert!(shown.contains("customer@example.org") && shown.contains("Subject: caught locally"));
}
