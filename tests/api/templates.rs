//! Templates: versions, permissions, rendering at accept (escaping, missing variables, header
//! injection, fuel), previews, and messages that record the version they used.

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::{TestApp, assert_problem, spawn_app, spawn_delivering_app, valid_message};

fn admin(app: &TestApp) -> String {
    app.token("ops", &[Scope::Admin])
}

fn welcome() -> Value {
    json!({
        "name": "welcome",
        "subject": "Welcome, {{ name }}",
        "text": "Hello {{ name }},\n{% for item in items %}- {{ item }}\n{% endfor %}",
        "html": "<p>Hello {{ name }}</p>"
    })
}

async fn create_welcome(app: &TestApp) -> Value {
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &admin(app),
            Some(welcome()),
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/v1/templates/welcome");
    response.json().await.unwrap()
}

fn templated(variables: Value) -> Value {
    json!({
        "from": "Shop <shop@example.com>",
        "to": "customer@example.org",
        "template": {"name": "welcome", "variables": variables}
    })
}

#[tokio::test]
async fn templates_are_versioned_and_only_admins_change_them() {
    let app = spawn_app().await;
    let created = create_welcome(&app).await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["created_by"], "ops");
    let sender = app.default_token();
    // A sender may read and use templates, not change them.
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &sender,
            Some(welcome()),
        )
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
    let again = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &admin(&app),
            Some(welcome()),
        )
        .await;
    assert_problem(again, 409, "template-exists").await;

    let mut changed = welcome();
    changed.as_object_mut().unwrap().remove("name");
    changed["subject"] = json!("Hi {{ name }}!");
    let response = app
        .call(
            reqwest::Method::PUT,
            "/v1/templates/welcome",
            &admin(&app),
            Some(changed),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["version"], 2);

    let newest: Value = app.get_json_as("/v1/templates/welcome", &sender).await;
    assert_eq!(newest["version"], 2);
    assert_eq!(newest["subject"], "Hi {{ name }}!");
    let first: Value = app
        .get_json_as("/v1/templates/welcome?version=1", &sender)
        .await;
    assert_eq!(first["subject"], "Welcome, {{ name }}");
    let list: Value = app.get_json_as("/v1/templates", &sender).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["version"], 2);

    let response = app
        .call(
            reqwest::Method::PUT,
            "/v1/templates/missing",
            &admin(&app),
            Some(json!({"subject": "x", "text": "y"})),
        )
        .await;
    assert_problem(response, 404, "not-found").await;

    // Deleted: gone from reads and sends; created again, its versions go on.
    let response = app
        .call(
            reqwest::Method::DELETE,
            "/v1/templates/welcome",
            &admin(&app),
            None,
        )
        .await;
    assert_eq!(response.status(), 204);
    let response = app
        .call(reqwest::Method::GET, "/v1/templates/welcome", &sender, None)
        .await;
    assert_problem(response, 404, "not-found").await;
    let response = app
        .send(&templated(json!({"name": "Ann", "items": []})))
        .await;
    let problem = assert_problem(response, 422, "template-not-found").await;
    assert_eq!(problem["field"], "template.name");
    let recreated = create_welcome(&app).await;
    assert_eq!(recreated["version"], 3);
}

#[tokio::test]
async fn a_template_that_does_not_parse_or_has_a_bad_name_is_refused() {
    let app = spawn_app().await;
    let mut broken = welcome();
    broken["html"] = json!("<p>{% if %}</p>");
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &admin(&app),
            Some(broken),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid-template").await;
    assert_eq!(problem["field"], "html");
    let mut named = welcome();
    named["name"] = json!("../etc");
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &admin(&app),
            Some(named),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid-template").await;
    assert_eq!(problem["field"], "name");
    let mut bodiless = welcome();
    bodiless["text"] = Value::Null;
    bodiless["html"] = Value::Null;
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates",
            &admin(&app),
            Some(bodiless),
        )
        .await;
    assert_problem(response, 422, "invalid-template").await;
}

#[tokio::test]
async fn a_send_renders_its_template_at_accept_and_records_the_version() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    create_welcome(&app).await;
    let id = app
        .accept(&templated(
            json!({"name": "<Ann & Bob>", "items": ["tea", "cake"]}),
        ))
        .await;
    let stored = app.message(&id).await;
    assert_eq!(stored["subject"], "Welcome, <Ann & Bob>");
    assert_eq!(stored["template"], json!({"name": "welcome", "version": 1}));

    // A later version does not change what was queued.
    let response = app
        .call(
            reqwest::Method::PUT,
            "/v1/templates/welcome",
            &admin(&app),
            Some(json!({"subject": "Changed", "text": "changed"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    app.wait_for_status(&id, "sent", std::time::Duration::from_secs(10))
        .await;
    let received = smtp.received();
    let data = received[0].data();
    assert!(
        data.contains("Hello <Ann & Bob>,"),
        "text is not escaped: {data}"
    );
    assert!(data.contains("- tea"), "{data}");
    assert!(
        data.contains("&lt;Ann &amp; Bob&gt;"),
        "HTML is escaped: {data}"
    );
    assert_eq!(
        received[0].header("Subject").unwrap(),
        "Welcome, <Ann & Bob>"
    );

    // An older version on request.
    let mut old = templated(json!({"name": "Cy", "items": []}));
    old["template"]["version"] = json!(1);
    let id = app.accept(&old).await;
    assert_eq!(app.message(&id).await["subject"], "Welcome, Cy");
    let newest = app.accept(&templated(json!({}))).await;
    assert_eq!(app.message(&newest).await["template"]["version"], 2);
}

#[tokio::test]
async fn rendering_refuses_what_a_caller_must_fix() {
    let app = spawn_app().await;
    create_welcome(&app).await;
    // A variable the template uses but the send does not give.
    let response = app.send(&templated(json!({"name": "Ann"}))).await;
    let problem = assert_problem(response, 422, "template-variable-missing").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("`items`"),
        "{problem}"
    );
    assert_eq!(problem["field"], "template.variables");
    // A line break carried into the subject.
    let response = app
        .send(&templated(
            json!({"name": "Ann\r\nBcc: victim@example.org", "items": []}),
        ))
        .await;
    let problem = assert_problem(response, 422, "template-header-injection").await;
    assert!(problem["detail"].as_str().unwrap().contains("`name`"));
    // Subject, text or html beside a template.
    let mut both = templated(json!({"name": "Ann", "items": []}));
    both["subject"] = json!("Mine");
    assert_problem(app.send(&both).await, 422, "invalid-request").await;
    // A template that would run for ever runs out of fuel.
    let response = app.call(
        reqwest::Method::POST,
        "/v1/templates",
        &admin(&app),
        Some(json!({
            "name": "spin",
            "subject": "x",
            "text": "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"
        })),
    )
    .await;
    assert_eq!(response.status(), 201);
    let mut spin = templated(json!({}));
    spin["template"]["name"] = json!("spin");
    let started = std::time::Instant::now();
    assert_problem(app.send(&spin).await, 422, "template-too-expensive").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let mut missing = templated(json!({}));
    missing["template"]["version"] = json!(9);
    assert_problem(app.send(&missing).await, 422, "template-not-found").await;
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test]
async fn a_preview_renders_without_sending_and_batch_items_give_their_own_variables() {
    let app = spawn_app().await;
    create_welcome(&app).await;
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates/welcome/render",
            &app.default_token(),
            Some(json!({"variables": {"name": "Dee", "items": ["x"]}})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let preview: Value = response.json().await.unwrap();
    assert_eq!(preview["subject"], "Welcome, Dee");
    assert_eq!(preview["text"], "Hello Dee,\n- x\n");
    assert_eq!(preview["version"], 1);
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/templates/welcome/render",
            &app.default_token(),
            Some(json!({"variables": {}})),
        )
        .await;
    assert_problem(response, 422, "template-variable-missing").await;
    assert_eq!(app.message_count().await, 0);

    let response = app
        .client
        .post(format!("{}/v1/send/batch", app.address))
        .bearer_auth(app.default_token())
        .json(&json!([
            templated(json!({"name": "Eve", "items": []})),
            templated(json!({"name": "Flo", "items": []})),
            valid_message()
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let subjects: Vec<Value> = futures_util::future::join_all(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| app.message(item["id"].as_str().unwrap())),
    )
    .await
    .into_iter()
    .map(|message| message["subject"].clone())
    .collect();
    assert_eq!(
        subjects,
        [
            json!("Welcome, Eve"),
            json!("Welcome, Flo"),
            json!("Your order")
        ]
    );
}
