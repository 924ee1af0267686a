//! The suppression list: fed by hard bounces, kept by hand, and nothing on it reaches the wire.

use std::time::Duration;

use posthorn::auth::Scope;
use serde_json::{Value, json};

use crate::support::smtp::{Action, Script, SmtpServer};
use crate::support::{TestApp, assert_problem, spawn_delivering_app, valid_message};

const WAIT: Duration = Duration::from_secs(10);

fn to(address: &[&str]) -> Value {
    let mut message = valid_message();
    message["to"] = json!(address);
    message
}

fn kinds(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn list(app: &TestApp, query: &str) -> Value {
    let response = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/suppressions{query}"),
            &app.default_token(),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn refusing(address: &str, reply: &str) -> Script {
    Script::refusing(address, reply)
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_and_nothing_reaches_it_again() {
    let smtp = SmtpServer::start_with(refusing("Gone@Example.org", "550 5.1.1 no such user")).await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let first = app.accept(&to(&["Gone@Example.org"])).await;
    app.wait_for_status(&first, "failed", WAIT).await;
    let page = list(&app, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    let entry = &page["items"][0];
    assert_eq!(entry["address"], "gone@example.org");
    assert_eq!(entry["reason"], "hard_bounce");
    assert_eq!(entry["message_id"], first);
    assert!(entry["detail"].as_str().unwrap().contains("no such user"));

    // The next message to it, with another recipient: only the other one is sent to.
    let commands_before = smtp.commands().len();
    let second = app
        .accept(&to(&["gone@example.org", "customer@example.org"]))
        .await;
    let sent = app.wait_for_status(&second, "sent", WAIT).await;
    assert_eq!(
        kinds(&sent),
        ["email.accepted", "email.sent", "email.suppressed"]
    );
    let suppressed = &sent["events"][2]["data"];
    assert_eq!(suppressed["recipient"], "gone@example.org");
    assert_eq!(suppressed["reason"], "suppressed");
    let commands = smtp.commands()[commands_before..].join("\n").to_lowercase();
    assert!(!commands.contains("gone@example.org"), "{commands}");
    assert_eq!(smtp.received().last().unwrap().to, ["customer@example.org"]);

    // Only suppressed recipients: failed without a connection.
    let connections = smtp.connections();
    let third = app.accept(&to(&["gone@example.org"])).await;
    let failed = app.wait_for_status(&third, "failed", WAIT).await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("suppressed"),
        "{failed:#}"
    );
    assert_eq!(
        kinds(&failed),
        ["email.accepted", "email.suppressed", "email.failed"]
    );
    assert_eq!(failed["events"][2]["data"]["reason"], "suppressed");
    assert_eq!(
        smtp.connections(),
        connections,
        "nothing suppressed reaches the wire"
    );
}

#[tokio::test]
async fn policy_refusals_and_full_mailboxes_do_not_suppress() {
    let smtp = SmtpServer::start_with(Script {
        rcpt: [
            (
                "blocked@example.org".to_owned(),
                Action::reply("550 5.7.1 rejected by policy"),
            ),
            (
                "full@example.org".to_owned(),
                Action::reply("552 5.2.2 mailbox full"),
            ),
            (
                "disabled@example.org".to_owned(),
                Action::reply("550 5.2.1 mailbox disabled"),
            ),
        ]
        .into(),
        ..Script::default()
    })
    .await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let id = app
        .accept(&to(&[
            "blocked@example.org",
            "full@example.org",
            "disabled@example.org",
        ]))
        .await;
    app.wait_for_status(&id, "failed", WAIT).await;
    let page = list(&app, "").await;
    let addresses: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["disabled@example.org"]);
}

#[tokio::test]
async fn hard_bounces_can_be_left_off_the_list() {
    let smtp = SmtpServer::start_with(refusing("gone@example.org", "550 5.1.1 no such user")).await;
    let app = spawn_delivering_app(&smtp, |config| config.suppress_hard_bounces = false).await;
    let id = app.accept(&to(&["gone@example.org"])).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(list(&app, "").await["items"], json!([]));
}

#[tokio::test]
async fn operators_keep_the_list_by_hand() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, |_| {}).await;
    let admin = app.token("ops", &[Scope::Admin]);
    let add = |address: &str| {
        let body = json!({"address": address, "reason": "manual", "detail": "asked to stop"});
        app.call(
            reqwest::Method::POST,
            "/v1/suppressions",
            &admin,
            Some(body),
        )
    };
    let response = add("Ann@Example.org").await;
    assert_eq!(response.status(), 201);
    let entry: Value = response.json().await.unwrap();
    assert_eq!(entry["address"], "ann@example.org");
    assert_eq!(entry["reason"], "manual");
    assert_eq!(add("ann@example.org").await.status(), 200, "already there");
    for address in ["bob@example.org", "cy@example.org"] {
        assert_eq!(add(address).await.status(), 201);
    }
    // Scopes: a sender cannot add, a reader can list.
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/suppressions",
            &app.default_token(),
            Some(json!({"address": "x@example.org"})),
        )
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/suppressions",
            &admin,
            Some(json!({"address": "x@example.org", "reason": "complaint"})),
        )
        .await;
    assert_problem(response, 422, "invalid-request").await;
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/suppressions",
            &admin,
            Some(json!({"address": "not an address"})),
        )
        .await;
    assert_problem(response, 422, "invalid-address").await;

    // Paging and filters.
    let first = list(&app, "?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["address"], "cy@example.org");
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(
        list(&app, "?address=BOB@example.org").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(list(&app, "?reason=hard_bounce").await["items"], json!([]));
    let response = app
        .call(
            reqwest::Method::GET,
            "/v1/suppressions?reason=spam",
            &app.default_token(),
            None,
        )
        .await;
    assert_problem(response, 400, "invalid-query").await;

    // Suppressed: not sent. Taken off: sent again.
    let id = app.accept(&to(&["ann@example.org"])).await;
    app.wait_for_status(&id, "failed", WAIT).await;
    let response = app
        .call(
            reqwest::Method::DELETE,
            "/v1/suppressions/ANN@example.org",
            &admin,
            None,
        )
        .await;
    assert_eq!(response.status(), 204);
    let response = app
        .call(
            reqwest::Method::DELETE,
            "/v1/suppressions/ann@example.org",
            &admin,
            None,
        )
        .await;
    assert_problem(response, 404, "not-found").await;
    let id = app.accept(&to(&["ann@example.org"])).await;
    app.wait_for_status(&id, "sent", WAIT).await;
}
