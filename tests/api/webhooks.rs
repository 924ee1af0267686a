//! Webhooks: signed deliveries a Standard Webhooks library verifies, retries until a failing receiver
//! recovers, filters, 410, rotation, replay, restarts, and no reach into the network by default.

use std::time::Duration;

use posthorn::auth::Scope;
use posthorn::config::Config;
use serde_json::{Value, json};

use crate::support::smtp::SmtpServer;
use crate::support::webhooks::Receiver;
use crate::support::{
    TestApp, assert_problem, spawn_app_with, spawn_delivering_app, valid_message,
};

const WAIT: Duration = Duration::from_secs(15);

/// Webhooks that may reach the receiver on loopback over http, retried quickly.
fn local_webhooks(config: &mut Config) {
    config.webhook_allow_http = true;
    config.webhook_allow_private = true;
    config.webhook_retry_schedule = "100ms,100ms,100ms".into();
    config.webhook_timeout = Duration::from_secs(2);
}

fn admin(app: &TestApp) -> String {
    app.token("ops", &[Scope::Admin])
}

/// Creates an endpoint; returns it with its secret.
async fn endpoint(app: &TestApp, body: Value) -> Value {
    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            &admin(app),
            Some(body),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn types(received: &[Value]) -> Vec<String> {
    received
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["body"]["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_arrive_signed_as_standard_webhooks_and_deliveries_are_listed() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, local_webhooks).await;
    let receiver = Receiver::start(json!([]));
    let created = endpoint(
        &app,
        json!({"url": receiver.url(), "description": "ops hook"}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    receiver.set_secrets(&[secret]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["enabled"], true);
    assert_eq!(created["events"], json!([]));

    let message = app.accept(&valid_message()).await;
    let mut received = receiver.wait_until(WAIT, |r| types(r).len() >= 2).await;
    // Deliveries go out in parallel: in no particular order (each carries its time).
    received.sort_by_key(|r| {
        r["id"]
            .as_str()
            .map(|id| id[4..].parse::<u64>().unwrap_or(0))
    });
    assert_eq!(types(&received), ["email.accepted", "email.sent"]);
    for delivery in &received {
        assert_eq!(delivery["verified"], true, "{delivery}");
        assert!(delivery["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(delivery["body"]["data"]["message_id"], message);
        assert!(delivery["body"]["created_at"].is_string());
    }
    assert_eq!(
        received[1]["body"]["data"]["recipient"],
        "customer@example.org"
    );
    assert_eq!(received[1]["body"]["data"]["smtp"]["code"], 250);
    // The webhook-id is the event's id in the feed.
    let events = app.message(&message).await["events"].clone();
    assert_eq!(received[0]["id"], events[0]["id"]);

    // The secret is shown once.
    let shown: Value = app
        .get_json_as(&format!("/v1/webhooks/{id}"), &admin(&app))
        .await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["description"], "ops hook");
    let listed: Value = app.get_json_as("/v1/webhooks", &admin(&app)).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains("whsec_"));

    let deliveries: Value = app
        .get_json_as(&format!("/v1/webhooks/{id}/deliveries"), &admin(&app))
        .await;
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["status"], "succeeded");
    assert_eq!(items[0]["attempts"][0]["status_code"], 200);
    assert!(items[0]["attempts"][0]["latency_ms"].is_number());
    assert!(
        app.metric("posthorn_webhook_deliveries_total", "outcome=\"succeeded\"")
            .await
            >= 2.0
    );

    // Only admins.
    let response = app
        .call(
            reqwest::Method::GET,
            "/v1/webhooks",
            &app.default_token(),
            None,
        )
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
}

#[tokio::test]
async fn a_failing_receiver_gets_every_event_once_it_recovers() {
    let app = spawn_app_with(local_webhooks).await;
    let receiver = Receiver::start(json!([500, {"status": 503, "retry_after": "1"}, 502]));
    let created = endpoint(&app, json!({"url": receiver.url()})).await;
    receiver.set_secrets(&[created["secret"].as_str().unwrap()]);
    let first = app.accept(&valid_message()).await;
    let second = app.accept(&valid_message()).await;
    let received = receiver.wait_until(WAIT, |r| types(r).len() >= 2).await;
    let delivered: Vec<&str> = received
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["body"]["data"]["message_id"].as_str().unwrap())
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(sorted, expected, "each event once: {received:#?}");
    // The Retry-After of 1 s was waited for.
    let asked = received.iter().position(|r| r["status"] == 503).unwrap();
    let next_same = received[asked + 1..]
        .iter()
        .find(|r| r["id"] == received[asked]["id"])
        .unwrap();
    let waited = next_same["at"].as_f64().unwrap() - received[asked]["at"].as_f64().unwrap();
    assert!(waited >= 0.9, "retried after {waited} s");
    let id = created["id"].as_str().unwrap();
    let deliveries: Value = app
        .get_json_as(&format!("/v1/webhooks/{id}/deliveries"), &admin(&app))
        .await;
    let attempts: usize = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attempts"].as_array().unwrap().len())
        .sum();
    assert_eq!(attempts, 5, "{deliveries:#}");
    let endpoint: Value = app
        .get_json_as(&format!("/v1/webhooks/{id}"), &admin(&app))
        .await;
    assert_eq!(endpoint["failing_since"], Value::Null, "recovered");
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_gives_up_and_410_disables_the_endpoint() {
    let app = spawn_app_with(local_webhooks).await;
    let failing = Receiver::start(json!([500, 500, 500, 500, 500, 500]));
    let created = endpoint(
        &app,
        json!({"url": failing.url(), "events": ["email.accepted"]}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.accept(&valid_message()).await;
    failing.wait_until(WAIT, |r| r.len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        failing.received().len(),
        4,
        "the first attempt and three retries"
    );
    let deliveries: Value = app
        .get_json_as(&format!("/v1/webhooks/{id}/deliveries"), &admin(&app))
        .await;
    assert_eq!(deliveries["items"][0]["status"], "failed");
    assert!(
        deliveries["items"][0]["attempts"][3]["error"]
            .as_str()
            .unwrap()
            .contains("500")
    );

    let gone = Receiver::start(json!([410]));
    let created = endpoint(&app, json!({"url": gone.url()})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.accept(&valid_message()).await;
    gone.wait_until(WAIT, |r| !r.is_empty()).await;
    let endpoint_url = format!("/v1/webhooks/{id}");
    let mut shown = Value::Null;
    for _ in 0..50 {
        shown = app.get_json_as(&endpoint_url, &admin(&app)).await;
        if shown["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown["enabled"], false);
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"));
    // Nothing goes to a disabled endpoint; enabled again, new events do.
    app.accept(&valid_message()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gone.received().len(), 1);
    let response = app
        .call(
            reqwest::Method::PATCH,
            &endpoint_url,
            &admin(&app),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["disabled_reason"],
        Value::Null
    );
    app.accept(&valid_message()).await;
    gone.wait_until(WAIT, |r| r.iter().any(|d| d["status"] == 200))
        .await;
}

#[tokio::test]
async fn endpoints_take_only_the_events_and_callers_they_name() {
    let smtp = SmtpServer::start().await;
    let app = spawn_delivering_app(&smtp, local_webhooks).await;
    let receiver = Receiver::start(json!([]));
    endpoint(
        &app,
        json!({"url": receiver.url(), "events": ["email.sent"], "callers": ["shop"]}),
    )
    .await;
    let shop = app.token("shop", &[Scope::Send, Scope::Read]);
    let response = app.send_as(&shop, &valid_message()).await;
    assert_eq!(response.status(), 202);
    app.accept(&valid_message()).await; // another caller's
    let received = receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received().len().max(received.len());
    assert_eq!(received, 1);
    assert_eq!(types(&receiver.received()), ["email.sent"]);
    assert_eq!(receiver.received()[0]["body"]["data"]["caller"], "shop");

    let response = app
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            &admin(&app),
            Some(json!({"url": receiver.url(), "events": ["email.opened"]})),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid-request").await;
    assert_eq!(problem["field"], "events");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_and_replays_send_again() {
    let app = spawn_app_with(local_webhooks).await;
    let receiver = Receiver::start(json!([]));
    let created = endpoint(&app, json!({"url": receiver.url()})).await;
    let old = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &admin(&app),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_valid_until"].is_string());
    receiver.set_secrets(&[&new, &old]);
    app.accept(&valid_message()).await;
    let received = receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    assert_eq!(received[0]["verified_with"], json!([0, 1]), "{received:#?}");
    assert_eq!(
        received[0]["signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );

    let response = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/replay"),
            &admin(&app),
            Some(json!({"since": "2020-01-01T00:00:00Z", "types": ["email.accepted"]})),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["queued"], 1);
    let received = receiver.wait_until(WAIT, |r| r.len() >= 2).await;
    assert_eq!(received[1]["id"], received[0]["id"], "the same event again");
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let receiver = Receiver::start(json!([500, 500, 500, 500]));
    let app = spawn_app_with(|config| {
        local_webhooks(config);
        // Long enough that the retries are still pending when the process stops.
        config.webhook_retry_schedule = "1s,1s,1s,1s,1s".into();
    })
    .await;
    let created = endpoint(
        &app,
        json!({"url": receiver.url(), "events": ["email.accepted"]}),
    )
    .await;
    receiver.set_secrets(&[created["secret"].as_str().unwrap()]);
    let id = app.accept(&valid_message()).await;
    receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    let app = app.restart().await;
    let received = receiver
        .wait_until(Duration::from_secs(20), |r| {
            r.iter().any(|d| d["status"] == 200)
        })
        .await;
    let delivered = received.iter().find(|d| d["status"] == 200).unwrap();
    assert_eq!(delivered["body"]["data"]["message_id"], id);
    assert_eq!(delivered["verified"], true);
    drop(app);
}

#[tokio::test]
async fn webhooks_do_not_reach_into_the_network_by_default() {
    let app = crate::support::spawn_app().await;
    for (url, reason) in [
        ("http://hooks.example.com/x", "https"),
        ("https://127.0.0.1/x", "private"),
        ("https://[::1]/x", "private"),
        ("https://169.254.169.254/latest", "private"),
        ("https://10.0.0.5/x", "private"),
        ("https://localhost/x", "private"),
        ("not a url", "valid URL"),
    ] {
        let response = app
            .call(
                reqwest::Method::POST,
                "/v1/webhooks",
                &admin(&app),
                Some(json!({"url": url})),
            )
            .await;
        let problem = assert_problem(response, 422, "invalid-request").await;
        assert_eq!(problem["field"], "url", "{url}");
        assert!(
            problem["detail"].as_str().unwrap().contains(reason),
            "{url}: {problem}"
        );
    }
}
