//! Public contact forms: `POST /v1/forms/{id}` from a browser page, without a token, never an open
//! relay. Posted as browsers and scripts post (url-encoded, multipart with a file, JSON), checked by
//! origin, budgeted per visitor address, trapped by a honeypot, and guarded by a captcha whose verify
//! endpoint is a local fake.

use std::time::Duration;

use posthorn::auth::Scope;
use posthorn::config::{CaptchaConfig, Config, FormConfig};
use reqwest::header;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::{Posthorn, token};
use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, TestDatabase, spawn_app_with, spawn_delivering_app, toml_file};

const WAIT: Duration = Duration::from_secs(15);
const SITE: &str = "https://example.com";

fn contact() -> FormConfig {
    FormConfig {
        id: "contact".into(),
        to: vec!["owner@example.com".into()],
        from: "Website <forms@example.com>".into(),
        allowed_origins: vec![SITE.into()],
        redirect: Some("https://example.com/thanks".into()),
        subject: Some("Contact form: {{ name }}".into()),
        rate_limit_per_ip: None,
        honeypot: Some("_gotcha".into()),
        captcha: None,
    }
}

fn with_forms(config: &mut Config, forms: Vec<FormConfig>) {
    config.forms = forms;
}

/// A client that never follows redirects (the 303 is what is checked).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn form_url(app: &TestApp, id: &str) -> String {
    format!("{}/v1/forms/{id}", app.address)
}

async fn queued(app: &TestApp) -> Vec<Value> {
    let admin = app.token("ops", &[Scope::Admin]);
    app.get_json_as("/v1/messages", &admin).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_browser_post_is_sent_to_the_form_s_recipients_and_redirected_to_the_thanks_page() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| with_forms(config, vec![contact()])).await;
    let response = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .form(&[
            ("name", "Ada Lovelace\r\nBcc: victim@example.org"),
            ("email", "ada@example.net"),
            ("message", "Hello <b>there</b>\nsecond line"),
            ("to", "attacker@example.org"),
            ("_gotcha", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()[header::LOCATION],
        "https://example.com/thanks"
    );
    let mail = smtp.wait_for(1, WAIT).await.remove(0);
    assert_eq!(mail.to, ["owner@example.com"], "the form's recipient only");
    assert_eq!(mail.from, "forms@example.com");
    assert_eq!(mail.header("Reply-To").as_deref(), Some("ada@example.net"));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Contact form: Ada Lovelace Bcc: victim@example.org"),
        "the visitor's line break cannot start a header"
    );
    assert!(mail.header("Bcc").is_none());
    let data = mail.data();
    assert!(
        data.contains("to: attacker@example.org"),
        "listed, never used: {data}"
    );
    assert!(
        data.contains("Hello &lt;b&gt;there&lt;/b&gt;"),
        "escaped in HTML: {data}"
    );
    assert!(!data.contains("_gotcha"));
    let messages = queued(&app).await;
    assert_eq!(messages[0]["source"], "form");
    assert_eq!(messages[0]["tags"], json!(["form:contact"]));
    assert_eq!(
        app.metric("posthorn_form_posts_total", "outcome=\"accepted\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_script_posting_json_gets_json_with_cors_and_a_file_becomes_an_attachment() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |config| with_forms(config, vec![contact()])).await;
    let response = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .json(&json!({"name": "Grace", "email": "grace@example.net", "age": 85, "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        SITE
    );
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": true}));

    let file = reqwest::multipart::Part::bytes(b"%PDF-1.4 resume".to_vec())
        .file_name("resume.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let multipart = reqwest::multipart::Form::new()
        .text("name", "Linus")
        .text("email", "linus@example.net")
        .part("cv", file);
    let response = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = smtp.wait_for(2, WAIT).await;
    let with_file = received
        .iter()
        .find(|mail| mail.header("Subject").as_deref() == Some("Contact form: Linus"))
        .expect("the multipart post arrived");
    let data = with_file.data();
    assert!(
        data.contains("filename=\"resume.pdf\"") || data.contains("filename=resume.pdf"),
        "{data}"
    );
    assert!(data.contains("application/pdf"), "{data}");
    let json_post = received
        .iter()
        .find(|mail| mail.header("Subject").as_deref() == Some("Contact form: Grace"))
        .expect("the JSON post arrived");
    assert!(json_post.data().contains("age: 85"));
}

#[tokio::test]
async fn origins_are_checked_by_origin_or_referer_and_refusals_speak_html_or_problem_json() {
    let app = spawn_app_with(|config| with_forms(config, vec![contact()])).await;
    let post = |origin: Option<&str>, referer: Option<&str>, json: bool| {
        let mut request = browser()
            .post(form_url(&app, "contact"))
            .form(&[("name", "Ada"), ("message", "hi")]);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if let Some(referer) = referer {
            request = request.header(header::REFERER, referer);
        }
        if json {
            request = request.header(header::ACCEPT, "application/json");
        }
        request.send()
    };
    let refused = post(Some("https://evil.example"), None, true)
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:posthorn:problem:origin-not-allowed");

    let page = post(Some("https://evil.example"), None, false)
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("not sent"));

    let neither = post(None, None, true).await.unwrap();
    assert_eq!(neither.status(), 403, "no Origin and no Referer");
    let from_page = post(None, Some("https://example.com/contact.html"), false)
        .await
        .unwrap();
    assert_eq!(from_page.status(), 303, "the Referer's origin is allowed");
    let other_page = post(None, Some("https://example.com.evil.net/contact"), false)
        .await
        .unwrap();
    assert_eq!(other_page.status(), 403);
    assert_eq!(queued(&app).await.len(), 1);

    let unknown = browser()
        .post(form_url(&app, "nope"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_preflight_is_answered_for_allowed_origins_only() {
    let app = spawn_app_with(|config| with_forms(config, vec![contact()])).await;
    let preflight = |origin: &str| {
        browser()
            .request(reqwest::Method::OPTIONS, form_url(&app, "contact"))
            .header(header::ORIGIN, origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight(SITE).await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], SITE);
    assert!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn a_filled_honeypot_is_answered_as_success_and_nothing_is_sent() {
    let app = spawn_app_with(|config| with_forms(config, vec![contact()])).await;
    let response = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .form(&[
            ("name", "bot"),
            ("message", "buy"),
            ("_gotcha", "http://spam.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": true}));
    assert!(queued(&app).await.is_empty());
    assert_eq!(
        app.metric("posthorn_form_posts_total", "outcome=\"trapped\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn bad_posts_get_clear_refusals() {
    let app = spawn_app_with(|config| with_forms(config, vec![contact()])).await;
    let post = |form: &[(&str, &str)]| {
        browser()
            .post(form_url(&app, "contact"))
            .header(header::ORIGIN, SITE)
            .header(header::ACCEPT, "application/json")
            .form(form)
            .send()
    };
    let bad_email = post(&[("email", "not an address"), ("message", "hi")])
        .await
        .unwrap();
    assert_eq!(bad_email.status(), 422);
    let problem: Value = bad_email.json().await.unwrap();
    assert_eq!(problem["type"], "urn:posthorn:problem:invalid-form");
    assert!(problem["detail"].as_str().unwrap().contains("email"));

    let empty = post(&[("message", "   ")]).await.unwrap();
    assert_eq!(empty.status(), 422);
    let long = "x".repeat(posthorn::forms::MAX_VALUE + 1);
    let too_long = post(&[("message", &long)]).await.unwrap();
    assert_eq!(too_long.status(), 422);
    let many: Vec<(String, String)> = (0..=posthorn::forms::MAX_FIELDS)
        .map(|n| (format!("field{n}"), "x".to_owned()))
        .collect();
    let too_many = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .form(&many)
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 422);
    let text = browser()
        .post(form_url(&app, "contact"))
        .header(header::ORIGIN, SITE)
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    // A post without files is small: a megabyte at most, and its fields are counted as they are read.
    let raw = |body: String| {
        browser()
            .post(form_url(&app, "contact"))
            .header(header::ORIGIN, SITE)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(raw("a=&".repeat(300_000)).await.unwrap().status(), 422);
    let huge = format!("message={}", "x".repeat(1024 * 1024 + 1));
    assert_eq!(raw(huge).await.unwrap().status(), 413);
    assert!(queued(&app).await.is_empty());
}

#[tokio::test]
async fn each_visitor_address_has_its_budget_and_x_forwarded_for_counts_only_from_a_trusted_proxy()
{
    let limited = FormConfig {
        rate_limit_per_ip: Some("2/m".into()),
        ..contact()
    };
    let post = |app: &TestApp, forwarded: &str| {
        browser()
            .post(form_url(app, "contact"))
            .header(header::ORIGIN, SITE)
            .header(header::ACCEPT, "application/json")
            .header("X-Forwarded-For", forwarded)
            .form(&[("name", "Ada"), ("message", "hi")])
            .send()
    };
    // Not behind a trusted proxy: X-Forwarded-For is anyone's to write, and ignored.
    let direct = spawn_app_with(|config| with_forms(config, vec![limited.clone()])).await;
    for n in 0..2 {
        let response = post(&direct, &format!("203.0.113.{n}")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let over = post(&direct, "203.0.113.9").await.unwrap();
    assert_eq!(over.status(), 429);
    let retry: u64 = over.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["type"], "urn:posthorn:problem:rate-limited");
    // A plain browser post over the budget gets a page with the same status and Retry-After.
    let page = browser()
        .post(form_url(&direct, "contact"))
        .header(header::ORIGIN, SITE)
        .form(&[("name", "Ada"), ("message", "hi")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429);
    assert!(page.headers().get(header::RETRY_AFTER).is_some());

    // Behind a trusted proxy (the loopback here), each forwarded address has its own budget.
    let proxied = spawn_app_with(|config| {
        with_forms(config, vec![limited.clone()]);
        config.trusted_proxies = Some("127.0.0.1, ::1".into());
    })
    .await;
    for visitor in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let response = post(&proxied, &format!("10.9.9.9, {visitor}"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{visitor}");
        }
        assert_eq!(
            post(&proxied, &format!("10.9.9.9, {visitor}"))
                .await
                .unwrap()
                .status(),
            429
        );
    }
}

/// A captcha provider's verify endpoint: answers `{"success": true}` for the token `solved`.
async fn fake_verify_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if read == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let solved = text.contains("response=solved") && text.contains("secret=s3cret");
                let body = format!("{{\"success\": {solved}}}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_captcha_must_be_solved_and_an_unreachable_verifier_is_a_503() {
    let (verify_url, _server) = fake_verify_endpoint().await;
    // SAFETY: set once, before the app reads it; no other test reads this variable.
    unsafe { std::env::set_var("POSTHORN_TEST_TURNSTILE_SECRET", "s3cret") };
    let guarded = |verify_url: String| FormConfig {
        captcha: Some(CaptchaConfig {
            provider: "turnstile".into(),
            secret_env: "POSTHORN_TEST_TURNSTILE_SECRET".into(),
            verify_url: Some(verify_url),
        }),
        ..contact()
    };
    let app = spawn_app_with(|config| with_forms(config, vec![guarded(verify_url)])).await;
    let post = |app: &TestApp, token: Option<&str>| {
        let mut form = vec![("name", "Ada"), ("message", "hi")];
        if let Some(token) = token {
            form.push(("cf-turnstile-response", token));
        }
        browser()
            .post(form_url(app, "contact"))
            .header(header::ORIGIN, SITE)
            .header(header::ACCEPT, "application/json")
            .form(&form)
            .send()
    };
    for token in [None, Some("wrong")] {
        let refused = post(&app, token).await.unwrap();
        assert_eq!(refused.status(), 403, "{token:?}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["type"], "urn:posthorn:problem:captcha-failed");
    }
    assert_eq!(post(&app, Some("solved")).await.unwrap().status(), 200);
    let messages = queued(&app).await;
    assert_eq!(messages.len(), 1);

    let unreachable = format!(
        "http://127.0.0.1:{}/siteverify",
        crate::support::peers::free_port()
    );
    let down = spawn_app_with(|config| with_forms(config, vec![guarded(unreachable)])).await;
    let response = post(&down, Some("solved")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get(header::RETRY_AFTER).is_some());
}

#[tokio::test]
async fn a_form_without_its_captcha_secret_or_with_a_bad_origin_is_refused_at_start() {
    let missing = toml_file(
        "[[forms]]\nid = \"contact\"\nto = [\"owner@example.com\"]\nfrom = \"forms@example.com\"\n\
         allowed_origins = [\"https://example.com\"]\n\
         captcha = { provider = \"hcaptcha\", secret_env = \"POSTHORN_TEST_UNSET_SECRET\" }\n",
    );
    let outcome = crate::cli::check_config_with(missing.path());
    assert!(outcome.contains("POSTHORN_TEST_UNSET_SECRET"), "{outcome}");
    let bad_origin = toml_file(
        "[[forms]]\nid = \"contact\"\nto = [\"owner@example.com\"]\nfrom = \"forms@example.com\"\n\
         allowed_origins = [\"example.com\"]\n",
    );
    let outcome = crate::cli::check_config_with(bad_origin.path());
    assert!(outcome.contains("allowed_origins"), "{outcome}");
}

/// On PostgreSQL the replicas share one budget per visitor address.
#[tokio::test]
async fn replicas_share_a_visitor_s_budget() {
    crate::postgres_only!();
    let database = TestDatabase::create_empty().await;
    let config = toml_file(
        "[[forms]]\nid = \"contact\"\nto = [\"owner@example.com\"]\nfrom = \"forms@example.com\"\n\
         allowed_origins = [\"https://example.com\"]\nrate_limit_per_ip = \"3/m\"\n",
    );
    let spawn = || {
        Posthorn::spawn(&[
            ("POSTHORN_CONFIG", config.path().display().to_string()),
            ("POSTHORN_DATABASE_URL", database.url()),
            ("POSTHORN_LOG", "warn".to_owned()),
        ])
    };
    let mut replicas = [spawn(), spawn()];
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let mut statuses = Vec::new();
    for n in 0..5 {
        let response = browser()
            .post(format!("{}/v1/forms/contact", replicas[n % 2].address))
            .header(header::ORIGIN, SITE)
            .header(header::ACCEPT, "application/json")
            .form(&[("name", "Ada"), ("message", "hi")])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "three for both together"
    );
    let admin = token("ops", &[Scope::Admin]);
    let list = replicas[0].get_json(&admin, "/v1/messages").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[test]
fn the_example_contact_form_configuration_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/contact-form/posthorn.toml");
    let outcome = crate::cli::check_config_with(&path);
    assert!(outcome.contains("configuration is valid"), "{outcome}");
    for page in ["index.html", "fetch.html"] {
        let html = std::fs::read_to_string(path.with_file_name(page)).unwrap();
        assert!(
            html.contains("/v1/forms/contact") && html.contains("name=\"_gotcha\""),
            "{page}"
        );
    }
}
