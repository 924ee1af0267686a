//! Several providers: routes choose one per message, an unreachable provider's messages fail over to
//! the route's next one and its circuit opens, and `GET /v1/providers` shows what this process sees.

use std::time::Duration;

use posthorn::config::{Config, ProviderConfig, RouteConfig, RouteMatchConfig};
use posthorn::secret::Secret;
use serde_json::{Value, json};

use crate::support::peers::free_port;
use crate::support::smtp::{Script, SmtpServer};
use crate::support::{TestApp, assert_problem, fast_delivery, spawn_app_with, valid_message};

const WAIT: Duration = Duration::from_secs(10);

fn provider(url: String) -> ProviderConfig {
    ProviderConfig::new(Secret::new(url))
}

/// Providers in this order (as a file would list them).
fn providers(config: &mut Config, list: Vec<(&str, ProviderConfig)>) {
    fast_delivery(config);
    config.provider_order = list.iter().map(|(name, _)| (*name).to_owned()).collect();
    config.providers = list
        .into_iter()
        .map(|(name, provider)| (name.to_owned(), provider))
        .collect();
}

fn route(conditions: RouteMatchConfig, providers: &[&str]) -> RouteConfig {
    RouteConfig {
        conditions,
        providers: providers.iter().map(|name| (*name).to_owned()).collect(),
    }
}

fn attempts(message: &Value) -> Vec<Value> {
    message["attempts"].as_array().cloned().unwrap_or_default()
}

async fn provider_list(app: &TestApp) -> Vec<Value> {
    let token = app.token("ops", &[posthorn::auth::Scope::Admin]);
    let response = app
        .call(reqwest::Method::GET, "/v1/providers", &token, None)
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn routes_send_each_message_through_the_provider_that_matches_it() {
    let bulk = SmtpServer::start().await;
    let resets = SmtpServer::start().await;
    let (bulk_url, resets_url) = (bulk.url(), resets.url());
    let app = spawn_app_with(move |config| {
        providers(
            config,
            vec![
                ("ses", provider(bulk_url)),
                ("postmark", provider(resets_url)),
            ],
        );
        config.routes = vec![
            route(
                RouteMatchConfig {
                    tag: vec!["password-reset".into()],
                    ..RouteMatchConfig::default()
                },
                &["postmark"],
            ),
            route(
                RouteMatchConfig {
                    recipient_domain: vec!["partner.example".into(), "vendor.example".into()],
                    ..RouteMatchConfig::default()
                },
                &["postmark", "ses"],
            ),
            route(RouteMatchConfig::default(), &["ses"]),
        ];
    })
    .await;

    let mut reset = valid_message();
    reset["to"] = json!("reset@example.org");
    reset["tags"] = json!(["password-reset"]);
    let mut partner = valid_message();
    partner["to"] = json!("buyer@vendor.example");
    let mut plain = valid_message();
    plain["to"] = json!("plain@example.org");

    // A dry run names the provider the route chose.
    let preview: Value = app
        .send_with(&reset, |request| request.query(&[("dry_run", "true")]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(preview["provider"], "postmark", "{preview}");

    let reset_id = app.accept(&reset).await;
    let partner_id = app.accept(&partner).await;
    let plain_id = app.accept(&plain).await;
    for (id, expected) in [
        (&reset_id, "postmark"),
        (&partner_id, "postmark"),
        (&plain_id, "ses"),
    ] {
        let message = app.wait_for_status(id, "sent", WAIT).await;
        assert_eq!(attempts(&message)[0]["provider"], expected, "{message}");
    }
    let to = |server: &SmtpServer| -> Vec<String> {
        let mut to: Vec<String> = server
            .received()
            .into_iter()
            .flat_map(|mail| mail.to)
            .collect();
        to.sort();
        to
    };
    assert_eq!(to(&resets), ["buyer@vendor.example", "reset@example.org"]);
    assert_eq!(to(&bulk), ["plain@example.org"]);
}

#[tokio::test]
async fn a_message_no_route_takes_is_refused_at_accept() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let app = spawn_app_with(move |config| {
        providers(config, vec![("relay", provider(url))]);
        config.routes = vec![route(
            RouteMatchConfig {
                sender_domain: vec!["internal.example".into()],
                ..RouteMatchConfig::default()
            },
            &["relay"],
        )];
    })
    .await;
    let problem = assert_problem(app.send(&valid_message()).await, 422, "no-route").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("route"),
        "{problem}"
    );
    assert_eq!(app.message_count().await, 0, "nothing was queued");
}

#[tokio::test]
async fn an_unreachable_provider_fails_over_to_the_next_and_its_circuit_opens() {
    // Nothing listens on the first provider's port: connections are refused.
    let down = free_port();
    let backup = SmtpServer::start().await;
    let backup_url = backup.url();
    let app = spawn_app_with(move |config| {
        let mut primary = provider(format!("smtp://127.0.0.1:{down}"));
        primary.breaker_failures = Some(2);
        primary.breaker_cooldown = Some(Duration::from_secs(600));
        // Listed first, though it sorts after `backup`: the file's order is the failover order.
        providers(
            config,
            vec![("primary", primary), ("backup", provider(backup_url))],
        );
    })
    .await;

    let mut ids = Vec::new();
    for n in 0..4 {
        let mut message = valid_message();
        message["to"] = json!(format!("customer{n}@example.org"));
        let id = app.accept(&message).await;
        // Each one is sent in its first attempt, by the backup.
        let sent = app.wait_for_status(&id, "sent", WAIT).await;
        let tried = attempts(&sent);
        assert_eq!(tried.len(), 1, "{sent}");
        assert_eq!(tried[0]["provider"], "backup", "{sent}");
        ids.push(id);
    }
    assert_eq!(backup.received().len(), 4);

    let list = provider_list(&app).await;
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["primary", "backup"]);
    assert_eq!(list[0]["state"], "open", "{list:?}");
    assert!(list[0]["consecutive_failures"].as_u64().unwrap() >= 2);
    assert!(list[0]["last_error"]["message"].is_string(), "{list:?}");
    assert!(list[0]["last_error"]["at"].is_string());
    assert_eq!(
        list[0]["upstream"],
        format!("smtp://127.0.0.1:{down}"),
        "no credentials, only where it is"
    );
    assert_eq!(list[1]["state"], "closed");
    assert!(list[1]["last_error"].is_null());

    assert_eq!(
        app.metric(
            "posthorn_provider_circuit_state",
            "provider=\"primary\",state=\"open\""
        )
        .await,
        1.0
    );
    assert_eq!(
        app.metric(
            "posthorn_provider_circuit_state",
            "provider=\"primary\",state=\"closed\""
        )
        .await,
        0.0
    );
    assert_eq!(
        app.metric(
            "posthorn_provider_circuit_state",
            "provider=\"backup\",state=\"closed\""
        )
        .await,
        1.0
    );

    // `admin` only.
    let reader = app.token("someone", &[posthorn::auth::Scope::Read]);
    let response = app
        .call(reqwest::Method::GET, "/v1/providers", &reader, None)
        .await;
    assert_problem(response, 403, "insufficient-scope").await;
}

#[tokio::test]
async fn after_the_cool_down_one_probe_closes_the_circuit_again() {
    let port = free_port();
    let backup = SmtpServer::start().await;
    let backup_url = backup.url();
    let app = spawn_app_with(move |config| {
        let mut primary = provider(format!("smtp://127.0.0.1:{port}"));
        primary.breaker_failures = Some(1);
        primary.breaker_cooldown = Some(Duration::from_secs(1));
        providers(
            config,
            vec![("primary", primary), ("backup", provider(backup_url))],
        );
    })
    .await;
    let first = app.accept(&valid_message()).await;
    let sent = app.wait_for_status(&first, "sent", WAIT).await;
    assert_eq!(attempts(&sent)[0]["provider"], "backup");
    assert_eq!(provider_list(&app).await[0]["state"], "open");

    // The primary comes back; after the cool-down the next message is its probe, and it stays.
    let primary = SmtpServer::start_on(port, Script::default()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..2 {
        let id = app.accept(&valid_message()).await;
        let sent = app.wait_for_status(&id, "sent", WAIT).await;
        assert_eq!(attempts(&sent)[0]["provider"], "primary", "{sent}");
    }
    assert_eq!(primary.received().len(), 2);
    assert_eq!(provider_list(&app).await[0]["state"], "closed");
}

#[tokio::test]
async fn a_recipient_s_refusal_does_not_fail_over() {
    let strict = SmtpServer::start_with(Script::refusing(
        "gone@example.org",
        "550 5.1.1 <gone@example.org>: user unknown",
    ))
    .await;
    let backup = SmtpServer::start().await;
    let (strict_url, backup_url) = (strict.url(), backup.url());
    let app = spawn_app_with(move |config| {
        providers(
            config,
            vec![
                ("primary", provider(strict_url)),
                ("backup", provider(backup_url)),
            ],
        );
    })
    .await;
    let mut message = valid_message();
    message["to"] = json!("gone@example.org");
    let id = app.accept(&message).await;
    let failed = app.wait_for_status(&id, "failed", WAIT).await;
    assert_eq!(attempts(&failed).len(), 1);
    assert_eq!(attempts(&failed)[0]["provider"], "primary");
    assert!(
        backup.received().is_empty(),
        "a recipient's 5xx is not the provider's fault"
    );
    assert_eq!(provider_list(&app).await[0]["state"], "closed");
}

#[tokio::test]
async fn a_rate_limited_provider_spaces_its_messages_out() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let app = spawn_app_with(move |config| {
        let mut paced = provider(url);
        paced.rate_limit = Some("20/s".into());
        providers(config, vec![("paced", paced)]);
    })
    .await;
    assert_eq!(provider_list(&app).await[0]["rate_limit"], "20/s");
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for n in 0..10 {
        let mut message = valid_message();
        message["to"] = json!(format!("customer{n}@example.org"));
        ids.push(app.accept(&message).await);
    }
    smtp.wait_for(10, WAIT).await;
    // Ten messages at 20 a second take at least nine intervals of 50 ms, however fast the rest is.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    for id in &ids {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    assert!(
        app.metric("posthorn_provider_throttled_total", "provider=\"paced\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_rate_limit_holds_for_every_replica_together() {
    crate::postgres_only!();
    use crate::support::process::{Posthorn, token};
    let database = crate::support::TestDatabase::create_empty().await;
    let smtp = SmtpServer::start().await;
    let spawn = || {
        Posthorn::spawn(&[
            ("POSTHORN_DATABASE_URL", database.url()),
            ("POSTHORN_PROVIDERS__PACED__URL", smtp.url()),
            ("POSTHORN_PROVIDERS__PACED__RATE_LIMIT", "10/s".to_owned()),
            ("POSTHORN_POLL_INTERVAL", "100ms".to_owned()),
            ("POSTHORN_WORKERS", "2".to_owned()),
            ("POSTHORN_CLAIM_BATCH_SIZE", "2".to_owned()),
            ("POSTHORN_LOG", "warn".to_owned()),
        ])
    };
    let mut replicas = [spawn(), spawn()];
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let send = token("paced", &[posthorn::auth::Scope::Send]);
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    for n in 0..20 {
        let mut message = valid_message();
        message["to"] = json!(format!("customer{n}@example.org"));
        let response = client
            .post(format!("{}/v1/send", replicas[n % 2].address))
            .bearer_auth(&send)
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    smtp.wait_for(20, Duration::from_secs(30)).await;
    // 10 a second for both together: twenty messages take at least nineteen intervals of 100 ms (each
    // replica alone would have taken half as long).
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1850), "{elapsed:?}");
    assert_eq!(smtp.received().len(), 20, "each message once");
}

#[tokio::test]
async fn three_replicas_route_fail_over_and_deliver_each_message_once() {
    crate::postgres_only!();
    use crate::support::process::{Posthorn, token};
    use crate::support::smtp::Script;
    let database = crate::support::TestDatabase::create_empty().await;
    // One sink refusing connections, one slow, one healthy.
    let down = free_port();
    let slow = SmtpServer::start_with(Script {
        after_data_delay: Duration::from_millis(200),
        ..Script::default()
    })
    .await;
    let healthy = SmtpServer::start().await;
    let config = crate::support::toml_file(
        "[providers.primary]\nbreaker_failures = 2\nbreaker_cooldown = \"10m\"\n\n\
         [providers.backup]\n\n[providers.bulk]\n\n\
         [[routes]]\nmatch = { stream = \"broadcast\" }\nproviders = [\"bulk\"]\n\n\
         [[routes]]\nproviders = [\"primary\", \"backup\"]\n",
    );
    let spawn = |name: &str| {
        Posthorn::spawn(&[
            ("POSTHORN_CONFIG", config.path().display().to_string()),
            ("POSTHORN_DATABASE_URL", database.url()),
            (
                "POSTHORN_PROVIDERS__PRIMARY__URL",
                format!("smtp://127.0.0.1:{down}?ehlo={name}"),
            ),
            (
                "POSTHORN_PROVIDERS__BACKUP__URL",
                format!("{}?ehlo={name}", healthy.url()),
            ),
            (
                "POSTHORN_PROVIDERS__BULK__URL",
                format!("{}?ehlo={name}", slow.url()),
            ),
            ("POSTHORN_SMTP_TIMEOUT", "2s".to_owned()),
            ("POSTHORN_POLL_INTERVAL", "200ms".to_owned()),
            ("POSTHORN_WORKERS", "2".to_owned()),
            ("POSTHORN_CLAIM_BATCH_SIZE", "2".to_owned()),
            ("POSTHORN_LOG", "warn".to_owned()),
        ])
    };
    let mut replicas = [spawn("replica-a"), spawn("replica-b"), spawn("replica-c")];
    for replica in &mut replicas {
        replica.wait_ready().await;
    }
    let send = token("routes", &[posthorn::auth::Scope::Send]);
    let client = reqwest::Client::new();
    for n in 0..30 {
        let mut message = valid_message();
        message["to"] = json!(format!("customer{n}@example.org"));
        if n % 3 == 0 {
            message["stream"] = json!("broadcast");
        }
        let response = client
            .post(format!("{}/v1/send", replicas[n % 3].address))
            .bearer_auth(&send)
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let transactional = healthy.wait_for(20, Duration::from_secs(30)).await;
    let broadcast = slow.wait_for(10, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut all: Vec<String> = healthy
        .received()
        .into_iter()
        .chain(slow.received())
        .flat_map(|mail| mail.to)
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30, "every message arrived");
    assert_eq!(healthy.received().len(), 20, "once each: {transactional:?}");
    assert_eq!(slow.received().len(), 10, "once each: {broadcast:?}");
    // Every replica took part, and each sees the refusing provider open after its own failures.
    let admin = token("ops", &[posthorn::auth::Scope::Admin]);
    let mut helos: Vec<String> = healthy
        .received()
        .into_iter()
        .chain(slow.received())
        .map(|mail| mail.helo)
        .collect();
    helos.sort();
    helos.dedup();
    assert!(helos.len() >= 2, "replicas that delivered: {helos:?}");
    for replica in &replicas {
        let list: Value = client
            .get(format!("{}/v1/providers", replica.address))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["primary", "backup", "bulk"], "the file's order");
    }
}
